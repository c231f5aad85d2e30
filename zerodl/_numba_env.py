"""The ``NUMBA_*`` environment variables zerodl depends on, checked before numba reads them.

What numba 0.6x does with a bad value (tried here; ``python -c "import numba"``):

* ``NUMBA_NUM_THREADS=0`` (or negative): ``import numba`` itself fails with a traceback ending in
  ``ValueError: Number of threads specified must be > 0.``
* ``NUMBA_NUM_THREADS=abc``, ``NUMBA_DISABLE_JIT=xyz``, ``NUMBA_BOUNDSCHECK=x``, ``NUMBA_OPT=9``:
  a ``RuntimeWarning`` ("... could not be parsed"), then numba silently uses its default — the
  user's setting is ignored (JIT still on, bounds unchecked, all cores used).
* ``NUMBA_CACHE_DIR`` naming a file (or a folder under a file): nothing is said, and compiled
  kernels are never cached, so every run compiles them again (seconds of start-up, every time).

Each of these is refused by :func:`check_numba_environment` at ``import zerodl`` with one line
naming the variable, its value and what is expected. The ``zerodl`` command (and any script that
does not catch it) prints it as ``zerodl: error: ...`` and exits with 1 instead of a traceback.
An empty value counts as unset (numba then uses its default too).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping
from types import TracebackType

#: Flags numba reads with ``int()``: 0 off, any other integer on.
_INTEGER_FLAGS = ("NUMBA_DISABLE_JIT", "NUMBA_BOUNDSCHECK")
_OPT_LEVELS = ("0", "1", "2", "3", "max")


class NumbaEnvironmentError(ValueError):
    """A ``NUMBA_*`` environment variable numba would reject, or silently ignore."""


def _problem(environ: Mapping[str, str]) -> str | None:
    """The one-line complaint about the first bad ``NUMBA_*`` variable of ``environ``, or ``None``."""
    value = environ.get("NUMBA_NUM_THREADS", "").strip()
    if value:
        try:
            threads = int(value)
        except ValueError:
            threads = None
        if threads is None or threads < 1:
            return (f"NUMBA_NUM_THREADS={environ['NUMBA_NUM_THREADS']!r}: expected a positive number of "
                    f"threads (e.g. NUMBA_NUM_THREADS=1), or leave it unset for one per core")
    for name in _INTEGER_FLAGS:
        value = environ.get(name, "").strip()
        if value:
            try:
                int(value)
            except ValueError:
                return (f"{name}={environ[name]!r}: expected 0 (off) or 1 (on); numba would ignore this "
                        "value and leave the setting off")
    value = environ.get("NUMBA_OPT", "").strip()
    if value and value not in _OPT_LEVELS:
        return f"NUMBA_OPT={environ['NUMBA_OPT']!r}: expected one of 0, 1, 2, 3 or max"
    value = environ.get("NUMBA_CACHE_DIR", "")
    if value.strip():
        reason = _cache_dir_problem(value)
        if reason:
            return (f"NUMBA_CACHE_DIR={value!r}: {reason}; expected a folder numba can write its compiled "
                    "kernels to (or leave it unset)")
    return None


def _cache_dir_problem(path: str) -> str | None:
    """Why ``path`` cannot be numba's cache folder, or ``None`` (a missing folder numba creates)."""
    current = os.path.abspath(os.path.expanduser(path))
    try:
        mode = os.stat(current).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        mode = None  # a component is a file: found below
    except OSError as exc:
        return exc.strerror or str(exc)
    if mode is not None:
        if not stat.S_ISDIR(mode):
            return "is a file, not a folder"
        if not os.access(current, os.W_OK | os.X_OK):
            return "the folder is not writable"
        return None
    # Missing: numba creates it, unless something on the way up is a file.
    parent = os.path.dirname(current)
    while parent and parent != os.path.dirname(parent):
        if os.path.lexists(parent):
            if not os.path.isdir(parent):
                return f"{parent} on its path is a file, not a folder"
            return None
        parent = os.path.dirname(parent)
    return None


def _one_line_hook(previous):  # type: ignore[no-untyped-def]
    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if isinstance(exc, NumbaEnvironmentError):
            print(f"zerodl: error: {exc}", file=sys.stderr)
            return
        previous(kind, exc, tb)

    hook.zerodl_numba_env = True  # type: ignore[attr-defined]
    return hook


def check_numba_environment(environ: Mapping[str, str] | None = None) -> None:
    """Refuse a ``NUMBA_*`` variable numba would choke on or silently ignore (see the module doc).

    Called by ``import zerodl`` before numba is imported. When it raises, an uncaught
    :class:`NumbaEnvironmentError` is printed as one ``zerodl: error: ...`` line (exit status 1)
    rather than a traceback.

    Raises:
        NumbaEnvironmentError: one line, ``"NUMBA_NUM_THREADS='0': expected a positive number ..."``.
    """
    problem = _problem(os.environ if environ is None else environ)
    if problem is None:
        return
    if not getattr(sys.excepthook, "zerodl_numba_env", False):
        sys.excepthook = _one_line_hook(sys.excepthook)
    raise NumbaEnvironmentError(problem)


__all__ = ["NumbaEnvironmentError", "check_numba_environment"]

"""The active kernel backend: ``"numba"`` (compiled, the default) or ``"numpy"`` (the reference).

Two levels, so that a training in another thread is never surprised:

* :func:`set_backend` sets the **process-wide default** (every thread sees it), as does the
  environment variable ``ZERODL_BACKEND`` read once at import.
* :func:`use_backend` is a context manager whose override is **context-local** (a
  :class:`contextvars.ContextVar`): it affects only the thread or asyncio task that entered it, so
  ``with use_backend("numpy"):`` in one thread never changes the kernels a training in another
  thread is running.

Kernels are looked up at call time (:func:`zerodl.kernels.get`), so switching backends between two
calls takes effect immediately; no layer caches a kernel.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import threading
from collections.abc import Iterator
from types import TracebackType

BACKENDS: tuple[str, ...] = ("numba", "numpy")
DEFAULT_BACKEND = "numba"

_lock = threading.Lock()
_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "zerodl_backend", default=None
)


def _validate(name: object, source: str = "backend") -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        valid = ", ".join(repr(b) for b in BACKENDS)
        raise ValueError(f"unknown {source} {name!r}: expected one of {valid}")
    return name.strip().lower()


class BackendEnvironmentError(ValueError):
    """``ZERODL_BACKEND`` names no backend. Raised when zerodl is imported.

    A program that does not catch it (the ``zerodl`` command, a script) ends with the one-line
    message ``zerodl: error: ...`` instead of a traceback (see :func:`_one_line_hook`).
    """


def _one_line_hook(previous: object) -> object:
    """A ``sys.excepthook`` that prints an uncaught :class:`BackendEnvironmentError` as one line.

    Installed only when the variable is bad, just before the error is raised at import, and it
    hands every other exception to the hook that was there before. A misconfigured environment is
    not a bug in the program, so its traceback (pointing into zerodl's import) helps nobody.
    """

    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if isinstance(exc, BackendEnvironmentError):
            sys.stderr.write(f"zerodl: error: {exc}\n")
            return
        previous(exc_type, exc, tb)  # type: ignore[operator]

    return hook


def _initial_backend() -> str:
    env = os.environ.get("ZERODL_BACKEND")
    if env is None or env.strip() == "":
        return DEFAULT_BACKEND
    try:
        return _validate(env, "backend")
    except ValueError:
        valid = ", ".join(repr(b) for b in BACKENDS)
        if sys.excepthook is sys.__excepthook__:  # leave a program's (or IPython's) own hook alone
            sys.excepthook = _one_line_hook(sys.excepthook)
        raise BackendEnvironmentError(
            f"environment variable ZERODL_BACKEND={env!r}: unknown ZERODL_BACKEND value {env!r}; "
            f"expected one of {valid} (or unset it)") from None


_default = _initial_backend()


def get_backend() -> str:
    """Return the backend kernels resolve to in the calling context (``"numba"`` or ``"numpy"``)."""
    override = _override.get()
    return override if override is not None else _default


def set_backend(name: str) -> None:
    """Set the process-wide default backend.

    Raises:
        ValueError: ``name`` is not one of :data:`BACKENDS` (the message lists them).
    """
    global _default
    name = _validate(name)
    with _lock:
        _default = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Run a block with ``name`` as the backend of this thread / task only.

    >>> with use_backend("numpy"):
    ...     loss = net.loss(x, t)  # doctest: +SKIP
    """
    token = _override.set(_validate(name))
    try:
        yield get_backend()
    finally:
        _override.reset(token)

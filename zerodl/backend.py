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
import threading
from collections.abc import Iterator

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


def _initial_backend() -> str:
    env = os.environ.get("ZERODL_BACKEND")
    if env is None or env.strip() == "":
        return DEFAULT_BACKEND
    return _validate(env, "ZERODL_BACKEND value")


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

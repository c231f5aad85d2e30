"""The one place numba's compile flags are chosen.

Every compiled kernel in :mod:`zerodl.kernels` is decorated with :func:`jit`; no call site passes
``fastmath=``, ``parallel=`` or ``cache=`` itself (a CI check greps for it). Compilation is lazy:
decorating compiles nothing, the first call with a new type signature does, and ``cache=True`` keeps
the machine code on disk (``NUMBA_CACHE_DIR`` or ``__pycache__``) for the next process.

Why no fastmath: ``nnan``/``ninf`` let LLVM delete NaN checks, and reassociation changes sums, which
would break the bit-for-bit agreement with the NumPy twin that the tests rely on for softmax,
cross-entropy and batch-norm statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

#: Flags shared by every kernel. ``parallel`` is opt-in per kernel (see :func:`jit`).
JIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}


def jit(fn: F | None = None, *, parallel: bool = False) -> Any:
    """Compile ``fn`` with numba's nopython mode and the project's flags.

    ``parallel=True`` is for kernels whose ``prange`` loops write independent outputs; on 2 cores it
    pays only for large convolution batches, so it is off unless a kernel asks for it.
    """

    def wrap(f: F) -> F:
        return numba.njit(parallel=parallel, **JIT_OPTIONS)(f)

    return wrap if fn is None else wrap(fn)

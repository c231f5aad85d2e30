"""The one place numba's compile flags are chosen.

Every compiled kernel in :mod:`zerodl.kernels` is decorated with :func:`jit`; no call site passes
``fastmath=``, ``parallel=`` or ``cache=`` itself (a CI check greps for it). Compilation is lazy:
decorating compiles nothing, the first call with a new type signature does, and ``cache=True`` keeps
the machine code on disk (``NUMBA_CACHE_DIR`` or ``__pycache__``) for the next process.

Why no fastmath: ``nnan``/``ninf`` let LLVM delete NaN checks, and reassociation changes sums, which
would break the bit-for-bit agreement with the NumPy twin that the tests rely on for softmax,
cross-entropy and batch-norm statistics. The one exception is :data:`CONTRACT`, LLVM's ``contract``
flag alone (``jit(..., contract=True)``): it lets ``a * b + c`` become one fused multiply-add (one
rounding instead of two; the CPU's FMA units double the multiply-add rate). It neither reorders sums
nor touches NaN/inf handling, and a kernel's result stays a fixed function of its inputs (the same
machine code whatever the thread count). Only the direct convolution kernels use it, where a test
shows their results within the dtype's tolerance of the NumPy twin; ``tests/test_determinism.py``
fails if any other kernel, or any other fast-math flag, appears. (The register-tile microkernel of
``_direct_c1.py`` is written in LLVM IR and calls ``llvm.fma`` itself, one per tap in a fixed order:
no flag, the same guarantees.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import numba

F = TypeVar("F", bound=Callable[..., Any])

#: Flags shared by every kernel. ``parallel`` is opt-in per kernel (see :func:`jit`).
JIT_OPTIONS: dict[str, Any] = {"cache": True, "nogil": True, "fastmath": False, "error_model": "numpy"}

#: The fast-math flag set of ``jit(..., contract=True)``: multiply-add contraction (FMA), nothing else.
CONTRACT: frozenset[str] = frozenset({"contract"})


def jit(fn: F | None = None, *, parallel: bool = False, contract: bool = False, inline: bool = False) -> Any:
    """Compile ``fn`` with numba's nopython mode and the project's flags.

    ``parallel=True`` is for kernels whose ``prange`` loops write independent outputs; on 2 cores it
    pays only for large convolution batches, so it is off unless a kernel asks for it.
    ``contract=True`` allows fused multiply-adds (:data:`CONTRACT`, see the module docstring): for
    inner-product kernels only, each with a test of its rounding against the NumPy twin.
    ``inline=True`` inlines a small helper into its callers at Numba's level (``inline="always"``): a
    scalar helper left as a call keeps LLVM from vectorising the loop that calls it.
    """
    options = {**JIT_OPTIONS, "fastmath": set(CONTRACT)} if contract else dict(JIT_OPTIONS)
    if inline:
        options["inline"] = "always"

    def wrap(f: F) -> F:
        return numba.njit(parallel=parallel, **options)(f)

    return wrap if fn is None else wrap(fn)

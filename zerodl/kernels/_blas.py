"""NumPy's own BLAS, callable from compiled kernels: ``gemm`` without the GIL between products.

Why: a convolution twin runs each group of image chunks on one of zerodl's task threads (see
``_tasks.py``); when every chunk went back to Python for its ``np.matmul`` (16 small products per
Winograd chunk, 30-60 µs each), the two task threads handed the GIL to each other hundreds of times
per layer and the second core bought little (DeepConvNet float32 step 51 ms on one thread, 37 ms on
two; a batch of 16 small products scaled 1.06-1.19x over two threads from Python, 1.83-1.89x from one
compiled loop calling the same BLAS, same machine, same run). With the products callable from njit
code, a whole group is one compiled call that releases the GIL once.

What: NumPy's wheels on Linux, Windows and Intel macOS bundle OpenBLAS (``scipy-openblas64``, the
64-bit-integer interface, symbols ``scipy_cblas_sgemm64_`` / ``scipy_cblas_dgemm64_``). This module
finds that library among the ones loaded into the process (threadpoolctl, a dependency already),
registers its two ``gemm`` entry points with LLVM under zerodl's own names and declares them to
numba (:data:`SGEMM`, :data:`DGEMM`). It is the very library ``np.matmul`` calls, so the products are
bit for bit the ones ``np.matmul`` computes for the same operands, and ``zerodl.num_threads`` /
the convolutions' one-BLAS-thread limit govern it as before.

Anything else (NumPy on Apple's Accelerate, MKL, a 32-bit-integer OpenBLAS): :func:`available`
returns ``False`` and the kernels keep their Python loop over ``np.matmul`` (same values, one GIL
hand-off per product). Tests run both paths.

No compiled code lives here, only declarations (the cache rule of ``tests/test_kernel_cache.py``
is about njit helpers shared across files; these compile to a call to a symbol resolved when the
calling kernel is loaded). Call :func:`available` before the first call of a kernel that uses
them: it registers the symbols.
"""

from __future__ import annotations

import ctypes
import os
import threading

import numba
from numba import types

__all__ = ["DGEMM", "NO_TRANS", "ROW_MAJOR", "SGEMM", "TRANS", "available"]

#: CBLAS enumerations (``CblasRowMajor``, ``CblasNoTrans``, ``CblasTrans``).
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

_i32, _i64, _vp = types.int32, types.int64, types.voidptr


def _gemm_signature(real: types.Type) -> types.Signature:
    # cblas_?gemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc), 64-bit ints.
    return types.void(_i32, _i32, _i32, _i64, _i64, _i64, real, _vp, _i64, _vp, _i64, real, _vp, _i64)


#: ``SGEMM(order, ta, tb, M, N, K, alpha, A.ctypes, lda, B.ctypes, ldb, beta, C.ctypes, ldc)``
#: callable from njit code once :func:`available` is true (float32 operands, ``np.float32`` scalars).
SGEMM = types.ExternalFunction("zerodl_cblas_sgemm64", _gemm_signature(types.float32))
#: The float64 twin of :data:`SGEMM`.
DGEMM = types.ExternalFunction("zerodl_cblas_dgemm64", _gemm_signature(types.float64))

#: The exported names tried, in order: NumPy's bundled ``scipy-openblas64``.
_SYMBOLS = (("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_"),)

_lock = threading.Lock()
_state: dict[str, object] = {}


def _numpy_blas_paths() -> list[str]:
    # The BLAS libraries loaded into this process, NumPy's own first (its wheel keeps it beside
    # the package, in numpy.libs / numpy/.dylibs), then any other OpenBLAS.
    import numpy as np
    from threadpoolctl import threadpool_info

    numpy_dir = os.path.dirname(os.path.dirname(np.__file__))
    paths = [i["filepath"] for i in threadpool_info() if i.get("internal_api") == "openblas"]
    return sorted(paths, key=lambda p: not os.path.realpath(p).startswith(os.path.realpath(numpy_dir)))


def _register() -> str | None:
    import llvmlite.binding as llvm

    for path in _numpy_blas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for s_name, d_name in _SYMBOLS:
            s_fn, d_fn = getattr(lib, s_name, None), getattr(lib, d_name, None)
            if s_fn is None or d_fn is None:
                continue
            llvm.add_symbol(SGEMM.symbol, ctypes.cast(s_fn, ctypes.c_void_p).value)
            llvm.add_symbol(DGEMM.symbol, ctypes.cast(d_fn, ctypes.c_void_p).value)
            _state["lib"] = lib  # keep the handle (and the library) alive
            return path
    return None


def available() -> bool:
    """True when :data:`SGEMM` / :data:`DGEMM` are bound to NumPy's BLAS (registered on first call).

    A BLAS this module does not know leaves it false (the kernels then take their Python loop), and
    so does ``NUMBA_DISABLE_JIT=1``: the declarations are calls only compiled code can make.
    """
    if numba.config.DISABLE_JIT:
        return False
    if "path" not in _state:
        with _lock:
            if "path" not in _state:
                _state["path"] = _register()
    return _state["path"] is not None and not _forced_off


def library_path() -> str | None:
    """The file of the BLAS bound to :data:`SGEMM` / :data:`DGEMM` (``None`` when not available)."""
    available()
    return _state["path"]  # type: ignore[return-value]


#: Tests set this to run the Python-loop path of the kernels on a machine where the compiled
#: products are available (both paths must give the same bits).
_forced_off = False

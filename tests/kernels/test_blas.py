"""NumPy's BLAS called from compiled code (``zerodl.kernels._blas``): the same bits as ``np.matmul``,
and the convolutions' compiled group loops the same bits as their Python loops."""

import os

import numba
import numpy as np
import pytest

from zerodl import kernels
from zerodl.kernels import _blas, convolution

DTYPES = (np.float32, np.float64)

needs_blas = pytest.mark.skipif(
    not _blas.available(),
    reason="no compiled BLAS binding here (NUMBA_DISABLE_JIT=1, or NumPy's BLAS is not the bundled "
           "scipy-openblas64: Accelerate, MKL, ...): the kernels take their Python loop over np.matmul, "
           "which the other convolution tests cover")


def test_numpys_bundled_openblas_is_found():
    # NumPy's wheels for Linux bundle scipy-openblas64; when that is the BLAS loaded, it must be bound.
    from threadpoolctl import threadpool_info

    bundled = [i["filepath"] for i in threadpool_info()
               if os.path.basename(i["filepath"]).startswith("libscipy_openblas64_")]
    if not bundled:
        pytest.skip("this NumPy does not bundle scipy-openblas64")
    if numba.config.DISABLE_JIT:
        assert not _blas.available()  # only compiled code can call the declarations
        return
    assert _blas.available()
    assert os.path.realpath(_blas.library_path()) in {os.path.realpath(p) for p in bundled}


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_bits_equal_np_matmul(dtype, trans_b):
    rng = np.random.default_rng(1)
    for m, k, n in [(16, 32, 300), (1, 5, 7), (3, 1, 2), (7, 9, 1), (64, 64, 64)]:
        A = rng.standard_normal((m, k + 3)).astype(dtype)[:, 1: k + 1]  # strided rows
        B = rng.standard_normal((n, k)).astype(dtype) if trans_b else rng.standard_normal((k, n)).astype(dtype)
        C = np.full((m, n), np.nan, dtype=dtype)
        convolution._gemm(A, B, C, trans_b)
        expected = np.matmul(A, B.T if trans_b else B)
        if m > 1 and n > 1:
            np.testing.assert_array_equal(C, expected)
        else:  # np.matmul takes gemv for a one-row or one-column product: rounding may differ
            np.testing.assert_allclose(C, expected, rtol=1e-5 if dtype == np.float32 else 1e-13)
        assert C.dtype == dtype


@needs_blas
def test_gemm_one_row_matrix_with_a_relaxed_stride():
    # np.ascontiguousarray of a (2, 1) matrix's transpose is a (1, 2) view whose row stride is 4 bytes:
    # BLAS would refuse it as a leading dimension.
    W = np.arange(2, dtype=np.float32).reshape(2, 1)
    A = np.ascontiguousarray(W.T)
    assert A.strides[0] < A.shape[1] * A.itemsize
    B = np.ones((2, 3), dtype=np.float32)
    C = np.empty((1, 3), dtype=np.float32)
    convolution._gemm(A, B, C, False)
    np.testing.assert_array_equal(C, A @ B)


def _conv_cases():
    # (N, C, H, W, FN, F, pad): Winograd layers (pooled and not), the patch route (one channel, 3x3
    # direct; 5x5; strided), batch sizes that make several chunks per group.
    return [(9, 4, 8, 8, 6, 3, 1), (7, 5, 7, 9, 3, 3, 2), (6, 1, 12, 12, 5, 3, 1), (5, 1, 12, 12, 4, 5, 0),
            (4, 3, 9, 9, 2, 3, 0)]


def _run_all(case, dtype):
    n, c, h, w, fn, f, pad = case
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((fn, c, f, f)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    results = []
    out, _ = kernels.get("conv_forward", "numba")(x, W, b, 1, pad)
    relu_out, _ = kernels.get("conv_relu_forward", "numba")(x, W, b, 1, pad)
    dout = rng.standard_normal(out.shape).astype(dtype)
    results += [out, relu_out]
    results += kernels.get("conv_backward", "numba")(dout, x, W, None, 1, pad)
    results += kernels.get("conv_backward", "numba")(dout, x, W, None, 1, pad, False)[1:]
    results += kernels.get("conv_relu_backward", "numba")(dout, relu_out, x, W, None, 1, pad)
    if out.shape[2] >= 2 and out.shape[3] >= 2:
        pooled, arg_max, _ = kernels.get("conv_relu_pool_forward", "numba")(x, W, b, 1, pad)
        dpooled = rng.standard_normal(pooled.shape).astype(dtype)
        results += [pooled, arg_max, kernels.get("conv_relu_pool_inference", "numba")(x, W, b, 1, pad)]
        results += kernels.get("conv_relu_pool_backward", "numba")(dpooled, pooled, arg_max, x, W, None, 1, pad)
    return results


@needs_blas
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", _conv_cases())
def test_compiled_group_loops_give_the_python_loops_bits(monkeypatch, case, dtype):
    # Small chunk budgets: several chunks per group, so the loops' buffer reuse and the partial
    # sums over chunks are exercised.
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 2048)
    monkeypatch.setattr(convolution, "WINO_CHUNK_BYTES", 4096)
    monkeypatch.setattr(convolution, "WINO_DW_CHUNK_BYTES", 4096)
    compiled = _run_all(case, dtype)
    monkeypatch.setattr(_blas, "_forced_off", True)
    assert not _blas.available()
    python = _run_all(case, dtype)
    assert len(compiled) == len(python)
    direct = case[1] == 1 and case[5] == 3 and convolution.DIRECT_C1
    for a, p in zip(compiled, python):
        assert a.dtype == p.dtype
        if direct:
            # The direct single-channel kernel (fused multiply-adds, see _jit.py) is compiled for
            # the group loop's image slices there and for whole arrays here; LLVM may contract
            # them differently: rounding only (each path is still one fixed function of its inputs).
            np.testing.assert_allclose(a, p, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, p)

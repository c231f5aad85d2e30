"""max_pool_forward / max_pool_backward: numpy vs numba (both dtypes), vs the naive oracle, ties, NaN."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests import naive
from tests.helpers import assert_backends_agree, tolerance

DTYPES = (np.float32, np.float64)


@st.composite
def pools(draw):
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    ph, pw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 1))
    assume(h + 2 * pad >= ph and w + 2 * pad >= pw)
    return n, c, h, w, ph, pw, stride, pad


@settings(max_examples=20)
@given(shape=pools(), seed=st.integers(0, 2**16), ties=st.booleans())
def test_forward_twins_agree_and_match_naive(shape, seed, ties):
    n, c, h, w, ph, pw, stride, pad = shape
    rng = np.random.default_rng(seed)
    for dtype in DTYPES:
        x = rng.standard_normal((n, c, h, w))
        if ties:  # few distinct values (zero included): the first maximum must win everywhere
            x = np.round(x)
        x = x.astype(dtype)
        (out, arg), _ = assert_backends_agree("max_pool_forward", x, ph, pw, stride, pad)
        ref_out, ref_arg = naive.max_pool_forward(x, ph, pw, stride, pad)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(arg, ref_arg)
        assert out.dtype == dtype and arg.dtype == np.intp


@settings(max_examples=20)
@given(shape=pools(), seed=st.integers(0, 2**16))
def test_backward_twins_agree_and_match_naive(shape, seed):
    n, c, h, w, ph, pw, stride, pad = shape
    rng = np.random.default_rng(seed)
    for dtype in DTYPES:
        x = np.round(rng.standard_normal((n, c, h, w)) * 2).astype(dtype)
        out, arg = naive.max_pool_forward(x, ph, pw, stride, pad)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx_np, dx_nb = assert_backends_agree("max_pool_backward", dout, arg, x.shape, ph, pw, stride, pad)
        # Same order of additions where windows overlap: bit-identical.
        np.testing.assert_array_equal(dx_nb, dx_np)
        assert dx_nb.dtype == dtype and dx_nb.shape == x.shape
        np.testing.assert_allclose(dx_nb, naive.max_pool_backward(dout, arg, x.shape, ph, pw, stride, pad),
                                   **tolerance(dtype))


def test_nan_propagates_like_numpy_max():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    x[0, 0, 0, 1] = np.nan
    x[0, 0, 3, 3] = np.nan
    (out, arg), _ = assert_backends_agree("max_pool_forward", x, 2, 2, 2, 0)
    assert np.isnan(out[0, 0, 0, 0]) and np.isnan(out[0, 0, 1, 1])
    assert arg[0, 0, 0, 0] == 1 and arg[0, 0, 1, 1] == 3
    assert out[0, 0, 0, 1] == 7 and arg[0, 0, 0, 1] == 3


def test_padding_counts_as_zero():
    # All-negative input: with padding, border windows see the padding's 0 (the book's im2col).
    x = -np.ones((1, 1, 2, 2))
    (out, arg), _ = assert_backends_agree("max_pool_forward", x, 2, 2, 2, 1)
    np.testing.assert_array_equal(out, np.zeros((1, 1, 2, 2)))
    dx, _ = assert_backends_agree("max_pool_backward", np.ones((1, 1, 2, 2)), arg, x.shape, 2, 2, 2, 1)
    np.testing.assert_array_equal(dx, np.zeros_like(x))  # the maxima were padding: no gradient


@pytest.mark.parametrize("hw", [(4, 6), (5, 7)], ids=["tiling", "odd-edges"])
def test_books_2x2_stride2_path_with_ties(hw):
    # The unrolled 2x2/stride-2 paths (forward; backward when the windows tile the input).
    rng = np.random.default_rng(11)
    for dtype in DTYPES:
        x = np.round(rng.standard_normal((2, 3, *hw))).astype(dtype)
        (out, arg), _ = assert_backends_agree("max_pool_forward", x, 2, 2, 2, 0)
        ref_out, ref_arg = naive.max_pool_forward(x, 2, 2, 2, 0)
        np.testing.assert_array_equal(out, ref_out)
        np.testing.assert_array_equal(arg, ref_arg)
        dout = rng.standard_normal(out.shape).astype(dtype)
        dx, _ = assert_backends_agree("max_pool_backward", dout, arg, x.shape, 2, 2, 2, 0)
        np.testing.assert_array_equal(dx, naive.max_pool_backward(dout, arg, x.shape, 2, 2, 2, 0).astype(dtype))


def test_numba_twins_bit_identical_across_thread_counts():
    # Parts of the batch run on several threads; each output element is computed alone.
    import numba

    from zerodl import kernels

    rng = np.random.default_rng(4)
    x = np.round(rng.standard_normal((7, 2, 6, 6)) * 2)
    runs = []
    old = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            out, arg = kernels.get("max_pool_forward", "numba")(x, 2, 2, 2, 0)
            dx = kernels.get("max_pool_backward", "numba")(out, arg, x.shape, 2, 2, 2, 0)
            runs.append((out, arg, dx))
    finally:
        numba.set_num_threads(old)
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)

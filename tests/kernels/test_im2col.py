"""im2col / col2im: numpy vs numba (both dtypes, hypothesis shapes/stride/pad), vs the naive oracle."""

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests import naive
from tests.helpers import assert_backends_agree, tolerance
from zerodl import kernels

DTYPES = (np.float32, np.float64)


@st.composite
def windows(draw):
    """(N, C, H, W, fh, fw, stride, pad) with at least one output position."""
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    fh, fw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    assume(h + 2 * pad >= fh and w + 2 * pad >= fw)
    return n, c, h, w, fh, fw, stride, pad


@settings(max_examples=20)
@given(shape=windows(), seed=st.integers(0, 2**16))
def test_im2col_twins_agree_and_match_naive(shape, seed):
    n, c, h, w, fh, fw, stride, pad = shape
    rng = np.random.default_rng(seed)
    for dtype in DTYPES:
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        col, _ = assert_backends_agree("im2col", x, fh, fw, stride, pad)
        # A pure copy: exact equality with the oracle, dtype kept.
        np.testing.assert_array_equal(col, naive.im2col(x, fh, fw, stride, pad))
        assert col.dtype == dtype


@settings(max_examples=20)
@given(shape=windows(), seed=st.integers(0, 2**16))
def test_col2im_twins_agree_and_match_naive(shape, seed):
    n, c, h, w, fh, fw, stride, pad = shape
    rng = np.random.default_rng(seed)
    oh = (h + 2 * pad - fh) // stride + 1
    ow = (w + 2 * pad - fw) // stride + 1
    for dtype in DTYPES:
        col = rng.standard_normal((n * oh * ow, c * fh * fw)).astype(dtype)
        img_np, img_nb = assert_backends_agree("col2im", col, (n, c, h, w), fh, fw, stride, pad)
        # Both twins add each pixel's contributions in the same order: bit-identical.
        np.testing.assert_array_equal(img_nb, img_np)
        assert img_nb.shape == (n, c, h, w) and img_nb.dtype == dtype
        np.testing.assert_allclose(img_nb, naive.col2im(col, (n, c, h, w), fh, fw, stride, pad),
                                   **tolerance(dtype))


@settings(max_examples=10)
@given(shape=windows(), seed=st.integers(0, 2**16))
def test_col2im_is_the_adjoint_of_im2col(shape, seed):
    # <im2col(x), col> == <x, col2im(col)> for every backend: the identity backprop relies on.
    n, c, h, w, fh, fw, stride, pad = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w))
    for backend in ("numpy", "numba"):
        col = kernels.get("im2col", backend)(x, fh, fw, stride, pad)
        g = rng.standard_normal(col.shape)
        lhs = np.sum(col * g)
        rhs = np.sum(x * kernels.get("col2im", backend)(g, x.shape, fh, fw, stride, pad))
        np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_book_example_shapes():
    # The book's worked example (ch. 7): (1, 3, 7, 7) with a 5x5 filter → (9, 75); (10, ...) → (90, 75).
    x = np.random.default_rng(0).standard_normal((10, 3, 7, 7))
    for backend in ("numpy", "numba"):
        assert kernels.get("im2col", backend)(x[:1], 5, 5, 1, 0).shape == (9, 75)
        assert kernels.get("im2col", backend)(x, 5, 5, 1, 0).shape == (90, 75)

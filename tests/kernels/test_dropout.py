"""dropout kernels: numpy vs numba on random shapes, both dtypes, inputs untouched, dtype kept."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests.helpers import assert_backends_agree

shapes = array_shapes(min_dims=1, max_dims=4, max_side=5)
ratios = st.sampled_from([0.0, 0.15, 0.5, 0.9, 1.0])


@given(shape=shapes, ratio=ratios, seed=st.integers(0, 2**16))
def test_mask_forward_twins_agree(shape, ratio, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        u = rng.random(shape)
        (out, mask), _ = assert_backends_agree("dropout_mask_forward", x, u, ratio)
        assert mask.dtype == np.bool_ and mask.shape == x.shape
        np.testing.assert_array_equal(mask, u > ratio)
        # Exact: multiplying by 1 or 0 is exact, and no rescaling happens in training (the book).
        np.testing.assert_array_equal(out, np.where(u > ratio, x, 0))
        assert out.dtype == dtype


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_forward_and_backward_twins_agree(shape, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        mask = rng.random(shape) > 0.5
        out, _ = assert_backends_agree("dropout_forward", x, mask)
        np.testing.assert_array_equal(out, x * mask)
        dout = rng.standard_normal(shape).astype(dtype)
        dx, _ = assert_backends_agree("dropout_backward", dout, mask)
        np.testing.assert_array_equal(dx, dout * mask)
        assert out.dtype == dx.dtype == dtype


@given(shape=shapes, ratio=ratios, seed=st.integers(0, 2**16))
def test_predict_twins_agree(shape, ratio, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        out, out_nb = assert_backends_agree("dropout_predict", x, 1.0 - ratio)
        # Bit-identical to the book's ``x * (1.0 - ratio)`` with NumPy's weak Python-float scalar.
        np.testing.assert_array_equal(out, x * (1.0 - ratio))
        np.testing.assert_array_equal(out_nb, out)
        assert out.dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_uniforms_compare_like_numpy(dtype):
    # u in float32 and a ratio that is not representable: both twins compare in u's dtype.
    u = np.array([0.3, np.float32(0.3), 0.30000001, 0.7], dtype=np.float32)
    x = np.ones(4, dtype=dtype)
    (_, mask), _ = assert_backends_agree("dropout_mask_forward", x, u, 0.3)
    np.testing.assert_array_equal(mask, u > 0.3)


def test_special_values_propagate_like_the_book():
    x = np.array([np.nan, np.inf, -np.inf, -1.0, 2.0])
    mask = np.array([False, False, True, False, True])
    with np.errstate(invalid="ignore"):  # inf * 0 is the point of this test
        _, out_nb = assert_backends_agree("dropout_forward", x, mask)
        book = x * mask
    np.testing.assert_array_equal(out_nb, book)  # nan*0 = nan, inf*0 = nan, -1*0 = -0.0
    assert np.array_equal(np.signbit(out_nb), np.signbit(book))


def test_non_contiguous_inputs():
    x = np.arange(24.0).reshape(4, 6)[:, ::2]
    mask = (np.arange(24).reshape(4, 6) % 3 == 0)[:, ::2]
    out, _ = assert_backends_agree("dropout_forward", x, mask)
    np.testing.assert_array_equal(out, x * mask)

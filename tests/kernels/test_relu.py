"""relu_forward / relu_backward: numpy vs numba, any shape, both dtypes, inputs untouched."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests.helpers import assert_backends_agree


@given(shape=array_shapes(min_dims=1, max_dims=4, max_side=5), seed=st.integers(0, 2**16))
def test_twins_agree(shape, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        x.flat[0] = 0.0  # the boundary belongs to the mask (x <= 0), as in the book
        (out, mask), _ = assert_backends_agree("relu_forward", x)
        assert mask.dtype == np.bool_ and mask.flat[0]
        np.testing.assert_array_equal(out, np.maximum(x, 0))
        dout = rng.standard_normal(shape).astype(dtype)
        dx, _ = assert_backends_agree("relu_backward", dout, mask)
        np.testing.assert_array_equal(dx, np.where(mask, 0, dout))


def test_nan_passes_through_both_backends():
    x = np.array([np.nan, -1.0, 2.0])
    (out, mask), _ = assert_backends_agree("relu_forward", x)
    assert np.isnan(out[0]) and not mask[0]


def test_non_contiguous_input():
    x = np.arange(-6.0, 6.0).reshape(3, 4)[:, ::2]
    (out, _), _ = assert_backends_agree("relu_forward", x)
    np.testing.assert_array_equal(out, np.maximum(x, 0))

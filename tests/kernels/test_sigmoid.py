"""sigmoid_forward / sigmoid_backward: numpy vs numba, both dtypes, extreme inputs."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests.helpers import assert_backends_agree


@given(shape=array_shapes(min_dims=1, max_dims=3, max_side=6), seed=st.integers(0, 2**16))
def test_twins_agree(shape, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = (4 * rng.standard_normal(shape)).astype(dtype)
        out, _ = assert_backends_agree("sigmoid_forward", x)
        dout = rng.standard_normal(shape).astype(dtype)
        dx, _ = assert_backends_agree("sigmoid_backward", dout, out)
        np.testing.assert_allclose(dx, dout * (1 - out) * out, rtol=1e-5)


def test_saturates_without_nan(dtype):
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], dtype=dtype)
    out, _ = assert_backends_agree("sigmoid_forward", x)
    assert np.all(np.isfinite(out))
    assert out[0] == 0 and out[2] == 0.5 and out[-1] == 1

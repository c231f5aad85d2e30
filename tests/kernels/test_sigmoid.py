"""sigmoid_forward / sigmoid_backward: numpy vs numba, both dtypes, extreme inputs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests.helpers import assert_backends_agree

# Under NUMBA_DISABLE_JIT the compiled twin's 2**k scaling runs on NumPy scalars, which warn when
# exp(-x) saturates to inf: the intended result (compiled, it is silent).
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in scalar multiply:RuntimeWarning")


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


def test_whole_range_nan_and_inf(dtype):
    # The numba twin computes exp itself (range reduction + series): check it over the whole range,
    # through the saturation points (-x beyond 709.78 overflows, beyond -745 underflows) and
    # chunk boundaries (the length is not a multiple of the kernel's chunk of 512).
    x = np.concatenate([np.linspace(-800, 800, 100_003), [np.nan, np.inf, -np.inf, -0.0, 1e-300]])
    x = x.astype(dtype)
    with np.errstate(over="ignore"):
        expected = 1 / (1 + np.exp(-x.astype(np.float64)))
    _, out_nb = assert_backends_agree("sigmoid_forward", x)
    normal = np.isfinite(expected) & (expected >= np.finfo(dtype).tiny)
    rtol = 1e-15 if dtype == np.float64 else 3e-7
    np.testing.assert_allclose(out_nb[normal], expected[normal].astype(dtype), rtol=rtol, atol=0)
    # Below the normal range only the absolute error is meaningful (and exp(-x) may saturate).
    tiny = np.isfinite(expected) & ~normal
    assert np.all(np.abs(out_nb[tiny] - expected[tiny]) <= np.finfo(dtype).tiny)
    assert np.isnan(out_nb[-5]) and out_nb[-4] == 1 and out_nb[-3] == 0


def test_non_contiguous_and_nd(dtype):
    rng = np.random.default_rng(3)
    x = (8 * rng.standard_normal((7, 1030))).astype(dtype)[:, ::2]
    out, _ = assert_backends_agree("sigmoid_forward", x)
    assert out.shape == (7, 515) and out.dtype == dtype

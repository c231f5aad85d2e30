"""GELU twins: numpy vs numba, a per-element loop with math.tanh, the gradient, the fused pieces."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from tests.helpers import assert_backends_agree, tolerance
from zerodl import kernels
from zerodl.kernels.gelu import CUBIC, SQRT_2_OVER_PI


def _gelu_loop(x):
    """The definition, one Python float at a time."""
    flat = [0.5 * v * (1.0 + math.tanh(SQRT_2_OVER_PI * (v + CUBIC * v**3))) for v in x.ravel().tolist()]
    return np.array(flat).reshape(x.shape)


@given(shape=array_shapes(min_dims=1, max_dims=4, max_side=5), seed=st.integers(0, 2**16))
def test_twins_agree_with_each_other_and_the_loop(shape, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x = (3 * rng.standard_normal(shape)).astype(dtype)
        dout = rng.standard_normal(shape).astype(dtype)
        out, _ = assert_backends_agree("gelu_forward", x)
        assert out.dtype == dtype and out.shape == shape
        np.testing.assert_allclose(out, _gelu_loop(x.astype(np.float64)), **tolerance(dtype))
        dx, _ = assert_backends_agree("gelu_backward", dout, x)
        assert dx.dtype == dtype


@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_gradient_matches_central_differences(backend_name):
    rng = np.random.default_rng(0)
    x = 2 * rng.standard_normal((4, 5))
    dout = rng.standard_normal((4, 5))
    dx = kernels.get("gelu_backward", backend_name)(dout, x)
    h = 1e-6
    num = (kernels.get("gelu_forward", backend_name)(x + h) - kernels.get("gelu_forward", backend_name)(x - h)) / (2 * h)
    np.testing.assert_allclose(dx, dout * num, rtol=1e-6, atol=1e-8)


def test_extreme_inputs_saturate():
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4])
    for backend_name in ("numpy", "numba"):
        out = kernels.get("gelu_forward", backend_name)(x)
        np.testing.assert_allclose(out, [0.0, 0.0, 0.0, 50.0, 1e4], atol=1e-12)
        dx = kernels.get("gelu_backward", backend_name)(np.ones(5), x)
        np.testing.assert_allclose(dx, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-12)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2, 5)])
def test_fused_pieces_agree_and_match_the_layer_ops(shape, dtype):
    rng = np.random.default_rng(1)
    z = rng.standard_normal(shape).astype(dtype)
    b = rng.standard_normal(shape[1]).astype(dtype)
    out = np.empty_like(z)
    assert_backends_agree("gelu_bias_forward", z, b, out, inplace=[0, 2])
    for backend_name in ("numpy", "numba"):
        zz, o = z.copy(), np.empty_like(z)
        kernels.get("gelu_bias_forward", backend_name)(zz, b, o)
        pre = z + b.reshape((1, -1) + (1,) * (len(shape) - 2))
        np.testing.assert_array_equal(zz, pre)  # the kept pre-activation
        np.testing.assert_allclose(o, kernels.get("gelu_forward", backend_name)(pre), **tolerance(dtype))
    dout = rng.standard_normal(shape).astype(dtype)
    dx = np.empty_like(dout)
    assert_backends_agree("gelu_backward_into", dout, z, dx, inplace=[2])
    aliased = dout.copy()
    kernels.get("gelu_backward_into", "numba")(aliased, z, aliased)  # dx may be dout
    np.testing.assert_allclose(aliased, kernels.get("gelu_backward", "numba")(dout, z), **tolerance(dtype))


def test_layer_gradient_check(backend):
    from tests.helpers import check_layer_gradient
    from zerodl.layers import GELU

    rng = np.random.default_rng(2)
    layer = GELU()
    x = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 4))
    layer.forward(x)
    dx = layer.backward(dout)
    check_layer_gradient(lambda v: GELU().forward(v), x, dout, dx)


def test_gelu_is_an_activation_choice_of_the_networks_and_the_cli(backend):
    import zerodl
    from zerodl.cli import build_parser
    from zerodl.layers import ACTIVATIONS, GELU

    assert ACTIVATIONS["gelu"] is GELU
    assert build_parser().parse_args(["train", "--activation", "gelu"]).activation == "gelu"
    net = zerodl.MultiLayerNetExtend(6, [5, 4], 3, activation="gelu", weight_init_std="gelu",
                                     use_batchnorm=True, seed=0)
    assert isinstance(net.layers["Activation_function1"], GELU) and net.step_path == "fused"
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((4, 6)), rng.integers(0, 3, 4)
    grads, num = net.gradient(x, t), net.numerical_gradient(x, t)
    for key in net.params:
        np.testing.assert_allclose(grads[key], num[key], rtol=1e-5, atol=1e-7, err_msg=key)

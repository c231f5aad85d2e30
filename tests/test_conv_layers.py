"""Convolution and Pooling layers: book semantics, gradient checks in both backends, clear errors."""

import numpy as np
import pytest

import zerodl
from tests import naive
from tests.helpers import check_layer_gradient, tolerance
from zerodl.gradient import numerical_gradient
from zerodl.layers import Convolution, Pooling
from zerodl.util import conv_output_size


# ----------------------------------------------------------------------------- conv_output_size
@pytest.mark.parametrize(
    "args, expected",
    [((28, 5), 24), ((24, 2, 2), 12), ((28, 3, 1, 1), 28), ((14, 3, 1, 2), 16), ((7, 3, 2, 0), 3)],
)
def test_conv_output_size(args, expected):
    assert conv_output_size(*args) == expected
    assert isinstance(conv_output_size(*args), int)


@pytest.mark.parametrize(
    "args, message",
    [
        ((7, 2, 2), "does not tile the input size 7"),
        ((3, 5), "does not fit the input size 3"),
        ((5, 2, 0), "stride must be a positive integer, got 0"),
        ((5, 3, 1, -1), "pad must be an integer >= 0, got -1"),
        ((5.0, 3), "input size must be a positive integer"),
    ],
)
def test_conv_output_size_errors(args, message):
    with pytest.raises(ValueError, match=message):
        conv_output_size(*args)


def test_conv_output_size_says_what_would_tile():
    with pytest.raises(ValueError, match=r"\(expected input size 5 or 7\)"):
        conv_output_size(6, 3, 2, 0)
    with pytest.raises(ValueError, match=r"\(expected input size 3 or 6, or pad=2\)"):
        conv_output_size(5, 3, 3, 0)


# ----------------------------------------------------------------------------- Convolution
def _conv(rng, dtype, fn=3, c=2, fh=3, fw=2, stride=1, pad=1):
    W = rng.standard_normal((fn, c, fh, fw)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    return Convolution(W, b, stride=stride, pad=pad)


@pytest.mark.parametrize("stride, pad", [(1, 0), (1, 1), (2, 1)])
def test_convolution_forward_backward_vs_naive(backend, rng, dtype, stride, pad):
    layer = _conv(rng, dtype, stride=stride, pad=pad)
    x = rng.standard_normal((2, 2, 5, 6)).astype(dtype)
    out = layer.forward(x)
    assert out.dtype == dtype and out.flags.c_contiguous
    np.testing.assert_allclose(out, naive.conv_forward(x, layer.W, layer.b, stride, pad), **tolerance(dtype))
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout_before = dout.copy()
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dout, dout_before)
    ref = naive.conv_backward(dout, x, layer.W, stride, pad)
    for got, r in zip((dx, layer.dW, layer.db), ref):
        assert got.dtype == dtype and got.shape == r.shape
        np.testing.assert_allclose(got, r, **tolerance(dtype))
    assert layer.params["W"] is layer.W and layer.grads["W"] is layer.dW


@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 0)])
def test_convolution_gradients_numerically(backend, rng, stride, pad):
    layer = _conv(rng, np.float64, fn=2, c=2, fh=2, fw=3, stride=stride, pad=pad)
    x = rng.standard_normal((2, 2, 4, 5))
    dout = rng.standard_normal(layer.forward(x).shape)
    dx = layer.backward(dout)
    check_layer_gradient(layer.forward, x, dout, dx)
    for name, grad in (("W", layer.dW), ("b", layer.db)):
        param = getattr(layer, name)
        num = numerical_gradient(lambda _: float(np.sum(layer.forward(x) * dout)), param, h=1e-6)
        np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-6, err_msg=name)


def test_convolution_backends_can_switch_between_forward_and_backward(rng):
    layer = _conv(rng, np.float64)
    x = rng.standard_normal((2, 2, 4, 4))
    dout = rng.standard_normal((2, 3, 4, 5))  # fh=3, fw=2, pad=1 on a 4x4 input
    results = {}
    for fwd, bwd in (("numpy", "numpy"), ("numba", "numpy"), ("numpy", "numba"), ("numba", "numba")):
        with zerodl.use_backend(fwd):
            layer.forward(x)
        with zerodl.use_backend(bwd):
            results[fwd, bwd] = (layer.backward(dout), layer.dW.copy(), layer.db.copy())
    ref = results["numpy", "numpy"]
    for key, got in results.items():
        for g, r in zip(got, ref):
            np.testing.assert_allclose(g, r, rtol=1e-12, atol=1e-14, err_msg=str(key))


def test_convolution_casts_other_precision_to_its_dtype(backend, rng):
    layer = _conv(rng, np.float32)
    out = layer.forward(rng.standard_normal((1, 2, 4, 4)))  # float64 in, float32 layer
    assert out.dtype == np.float32


# ----------------------------------------------------------------------------- Pooling
def test_pooling_default_stride_is_two():
    assert Pooling(2, 2).stride == 2


@pytest.mark.parametrize("ph, pw, stride, pad", [(2, 2, 2, 0), (3, 3, 1, 0), (2, 2, 2, 1), (3, 2, 1, 1)])
def test_pooling_forward_backward_vs_naive(backend, rng, dtype, ph, pw, stride, pad):
    layer = Pooling(ph, pw, stride=stride, pad=pad)
    x = np.round(rng.standard_normal((2, 3, 4, 6)) * 2).astype(dtype)  # ties on purpose
    out = layer.forward(x)
    ref_out, ref_arg = naive.max_pool_forward(x, ph, pw, stride, pad)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(layer.arg_max, ref_arg)
    assert out.dtype == dtype
    dout = rng.standard_normal(out.shape).astype(dtype)
    dout_before = dout.copy()
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dout, dout_before)
    np.testing.assert_allclose(dx, naive.max_pool_backward(dout, ref_arg, x.shape, ph, pw, stride, pad),
                               **tolerance(dtype))
    assert dx.dtype == dtype and dx.shape == x.shape


def test_pooling_gradient_numerically(backend, rng):
    layer = Pooling(2, 2, stride=1)
    x = rng.standard_normal((2, 2, 4, 4))  # distinct values: the max is differentiable
    dout = rng.standard_normal(layer.forward(x).shape)
    dx = layer.backward(dout)
    check_layer_gradient(layer.forward, x, dout, dx)


def test_pooling_matches_book_example():
    # One 4x4 channel, 2x2 windows, stride 2: the maxima and where the gradient goes.
    x = np.array([[[[1, 2, 0, 1], [3, 0, 4, 2], [0, 1, 3, 0], [2, 4, 1, 5]]]], dtype=np.float64)
    for backend in zerodl.BACKENDS:
        with zerodl.use_backend(backend):
            layer = Pooling(2, 2)
            np.testing.assert_array_equal(layer.forward(x), [[[[3, 4], [4, 5]]]])
            dx = layer.backward(np.ones((1, 1, 2, 2)))
            np.testing.assert_array_equal(dx, (x == np.array([[[[0, 0, 0, 0], [3, 0, 4, 0],
                                                               [0, 0, 0, 0], [0, 4, 0, 5]]]])) & (x > 0))


# ----------------------------------------------------------------------------- errors
def test_constructor_errors(rng):
    W = rng.standard_normal((3, 2, 3, 3))
    with pytest.raises(ValueError, match=r"Convolution: W must have shape \(FN, C, FH, FW\)"):
        Convolution(W[0], np.zeros(3))
    with pytest.raises(ValueError, match=r"Convolution: b must have shape \(3,\)"):
        Convolution(W, np.zeros(4))
    with pytest.raises(ValueError, match="Convolution: stride must be a positive integer, got 0"):
        Convolution(W, np.zeros(3), stride=0)
    with pytest.raises(ValueError, match="Convolution: pad must be an integer >= 0, got -1"):
        Convolution(W, np.zeros(3), pad=-1)
    with pytest.raises(TypeError, match="Convolution: W must be a float32 or float64 array"):
        Convolution(W.astype(int), np.zeros(3))
    with pytest.raises(ValueError, match="Pooling: pool_h must be a positive integer, got 0"):
        Pooling(0, 2)
    with pytest.raises(ValueError, match="Pooling: stride must be a positive integer, got 1.5"):
        Pooling(2, 2, stride=1.5)


def test_forward_errors_name_the_layer_and_sizes(rng):
    conv = Convolution(rng.standard_normal((3, 2, 3, 3)), np.zeros(3), stride=2)
    with pytest.raises(ValueError, match=r"Convolution.forward: filter size 3 with stride 2 and pad 0 "
                                         r"does not tile the input height 6"):
        conv.forward(np.zeros((1, 2, 6, 7)))
    with pytest.raises(ValueError, match=r"Convolution.forward: x has 1 channels .* expects 2"):
        conv.forward(np.zeros((1, 1, 7, 7)))
    with pytest.raises(ValueError, match=r"Convolution.forward: x must have shape \(N, C, H, W\), got shape \(2, 7, 7\)"):
        conv.forward(np.zeros((2, 7, 7)))
    with pytest.raises(ValueError, match="Convolution.forward: a filter of size 3 does not fit the input height 2"):
        conv.forward(np.zeros((1, 2, 2, 7)))
    with pytest.raises(TypeError, match="Convolution.forward: x must be a float32 or float64 array, got dtype int"):
        conv.forward(np.zeros((1, 2, 7, 7), dtype=int))
    with pytest.raises(ValueError, match="Convolution.forward: x is empty"):
        conv.forward(np.zeros((0, 2, 7, 7)))
    pool = Pooling(2, 2)
    with pytest.raises(ValueError, match=r"Pooling.forward: filter size 2 with stride 2 and pad 0 does not "
                                         r"tile the input width 5"):
        pool.forward(np.zeros((1, 1, 4, 5)))


def test_backward_errors(rng):
    conv = Convolution(rng.standard_normal((3, 2, 3, 3)), np.zeros(3))
    with pytest.raises(RuntimeError, match="Convolution.backward called before forward"):
        conv.backward(np.zeros((1, 3, 2, 2)))
    conv.forward(np.zeros((1, 2, 4, 4)))
    with pytest.raises(ValueError, match=r"Convolution.backward: dout must have shape \(1, 3, 2, 2\), got \(1, 3, 2, 3\)"):
        conv.backward(np.zeros((1, 3, 2, 3)))
    pool = Pooling(2, 2)
    with pytest.raises(RuntimeError, match="Pooling.backward called before forward"):
        pool.backward(np.zeros((1, 1, 1, 1)))
    pool.forward(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ValueError, match=r"Pooling.backward: dout must have shape \(1, 1, 2, 2\)"):
        pool.backward(np.zeros((1, 1, 4, 4)))


def test_repr():
    conv = Convolution(np.zeros((4, 1, 3, 3)), np.zeros(4), stride=1, pad=1)
    assert repr(conv) == "Convolution(W=(4, 1, 3, 3), stride=1, pad=1)"
    assert repr(Pooling(2, 2)) == "Pooling(pool_h=2, pool_w=2, stride=2, pad=0)"

"""The chapter 5 layers: book semantics, gradient checks in both backends, dout never mutated."""

import numpy as np
import pytest

from tests.helpers import check_layer_gradient, tolerance
from zerodl.layers import AddLayer, Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss


def test_apple_shopping_graph():
    apple, apple_num, orange, orange_num, tax = 100, 2, 150, 3, 1.1
    mul_apple, mul_orange, add, mul_tax = MulLayer(), MulLayer(), AddLayer(), MulLayer()
    apple_price = mul_apple.forward(apple, apple_num)
    orange_price = mul_orange.forward(orange, orange_num)
    all_price = add.forward(apple_price, orange_price)
    price = mul_tax.forward(all_price, tax)
    dall_price, dtax = mul_tax.backward(1)
    dapple_price, dorange_price = add.backward(dall_price)
    dorange, dorange_num = mul_orange.backward(dorange_price)
    dapple, dapple_num = mul_apple.backward(dapple_price)
    assert price == pytest.approx(715)
    assert (dapple, dapple_num, dorange, dorange_num, dtax) == pytest.approx((2.2, 110, 3.3, 165, 650))


def test_graph_layers_on_arrays():
    mul = MulLayer()
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    np.testing.assert_array_equal(mul.forward(x, y), [3, 8])
    dx, dy = mul.backward(np.ones(2))
    np.testing.assert_array_equal(dx, y)
    np.testing.assert_array_equal(dy, x)


def test_affine_flattens_nd_input_and_restores_shape(backend, rng, dtype):
    W = rng.standard_normal((12, 5)).astype(dtype)
    b = rng.standard_normal(5).astype(dtype)
    layer = Affine(W, b)
    x = rng.standard_normal((4, 3, 2, 2)).astype(dtype)
    out = layer.forward(x)
    assert out.shape == (4, 5) and out.dtype == dtype
    np.testing.assert_allclose(out, x.reshape(4, -1) @ W + b, **tolerance(dtype))
    dout = rng.standard_normal((4, 5)).astype(dtype)
    dout_before = dout.copy()
    dx = layer.backward(dout)
    assert dx.shape == x.shape and dx.dtype == dtype
    assert layer.dW.shape == W.shape and layer.db.shape == b.shape
    assert layer.dW.dtype == dtype and layer.db.dtype == dtype
    np.testing.assert_array_equal(dout, dout_before)
    assert layer.params["W"] is W and layer.grads["W"] is layer.dW


def test_affine_gradients_numerically(backend, rng):
    W, b = rng.standard_normal((6, 4)), rng.standard_normal(4)
    layer = Affine(W, b)
    x = rng.standard_normal((3, 6))
    dout = rng.standard_normal((3, 4))
    layer.forward(x)
    dx = layer.backward(dout)
    check_layer_gradient(layer.forward, x, dout, dx)
    dW = layer.dW.copy()
    check_layer_gradient(lambda _: layer.forward(x), W, dout, dW)


@pytest.mark.parametrize("cls", [Relu, Sigmoid])
def test_activation_gradients_and_dout_untouched(backend, rng, cls):
    layer = cls()
    x = rng.standard_normal((4, 5))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from ReLU's kink for the numerical check
    out = layer.forward(x)
    dout = rng.standard_normal(x.shape)
    dout_before = dout.copy()
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dout, dout_before)
    assert out.shape == dx.shape == x.shape
    check_layer_gradient(layer.forward, x, dout, dx)


def test_relu_matches_book_semantics(backend):
    layer = Relu()
    x = np.array([[1.0, -0.5], [0.0, 3.0]])
    np.testing.assert_array_equal(layer.forward(x), [[1, 0], [0, 3]])
    np.testing.assert_array_equal(layer.mask, [[False, True], [True, False]])
    np.testing.assert_array_equal(layer.backward(np.ones((2, 2))), [[1, 0], [0, 1]])


def test_softmax_with_loss_labels_and_one_hot(backend, rng, dtype):
    x = rng.standard_normal((6, 4)).astype(dtype)
    labels = np.array([0, 3, 1, 1, 2, 0])
    a, b = SoftmaxWithLoss(), SoftmaxWithLoss()
    la, lb = a.forward(x, labels), b.forward(x, np.eye(4)[labels])
    assert np.asarray(la).dtype == dtype
    np.testing.assert_allclose(la, lb, **tolerance(dtype))
    expected = -np.mean(np.log(a.y[np.arange(6), labels] + 1e-7))
    np.testing.assert_allclose(la, expected, **tolerance(dtype))
    np.testing.assert_allclose(a.backward(), b.backward(), **tolerance(dtype))
    assert a.backward().dtype == dtype


def test_softmax_with_loss_gradient_numerically(backend, rng):
    x = rng.standard_normal((5, 3))
    t = np.array([0, 2, 1, 1, 0])
    layer = SoftmaxWithLoss()
    layer.forward(x, t)
    dx = layer.backward(1)
    check_layer_gradient(lambda a: SoftmaxWithLoss().forward(a, t), x, np.float64(1.0), dx)


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="Relu.backward called before forward"):
        Relu().backward(np.ones(3))


def test_repr():
    assert repr(Affine(np.zeros((3, 2)), np.zeros(2))) == "Affine(W=(3, 2), b=(2,))"
    assert repr(Relu()) == "Relu()"

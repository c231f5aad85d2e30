"""Chapter 4's sigmoid TwoLayerNet against an independent transcription of the book's formulas."""

from __future__ import annotations

import numpy as np
import pytest

from zerodl.networks import TwoLayerNetCh4


@pytest.fixture(autouse=True)
def _keep_global_random_state():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


# ----------------------------------------------------------------------------- the book, transcribed
def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def _cross_entropy(y, t):
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    return -np.sum(np.log(y[np.arange(y.shape[0]), t] + 1e-7)) / y.shape[0]


class BookCh4:
    """ch04/two_layer_net.py: params from outside, the book's predict/loss/gradient."""

    def __init__(self, params):
        self.params = params

    def predict(self, x):
        a1 = np.dot(x, self.params["W1"]) + self.params["b1"]
        z1 = _sigmoid(a1)
        return _softmax(np.dot(z1, self.params["W2"]) + self.params["b2"])

    def loss(self, x, t):
        return _cross_entropy(self.predict(x), t)

    def accuracy(self, x, t):
        y = np.argmax(self.predict(x), axis=1)
        return np.sum(y == np.argmax(t, axis=1)) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        grads = {}
        for key in ("W1", "b1", "W2", "b2"):
            p = self.params[key]
            grad = np.zeros_like(p)
            it = np.nditer(p, flags=["multi_index"], op_flags=["readwrite"])
            while not it.finished:
                idx = it.multi_index
                tmp = p[idx]
                p[idx] = tmp + 1e-4
                f1 = self.loss(x, t)
                p[idx] = tmp - 1e-4
                f2 = self.loss(x, t)
                grad[idx] = (f1 - f2) / (2 * 1e-4)
                p[idx] = tmp
                it.iternext()
            grads[key] = grad
        return grads

    def gradient(self, x, t):
        W1, W2, b1, b2 = self.params["W1"], self.params["W2"], self.params["b1"], self.params["b2"]
        a1 = np.dot(x, W1) + b1
        z1 = _sigmoid(a1)
        y = _softmax(np.dot(z1, W2) + b2)
        dy = (y - t) / x.shape[0]
        grads = {"W2": np.dot(z1.T, dy), "b2": np.sum(dy, axis=0)}
        da1 = (1.0 - _sigmoid(a1)) * _sigmoid(a1) * np.dot(dy, W2.T)
        grads["W1"] = np.dot(x.T, da1)
        grads["b1"] = np.sum(da1, axis=0)
        return grads


def _data(n=6, d=8, c=4, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, d)).astype(np.float32)  # the book's normalised MNIST is float32
    labels = rng.integers(0, c, n)
    onehot = np.eye(c)[labels]
    return x, labels, onehot


def _pair(weight_init_std=0.5, seed=1):
    net = TwoLayerNetCh4(8, 5, 4, weight_init_std=weight_init_std, seed=seed)
    book = BookCh4({k: v.copy() for k, v in net.params.items()})
    return net, book


def test_forward_loss_accuracy_are_the_books(backend):
    net, book = _pair()
    x, labels, onehot = _data()
    np.testing.assert_array_equal(net.predict(x), book.predict(x))
    assert net.loss(x, onehot) == book.loss(x, onehot)
    assert net.loss(x, labels) == book.loss(x, onehot)
    assert net.accuracy(x, onehot) == book.accuracy(x, onehot) == net.accuracy(x, labels)
    # One sample, 1-d, as the book's functions allow.
    np.testing.assert_array_equal(net.predict(x[0]), book.predict(x[0]))
    assert net.loss(x[0], onehot[0]) == book.loss(x[0], onehot[0])


def test_gradient_is_the_books_bit_for_bit(backend):
    net, book = _pair()
    x, labels, onehot = _data()
    got, expected = net.gradient(x, onehot), book.gradient(x, onehot)
    assert list(got) == ["W1", "b1", "W2", "b2"]
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    # Labels give the same numbers as one-hot rows (the book needs one-hot here).
    for key, value in net.gradient(x, labels).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)
    for key, value in net.gradient(x, labels.reshape(-1, 1)).items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_numerical_gradient_is_the_books_and_agrees_with_backprop():
    net, book = _pair()
    x, labels, onehot = _data(n=3)
    numeric, expected = net.numerical_gradient(x, onehot), book.numerical_gradient(x, onehot)
    for key in expected:
        np.testing.assert_array_equal(numeric[key], expected[key], err_msg=key)
    analytic = net.gradient(x, labels)
    for key in analytic:
        np.testing.assert_allclose(numeric[key], analytic[key], atol=1e-6, err_msg=key)
    # The parameters are restored exactly after the perturbations.
    for key in net.params:
        np.testing.assert_array_equal(net.params[key], book.params[key])


def test_training_loop_of_ch04_train_neuralnet_matches(backend):
    net, book = _pair(weight_init_std=0.01)
    x, _, onehot = _data(n=30)
    for i in range(20):
        batch = np.arange(i, i + 10) % 30
        g, bg = net.gradient(x[batch], onehot[batch]), book.gradient(x[batch], onehot[batch])
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= 0.1 * g[key]
            book.params[key] -= 0.1 * bg[key]
        assert net.loss(x[batch], onehot[batch]) == book.loss(x[batch], onehot[batch])
    for key in book.params:
        np.testing.assert_array_equal(net.params[key], book.params[key])


def test_global_seed_gives_the_books_weights_and_float32():
    np.random.seed(0)
    net = TwoLayerNetCh4(784, 50, 10)
    np.random.seed(0)
    W1 = 0.01 * np.random.randn(784, 50)
    W2 = 0.01 * np.random.randn(50, 10)
    np.testing.assert_array_equal(net.params["W1"], W1)
    np.testing.assert_array_equal(net.params["W2"], W2)
    np.testing.assert_array_equal(net.params["b1"], np.zeros(50))
    np.random.seed(0)
    net32 = TwoLayerNetCh4(784, 50, 10, dtype=np.float32)
    assert net32.dtype == np.float32
    np.testing.assert_array_equal(net32.params["W1"], W1.astype(np.float32))
    x, labels, _ = _data(d=784, c=10)
    assert net32.predict(x).dtype == np.float32
    assert all(g.dtype == np.float32 for g in net32.gradient(x, labels).values())


def test_params_stay_connected_and_repr():
    net, _ = _pair()
    w = net.params["W1"]
    net.params["W1"] = np.zeros_like(w)
    assert net.params["W1"] is w and not w.any()
    assert repr(net) == "TwoLayerNetCh4(input_size=8, hidden_size=5, output_size=4, dtype=float64)"
    assert net.config["hidden_size"] == 5


@pytest.mark.parametrize("call, error, fragment", [
    (lambda n, x, t: n.loss(x[:, :3], t), ValueError, r"TwoLayerNetCh4.loss: x must have shape \(N, 8\)"),
    (lambda n, x, t: n.gradient(x, t[:2]), ValueError, "TwoLayerNetCh4.gradient: t must be labels of shape"),
    (lambda n, x, t: n.accuracy(x.astype(int), t), TypeError, "TwoLayerNetCh4.accuracy: x must be a float32"),
    (lambda n, x, t: n.loss(x, t + 10), ValueError, "label 1[0-3] is out of range for 4 classes"),
    (lambda n, x, t: n.predict(np.zeros((0, 8))), ValueError, "TwoLayerNetCh4.predict: x is empty"),
])
def test_bad_input_is_named(call, error, fragment):
    net, _ = _pair()
    x, labels, _ = _data()
    with pytest.raises(error, match=fragment):
        call(net, x, labels)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="hidden_size must be a positive integer"):
        TwoLayerNetCh4(4, 0, 2)
    with pytest.raises(TypeError, match="weight_init_std must be a number"):
        TwoLayerNetCh4(4, 3, 2, weight_init_std="he")
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        TwoLayerNetCh4(4, 3, 2, dtype=np.int32)

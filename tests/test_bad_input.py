"""Bad input at the layer and network boundary: clear errors naming the place, never a Numba
typing traceback, never a silent broadcast. Every case runs in both backends."""

import numpy as np
import pytest

import zerodl
from zerodl import MultiLayerNet, TwoLayerNet
from zerodl.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss


def _affine():
    return Affine(np.zeros((4, 3)), np.zeros(3))


def _forwarded_affine():
    layer = _affine()
    layer.forward(np.ones((2, 4)))
    return layer


def _net():
    return TwoLayerNet(4, 3, 2, seed=0)


CASES = [
    # (id, callable, exception, message fragments)
    ("affine-columns", lambda: _affine().forward(np.ones((2, 5))), ValueError,
     ["Affine.forward", "5 features", "expects 4", "(4, 3)"]),
    ("affine-1d", lambda: _affine().forward(np.ones(4)), ValueError, ["Affine.forward", "(N, 4)", "x[np.newaxis]"]),
    ("affine-int", lambda: _affine().forward(np.ones((2, 4), dtype=int)), TypeError,
     ["Affine.forward", "float32 or float64", "int64"]),
    ("affine-object", lambda: _affine().forward(np.array([[1, "a", None, 2]], dtype=object)), TypeError,
     ["Affine.forward", "object"]),
    ("affine-empty", lambda: _affine().forward(np.ones((0, 4))), ValueError, ["Affine.forward", "empty"]),
    ("affine-dout-shape", lambda: _forwarded_affine().backward(np.ones((2, 4))), ValueError,
     ["Affine.backward", "dout", "(2, 3)", "(2, 4)"]),
    ("affine-bias", lambda: Affine(np.zeros((4, 3)), np.zeros(4)), ValueError, ["Affine", "b", "(3,)", "(4,)"]),
    ("affine-W-1d", lambda: Affine(np.zeros(4), np.zeros(4)), ValueError, ["Affine", "W", "(D, H)"]),
    ("relu-int", lambda: Relu().forward(np.arange(3)), TypeError, ["Relu.forward", "int64"]),
    ("relu-bool", lambda: Relu().forward(np.ones(3, dtype=bool)), TypeError, ["Relu.forward", "bool"]),
    ("sigmoid-complex", lambda: Sigmoid().forward(np.ones(2, dtype=complex)), TypeError, ["Sigmoid.forward", "complex"]),
    ("relu-dout-shape", lambda: (lambda r: (r.forward(np.ones((2, 2))), r.backward(np.ones(3))))(Relu()),
     ValueError, ["Relu.backward", "(2, 2)", "(3,)"]),
    ("softmax-label-range", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 3])), ValueError,
     ["SoftmaxWithLoss.forward", "label 3", "3 classes", "0..2"]),
    ("softmax-negative-label", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([-1, 0])),
     ValueError, ["label -1"]),
    ("softmax-batch-mismatch", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0, 1, 2])),
     ValueError, ["SoftmaxWithLoss.forward", "(2,)", "(2, 3)", "(3,)"]),
    ("softmax-float-labels", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([0.0, 1.0])),
     TypeError, ["integers", "float64"]),
    ("softmax-bad-one-hot", lambda: SoftmaxWithLoss().forward(np.zeros((2, 3)), np.array([[1, 1, 0], [0, 1, 0]])),
     ValueError, ["one-hot", "row 0"]),
    ("softmax-1d-scores", lambda: SoftmaxWithLoss().forward(np.zeros(3), np.array([1])), ValueError,
     ["SoftmaxWithLoss.forward", "(N, C)"]),
    ("softmax-string-labels", lambda: SoftmaxWithLoss().forward(np.zeros((1, 3)), np.array(["a"])), TypeError,
     ["SoftmaxWithLoss.forward", "dtype"]),
    ("net-columns", lambda: _net().loss(np.ones((2, 5)), np.array([0, 1])), ValueError, ["Affine.forward", "5 features"]),
    ("net-labels", lambda: _net().gradient(np.ones((2, 4)), np.array([0, 2])), ValueError, ["label 2", "2 classes"]),
    ("net-batch", lambda: _net().loss(np.ones((3, 4)), np.array([0, 1])), ValueError, ["(3,)", "(2,)"]),
    ("accuracy-batch", lambda: _net().accuracy(np.ones((3, 4)), np.array([0, 1])), ValueError,
     ["accuracy", "3 samples", "t has 2"]),
    ("net-size", lambda: TwoLayerNet(0, 3, 2), ValueError, ["input_size", "positive integer", "0"]),
    ("net-dtype", lambda: TwoLayerNet(4, 3, 2, dtype=np.int32), TypeError, ["float32 or float64", "int32"]),
    ("net-activation", lambda: MultiLayerNet(4, [3], 2, activation="tanh"), ValueError, ["activation", "tanh"]),
    ("net-init", lambda: MultiLayerNet(4, [3], 2, weight_init_std="glorot"), ValueError, ["weight_init_std", "glorot"]),
    ("net-seed", lambda: TwoLayerNet(4, 3, 2, seed="abc"), TypeError, ["seed", "str"]),
    ("optimizer-lr", lambda: zerodl.SGD(lr=-1), ValueError, ["SGD", "lr", "-1"]),
    ("optimizer-missing-grad", lambda: zerodl.SGD().update({"W1": np.zeros(2)}, {}), KeyError, ["SGD.update", "W1"]),
    ("optimizer-shape", lambda: zerodl.Adam().update({"W1": np.zeros(2)}, {"W1": np.zeros(3)}), ValueError,
     ["Adam.update", "W1", "(3,)", "(2,)"]),
    ("optimizer-name", lambda: zerodl.optimizer.get_optimizer("lbfgs"), ValueError, ["lbfgs", "Adam"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error(backend, case):
    _, fn, exc, fragments = case
    with pytest.raises(exc) as info:
        fn()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "numba" not in message.lower() and "typing" not in message.lower()


def test_float32_input_meets_float64_net(backend):
    """The book's float32 images and float64 weights: converted to the net's dtype, not an error."""
    net = _net()
    assert np.asarray(net.loss(np.ones((2, 4), dtype=np.float32), np.array([0, 1]))).dtype == np.float64

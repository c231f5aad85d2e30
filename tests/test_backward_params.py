"""backward_params (the first layer's backward without dx) and gradient's use of it."""

import numpy as np
import pytest

import zerodl
from zerodl.layers import Affine, Convolution, Relu


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_affine_and_convolution_set_the_same_gradients(backend):
    rng = np.random.default_rng(0)
    cases = [
        (Affine, (rng.standard_normal((12, 5)), rng.standard_normal(5)), {}, rng.standard_normal((4, 3, 2, 2))),
        (Convolution, (rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)), {"stride": 1, "pad": 1},
         rng.standard_normal((2, 2, 5, 5))),
    ]
    with zerodl.use_backend(backend):
        for cls, (W, b), options, x in cases:
            full, params_only = cls(W.copy(), b.copy(), **options), cls(W.copy(), b.copy(), **options)
            out = full.forward(x)
            params_only.forward(x)
            dout = rng.standard_normal(out.shape)
            dx = full.backward(dout)
            assert dx.shape == x.shape
            assert params_only.backward_params(dout) is None
            np.testing.assert_array_equal(params_only.dW, full.dW)
            np.testing.assert_array_equal(params_only.db, full.db)


def test_backward_params_checks_dout_like_backward():
    layer = Affine(np.ones((3, 2)), np.zeros(2))
    layer.forward(np.ones((4, 3)))
    with pytest.raises(ValueError, match="Affine"):
        layer.backward_params(np.ones((4, 5)))


def test_layers_without_their_own_use_backward():
    layer = Relu()
    layer.forward(np.array([[-1.0, 2.0]]))
    assert layer.backward_params(np.array([[3.0, 4.0]])) is None
    np.testing.assert_array_equal(layer.mask, [[True, False]])


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("make", [
    lambda: zerodl.TwoLayerNet(6, 5, 3, seed=1),
    lambda: zerodl.SimpleConvNet((1, 8, 8), {"filter_num": 3, "filter_size": 3, "pad": 0, "stride": 1},
                                 hidden_size=4, output_size=3, seed=1),
], ids=["two_layer", "simple_conv"])
def test_gradient_equals_the_full_backward_pass(backend, make):
    # gradient() skips the first layer's dx; the parameter gradients are those of the book's loop
    # (every layer's backward, the first layer's dx computed and thrown away).
    net = make()
    rng = np.random.default_rng(2)
    x = rng.random((4, 1, 8, 8)) if isinstance(net, zerodl.SimpleConvNet) else rng.random((4, 6))
    t = np.array([0, 1, 2, 1])
    with zerodl.use_backend(backend):
        grads = net.gradient(x, t)
        net.loss(x, t, train_flg=True)
        dout = net.last_layer.backward(1)
        for layer in reversed(list(net.layers.values())):
            dout = layer.backward(dout)
        assert dout.shape == x.shape
        for name, layer, attr in net._param_index:
            np.testing.assert_array_equal(grads[name], getattr(layer, "d" + attr), err_msg=name)

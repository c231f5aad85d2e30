"""TwoLayerNet / MultiLayerNet: the book's numbers in both backends, seeds, dtypes, in-place updates."""

import numpy as np
import pytest

import zerodl
from tests import book_reference as book
from zerodl import MultiLayerNet, TwoLayerNet
from zerodl.gradient import gradient_check
from zerodl.optimizer import OPTIMIZERS

REL = 1e-10


def _rel_close(a, b, rel=REL):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(b)), 1e-12)
    assert np.max(np.abs(a - b)) <= rel * scale, np.max(np.abs(a - b)) / scale


def _data(rng, n=12, d=20, c=5):
    x = rng.standard_normal((n, d))
    labels = rng.integers(0, c, n)
    return x, labels, np.eye(c)[labels]


@pytest.mark.parametrize("one_hot", [False, True], ids=["labels", "one-hot"])
def test_two_layer_net_matches_book(backend, rng, one_hot):
    net = TwoLayerNet(20, 7, 5, weight_init_std=0.5, seed=1)
    x, labels, onehot = _data(rng)
    t = onehot if one_hot else labels
    params = {k: v.copy() for k, v in net.params.items()}
    ref_loss, ref_grads = book.mlp_loss_and_grads(params, x, t, 2)
    _rel_close(net.loss(x, t), ref_loss)
    grads = net.gradient(x, t)
    assert set(grads) == {"W1", "b1", "W2", "b2"}
    for k in grads:
        _rel_close(grads[k], ref_grads[k])
    assert net.accuracy(x, t) == book.mlp_accuracy(params, x, t, 2)


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
@pytest.mark.parametrize("weight_decay_lambda", [0.0, 0.1])
def test_multi_layer_net_matches_book(backend, rng, activation, weight_decay_lambda):
    net = MultiLayerNet(20, [9, 8, 7], 5, activation=activation, weight_init_std=activation,
                        weight_decay_lambda=weight_decay_lambda, seed=2)
    x, labels, onehot = _data(rng)
    params = {k: v.copy() for k, v in net.params.items()}
    for t in (labels, onehot):
        ref_loss, ref_grads = book.mlp_loss_and_grads(params, x, t, 4, activation, weight_decay_lambda)
        _rel_close(net.loss(x, t), ref_loss)
        grads = net.gradient(x, t)
        for k in ref_grads:
            _rel_close(grads[k], ref_grads[k])
        assert net.accuracy(x, t) == book.mlp_accuracy(params, x, t, 4, activation)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_training_steps_match_book_optimizers(backend, rng, name):
    hyper = {"sgd": {"lr": 0.1}, "adam": {"lr": 0.01}}.get(name, {"lr": 0.05})
    net = TwoLayerNet(20, 7, 5, weight_init_std=0.3, seed=3)
    ref_params = {k: v.copy() for k, v in net.params.items()}
    opt = zerodl.optimizer.get_optimizer(name, **hyper)
    ref_opt = book.BookOptimizer(name, **hyper)
    x, labels, _ = _data(rng)
    for _ in range(5):
        opt.update(net.params, net.gradient(x, labels))
        _, ref_grads = book.mlp_loss_and_grads(ref_params, x, labels, 2)
        ref_opt.update(ref_params, ref_grads)
    for k in ref_params:
        _rel_close(net.params[k], ref_params[k], rel=1e-9)


def test_update_keeps_layers_and_params_one_array(backend, rng):
    net = TwoLayerNet(20, 7, 5, seed=0)
    x, labels, _ = _data(rng)
    W1 = net.params["W1"]
    before = W1.copy()
    zerodl.SGD(lr=0.5).update(net.params, net.gradient(x, labels))
    assert net.layers["Affine1"].W is net.params["W1"] is W1
    assert not np.array_equal(W1, before)


def test_params_assignment_copies_into_the_layer_array():
    net = TwoLayerNet(4, 3, 2, seed=0)
    W1 = net.params["W1"]
    net.params["W1"] = np.ones((4, 3))
    assert net.params["W1"] is W1 and net.layers["Affine1"].W is W1 and np.all(W1 == 1)
    with pytest.raises(ValueError, match=r"params\['W1'\]: expected shape \(4, 3\)"):
        net.params["W1"] = np.ones((3, 4))
    with pytest.raises(KeyError, match="unknown parameter 'W9'"):
        net.params["W9"] = np.ones(1)


def test_seed_and_dtype():
    a, b = TwoLayerNet(10, 6, 3, seed=7), TwoLayerNet(10, 6, 3, seed=7)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    c = TwoLayerNet(10, 6, 3, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(a.params["W1"], c.params["W1"])
    f32 = TwoLayerNet(10, 6, 3, seed=7, dtype="float32")
    assert all(p.dtype == np.float32 for p in f32.params.values())
    np.testing.assert_allclose(f32.params["W1"], a.params["W1"], rtol=1e-6)
    m = MultiLayerNet(10, [6, 6], 3, weight_init_std="he", seed=1)
    assert abs(m.params["W2"].std() - np.sqrt(2 / 6)) < 0.3


def test_float32_network_stays_float32(backend, rng):
    net = MultiLayerNet(20, [8, 8], 5, seed=0, dtype=np.float32)
    x, labels, _ = _data(rng)
    loss = net.loss(x.astype(np.float32), labels)
    assert np.asarray(loss).dtype == np.float32
    grads = net.gradient(x, labels)  # float64 input is converted to the net's dtype
    assert all(g.dtype == np.float32 for g in grads.values())
    zerodl.Adam().update(net.params, grads)
    assert all(p.dtype == np.float32 for p in net.params.values())


@pytest.mark.parametrize("make", [
    lambda: TwoLayerNet(6, 5, 3, weight_init_std=0.5, seed=0),
    lambda: MultiLayerNet(6, [5, 4], 3, activation="sigmoid", weight_decay_lambda=0.1, seed=0),
    lambda: MultiLayerNet(6, [5, 4], 3, activation="relu", seed=0),
], ids=["two-layer", "mlp-sigmoid-decay", "mlp-relu"])
def test_gradient_check(backend, rng, make):
    net = make()
    x = rng.standard_normal((3, 6))
    t = np.array([0, 2, 1])
    diffs = gradient_check(net, x, t)
    assert set(diffs) == set(net.params)
    assert max(diffs.values()) < 2e-5, diffs


def test_networks_agree_across_backends(rng):
    net = MultiLayerNet(20, [10, 10], 5, seed=4)
    x, labels, _ = _data(rng)
    with zerodl.use_backend("numpy"):
        loss_np, g_np = net.loss(x, labels), net.gradient(x, labels)
    with zerodl.use_backend("numba"):
        loss_nb, g_nb = net.loss(x, labels), net.gradient(x, labels)
    _rel_close(loss_nb, loss_np)
    for k in g_np:
        _rel_close(g_nb[k], g_np[k])


def test_repr_shows_the_stack():
    text = repr(MultiLayerNet(4, [3], 2, weight_decay_lambda=0.1))
    assert "Affine1" in text and "Activation_function1" in text and "SoftmaxWithLoss" in text
    assert "weight_decay_lambda=0.1" in text


def test_sequential_custom_stack(backend, rng):
    from zerodl.layers import Affine, Sigmoid

    W1, W2 = rng.standard_normal((4, 3)), rng.standard_normal((3, 2))
    net = zerodl.Sequential([Affine(W1, np.zeros(3)), Sigmoid(), Affine(W2, np.zeros(2))])
    assert list(net.layers) == ["Affine1", "Sigmoid1", "Affine2"]
    assert list(net.params) == ["W1", "b1", "W2", "b2"]
    assert net.params["W1"] is W1
    x, t = rng.standard_normal((5, 4)), np.array([0, 1, 1, 0, 1])
    assert max(gradient_check(net, x, t).values()) < 1e-6
    assert net.accuracy(x, t, batch_size=2) == net.accuracy(x, t)

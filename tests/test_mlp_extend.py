"""MultiLayerNetExtend: equal to the book's MultiLayerNetExtend (given the same parameters, batch and
dropout masks), gradient checks with and without BatchNorm/Dropout in both backends, running
statistics exposed as buffers, the book's argument spelling.

Dropout and gradient checks: a numerical gradient evaluates the loss thousands of times, each of
which would draw new masks. ``net.predict(x, train_flg=True); net.freeze_dropout()`` first makes
every Dropout layer reuse its last mask, so the loss is a deterministic function of the parameters.
"""

import itertools

import numpy as np
import pytest

import zerodl
from tests.book_chapter6 import BookMultiLayerNetExtend
from zerodl import Adam, MultiLayerNet, MultiLayerNetExtend
from zerodl.gradient import gradient_check

COMBOS = list(itertools.product([False, True], [False, True], ["relu", "sigmoid"]))


def _data(rng, n=6, d=5, c=3):
    return rng.standard_normal((n, d)), rng.integers(0, c, n)


def _masks(net):
    return {int(name[len("Dropout"):]): layer.mask.copy()
            for name, layer in net.layers.items() if name.startswith("Dropout")}


@pytest.mark.parametrize("use_bn, use_dropout, activation", COMBOS)
def test_loss_gradient_and_running_stats_equal_the_book(backend, rng, use_bn, use_dropout, activation):
    x, t = _data(rng)
    net = MultiLayerNetExtend(5, [4, 6], 3, activation=activation, weight_decay_lambda=0.05,
                              use_dropout=use_dropout, dropout_ration=0.3, use_batchnorm=use_bn, seed=3)
    # Give BatchNorm non-trivial gamma/beta so their gradients are exercised properly.
    for name in net.params:
        if name.startswith(("gamma", "beta")):
            net.params[name] = net.params[name] + rng.standard_normal(net.params[name].shape) * 0.3
    params0 = {k: v.copy() for k, v in net.params.items()}

    loss = net.loss(x, t, train_flg=True)
    masks1 = _masks(net)
    grads = net.gradient(x, t)
    masks2 = _masks(net)
    masks = {k: [masks1[k], masks2[k]] for k in masks1}

    book = BookMultiLayerNetExtend(params0, 2, activation, 0.05, use_dropout, 0.3, use_bn, masks)
    book_loss = book.loss(x, t, train_flg=True)
    book_grads = book.gradient(x, t)

    np.testing.assert_allclose(loss, book_loss, rtol=1e-12)
    assert sorted(grads) == sorted(book_grads)
    for key in grads:
        np.testing.assert_allclose(grads[key], book_grads[key], rtol=1e-9, atol=1e-12, err_msg=key)
    book_stats = book.running_stats()
    assert sorted(net.buffers()) == sorted(book_stats)
    for key, value in net.buffers().items():
        np.testing.assert_allclose(value, book_stats[key], rtol=1e-12, atol=1e-15, err_msg=key)
    # Inference: running statistics and the (1 - ratio) dropout scaling.
    np.testing.assert_allclose(net.loss(x, t), book.loss(x, t), rtol=1e-12)
    np.testing.assert_allclose(net.predict(x), book.predict(x), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("use_bn", [False, True], ids=["plain", "batchnorm"])
@pytest.mark.parametrize("use_dropout", [False, True], ids=["", "dropout"])
def test_gradient_check(backend, rng, use_bn, use_dropout):
    x, t = _data(rng, n=5, d=4)
    net = MultiLayerNetExtend(4, [5, 3], 3, weight_decay_lambda=0.1, use_batchnorm=use_bn,
                              use_dropout=use_dropout, dropout_ratio=0.2, seed=7)
    # Zero biases put a unit whose inputs were all dropped exactly on ReLU's kink, where the
    # central difference sees half a slope; nonzero biases keep every unit off the kink.
    for name in net.params:
        if name.startswith("b"):
            net.params[name] = rng.uniform(0.05, 0.2, net.params[name].shape)
    if use_dropout:
        net.predict(x, train_flg=True)
        net.freeze_dropout()
    diff = gradient_check(net, x, t)
    assert set(diff) == set(net.params)
    if use_bn:
        assert {"gamma1", "beta1", "gamma2", "beta2"} <= set(diff)
    assert max(diff.values()) < 1e-5, diff
    net.unfreeze_dropout()


def test_same_seed_same_weights_as_multilayernet():
    a = MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True, use_dropout=True, seed=12)
    b = MultiLayerNet(6, [5, 4], 3, seed=12)
    for key in b.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
    np.testing.assert_array_equal(a.params["gamma1"], np.ones(5))
    np.testing.assert_array_equal(a.params["beta2"], np.zeros(4))


def test_layer_order_and_names_are_the_books():
    net = MultiLayerNetExtend(4, [3, 3], 2, use_batchnorm=True, use_dropout=True)
    assert list(net.layers) == [
        "Affine1", "BatchNorm1", "Activation_function1", "Dropout1",
        "Affine2", "BatchNorm2", "Activation_function2", "Dropout2", "Affine3",
    ]
    assert list(net.params) == ["W1", "b1", "gamma1", "beta1", "W2", "b2", "gamma2", "beta2", "W3", "b3"]
    assert net.layers["BatchNorm2"].gamma is net.params["gamma2"]


def test_same_seed_same_dropout_masks_in_both_backends(rng):
    x, t = _data(rng)
    masks = []
    for backend in zerodl.BACKENDS:
        with zerodl.use_backend(backend):
            net = MultiLayerNetExtend(5, [8, 8], 3, use_dropout=True, seed=21)
            net.gradient(x, t)
            net.gradient(x, t)
            masks.append(_masks(net))
    for k in masks[0]:
        np.testing.assert_array_equal(masks[0][k], masks[1][k])


def test_training_updates_parameters_in_place_and_backends_agree(rng):
    x, t = _data(rng, n=12)
    results = []
    for backend in zerodl.BACKENDS:
        with zerodl.use_backend(backend):
            net = MultiLayerNetExtend(5, [6], 3, use_batchnorm=True, use_dropout=True, seed=2)
            gamma, W1 = net.params["gamma1"], net.params["W1"]
            opt = Adam(lr=0.01)
            for _ in range(5):
                opt.update(net.params, net.gradient(x, t))
            assert net.layers["BatchNorm1"].gamma is gamma is net.params["gamma1"]
            assert net.layers["Affine1"].W is W1
            results.append(({k: v.copy() for k, v in net.params.items()}, net.buffers()))
    for key in results[0][0]:
        np.testing.assert_allclose(results[1][0][key], results[0][0][key], rtol=1e-10, atol=1e-12)
    for key in results[0][1]:
        np.testing.assert_allclose(results[1][1][key], results[0][1][key], rtol=1e-10, atol=1e-12)


def test_buffers_save_and_restore_inference(backend, rng):
    x, t = _data(rng, n=10)
    net = MultiLayerNetExtend(5, [6, 4], 3, use_batchnorm=True, seed=1)
    assert sorted(net.buffers()) == ["running_mean1", "running_mean2", "running_var1", "running_var2"]
    for _ in range(3):
        net.gradient(x, t)
    assert net.buffers()["running_mean1"] is net.layers["BatchNorm1"].running_mean  # live arrays
    saved_params = {k: v.copy() for k, v in net.params.items()}
    saved_buffers = {k: v.copy() for k, v in net.buffers().items()}

    clone = MultiLayerNetExtend(**net.config)
    clone.params.update(saved_params)
    assert not np.allclose(clone.predict(x), net.predict(x))  # zero running stats differ
    clone.load_buffers(saved_buffers)
    np.testing.assert_array_equal(clone.predict(x), net.predict(x))
    with pytest.raises(KeyError, match="unknown buffer 'running_mean9'"):
        clone.load_buffers({"running_mean9": np.zeros(6)})
    with pytest.raises(ValueError, match=r"'running_var1' expected shape \(6,\)"):
        clone.load_buffers({"running_var1": np.zeros(5)})


def test_no_batchnorm_no_buffers():
    assert MultiLayerNetExtend(3, [2], 2, use_dropout=True).buffers() == {}


def test_float32_net_stays_float32(backend, rng):
    x, t = _data(rng)
    net = MultiLayerNetExtend(5, [4], 3, use_batchnorm=True, use_dropout=True, dtype=np.float32, seed=0)
    grads = net.gradient(x.astype(np.float32), t)
    assert {g.dtype for g in grads.values()} == {np.dtype(np.float32)}
    assert {b.dtype for b in net.buffers().values()} == {np.dtype(np.float32)}
    assert net.predict(x.astype(np.float32)).dtype == np.float32


def test_dropout_ratio_spellings():
    assert MultiLayerNetExtend(3, [2], 2, use_dropout=True, dropout_ration=0.2).layers["Dropout1"].dropout_ratio == 0.2
    assert MultiLayerNetExtend(3, [2], 2, use_dropout=True, dropout_ratio=0.3).layers["Dropout1"].dropout_ratio == 0.3
    net = MultiLayerNetExtend(3, [2], 2, use_dropout=True, dropout_ration=0.3, dropout_ratio=0.3)
    assert net.config["dropout_ration"] == 0.3
    with pytest.raises(ValueError, match="dropout_ration=0.2 and dropout_ratio=0.3 disagree"):
        MultiLayerNetExtend(3, [2], 2, dropout_ration=0.2, dropout_ratio=0.3)
    with pytest.raises(ValueError, match=r"dropout ratio must be a number in \[0, 1\]"):
        MultiLayerNetExtend(3, [2], 2, dropout_ratio=2)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"activation": "tanh"}, "activation must be one of relu, sigmoid"),
        ({"hidden_size_list": [3, 0]}, "hidden_size_list entry must be a positive integer"),
        ({"weight_init_std": "lecun"}, "weight_init_std must be"),
        ({"weight_decay_lambda": -1}, "weight_decay_lambda must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"input_size": 3, "hidden_size_list": [2], "output_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        MultiLayerNetExtend(**args)


def test_freeze_dropout_before_any_forward_is_an_error():
    net = MultiLayerNetExtend(3, [2], 2, use_dropout=True)
    with pytest.raises(RuntimeError, match="no training forward yet"):
        net.freeze_dropout()


def test_repr_lists_the_stack():
    text = repr(MultiLayerNetExtend(3, [2], 2, use_batchnorm=True, use_dropout=True, weight_decay_lambda=0.1))
    assert "(BatchNorm1): BatchNormalization(2, momentum=0.9)" in text
    assert "(Dropout1): Dropout(dropout_ratio=0.5)" in text

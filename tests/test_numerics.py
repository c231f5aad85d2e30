"""Numerical safety: softmax / cross-entropy stay finite for logits of +-1e4 and probabilities of
exactly 0 (layers, whole networks, fused steps, both backends), and a NaN/inf during training stops
the Trainer naming the step and the parameter, with the last good parameters kept."""

from __future__ import annotations

import math

import numpy as np
import pytest

import zerodl
from zerodl import checkpoint as ck
from zerodl import cli
from zerodl.datasets import load_digits
from zerodl.functions import cross_entropy_error, softmax
from zerodl.kernels.softmax_loss import CROSS_ENTROPY_DELTA
from zerodl.layers import Sigmoid, SoftmaxWithLoss
from zerodl.trainer import Trainer

#: Loss of a sample whose true class gets probability exactly 0: -log(0 + 1e-7), the book's delta.
LOSS_AT_ZERO = -math.log(CROSS_ENTROPY_DELTA)


def _extreme_logits(dtype):
    # Row 0: the true class far below the others (its probability underflows to exactly 0);
    # row 1: the true class far above (probability exactly 1); row 2: a tie at +1e4.
    x = np.array([[-1e4, 1e4, 0.0], [1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    return x, np.array([0, 0, 1])


def test_softmax_with_loss_at_plus_minus_1e4(backend, dtype):
    x, t = _extreme_logits(dtype)
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, t)
    dx = layer.backward(1)
    assert np.isfinite(loss) and np.all(np.isfinite(dx)) and np.all(np.isfinite(layer.y))
    assert layer.y[0, 0] == 0.0 and layer.y[1, 0] == 1.0
    np.testing.assert_allclose(layer.y.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(float(loss), (LOSS_AT_ZERO + 0 + math.log(2)) / 3, rtol=1e-4)
    one_hot = np.eye(3, dtype=dtype)[t]
    np.testing.assert_allclose(float(SoftmaxWithLoss().forward(x, one_hot)), float(loss), rtol=1e-6)


def test_book_functions_at_probability_zero():
    y = np.array([[0.0, 1.0], [1.0, 0.0]])
    assert cross_entropy_error(y, np.array([0, 0])) == pytest.approx(LOSS_AT_ZERO / 2)
    assert np.isfinite(cross_entropy_error(np.array([0.0, 1.0]), np.array([1.0, 0.0])))
    p = softmax(np.array([[-1e4, 1e4], [1e4, 1e4]]))
    np.testing.assert_array_equal(p, [[0.0, 1.0], [0.5, 0.5]])


def test_sigmoid_saturates_without_nan(backend, dtype):
    layer = Sigmoid()
    out = layer.forward(np.array([-1e4, 0.0, 1e4], dtype=dtype))
    np.testing.assert_array_equal(out, np.array([0.0, 0.5, 1.0], dtype=dtype))
    assert np.all(np.isfinite(layer.backward(np.ones(3, dtype=dtype))))


@pytest.mark.parametrize("net_kind", ["two-layer", "extend"])
def test_whole_networks_with_logits_of_1e4(backend, dtype, net_kind):
    if net_kind == "two-layer":
        net = zerodl.TwoLayerNet(4, 5, 3, dtype=dtype, seed=0)
    else:
        net = zerodl.MultiLayerNetExtend(4, [5], 3, use_dropout=True, use_batchnorm=True, dtype=dtype, seed=0)
    last = net.params[[k for k in net.params if k.startswith("W")][-1]]
    last *= 1e4 / np.abs(last).max()  # in place: the layers share the array
    x = np.random.default_rng(0).normal(size=(6, 4)).astype(dtype) * 50
    t = np.array([0, 1, 2, 0, 1, 2])
    logits = net.predict(x)
    assert np.abs(logits).max() > 1e3, "the test must reach extreme logits"
    assert np.isfinite(net.loss(x, t))
    grads = net.gradient(x, t)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    loss = net.train_step(x, t, zerodl.SGD(lr=1e-6))  # fused on the numba backend for the MLP
    assert np.isfinite(loss)
    assert all(np.all(np.isfinite(p)) for p in net.params.values())


# -- the NaN / inf stop (NumPy's own overflow warnings of the diverging step are expected) -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _run(digits, steps=None, x_train=None, weight_init_std=0.01, net_kind="two-layer", **kw):
    (xtr, ttr), (xte, tte) = digits
    kw.setdefault("optimizer", "sgd")
    if net_kind == "two-layer":  # the fused step
        net = zerodl.TwoLayerNet(64, 20, 10, weight_init_std=weight_init_std, seed=0)
    else:  # layer by layer, with Dropout generators the replay must rewind
        net = zerodl.MultiLayerNetExtend(64, [20], 10, weight_init_std=weight_init_std, use_dropout=True,
                                         dropout_ration=0.3, seed=0)
    trainer = Trainer(net, xtr if x_train is None else x_train, ttr, xte, tte, epochs=5,
                      mini_batch_size=50, verbose=False, seed=7, **kw)
    if steps is None:
        return trainer
    for _ in range(steps):
        trainer.train_step()
    return trainer


def _first_draw(seed, n, batch, index):
    rng = np.random.default_rng(seed)
    for it in range(10_000):
        if index in rng.integers(0, n, size=batch):
            return it
    raise AssertionError("never drawn")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("record_loss, net_kind", [("after_update", "two-layer"), ("before_update", "two-layer"),
                                                   ("after_update", "dropout")])
def test_overflowing_sample_names_step_and_gradients_and_keeps_last_good_params(
        backend, digits, monkeypatch, record_loss, net_kind):
    # Snapshots every 4 steps: the guard must replay across several steps to find the culprit.
    monkeypatch.setattr(ck.NonFiniteGuard, "snapshot_every", 4)
    (xtr, _), _ = digits
    x = xtr.astype(np.float64)
    # A sample first drawn a few snapshots in, not at a snapshot boundary.
    bad = next(i for i in range(len(x)) if _first_draw(7, len(x), 50, i) > 8
               and _first_draw(7, len(x), 50, i) % 4)
    failing = _first_draw(7, len(x), 50, bad)
    x[bad] = np.finfo(np.float64).max / 2  # finite (passes the data check); x @ W1 overflows
    trainer = _run(digits, x_train=x, weight_init_std=1.0, optimizer_param={"lr": 0.1}, record_loss=record_loss,
                   net_kind=net_kind)
    with pytest.raises(ck.NonFiniteError) as info:
        trainer.train()
    err = info.value
    assert err.iteration == failing == trainer.current_iter
    assert f"iteration {failing}" in str(err)
    assert f"x_train[{bad}]" in err.culprits and f"input samples x_train[{bad}] hold values up to" in str(err)
    assert {"grad:W1", "grad:b1", "grad:W2", "grad:b2"} & set(err.culprits)
    assert "the gradient of W1" in str(err)
    assert "last good" in str(err)
    assert len(trainer.train_loss_list) == failing
    # The parameters are exactly those of a run stopped just before the failing step.
    reference = _run(digits, steps=failing, x_train=x, weight_init_std=1.0, optimizer_param={"lr": 0.1},
                     record_loss=record_loss, net_kind=net_kind)
    for key, value in reference.network.params.items():
        np.testing.assert_array_equal(trainer.network.params[key], value, err_msg=key)
    assert trainer.rng.bit_generator.state == reference.rng.bit_generator.state
    for name, layer in reference.network.layers.items():
        if hasattr(layer, "rng"):  # the Dropout generators are rewound too
            assert trainer.network.layers[name].rng.bit_generator.state == layer.rng.bit_generator.state
    assert trainer.train_loss_list == reference.train_loss_list


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_diverging_learning_rate_names_the_update(backend, digits):
    trainer = _run(digits, optimizer_param={"lr": 1e300})
    with pytest.raises(ck.NonFiniteError) as info:
        trainer.train()
    message = str(info.value)
    assert info.value.iteration == 0 and "iteration 0" in message
    assert "SGD update" in message and "learning rate 1e+300" in message
    assert info.value.culprits[0].startswith("update:")
    fresh = zerodl.TwoLayerNet(64, 20, 10, seed=0)
    for key, value in fresh.params.items():  # nothing was applied: the initial weights are kept
        np.testing.assert_array_equal(trainer.network.params[key], value)


def test_nan_in_data_is_refused_at_construction(digits):
    (xtr, _), _ = digits
    x = xtr.copy()
    x[123, 5] = np.nan
    x[400, 0] = np.inf
    with pytest.raises(ValueError, match=r"x_train\[123\] contains NaN or inf \(2 of 1347 samples"):
        _run(digits, x_train=x)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_nan_slipping_into_data_after_construction_names_the_sample(backend, digits):
    (xtr, _), _ = digits
    x = xtr.copy()
    trainer = _run(digits, x_train=x, optimizer_param={"lr": 0.1})
    x[77] = np.nan  # behind the Trainer's back
    with pytest.raises(ck.NonFiniteError) as info:
        trainer.train()
    assert "x_train[77]" in info.value.culprits and "input samples x_train[77]" in str(info.value)
    assert info.value.iteration == _first_draw(7, len(x), 50, 77)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_cli_reports_divergence_as_one_error_line(capsys, tmp_path):
    code = cli.main(["train", "--epochs", "1", "--hidden", "10", "--optimizer", "sgd", "--lr", "1e300",
                     "--backend", "numpy"])
    err = capsys.readouterr().err
    assert code == 1
    assert "zerodl train: error: Trainer: the loss became" in err and "iteration 0" in err
    assert "Traceback" not in err

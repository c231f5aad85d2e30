"""A batch holding NaN/±inf is refused by every training method before anything changes (issue 19).

``train_step`` and ``gradient`` of every network, both backends, float32 and float64, NaN / +inf /
-inf in the first and the last sample: a :class:`NonFiniteInputError` (a ValueError) naming the
method, the sample and what it holds; parameters, optimizer state and ``iter``, batch-norm running
statistics and Dropout's random streams exactly as before (a network that saw the refused batch
then trains bit for bit as one that never did). ``predict`` and ``loss`` still let NaN through.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import zerodl
from zerodl._validate import NonFiniteInputError
from zerodl.layers import Affine, BatchNormalization, Layer, Relu
from zerodl.layers.core import product_propagates_nonfinite
from zerodl.networks import (
    DeepConvNet,
    MultiLayerNet,
    MultiLayerNetExtend,
    Sequential,
    SimpleConvNet,
    TwoLayerNet,
)
from zerodl.networks import fused as fused_module
from zerodl.networks.two_layer_ch4 import TwoLayerNetCh4
from zerodl.optimizer import Adam

N, D, C = 5, 12, 3
SPECIALS = {"NaN": np.nan, "+inf": np.inf, "-inf": -np.inf}


class Doubler(Layer):
    """A user's layer without a fused piece: keeps its network on the generic path."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        return 2 * x

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return 2 * dout


def _rng_weights(rng: np.random.Generator, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    return (0.3 * rng.standard_normal(shape)).astype(dtype)


def _make(kind: str, dtype: np.dtype) -> tuple[Any, tuple[int, ...]]:
    """A small network of ``kind`` and the shape of one sample."""
    if kind == "TwoLayerNet":
        return TwoLayerNet(D, 6, C, dtype=dtype, seed=1), (D,)
    if kind == "MultiLayerNet":
        return MultiLayerNet(D, [6, 5], C, weight_decay_lambda=0.1, dtype=dtype, seed=1), (D,)
    if kind == "MultiLayerNetExtend":
        return MultiLayerNetExtend(D, [6, 5], C, use_dropout=True, dropout_ratio=0.3, use_batchnorm=True,
                                   dtype=dtype, seed=1), (D,)
    if kind == "SimpleConvNet":
        return SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
                             hidden_size=4, output_size=C, dtype=dtype, seed=1), (1, 6, 6)
    if kind == "DeepConvNet":
        return DeepConvNet((1, 12, 12), hidden_size=6, output_size=C, dtype=dtype, seed=1), (1, 12, 12)
    rng = np.random.default_rng(1)
    if kind == "Sequential (batch norm first)":
        layers = [BatchNormalization(np.ones(D, dtype), np.zeros(D, dtype)),
                  Affine(_rng_weights(rng, (D, 6), dtype), np.zeros(6, dtype)), Relu(),
                  Affine(_rng_weights(rng, (6, C), dtype), np.zeros(C, dtype))]
        return Sequential(layers), (D,)
    if kind == "Sequential (generic path)":
        layers = [Affine(_rng_weights(rng, (D, 6), dtype), np.zeros(6, dtype)), Doubler(), Relu(),
                  Affine(_rng_weights(rng, (6, C), dtype), np.zeros(C, dtype))]
        return Sequential(layers), (D,)
    if kind == "TwoLayerNetCh4":
        return TwoLayerNetCh4(D, 6, C, dtype=dtype, seed=1), (D,)
    raise AssertionError(kind)


NETWORKS = ["TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend", "SimpleConvNet", "DeepConvNet",
            "Sequential (batch norm first)", "Sequential (generic path)", "TwoLayerNetCh4"]


def _state(net: Any, opt: Adam) -> dict[str, Any]:
    """Everything a step may change, copied: parameters, buffers, optimizer state and iter, the
    layers' generator states."""
    state: dict[str, Any] = {f"param:{k}": v.copy() for k, v in net.params.items()}
    buffers = getattr(net, "buffers", None)
    if callable(buffers):
        state.update({f"buffer:{k}": v.copy() for k, v in buffers().items()})
    state.update({f"opt:{name}:{k}": v.copy() for name, table in opt.state.items() for k, v in table.items()})
    state["opt:iter"] = opt.iter
    for name, layer in getattr(net, "layers", {}).items():
        rng = getattr(layer, "rng", None)
        if rng is not None:
            state[f"rng:{name}"] = repr(rng.bit_generator.state)
    return state


def _assert_same_state(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, np.ndarray):
            assert after[key].tobytes() == value.tobytes(), f"{key} changed"
        else:
            assert after[key] == value, f"{key} changed"


def _batches(sample: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.random((N, *sample)).astype(dtype)
    return x, rng.integers(0, C, N), rng.random((N, *sample)).astype(dtype)


def _step(net: Any, x: np.ndarray, t: np.ndarray, opt: Adam) -> None:
    if hasattr(net, "train_step"):
        net.train_step(x, t, opt)
    else:
        opt.update(net.params, net.gradient(x, t))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning",
                            "ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("kind", NETWORKS)
def test_training_methods_refuse_nonfinite_batches_and_change_nothing(kind, backend, dtype):
    net, sample = _make(kind, dtype)
    twin, _ = _make(kind, dtype)
    opt, twin_opt = Adam(lr=0.01), Adam(lr=0.01)
    x, t, x_next = _batches(sample, dtype)
    _step(net, x, t, opt)  # optimizer state and batch-norm statistics exist and are non-trivial
    _step(twin, x, t, twin_opt)
    methods = ["train_step", "gradient"] if hasattr(net, "train_step") else ["gradient"]
    name = type(net).__name__
    for label, special in SPECIALS.items():
        for row in (0, N - 1):
            bad = x.copy()
            bad[row].reshape(-1)[(row * 5) % bad[row].size] = special  # first sample / last sample
            for method in methods:
                before = _state(net, opt)
                call = (lambda b=bad: net.train_step(b, t, opt)) if method == "train_step" else \
                    (lambda b=bad: net.gradient(b, t))
                with pytest.raises(NonFiniteInputError) as info:
                    call()
                error = info.value
                assert isinstance(error, ValueError)
                assert str(error).startswith(f"{name}.{method}: x holds NaN or inf in 1 of {N} samples: "
                                             f"x[{row}] (1 {label})"), str(error)
                assert error.where == f"{name}.{method}" and error.samples == [row]
                assert error.found == {row: {label.lower() if label == "NaN" else label: 1}}
                _assert_same_state(before, _state(net, opt))
    # The refusals left no trace: the next steps are bit for bit those of a network that never saw them.
    for xb in (x_next, x):
        _step(net, xb, t, opt)
        _step(twin, xb, t, twin_opt)
    _assert_same_state(_state(twin, twin_opt), _state(net, opt))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("kind", ["TwoLayerNet", "MultiLayerNetExtend", "SimpleConvNet", "TwoLayerNetCh4"])
def test_predict_and_loss_still_let_nan_through(kind, backend):
    net, sample = _make(kind, np.dtype(np.float64))
    x, t, _ = _batches(sample, np.dtype(np.float64))
    x[2].reshape(-1)[0] = np.nan
    scores = net.predict(x)
    assert np.isnan(scores[2]).all() and np.isfinite(np.delete(scores, 2, axis=0)).all()
    assert np.isnan(net.loss(x, t))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_every_bad_sample_is_named_and_long_lists_are_cut(backend):
    net = TwoLayerNet(D, 6, C, seed=0)
    x = np.random.default_rng(0).random((20, D))
    x[[1, 3, 4, 8, 9, 11, 19], 2] = np.nan
    x[3, 5] = x[19, 0] = np.inf
    x[19, 1] = -np.inf
    with pytest.raises(NonFiniteInputError, match=r"in 7 of 20 samples: x\[1\] \(1 NaN\), x\[3\] \(1 NaN, 1 \+inf\), "
                       r"x\[4\] \(1 NaN\), x\[8\] \(1 NaN\), x\[9\] \(1 NaN\) and 2 more; the batch was refused") as info:
        net.train_step(x, np.zeros(20, int), Adam())
    assert info.value.samples == [1, 3, 4, 8, 9, 11, 19]
    assert info.value.found[19] == {"nan": 1, "+inf": 1, "-inf": 1}


def test_numpys_blas_propagates_nonfinite_so_the_first_affine_screens_its_product(backend, dtype):
    # The premise of the product screen, checked for this process's BLAS (the step checks it too).
    assert product_propagates_nonfinite(dtype)
    net = MultiLayerNet(D, [6], C, dtype=dtype, seed=0)
    plan = fused_module.plan_for(net, Sequential)
    assert plan.screen_by_product and plan.pieces[0].screen_product
    conv = fused_module.plan_for(_make("SimpleConvNet", dtype)[0], Sequential)
    assert not conv.screen_by_product  # a convolution first: x is scanned up front


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_without_the_product_screen_x_is_scanned_up_front(backend, dtype, monkeypatch):
    # A BLAS that skipped zero terms would let NaN through a zero row of W: the step then scans x.
    monkeypatch.setattr(fused_module, "product_propagates_nonfinite", lambda dtype: False)
    net = TwoLayerNet(D, 6, C, dtype=dtype, seed=0)
    net.params["W1"] = np.zeros((D, 6), dtype)  # even the case the screen could miss
    assert not fused_module.plan_for(net, Sequential).screen_by_product
    x = np.random.default_rng(0).random((N, D)).astype(dtype)
    x[4, 0] = np.nan
    opt = Adam()
    before = _state(net, opt)
    with pytest.raises(NonFiniteInputError, match=r"x\[4\] \(1 NaN\)"):
        net.train_step(x, np.zeros(N, int), opt)
    _assert_same_state(before, _state(net, opt))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning")
def test_finite_inputs_that_overflow_the_product_are_not_refused(backend):
    # The screen finds a non-finite product; x itself is finite, so the step runs as it did before
    # the screen existed (bit for bit as a step without it).
    nets = [TwoLayerNet(D, 6, C, dtype=np.float32, seed=0) for _ in range(2)]
    x = np.full((N, D), np.finfo(np.float32).max / 4, dtype=np.float32)
    for net in nets:
        net.params["W1"] = np.ones((D, 6), np.float32)  # 12 terms of max/4: the product overflows
    unscreened = fused_module.plan_for(nets[1], Sequential)
    unscreened.screen_by_product = unscreened.pieces[0].screen_product = False
    losses = [net.train_step(x, np.zeros(N, int), zerodl.SGD(lr=0.1)) for net in nets]
    assert fused_module.plan_for(nets[0], Sequential).pieces[0].product_nonfinite == N * 6
    assert np.asarray(losses[0]).tobytes() == np.asarray(losses[1]).tobytes()
    for key in nets[0].params:
        assert nets[0].params[key].tobytes() == nets[1].params[key].tobytes(), key


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning", "ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("step", ["auto", "gradient"])
def test_a_loop_without_finite_checks_gets_the_networks_refusal(backend, step):
    # The Trainer's NaN guard turns a refusal into its NonFiniteError (tests/test_numerics.py); a
    # loop without the guard (the chapter 6 experiments) gets the network's own error.
    from zerodl.loop import TrainingLoop

    rng = np.random.default_rng(0)
    x, t = rng.random((40, D)), rng.integers(0, C, 40)
    x[::2, 3] = np.inf  # half the samples: the first batch of 40 draws holds some
    net = TwoLayerNet(D, 6, C, seed=0)
    params = {k: v.copy() for k, v in net.params.items()}
    loop = TrainingLoop(net, zerodl.SGD(lr=0.1), x, t, batch_size=40, iterations=3, seed=0, step=step,
                        evaluate=None, check_finite=False)
    method = "train_step" if step == "auto" else "gradient"
    with pytest.raises(NonFiniteInputError, match=rf"TwoLayerNet.{method}: x holds NaN or inf"):
        loop.train()
    assert loop.current_iter == 0
    assert all(np.array_equal(params[k], v) for k, v in net.params.items())

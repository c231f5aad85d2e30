"""mlp_train_step and Sequential.train_step.

* The two twins agree (every optimizer, every activation, weight decay, both dtypes).
* ``net.train_step(x, t, opt)`` leaves the parameters and optimizer state that
  ``opt.update(net.params, net.gradient(x, t))`` leaves, and returns the loss before the update,
  in both backends; networks that are not fusable (BatchNorm, convolution) take the generic path.
* Buffers are cached, reused and invalidated; parameters stay the very arrays of ``net.params``;
  the compiled step allocates nothing per step.
"""

from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zerodl
from tests.helpers import assert_backends_agree, assert_close, tolerance
from zerodl import kernels
from zerodl.kernels import train_step as ts
from zerodl.layers import Affine, Relu, Sigmoid
from zerodl.networks import (
    MultiLayerNet,
    MultiLayerNetExtend,
    Sequential,
    SimpleConvNet,
    TwoLayerNet,
)
from zerodl.optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

OPTIMIZERS = [SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam]
OPT_CODES = {SGD: ts.OPT_SGD, Momentum: ts.OPT_MOMENTUM, Nesterov: ts.OPT_NESTEROV,
             AdaGrad: ts.OPT_ADAGRAD, RMSprop: ts.OPT_RMSPROP, Adam: ts.OPT_ADAM}

# Steps compound rounding differences (numba's products go to scipy's BLAS): a looser bound than
# one kernel call, still orders of magnitude below a wrong formula.
STEP_TOL = {np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-5},
            np.dtype(np.float64): {"rtol": 1e-9, "atol": 1e-11}}


def _kernel_args(rng, dtype, acts, opt, n=6, sizes=(5, 4, 3)):
    L = len(sizes) - 1
    x = rng.standard_normal((n, sizes[0])).astype(dtype)
    labels = rng.integers(0, sizes[-1], n).astype(np.intp)
    Ws = tuple(rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:]))
    bs = tuple(rng.standard_normal(b).astype(dtype) for b in sizes[1:])
    shapes = [s for W, b in zip(Ws, bs) for s in (W.size, b.size)]
    n_state = {ts.OPT_ADAM: 2, ts.OPT_SGD: 0, ts.OPT_NONE: 0}.get(opt, 1)
    # Accumulators must be >= 0 (AdaGrad/RMSprop h, Adam v); velocities and m may be anything.
    states = [tuple(np.abs(rng.standard_normal(k)).astype(dtype) for k in shapes) for _ in range(n_state)]
    empty = (np.empty(0, dtype),) * (2 * L)
    s1 = states[0] if n_state > 0 else empty
    s2 = states[1] if n_state > 1 else empty
    hp = {"lr": 0.05, "momentum": 0.9, "decay_rate": 0.99, "eps": 1e-7, "beta1": 0.9, "beta2": 0.999}
    hyper = ts.optimizer_hyper(opt, np.dtype(dtype), **hp)
    bufs = ts.MLPBuffers(n, sizes, np.dtype(dtype))
    return [x, labels, Ws, bs, np.array(acts, np.int64), bufs, opt, hyper, s1, s2]


@pytest.mark.parametrize("opt", [ts.OPT_NONE, *OPT_CODES.values()])
@pytest.mark.parametrize("acts,lam", [((1, 0), 0.0), ((2, 2), 0.3), ((0, 1), 0.0)])
def test_twins_agree(opt, acts, lam, dtype, rng):
    args = _kernel_args(rng, dtype, acts, opt)
    original = copy.deepcopy(args)
    a_np, a_nb = copy.deepcopy(args), copy.deepcopy(args)
    loss_np = kernels.get("mlp_train_step", "numpy")(*a_np, lam)
    loss_nb = kernels.get("mlp_train_step", "numba")(*a_nb, lam)
    assert loss_np.dtype == loss_nb.dtype == dtype
    assert_close(loss_nb, loss_np, dtype, "loss")
    np.testing.assert_array_equal(a_nb[0], original[0], err_msg="x was written")
    np.testing.assert_array_equal(a_nb[1], original[1], err_msg="labels were written")
    for name, i in (("Ws", 2), ("bs", 3), ("state1", 8), ("state2", 9)):
        for k, (p_np, p_nb) in enumerate(zip(a_np[i], a_nb[i])):
            assert p_nb.dtype == dtype
            np.testing.assert_allclose(p_nb, p_np, err_msg=f"{name}[{k}]", **tolerance(dtype))
    if opt == ts.OPT_NONE:  # gradients only: left in the buffers, the parameters untouched
        for k, (g_np, g_nb) in enumerate(zip(a_np[5].grads, a_nb[5].grads)):
            np.testing.assert_allclose(g_nb, g_np, err_msg=f"grad {k}", **tolerance(dtype))
        for W, W0 in zip(a_nb[2], original[2]):
            np.testing.assert_array_equal(W, W0)
    else:
        assert any(not np.array_equal(W, W0) for W, W0 in zip(a_nb[2], original[2]))


def _pair(make):
    return make(), make()


def _reference_step(net, x, t, opt):
    """The layer-by-layer path: loss before the update, then gradient + update."""
    loss = net.loss(x, t, train_flg=True)
    opt.update(net.params, net.gradient(x, t))
    return loss


def _assert_same_training(fused, ref, opt_f, opt_r, x, t, steps, dtype):
    tol = STEP_TOL[np.dtype(dtype)]
    for step in range(steps):
        expected = _reference_step(ref, x, t, opt_r)
        got = fused.train_step(x, t, opt_f)
        assert np.asarray(got).dtype == np.asarray(expected).dtype, "loss dtype"
        np.testing.assert_allclose(got, expected, err_msg=f"loss at step {step}", **tol)
    for key in ref.params:
        assert fused.params[key].dtype == ref.params[key].dtype
        np.testing.assert_allclose(fused.params[key], ref.params[key], err_msg=key, **tol)
    assert opt_f.iter == opt_r.iter == steps
    for name, table in opt_r.state.items():
        assert set(opt_f.state[name]) == set(table)
        for key, arr in table.items():
            np.testing.assert_allclose(opt_f.state[name][key], arr, err_msg=f"{name}[{key}]", **tol)


@pytest.mark.parametrize("opt_cls", OPTIMIZERS)
def test_train_step_equals_gradient_and_update(opt_cls, backend, dtype, rng):
    x = rng.random((8, 12)).astype(dtype)
    t = rng.integers(0, 4, 8)
    fused, ref = _pair(lambda: MultiLayerNet(12, [7, 6], 4, weight_decay_lambda=0.01, dtype=dtype, seed=3))
    _assert_same_training(fused, ref, opt_cls(), opt_cls(), x, t, 4, dtype)
    assert fused.layers["Affine1"].W is fused.params["W1"]
    assert fused.layers["Affine3"].b is fused.params["b3"]


@pytest.mark.parametrize("net_kind", ["two_layer", "sigmoid", "sequential_mixed"])
def test_fused_networks_one_hot_teacher(net_kind, backend, rng):
    dtype = np.float64
    x = rng.random((5, 2, 3)).astype(dtype)  # (N, ...) input, flattened like Affine does
    labels = rng.integers(0, 3, 5)
    one_hot = np.eye(3)[labels]

    def make():
        if net_kind == "two_layer":
            return TwoLayerNet(6, 5, 3, seed=7)
        if net_kind == "sigmoid":
            return MultiLayerNet(6, [5, 4], 3, activation="sigmoid", seed=7)
        r = np.random.default_rng(7)
        return Sequential([Affine(r.standard_normal((6, 5)), np.zeros(5)), Sigmoid(),
                           Affine(r.standard_normal((5, 4)), np.zeros(4)),
                           Affine(r.standard_normal((4, 3)), np.zeros(3)), Relu()])

    fused, ref = _pair(make)
    assert ts._plan_for(fused) is not None, "expected the fused path"
    _assert_same_training(fused, ref, Momentum(0.1), Momentum(0.1), x, one_hot, 3, dtype)


def test_numpy_twin_reproduces_the_layer_path_exactly(rng):
    # Same operations in the same order: the NumPy twin is the layer-by-layer NumPy path.
    x, t = rng.random((10, 9)), rng.integers(0, 3, 10)
    fused, ref = _pair(lambda: MultiLayerNet(9, [6, 5], 3, weight_decay_lambda=0.1, seed=0))
    with zerodl.use_backend("numpy"):
        opt_f, opt_r = Adam(), Adam()
        for _ in range(3):
            loss_r = _reference_step(ref, x, t, opt_r)
            assert fused.train_step(x, t, opt_f) == loss_r
    for key in ref.params:
        np.testing.assert_array_equal(fused.params[key], ref.params[key], err_msg=key)


class _HalvedSGD(SGD):
    """An optimizer without a fused kernel: the fused gradients go to its own update."""

    def _step(self, param, grad):
        super()._step(param, grad * 0.5)


def test_optimizer_without_fused_kernel_uses_its_update(backend, rng):
    x, t = rng.random((6, 5)), rng.integers(0, 3, 6)
    fused, ref = _pair(lambda: MultiLayerNet(5, [4], 3, weight_decay_lambda=0.2, seed=1))
    assert ts._optimizer_code(_HalvedSGD()) == ts.OPT_NONE
    _assert_same_training(fused, ref, _HalvedSGD(0.1), _HalvedSGD(0.1), x, t, 3, np.float64)


@pytest.mark.parametrize("make", [
    lambda dt: MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True, dtype=dt, seed=2),
    lambda dt: SimpleConvNet((1, 4, 4), {"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
                             hidden_size=5, output_size=3, dtype=dt, seed=2),
], ids=["batchnorm", "simple_conv"])
def test_generic_networks_take_the_generic_step(make, backend, dtype, rng):
    fused, ref = make(dtype), make(dtype)
    assert ts._plan_for(fused) is None
    shape = (4, 6) if isinstance(fused, MultiLayerNetExtend) else (4, 1, 4, 4)
    x, t = rng.random(shape).astype(dtype), rng.integers(0, 3, 4)
    _assert_same_training(fused, ref, Adam(0.01), Adam(0.01), x, t, 2, dtype)


def test_buffers_are_cached_and_invalidated(rng):
    net = MultiLayerNet(5, [4], 3, seed=0)
    opt = SGD(0.1)
    x, t = rng.random((6, 5)), rng.integers(0, 3, 6)
    net.train_step(x, t, opt)
    plan = ts._plan_for(net)
    bufs = plan.bufs
    net.train_step(x, t, opt)
    assert ts._plan_for(net) is plan and plan.bufs is bufs, "buffers must be reused across steps"
    net.train_step(x[:4], t[:4], opt)
    assert plan.bufs is not bufs and plan.bufs.n == 4, "a new batch size needs new buffers"
    # Rebinding a layer's weights is an architecture change: the plan is rebuilt around them.
    layer = net.layers["Affine1"]
    layer.W = np.ascontiguousarray(layer.W.copy())
    assert ts._plan_for(net) is None  # layer.W is no longer net.params["W1"]: not fusable
    net.train_step(x, t, opt)  # the generic path still trains
    net2 = MultiLayerNet(5, [4], 3, dtype=np.float32, seed=0)
    net2.train_step(x, t, opt)
    assert ts._plan_for(net2).bufs.dtype == np.float32


def test_compiled_step_allocates_nothing_per_step(rng):
    # Every (N, H) buffer is >= 32 KiB; what Python allocates per call (argument tuples, views of
    # the optimizer state, the loss scalar) stays a few KiB.
    n, sizes = 128, (64, 48, 32)
    net = MultiLayerNet(sizes[0], [sizes[1]], sizes[2], seed=0)
    opt = Adam()
    x, t = rng.random((n, sizes[0])), rng.integers(0, sizes[2], n)
    with zerodl.use_backend("numba"):
        for _ in range(2):
            net.train_step(x, t, opt)
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            for _ in range(3):
                net.train_step(x, t, opt)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    smallest_buffer = n * sizes[-1] * 8
    assert peak < 8192 < smallest_buffer, f"{peak} bytes allocated in a step (buffers are {smallest_buffer}+)"


def test_loss_is_the_loss_before_the_update(backend, rng):
    net = TwoLayerNet(5, 4, 3, weight_init_std=0.5, seed=0)
    x, t = rng.random((6, 5)), rng.integers(0, 3, 6)
    before = net.loss(x, t, train_flg=True)
    got = net.train_step(x, t, SGD(0.5))
    np.testing.assert_allclose(got, before, **STEP_TOL[np.dtype(np.float64)])
    assert net.loss(x, t) != before


def test_bad_input_errors(rng):
    net = TwoLayerNet(5, 4, 3, seed=0)
    opt = SGD()
    with pytest.raises(ValueError, match="train_step: x has 4 features"):
        net.train_step(rng.random((6, 4)), rng.integers(0, 3, 6), opt)
    with pytest.raises(ValueError, match="label 3 is out of range"):
        net.train_step(rng.random((6, 5)), np.array([0, 1, 2, 3, 0, 1]), opt)
    with pytest.raises(TypeError, match="float32 or float64"):
        net.train_step(np.ones((6, 5), dtype=np.int64), rng.integers(0, 3, 6), opt)
    with pytest.raises(ValueError, match="a batch of shape"):
        net.train_step(rng.random(5), np.array([0]), opt)
    assert opt.iter == 0, "a refused batch must not count as a step"


def test_optimizer_hyper_rejects_unknown_code():
    with pytest.raises(ValueError, match="unknown optimizer code"):
        ts.optimizer_hyper(42, np.dtype(np.float64), lr=0.1)


def test_optimizer_state_replaced_between_steps_is_followed(backend, rng):
    # load_state_dict swaps the state arrays: the cached views must follow, not write to the old ones.
    x, t = rng.random((6, 5)), rng.integers(0, 3, 6)
    fused, ref = _pair(lambda: MultiLayerNet(5, [4], 3, seed=1))
    opt_f, opt_r = Adam(0.01), Adam(0.01)
    for _ in range(2):
        fused.train_step(x, t, opt_f)
        _reference_step(ref, x, t, opt_r)
    saved = opt_f.state_dict()
    opt_f.load_state_dict(saved)
    for _ in range(2):
        fused.train_step(x, t, opt_f)
        _reference_step(ref, x, t, opt_r)
    for key in ref.params:
        np.testing.assert_allclose(fused.params[key], ref.params[key], **STEP_TOL[np.dtype(np.float64)])
    for name in ("m", "v"):
        for key, arr in opt_r.state[name].items():
            np.testing.assert_allclose(opt_f.state[name][key], arr, **STEP_TOL[np.dtype(np.float64)])
    # A second optimizer on the same network gets its own state.
    other = Adam(0.01)
    fused.train_step(x, t, other)
    assert other.iter == 1 and set(other.state["m"]) == set(fused.params)


# ----------------------------------------------------------------------------- mlp_predict
@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5), n=st.integers(1, 1200),
       acts=st.lists(st.sampled_from([0, 1, 2]), min_size=4, max_size=4), seed=st.integers(0, 2**16))
def test_predict_twins_agree(sizes, n, acts, seed):
    # n up to 1200 crosses the compiled twin's chunks of PREDICT_ROWS rows (and a short last one).
    rng = np.random.default_rng(seed)
    L = len(sizes) - 1
    act_arr = np.array(acts[:L], dtype=np.int64)
    for dtype in (np.float32, np.float64):
        Ws = tuple(rng.standard_normal((a, b)).astype(dtype) for a, b in zip(sizes[:-1], sizes[1:]))
        bs = tuple(rng.standard_normal(b).astype(dtype) for b in sizes[1:])
        for x_dtype in (np.float32, np.float64):  # float32 images meeting float64 weights, and back
            x = rng.standard_normal((n, sizes[0])).astype(x_dtype)
            y, _ = assert_backends_agree("mlp_predict", x, Ws, bs, act_arr, dtype=dtype)
            assert y.shape == (n, sizes[-1]) and y.dtype == dtype


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_accuracy_uses_the_same_scores_as_predict(backend, activation):
    from zerodl.kernels.train_step import sequential_scores

    net = zerodl.MultiLayerNet(20, [16, 12], 5, activation=activation, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1030, 20)).astype(np.float32)
    t = rng.integers(0, 5, 1030)
    with zerodl.use_backend(backend):
        scores = sequential_scores(net, x)
        expected = net.predict(x)
        np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-14)
        book_accuracy = np.mean(np.argmax(expected, axis=1) == t)
        assert net.accuracy(x, t) == book_accuracy
        assert net.accuracy(x.reshape(1030, 4, 5), np.eye(5)[t]) == book_accuracy  # N-d x, one-hot t


def test_accuracy_of_networks_the_kernel_does_not_cover_uses_predict():
    from zerodl.kernels.train_step import sequential_scores

    net = zerodl.MultiLayerNetExtend(6, [5], 3, use_dropout=True, seed=0)
    assert sequential_scores(net, np.zeros((2, 6))) is None


def test_accuracy_bad_input_is_a_clear_error():
    net = zerodl.TwoLayerNet(6, 5, 3, seed=0)
    with pytest.raises(ValueError, match=r"TwoLayerNet.accuracy: x has 7 features per sample .* expects 6"):
        net.accuracy(np.zeros((4, 7)), np.zeros(4, dtype=int))
    with pytest.raises(TypeError, match="TwoLayerNet.accuracy: x must be a float32 or float64 array"):
        net.accuracy(np.zeros((4, 6), dtype=np.uint8), np.zeros(4, dtype=int))

"""The fused training step (zerodl.networks.fused) composed from the layers' pieces.

* ``net.train_step(x, t, opt)`` leaves the parameters and optimizer state that
  ``opt.update(net.params, net.gradient(x, t))`` leaves, and returns the loss before the update,
  in both backends (bit for bit on NumPy), for every optimizer, activation, weight decay and dtype,
  for MLPs, MultiLayerNetExtend (BatchNorm, Dropout), conv nets and a user's own Sequential.
* A network that cannot be fused says so (``step_path``, ``repr``); the generic path still trains.
* Buffers are cached, reused and invalidated; parameters stay the very arrays of ``net.params``;
  the compiled step allocates nothing per step; a failing step changes nothing.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import zerodl
from tests.helpers import assert_close
from zerodl.layers import GELU, Affine, Relu, Sigmoid
from zerodl.layers.base import Layer
from zerodl.networks import (
    MultiLayerNet,
    MultiLayerNetExtend,
    Sequential,
    SimpleConvNet,
    TwoLayerNet,
)
from zerodl.networks.conv import DeepConvNet
from zerodl.networks.fused import plan_for
from zerodl.optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

OPTIMIZERS = [SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam]

# Steps compound rounding differences (numba's products go to scipy's BLAS): a looser bound than
# one kernel call, still orders of magnitude below a wrong formula.
STEP_TOL = {np.dtype(np.float32): {"rtol": 2e-4, "atol": 2e-5},
            np.dtype(np.float64): {"rtol": 1e-9, "atol": 1e-11}}


def _pair(make):
    return make(), make()


def _reference_step(net, x, t, opt):
    """The layer-by-layer path: gradient (one training forward: one set of dropout masks, one
    update of the running statistics), the loss of that forward before the update, then update."""
    grads = net.gradient(x, t)
    loss = net.last_layer.loss + net.weight_decay()
    opt.update(net.params, grads)
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
    assert fused.step_path == "fused", "expected the fused path"
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
    assert _HalvedSGD().update_rule() is None and SGD().update_rule() is not None
    _assert_same_training(fused, ref, _HalvedSGD(0.1), _HalvedSGD(0.1), x, t, 3, np.float64)


@pytest.mark.parametrize("make", [
    lambda dt: MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True, dtype=dt, seed=2),
    lambda dt: MultiLayerNetExtend(6, [5, 4], 3, use_batchnorm=True, use_dropout=True, dropout_ration=0.3,
                                   weight_decay_lambda=0.05, dtype=dt, seed=2),
    lambda dt: SimpleConvNet((1, 4, 4), {"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
                             hidden_size=5, output_size=3, dtype=dt, seed=2),
    lambda dt: SimpleConvNet((1, 6, 6), {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
                             hidden_size=5, output_size=3, dtype=dt, seed=4),
], ids=["batchnorm", "batchnorm_dropout_decay", "simple_conv", "simple_conv_pad"])
def test_extend_and_conv_networks_take_the_fused_step(make, backend, dtype, rng):
    fused, ref = make(dtype), make(dtype)
    assert fused.step_path == "fused" and plan_for(fused, Sequential) is not None
    if isinstance(fused, MultiLayerNetExtend):
        shape = (4, 6)
    else:
        shape = (4, 1, 4, 4) if fused.layers["Conv1"].pad == 0 else (4, 1, 6, 6)
    x, t = rng.random(shape).astype(dtype), rng.integers(0, 3, 4)
    _assert_same_training(fused, ref, Adam(0.01), Adam(0.01), x, t, 2, dtype)
    for name, buf in ref.buffers().items():  # BatchNorm's running statistics moved alike
        np.testing.assert_allclose(fused.buffers()[name], buf, err_msg=name, **STEP_TOL[np.dtype(dtype)])


def test_deep_conv_net_takes_the_fused_step_bit_for_bit_on_numpy(rng):
    # DeepConvNet's layer list (conv-relu pairs, pooling, dropout) on 1x8x8 images, NumPy backend:
    # the fused step reproduces gradient + update exactly, dropout masks included.
    def make():
        return DeepConvNet(input_dim=(1, 12, 12), hidden_size=6, output_size=3, seed=5)

    x, t = rng.random((3, 1, 12, 12)), rng.integers(0, 3, 3)
    fused, ref = make(), make()
    assert fused.step_path == "fused"
    with zerodl.use_backend("numpy"):
        opt_f, opt_r = SGD(0.05), SGD(0.05)
        for _ in range(2):
            loss_r = _reference_step(ref, x, t, opt_r)
            assert fused.train_step(x, t, opt_f) == loss_r
    for key in ref.params:
        np.testing.assert_array_equal(fused.params[key], ref.params[key], err_msg=key)


def test_activations_are_absorbed_into_the_layer_before_them():
    net = SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
                        hidden_size=4, output_size=3, seed=0)
    plan = plan_for(net, Sequential)
    text = repr(plan)
    assert "Convolution(2, 1, 3, 3)/s1p0 + Relu + Pooling(2x2/s2)" in text and "Affine(8, 4) + Relu" in text, text
    assert len(plan.pieces) == 3  # conv+relu+pool, affine+relu, affine


class _Scale(Layer):
    """A user's own layer without a fused piece."""

    def forward(self, x):
        return 2 * x

    def backward(self, dout):
        return 2 * dout


def test_a_layer_without_a_piece_is_a_visible_fallback(backend, rng):
    r = np.random.default_rng(0)
    make = lambda: Sequential([Affine(r.standard_normal((5, 4)), np.zeros(4)), _Scale(),
                               Affine(r.standard_normal((4, 3)), np.zeros(3))])
    net = make()
    assert net.step_path == "generic (_Scale1 (_Scale) declares no fused piece)"
    assert "step_path=generic (_Scale1 (_Scale) declares no fused piece)" in repr(net)
    r = np.random.default_rng(0)
    ref = make()
    x, t = rng.random((6, 5)), rng.integers(0, 3, 6)
    _assert_same_training(net, ref, Momentum(0.1), Momentum(0.1), x, t, 2, np.float64)


def test_a_subclass_redefining_the_maths_is_a_visible_fallback():
    class HalfLoss(TwoLayerNet):
        def loss(self, x, t, train_flg=False):
            return 0.5 * super().loss(x, t, train_flg)

    net = HalfLoss(4, 3, 2, seed=0)
    assert net.step_path == "generic (HalfLoss redefines loss())"


def test_gelu_sequential_keeps_the_pre_activation(backend, dtype, rng):
    # GELU's derivative needs its input: the fused step keeps the pre-activation (absorbed into the
    # Affine before it, and standalone after another activation).
    def make():
        r = np.random.default_rng(3)
        return Sequential([Affine(r.standard_normal((5, 6)).astype(dtype), np.zeros(6, dtype)), GELU(),
                           Affine(r.standard_normal((6, 4)).astype(dtype), np.zeros(4, dtype)), Sigmoid(), GELU(),
                           Affine(r.standard_normal((4, 3)).astype(dtype), np.zeros(3, dtype))])

    fused, ref = make(), make()
    assert fused.step_path == "fused"
    assert "Affine(5, 6) + GELU" in repr(plan_for(fused, Sequential))
    x, t = rng.standard_normal((7, 5)).astype(dtype), rng.integers(0, 3, 7)
    _assert_same_training(fused, ref, Adam(0.01), Adam(0.01), x, t, 3, dtype)


def test_a_failing_step_changes_nothing(backend, rng):
    net = MultiLayerNet(5, [4], 3, weight_decay_lambda=0.1, seed=0)
    opt = Adam(0.01)
    x, t = rng.random((6, 5)), rng.integers(0, 3, 6)
    net.train_step(x, t, opt)
    before = {k: v.copy() for k, v in net.params.items()}
    state = opt.state_dict()

    def boom(*args, **kwargs):
        raise RuntimeError("kernel failed")

    plan = plan_for(net, Sequential)
    original = type(plan.loss).loss_and_grad
    type(plan.loss).loss_and_grad = boom
    try:
        with pytest.raises(RuntimeError, match="kernel failed"):
            net.train_step(x, t, opt)
    finally:
        type(plan.loss).loss_and_grad = original
    assert opt.iter == state["iter"] == 1
    for k, v in before.items():
        np.testing.assert_array_equal(net.params[k], v, err_msg=k)
    for name, table in state["state"].items():
        for key, arr in table.items():
            np.testing.assert_array_equal(opt.state[name][key], arr)


def test_a_fresh_optimizer_gets_no_state_from_a_failed_step(rng):
    net = TwoLayerNet(5, 4, 3, seed=0)
    opt = Adam()
    with pytest.raises(ValueError):
        net.train_step(rng.random((6, 5)), np.array([0, 1, 2, 3, 0, 1]), opt)
    assert opt.iter == 0 and all(not table for table in opt.state.values())


class _KeepingSGD(SGD):
    """A custom optimizer: checks its gradients are intact for the whole of its update."""

    def update(self, params, grads):
        copies = {k: np.array(g, copy=True) for k, g in grads.items()}
        super().update(params, grads)
        for k, g in grads.items():
            np.testing.assert_array_equal(g, copies[k])
        self.seen = copies


def test_gradients_stay_valid_until_a_custom_update_returns(backend, rng):
    net, ref = _pair(lambda: MultiLayerNet(5, [4], 3, seed=2))
    x, t = rng.random((6, 5)), rng.integers(0, 3, 6)
    opt = _KeepingSGD(0.1)
    assert opt.update_rule() is None
    net.train_step(x, t, opt)
    grads = ref.gradient(x, t)
    for k, g in grads.items():
        np.testing.assert_allclose(opt.seen[k], g, **STEP_TOL[np.dtype(np.float64)])


def test_buffers_are_cached_and_invalidated(rng):
    net = MultiLayerNet(5, [4], 3, seed=0)
    opt = SGD(0.1)
    x, t = rng.random((6, 5)), rng.integers(0, 3, 6)
    net.train_step(x, t, opt)
    plan = plan_for(net, Sequential)
    z = plan.pieces[0].buffers._arrays["z"]
    net.train_step(x, t, opt)
    assert plan_for(net, Sequential) is plan and plan.pieces[0].buffers._arrays["z"] is z, \
        "buffers must be reused across steps"
    net.train_step(x[:4], t[:4], opt)
    assert plan.pieces[0].buffers._arrays["z"] is z, "a smaller batch uses the leading rows"
    net.train_step(np.concatenate([x, x]), np.concatenate([t, t]), opt)
    assert plan.pieces[0].buffers._arrays["z"].shape[0] == 12, "a larger batch needs new buffers"
    # Rebinding a layer's weights is an architecture change: the plan is rebuilt around them.
    layer = net.layers["Affine1"]
    layer.W = np.ascontiguousarray(layer.W.copy())
    assert plan_for(net, Sequential) is None  # layer.W is no longer net.params["W1"]: not fusable
    assert net.step_path == "generic (the layers' parameters are not the arrays of net.params)"
    net.train_step(x, t, opt)  # the generic path still trains
    net2 = MultiLayerNet(5, [4], 3, dtype=np.float32, seed=0)
    net2.train_step(x, t, opt)
    assert plan_for(net2, Sequential).pieces[0].buffers._arrays["z"].dtype == np.float32


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


# ----------------------------------------------------------------------------- inference scores
@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 9), min_size=2, max_size=5), n=st.integers(1, 1200),
       acts=st.lists(st.sampled_from(["", "relu", "sigmoid", "gelu"]), min_size=4, max_size=4),
       seed=st.integers(0, 2**16))
def test_scores_agree_with_predict_in_both_backends(sizes, n, acts, seed):
    # n up to 1200 crosses the chunks of PREDICT_ROWS rows (and a short last one).
    from zerodl.networks.fused import PREDICT_ROWS

    assert PREDICT_ROWS < 1200
    rng = np.random.default_rng(seed)
    L = len(sizes) - 1
    kinds = {"relu": Relu, "sigmoid": Sigmoid, "gelu": GELU}
    for dtype in (np.float32, np.float64):
        layers = []
        for k in range(L):
            layers.append(Affine(rng.standard_normal((sizes[k], sizes[k + 1])).astype(dtype),
                                 rng.standard_normal(sizes[k + 1]).astype(dtype)))
            if acts[k]:
                layers.append(kinds[acts[k]]())
        net = Sequential(layers)
        for x_dtype in (np.float32, np.float64):  # float32 images meeting float64 weights, and back
            x = rng.standard_normal((n, sizes[0])).astype(x_dtype)
            outs = {}
            for backend in ("numpy", "numba"):
                with zerodl.use_backend(backend):
                    outs[backend] = plan_for(net, Sequential).scores(x, "test")
                    assert outs[backend].shape == (n, sizes[-1]) and outs[backend].dtype == dtype
            with zerodl.use_backend("numpy"):
                np.testing.assert_array_equal(outs["numpy"], net.predict(x))
            assert_close(outs["numba"], outs["numpy"], dtype, "scores")


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_accuracy_uses_the_same_scores_as_predict(backend, activation):
    net = zerodl.MultiLayerNet(20, [16, 12], 5, activation=activation, seed=3)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1030, 20)).astype(np.float32)
    t = rng.integers(0, 5, 1030)
    with zerodl.use_backend(backend):
        scores = plan_for(net, Sequential).scores(x, "test")
        expected = net.predict(x)
        np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-14)
        book_accuracy = np.mean(np.argmax(expected, axis=1) == t)
        assert net.accuracy(x, t) == book_accuracy
        assert net.accuracy(x.reshape(1030, 4, 5), np.eye(5)[t]) == book_accuracy  # N-d x, one-hot t


def test_accuracy_of_networks_off_the_fused_path_uses_predict():
    r = np.random.default_rng(0)
    net = Sequential([Affine(r.standard_normal((6, 5)), np.zeros(5)), _Scale(),
                      Affine(r.standard_normal((5, 3)), np.zeros(3))])
    assert plan_for(net, Sequential) is None
    x, t = r.standard_normal((9, 6)), r.integers(0, 3, 9)
    assert net.accuracy(x, t) == np.mean(np.argmax(net.predict(x), axis=1) == t)


def test_accuracy_of_dropout_networks_scales_as_predict():
    net = zerodl.MultiLayerNetExtend(6, [5], 3, use_dropout=True, use_batchnorm=True, seed=0)
    x, t = np.random.default_rng(1).standard_normal((40, 6)), np.arange(40) % 3
    with zerodl.use_backend("numpy"):
        expected = np.mean(np.argmax(net.predict(x, train_flg=False), axis=1) == t)
        assert net.accuracy(x, t) == expected


def test_accuracy_bad_input_is_a_clear_error():
    net = zerodl.TwoLayerNet(6, 5, 3, seed=0)
    with pytest.raises(ValueError, match=r"TwoLayerNet.accuracy: x has 7 features per sample .* expects 6"):
        net.accuracy(np.zeros((4, 7)), np.zeros(4, dtype=int))
    with pytest.raises(TypeError, match="TwoLayerNet.accuracy: x must be a float32 or float64 array"):
        net.accuracy(np.zeros((4, 6), dtype=np.uint8), np.zeros(4, dtype=int))


# ----------------------------------------------------------------------------- loss_value
_LOSS_VALUE_NETS = {
    "DeepConvNet (Dropout, loss in training mode)":
        (lambda: DeepConvNet((1, 12, 12), hidden_size=6, output_size=3, dtype=np.float64, seed=3), (1, 12, 12), 3),
    "SimpleConvNet": (lambda: SimpleConvNet((1, 10, 10), {"filter_num": 4, "filter_size": 3, "pad": 0, "stride": 1},
                                            hidden_size=6, output_size=3, seed=3), (1, 10, 10), 3),
    "MultiLayerNetExtend (BatchNorm, Dropout, weight decay)":
        (lambda: MultiLayerNetExtend(20, [8, 8], 3, use_batchnorm=True, use_dropout=True, dropout_ration=0.3,
                                     weight_decay_lambda=0.1, seed=3), (20,), 3),
    "MultiLayerNet (weight decay)": (lambda: MultiLayerNet(20, [8, 8], 3, weight_decay_lambda=0.05, seed=3), (20,), 3),
}


@pytest.mark.parametrize("name", list(_LOSS_VALUE_NETS))
def test_loss_value_is_loss_and_draws_what_loss_draws(name, backend):
    # The value of loss() (bit for bit in both backends here), the same Dropout masks consumed and
    # BatchNorm statistics updated: the next steps of two twin networks stay identical.
    make, shape, classes = _LOSS_VALUE_NETS[name]
    rng = np.random.default_rng(0)
    x, t = rng.random((16, *shape)), rng.integers(0, classes, 16)
    a, b = make(), make()
    opt_a, opt_b = Adam(), Adam()
    for _ in range(2):
        a.train_step(x, t, opt_a)
        b.train_step(x, t, opt_b)
        expected, got = a.loss(x, t), b.loss_value(x, t)
        assert got == expected
        assert np.asarray(got).dtype == np.asarray(expected).dtype
    a.train_step(x, t, opt_a)
    b.train_step(x, t, opt_b)
    for key in a.params:
        np.testing.assert_array_equal(b.params[key], a.params[key], err_msg=key)
    assert b.loss_value(x, t, train_flg=False) == a.loss(x, t, train_flg=False)


def test_loss_value_keeps_no_layer_cache(rng):
    net = MultiLayerNet(6, [5], 3, seed=0)
    x, t = rng.random((4, 6)), rng.integers(0, 3, 4)
    net.loss(x, t)
    cached = net.layers["Affine1"].x
    net.loss_value(rng.random((7, 6)), rng.integers(0, 3, 7))
    assert net.layers["Affine1"].x is cached  # the layers still hold the batch of the last loss()


def test_loss_value_of_a_network_off_the_fused_path_is_loss(rng):
    class OwnPredict(MultiLayerNet):
        def predict(self, x, train_flg=False):
            return super().predict(x, train_flg) * 2.0

    net = OwnPredict(6, [5], 3, seed=0)
    assert net.step_path.startswith("generic")
    x, t = rng.random((4, 6)), rng.integers(0, 3, 4)
    assert net.loss_value(x, t) == net.loss(x, t)


def test_loss_value_bad_input_is_a_clear_error():
    net = MultiLayerNet(6, [5], 3, seed=0)
    with pytest.raises(ValueError, match=r"MultiLayerNet\.loss.*features"):
        net.loss_value(np.zeros((2, 7)), np.array([0, 1]))


# --- plain SGD: the Affine pieces fold W's update into dW's product (affine_sgd_update) ----------
@pytest.mark.parametrize("make,shape", [
    (lambda dt: MultiLayerNet(12, [7, 6], 4, dtype=dt, seed=3), (8, 12)),
    (lambda dt: MultiLayerNetExtend(12, [7, 6], 4, use_batchnorm=True, use_dropout=True, dropout_ration=0.3,
                                    dtype=dt, seed=2), (8, 12)),
    (lambda dt: SimpleConvNet((1, 6, 6), {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 1},
                              hidden_size=5, output_size=4, dtype=dt, seed=4), (8, 1, 6, 6)),
], ids=["mlp", "batchnorm_dropout", "simple_conv"])
def test_sgd_step_folds_affine_weight_updates_into_their_products(make, shape, backend, dtype, rng):
    # The step's optimizer changes between steps (SGD, a new learning rate, Adam, SGD again): each
    # step matches gradient + update, and the pieces are told each time which update they own.
    fused, ref = make(dtype), make(dtype)
    x, t = rng.random(shape).astype(dtype), rng.integers(0, 4, shape[0])
    plan = plan_for(fused, Sequential)
    schedule = [SGD(0.1), SGD(0.1), SGD(0.03), Adam(0.01), SGD(0.05)]
    tol = STEP_TOL[np.dtype(dtype)]
    affine_flags = [flag for p in plan.pieces if type(p).__name__ == "AffinePiece" for flag in (True, False)]
    for step, opt in enumerate(schedule):
        opt_r = type(opt)(opt.lr)
        opt_r.iter = opt.iter
        expected = _reference_step(ref, x, t, opt_r)
        got = fused.train_step(x, t, opt)
        np.testing.assert_allclose(got, expected, err_msg=f"loss at step {step}", **tol)
        for key in ref.params:
            np.testing.assert_allclose(fused.params[key], ref.params[key], err_msg=f"{key} at step {step}", **tol)
        done = plan._sgd_done
        if isinstance(opt, SGD):
            assert sum(done) == len(affine_flags) // 2 > 0  # every Affine's W, no bias
            assert [n for n, flag in zip(plan.names, done) if flag] == [
                n for n in plan.names if n.startswith("W") and "Affine" in _layer_of(fused, n)]
        else:
            assert done == ()


def _layer_of(net, param_name):
    # The class name of the layer holding ``param_name`` (W1 -> Conv1 or Affine1 ...).
    for layer in net.layers.values():
        if any(getattr(layer, p, None) is net.params[param_name] for p in getattr(layer, "param_names", ())):
            return type(layer).__name__
    return ""


def test_sgd_with_weight_decay_keeps_the_gradient_and_one_update(rng):
    # Weight decay adds λW to the gradient first: the step then updates every parameter in one call.
    net = MultiLayerNet(12, [7], 4, weight_decay_lambda=0.1, seed=3)
    net.train_step(rng.random((5, 12)), rng.integers(0, 4, 5), SGD(0.1))
    assert plan_for(net, Sequential)._sgd_done == ()


def test_sgd_folded_into_dw_is_bit_for_bit_the_book_on_numpy(rng):
    x, t = rng.random((10, 9)), rng.integers(0, 3, 10)
    fused, ref = _pair(lambda: MultiLayerNet(9, [6, 5], 3, seed=0))
    with zerodl.use_backend("numpy"):
        opt_f, opt_r = SGD(0.1), SGD(0.1)
        for _ in range(3):
            loss_r = _reference_step(ref, x, t, opt_r)
            assert fused.train_step(x, t, opt_f) == loss_r
    assert any(plan_for(fused, Sequential)._sgd_done)
    for key in ref.params:
        np.testing.assert_array_equal(fused.params[key], ref.params[key], err_msg=key)


def test_sgd_step_that_fails_in_its_backward_changes_no_parameter(rng, monkeypatch):
    # The Affine pieces apply their folded SGD updates only after the whole backward pass: a
    # backward that raises part way (here the first piece's, after the later pieces have run)
    # leaves every parameter and the optimizer as they were; the next step runs normally.
    net = MultiLayerNet(12, [7, 6], 4, seed=3)
    ref = MultiLayerNet(12, [7, 6], 4, seed=3)
    x, t = rng.random((8, 12)), rng.integers(0, 4, 8)
    opt = SGD(0.1)
    net.train_step(x, t, opt)
    _reference_step(ref, x, t, SGD(0.1))
    plan = plan_for(net, Sequential)
    before = {k: v.copy() for k, v in net.params.items()}

    def broken(dout, need_dx):
        raise MemoryError("no room for the first layer's gradient")

    monkeypatch.setattr(plan.pieces[0], "backward", broken)
    with pytest.raises(MemoryError):
        net.train_step(x, t, opt)
    for key, value in before.items():
        np.testing.assert_array_equal(net.params[key], value, err_msg=key)
    assert opt.iter == 1
    monkeypatch.undo()
    got = net.train_step(x, t, opt)
    expected = _reference_step(ref, x, t, SGD(0.1))
    np.testing.assert_allclose(got, expected, **STEP_TOL[np.dtype(np.float64)])
    for key in ref.params:
        np.testing.assert_allclose(net.params[key], ref.params[key], err_msg=key, **STEP_TOL[np.dtype(np.float64)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make_opt", [lambda: Adam(lr=0.01), lambda: SGD(lr=0.1)], ids=["adam", "sgd"])
def test_conv_block_computes_the_next_affines_product_with_the_same_bits(monkeypatch, dtype, make_opt):
    # SimpleConvNet: the conv + ReLU + pool piece computes the Affine's product in its own call
    # (conv_relu_pool_affine_forward), and runs the Affine's backward products in its own backward
    # call (conv_relu_pool_affine_backward; with SGD, dW is folded into the update instead). Three
    # steps leave the very bits of the steps where each piece makes its own calls, on the Numba
    # backend (2 threads: the products on both cores).
    from zerodl.layers.conv import ConvolutionPiece

    def run(chain: bool):
        if not chain:
            monkeypatch.setattr(ConvolutionPiece, "chain", lambda self, nxt: None)
        net = SimpleConvNet(dtype=dtype, seed=3)
        opt = make_opt()
        rng = np.random.default_rng(4)
        losses = []
        with zerodl.use_backend("numba"), zerodl.num_threads(2):
            for _ in range(3):
                x = rng.random((40, 1, 28, 28)).astype(dtype)
                losses.append(net.train_step(x, rng.integers(0, 10, 40), opt))
        monkeypatch.undo()
        conv = plan_for(net, type(net).__mro__[1]).pieces[0]
        return losses, {k: v.copy() for k, v in net.params.items()}, conv.then is not None

    losses_on, params_on, chained = run(True)
    losses_off, params_off, unchained = run(False)
    assert chained and not unchained
    assert losses_on == losses_off
    for k in params_on:
        np.testing.assert_array_equal(params_on[k], params_off[k], err_msg=k)

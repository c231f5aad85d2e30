"""SimpleConvNet and DeepConvNet: the book's formulas, gradient checks, backends, dtypes, config,
the book's pickled parameters, and clear errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

import zerodl
from tests.helpers import tolerance
from zerodl import DeepConvNet, SimpleConvNet
from zerodl.gradient import gradient_check
from zerodl.layers import Dropout
from zerodl.optimizer import Adam


# ----------------------------------------------------------------------------- the book, transcribed
# An independent plain-NumPy transcription of the book's ch. 7 maths (common/util.py im2col/col2im,
# common/layers.py Convolution/Pooling/Affine/Relu/SoftmaxWithLoss, ch07/simple_convnet.py), written
# with sliding windows and np.add.at instead of the book's loops. It shares no code with zerodl.
def book_im2col(x, fh, fw, stride, pad):
    n, c = x.shape[:2]
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)])
    win = np.lib.stride_tricks.sliding_window_view(img, (fh, fw), axis=(2, 3))[:, :, ::stride, ::stride]
    oh, ow = win.shape[2], win.shape[3]
    # win: (N, C, OH, OW, FH, FW) → rows (n, oh, ow), columns (c, fy, fx)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * fh * fw), oh, ow


def book_col2im(col, shape, fh, fw, stride, pad):
    n, c, h, w = shape
    oh, ow = (h + 2 * pad - fh) // stride + 1, (w + 2 * pad - fw) // stride + 1
    col6 = col.reshape(n, oh, ow, c, fh, fw)
    img = np.zeros((n, c, h + 2 * pad, w + 2 * pad))
    for fy in range(fh):
        for fx in range(fw):
            ys = fy + stride * np.arange(oh)
            xs = fx + stride * np.arange(ow)
            np.add.at(img, (slice(None), slice(None), ys[:, None], xs[None, :]),
                      col6[:, :, :, :, fy, fx].transpose(0, 3, 1, 2))
    return img[:, :, pad:pad + h, pad:pad + w]


def book_simple_convnet_loss_and_grads(params, x, t, stride, pad):
    W1, b1, W2, b2, W3, b3 = (params[k] for k in ("W1", "b1", "W2", "b2", "W3", "b3"))
    fn, _, fh, fw = W1.shape
    n = x.shape[0]
    # Convolution
    col, oh, ow = book_im2col(x, fh, fw, stride, pad)
    conv = (col @ W1.reshape(fn, -1).T + b1).reshape(n, oh, ow, fn).transpose(0, 3, 1, 2)
    # Relu
    r1 = np.maximum(conv, 0)
    # Pooling 2x2 stride 2
    pcol, ph, pw = book_im2col(r1, 2, 2, 2, 0)
    pcol = pcol.reshape(-1, 4)
    arg = pcol.argmax(axis=1)
    pool = pcol.max(axis=1).reshape(n, ph, pw, fn).transpose(0, 3, 1, 2)
    # Affine, Relu, Affine
    flat = pool.reshape(n, -1)
    a2 = flat @ W2 + b2
    r2 = np.maximum(a2, 0)
    a3 = r2 @ W3 + b3
    # SoftmaxWithLoss (the book's 1e-7 inside the log)
    e = np.exp(a3 - a3.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    loss = -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n
    # backward
    d = y.copy()
    d[np.arange(n), t] -= 1
    d /= n
    g = {"W3": r2.T @ d, "b3": d.sum(axis=0)}
    d = (d @ W3.T) * (a2 > 0)
    g["W2"], g["b2"] = flat.T @ d, d.sum(axis=0)
    d = (d @ W2.T).reshape(pool.shape).transpose(0, 2, 3, 1).reshape(-1)
    dmax = np.zeros((d.size, 4))
    dmax[np.arange(d.size), arg] = d
    d = book_col2im(dmax.reshape(n * ph * pw, -1), r1.shape, 2, 2, 2, 0)
    d = d * (conv > 0)
    d = d.transpose(0, 2, 3, 1).reshape(-1, fn)
    g["b1"] = d.sum(axis=0)
    g["W1"] = (col.T @ d).T.reshape(W1.shape)
    return loss, g


# ----------------------------------------------------------------------------- helpers
def _tiny_simple(dtype=np.float64, seed=0):
    return SimpleConvNet(input_dim=(1, 6, 6), conv_param={"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
                         hidden_size=4, output_size=3, weight_init_std=0.3, dtype=dtype, seed=seed)


TINY_DEEP_PARAMS = {f"conv_param_{i}": {"filter_num": 2} for i in range(1, 7)}


def _tiny_deep(dtype=np.float64, seed=0):
    # (1, 4, 4): 4 → 4 → pool 2 → 2 → pad 2: 4 → pool 2 → 2 → 2 → pool 1; affine input 2·1·1.
    return DeepConvNet(input_dim=(1, 4, 4), **TINY_DEEP_PARAMS, hidden_size=3, output_size=3,
                       dtype=dtype, seed=seed)


def _batch(rng, shape, n, classes, dtype=np.float64):
    return rng.standard_normal((n, *shape)).astype(dtype), rng.integers(0, classes, n)


# ----------------------------------------------------------------------------- the book's formulas
@pytest.mark.parametrize(
    "input_dim, conv_param",
    [
        ((1, 28, 28), None),  # the book's MNIST network, as built by default
        ((2, 11, 11), {"filter_num": 3, "filter_size": 3, "pad": 1, "stride": 2}),
    ],
)
def test_simple_convnet_equals_the_book(backend, rng, input_dim, conv_param):
    net = SimpleConvNet(input_dim=input_dim, conv_param=conv_param, hidden_size=7, output_size=5,
                        weight_init_std=0.1, seed=1)
    for k in ("b1", "b2", "b3"):  # non-zero biases exercise the bias paths too
        net.params[k] = rng.standard_normal(net.params[k].shape) * 0.1
    x, t = _batch(rng, input_dim, 3, 5)
    cp = net.config["conv_param"]
    ref_loss, ref_grads = book_simple_convnet_loss_and_grads(net.params, x, t, cp["stride"], cp["pad"])
    np.testing.assert_allclose(net.loss(x, t), ref_loss, rtol=1e-9)
    grads = net.gradient(x, t)
    assert set(grads) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    for k, ref in ref_grads.items():
        np.testing.assert_allclose(grads[k], ref, rtol=1e-9, atol=1e-15 * np.abs(ref).max(), err_msg=k)


def test_simple_convnet_default_shapes_and_scale():
    net = SimpleConvNet(seed=0)
    shapes = {k: v.shape for k, v in net.params.items()}
    assert shapes == {"W1": (30, 1, 5, 5), "b1": (30,), "W2": (4320, 100), "b2": (100,),
                      "W3": (100, 10), "b3": (10,)}
    # weight_init_std=0.01 Gaussian weights in the book's draw order (W1, W2, W3), zero biases.
    rng = np.random.default_rng(0)
    for k in ("W1", "W2", "W3"):
        np.testing.assert_array_equal(net.params[k], 0.01 * rng.standard_normal(shapes[k]))
    assert not any(net.params[k].any() for k in ("b1", "b2", "b3"))
    assert net.accuracy_batch_size == 100


def test_deep_convnet_book_architecture_and_he_scales():
    net = DeepConvNet(seed=0)
    conv_shapes = [(16, 1), (16, 16), (32, 16), (32, 32), (64, 32), (64, 64)]
    pre_node_nums = [1 * 9, 16 * 9, 16 * 9, 32 * 9, 32 * 9, 64 * 9, 64 * 4 * 4, 50]  # the book's
    expected = {f"W{i + 1}": (*s, 3, 3) for i, s in enumerate(conv_shapes)}
    expected.update({"W7": (64 * 4 * 4, 50), "W8": (50, 10)})
    rng = np.random.default_rng(0)
    for i in range(8):
        k = f"W{i + 1}"
        assert net.params[k].shape == expected[k]
        np.testing.assert_array_equal(net.params[k], np.sqrt(2.0 / pre_node_nums[i]) * rng.standard_normal(expected[k]))
        assert net.params[f"b{i + 1}"].shape == (expected[k][0] if i < 6 else expected[k][1],)
    kinds = [type(layer).__name__ for layer in net.layers.values()]
    assert kinds == ["Convolution", "Relu", "Convolution", "Relu", "Pooling"] * 3 + [
        "Affine", "Relu", "Dropout", "Affine", "Dropout"]
    pads = [layer.pad for layer in net.layers.values() if type(layer).__name__ == "Convolution"]
    assert pads == [1, 1, 1, 2, 1, 1]
    assert [d.dropout_ratio for d in net.layers.values() if isinstance(d, Dropout)] == [0.5, 0.5]


# ----------------------------------------------------------------------------- gradient checks
def test_simple_convnet_gradient_check(backend, rng):
    net = _tiny_simple()
    x, t = _batch(rng, (1, 6, 6), 2, 3)
    diffs = gradient_check(net, x, t)
    assert set(diffs) == {"W1", "b1", "W2", "b2", "W3", "b3"}
    assert max(diffs.values()) < 1e-6, diffs  # central differences, h = 1e-4


def test_deep_convnet_gradient_check(backend, rng):
    net = _tiny_deep()
    x, t = _batch(rng, (1, 4, 4), 2, 3)
    net.predict(x, train_flg=True)
    net.freeze_dropout()  # deterministic training loss for the central differences
    try:
        diffs = gradient_check(net, x, t)
    finally:
        net.unfreeze_dropout()
    assert set(diffs) == {f"{p}{i}" for p in "Wb" for i in range(1, 9)}
    assert max(diffs.values()) < 1e-6, diffs  # central differences, h = 1e-4


# ----------------------------------------------------------------------------- backends and dtypes
@pytest.mark.parametrize("make", [_tiny_simple, _tiny_deep], ids=["simple", "deep"])
def test_backends_agree(make, dtype, rng):
    net = make(dtype)
    shape = net.input_dim
    x, t = _batch(rng, shape, 3, 3, dtype)
    out = {}
    for backend in zerodl.BACKENDS:
        with zerodl.use_backend(backend):
            for layer in net.layers.values():  # replay the same dropout masks in both backends
                if hasattr(layer, "rng"):
                    layer.rng = np.random.default_rng(7)
            y = net.predict(x)
            grads = net.gradient(x, t)
            out[backend] = (y, {k: v.copy() for k, v in grads.items()})
    (y_np, g_np), (y_nb, g_nb) = out["numpy"], out["numba"]
    assert y_nb.dtype == dtype
    np.testing.assert_allclose(y_nb, y_np, **tolerance(dtype))
    for k in g_np:
        assert g_nb[k].dtype == dtype, k
        np.testing.assert_allclose(g_nb[k], g_np[k], err_msg=k, rtol=tolerance(dtype)["rtol"] * 10,
                                   atol=tolerance(dtype)["atol"] * 10)


def test_params_stay_shared_after_updates(backend, rng):
    net = _tiny_simple()
    x, t = _batch(rng, (1, 6, 6), 4, 3)
    opt = Adam()
    loss0 = float(net.loss(x, t))
    for _ in range(5):
        opt.update(net.params, net.gradient(x, t))
    assert net.layers["Conv1"].W is net.params["W1"]
    assert net.layers["Affine2"].b is net.params["b3"]
    assert float(net.loss(x, t)) < loss0


def test_accuracy_in_batches_counts_every_sample(backend, rng):
    net = _tiny_simple()
    x, t = _batch(rng, (1, 6, 6), 23, 3)
    expected = np.mean(np.argmax(net.predict(x), axis=1) == t)
    assert net.accuracy(x, t) == pytest.approx(expected)
    assert net.accuracy(x, t, batch_size=5) == pytest.approx(expected)
    assert net.accuracy(x, np.eye(3)[t], batch_size=7) == pytest.approx(expected)


def test_seed_reproducible_and_generator_accepted():
    a, b = SimpleConvNet(seed=3), SimpleConvNet(seed=np.random.default_rng(3))
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    c, d = _tiny_deep(seed=4), _tiny_deep(seed=4)
    x = np.random.default_rng(0).standard_normal((2, 1, 4, 4))
    np.testing.assert_array_equal(c.predict(x, train_flg=True), d.predict(x, train_flg=True))  # same masks


# ----------------------------------------------------------------------------- config and pickles
@pytest.mark.parametrize("make", [_tiny_simple, _tiny_deep, lambda dtype=np.float64: SimpleConvNet(dtype=dtype)],
                         ids=["simple", "deep", "simple-default"])
def test_config_rebuilds_the_architecture(make):
    net = make(np.float32)
    config = json.loads(json.dumps(net.config))
    clone = type(net)(**config)
    assert {k: (v.shape, v.dtype) for k, v in clone.params.items()} == {
        k: (v.shape, v.dtype) for k, v in net.params.items()}


@pytest.mark.parametrize("make", [lambda: SimpleConvNet(seed=5), lambda: DeepConvNet(seed=5)],
                         ids=["SimpleConvNet", "DeepConvNet"])
def test_book_pickle_loads_and_predicts_identically_in_both_backends(make, tmp_path, rng):
    source = make()
    path = tmp_path / "params.pkl"
    with open(path, "wb") as f:  # the book's save_params: a plain dict name → ndarray, pickled
        pickle.dump({k: np.array(v) for k, v in source.params.items()}, f)
    x = rng.random((5, 1, 28, 28))
    preds = {}
    for backend in zerodl.BACKENDS:
        with zerodl.use_backend(backend):
            net = type(source)(seed=99)
            net.load_params(path)
            for k in source.params:
                np.testing.assert_array_equal(net.params[k], source.params[k])
            preds[backend] = net.predict(x)
    np.testing.assert_allclose(preds["numba"], preds["numpy"], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- errors
def test_constructor_errors():
    with pytest.raises(ValueError, match=r"SimpleConvNet: input_dim must be \(C, H, W\)"):
        SimpleConvNet(input_dim=(28, 28))
    with pytest.raises(ValueError, match=r"SimpleConvNet: conv_param has unknown keys \['filters'\]"):
        SimpleConvNet(conv_param={"filters": 3})
    with pytest.raises(ValueError, match=r"conv_param\['stride'\] must be a positive integer, got 0"):
        SimpleConvNet(conv_param={"stride": 0})
    # 7x7 input, 5x5 filter → 3x3, which a 2x2 stride-2 pool does not tile: the pool is named.
    with pytest.raises(ValueError, match="Pooling.forward: filter size 2 with stride 2 and pad 0 does not tile"):
        SimpleConvNet(input_dim=(1, 7, 7))
    with pytest.raises(ValueError, match="DeepConvNet: conv_param_4\\['pad'\\] must be an integer >= 0"):
        DeepConvNet(conv_param_4={"pad": -1})
    with pytest.raises(ValueError, match="Pooling.forward: .* does not tile the input height 9"):
        DeepConvNet(input_dim=(1, 14, 14))
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        SimpleConvNet(dtype=np.int32)


def test_wrong_input_shape_is_named(rng):
    net = _tiny_simple()
    with pytest.raises(ValueError, match=r"Convolution.forward: x must have shape \(N, C, H, W\), got shape \(2, 36\)"):
        net.predict(rng.standard_normal((2, 36)))
    with pytest.raises(ValueError, match="Convolution.forward: x has 3 channels"):
        net.predict(rng.standard_normal((2, 3, 6, 6)))


def test_repr_lists_the_stack():
    text = repr(_tiny_deep())
    assert "(Conv4): Convolution(W=(2, 2, 3, 3), stride=1, pad=2)" in text
    assert "(Pool3): Pooling(pool_h=2, pool_w=2, stride=2, pad=0)" in text


@pytest.mark.parametrize("make", [_tiny_simple, _tiny_deep], ids=["simple", "deep"])
def test_save_and_load_network_round_trip(make, tmp_path, rng):
    net = make(np.float32, seed=3)
    path = zerodl.save_network(net, tmp_path / "model.npz")
    clone = zerodl.load_network(path)
    assert type(clone) is type(net) and clone.dtype == np.float32
    x = rng.random((4, *net.input_dim)).astype(np.float32)
    np.testing.assert_array_equal(clone.predict(x), net.predict(x))


# ----------------------------------------------------------------------------- inference path
def _layer_by_layer(net, x):
    # predict's scores the book's way: every layer's forward in turn, in inference mode.
    for layer in net.layers.values():
        x = layer.forward(x, False) if layer.takes_train_flg else layer.forward(x)
    return x


def _book_deep(dtype):
    # DeepConvNet's real layer shapes (Winograd layers, the fused pooling, 1-channel first layer)
    # on 16x16 images: 16 → pool 8 → 8 (pad 2: 10) → pool 5 → ... keeps every route in play.
    return DeepConvNet(input_dim=(1, 12, 12), hidden_size=8, dtype=dtype, seed=1)


@pytest.mark.parametrize("backend", zerodl.BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", [_book_deep, lambda dt: SimpleConvNet(dtype=dt, seed=2)])
def test_predict_inference_path_equals_the_layer_by_layer_scores(make, dtype, backend, rng):
    net = make(dtype)
    x = rng.random((7, *net.input_dim)).astype(dtype)
    with zerodl.use_backend(backend):
        assert net.step_path == "fused"
        got = net.predict(x)
        expected = _layer_by_layer(net, x)
    assert got.dtype == dtype and got.shape == expected.shape
    if backend == "numpy":
        np.testing.assert_array_equal(got, expected)
    else:
        np.testing.assert_allclose(got, expected, **tolerance(dtype))


def test_predict_inference_path_keeps_no_caches(rng):
    net = _book_deep(np.float32)
    net.predict(rng.random((3, 1, 12, 12)).astype(np.float32))
    for layer in net.layers.values():
        for cache in ("x", "col", "arg_max", "mask"):
            assert getattr(layer, cache, None) is None, (layer, cache)
    # Training mode keeps the layer path: a backward can follow it.
    net.predict(rng.random((3, 1, 12, 12)).astype(np.float32), train_flg=True)
    assert net.layers["Conv1"].x is not None


def test_predict_inference_path_bit_identical_for_one_or_two_threads(rng):
    import numba

    net = _book_deep(np.float32)
    x = rng.random((23, 1, 12, 12)).astype(np.float32)
    runs = []
    old = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            with zerodl.use_backend("numba"):
                runs.append(net.predict(x))
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("backend", zerodl.BACKENDS)
@pytest.mark.parametrize("make", [
    lambda dt: SimpleConvNet(dtype=dt, seed=2),
    lambda dt: SimpleConvNet((1, 12, 12), {"filter_num": 6, "filter_size": 3, "pad": 1, "stride": 1}, dtype=dt, seed=3),
])  # (not DeepConvNet: the book's Dropout.backward after an inference forward reuses the last training mask)
def test_loss_keeps_the_book_caches_so_a_manual_backward_follows_this_batch(make, backend, rng):
    # The book's gradient: loss(x, t) (inference mode by default), then backward through the layers
    # by hand. The loss must run the layers themselves, so the caches are this batch's, not the last
    # predict's or training step's.
    def by_hand(net, x, t):
        net.loss(x, t)
        dout = net.last_layer.backward(1)
        for layer in reversed(list(net.layers.values())):
            dout = layer.backward(dout)
        return np.array(net.layers["Conv1"].dW)

    net, fresh = make(np.float64), make(np.float64)
    x, t = rng.random((4, *net.input_dim)), rng.integers(0, 10, 4)
    with zerodl.use_backend(backend):
        net.loss(rng.random((4, *net.input_dim)), t, train_flg=True)  # caches of another batch
        net.predict(rng.random((5, *net.input_dim)))  # and a cache-less inference in between
        got, expected = by_hand(net, x, t), by_hand(fresh, x, t)
    np.testing.assert_array_equal(got, expected)


def test_loss_honours_a_subclass_predict(rng):
    class Scaled(SimpleConvNet):
        def predict(self, x, train_flg=False):
            return 2.0 * super().predict(x, train_flg)

    net, plain = Scaled(dtype=np.float64, seed=2), SimpleConvNet(dtype=np.float64, seed=2)
    x, t = rng.random((3, 1, 28, 28)), rng.integers(0, 10, 3)
    assert net.loss(x, t) != plain.loss(x, t)

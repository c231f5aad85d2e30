"""Book parity: ``np.random.seed`` gives the book's weights and masks, the book's loose inputs work.

The ``book_*`` functions below transcribe the book's initialisation code (chapters 4–8) directly:
the same ``np.random.randn`` / ``np.random.rand`` calls in the same order and shapes, nothing
shared with zerodl. Every comparison is bit for bit (``assert_array_equal``).
"""

from __future__ import annotations

import numpy as np
import pytest

import zerodl
from zerodl import _random
from zerodl.layers import Convolution, Dropout, SoftmaxWithLoss
from zerodl.networks import (
    DeepConvNet,
    MultiLayerNet,
    MultiLayerNetExtend,
    SimpleConvNet,
    TwoLayerNet,
    TwoLayerNetCh4,
)
from zerodl.util import shuffle_dataset


@pytest.fixture(autouse=True)
def _keep_global_random_state():
    """These tests seed NumPy's global state; give the rest of the suite its state back."""
    state = np.random.get_state()
    yield
    np.random.set_state(state)


# ----------------------------------------------------------------------------- the book's inits
def book_two_layer(input_size, hidden_size, output_size, weight_init_std=0.01):
    # ch04/two_layer_net.py and ch05/two_layer_net.py initialise identically.
    return {
        "W1": weight_init_std * np.random.randn(input_size, hidden_size),
        "b1": np.zeros(hidden_size),
        "W2": weight_init_std * np.random.randn(hidden_size, output_size),
        "b2": np.zeros(output_size),
    }


def book_multi_layer(input_size, hidden_size_list, output_size, weight_init_std="relu"):
    # common/multi_layer_net.py (and _extend) __init_weight.
    sizes = [input_size] + list(hidden_size_list) + [output_size]
    params = {}
    for idx in range(1, len(sizes)):
        scale = weight_init_std
        if str(weight_init_std).lower() in ("relu", "he"):
            scale = np.sqrt(2.0 / sizes[idx - 1])
        elif str(weight_init_std).lower() in ("sigmoid", "xavier"):
            scale = np.sqrt(1.0 / sizes[idx - 1])
        params["W" + str(idx)] = scale * np.random.randn(sizes[idx - 1], sizes[idx])
        params["b" + str(idx)] = np.zeros(sizes[idx])
    return params


def book_simple_conv(input_dim, filter_num, filter_size, pad, stride, hidden_size, output_size,
                     weight_init_std=0.01):
    # ch07/simple_convnet.py
    input_size = input_dim[1]
    conv_output_size = (input_size - filter_size + 2 * pad) / stride + 1
    pool_output_size = int(filter_num * (conv_output_size / 2) * (conv_output_size / 2))
    return {
        "W1": weight_init_std * np.random.randn(filter_num, input_dim[0], filter_size, filter_size),
        "b1": np.zeros(filter_num),
        "W2": weight_init_std * np.random.randn(pool_output_size, hidden_size),
        "b2": np.zeros(hidden_size),
        "W3": weight_init_std * np.random.randn(hidden_size, output_size),
        "b3": np.zeros(output_size),
    }


def book_deep_conv(hidden_size=50, output_size=10):
    # ch08/deep_convnet.py with its default conv params on (1, 28, 28).
    filters = [16, 16, 32, 32, 64, 64]
    pre_node_nums = np.array([1 * 3 * 3, 16 * 3 * 3, 16 * 3 * 3, 32 * 3 * 3, 32 * 3 * 3, 64 * 3 * 3,
                              64 * 4 * 4, hidden_size])
    scales = np.sqrt(2.0 / pre_node_nums)
    params = {}
    pre_channel_num = 1
    for idx, fn in enumerate(filters):
        params["W" + str(idx + 1)] = scales[idx] * np.random.randn(fn, pre_channel_num, 3, 3)
        params["b" + str(idx + 1)] = np.zeros(fn)
        pre_channel_num = fn
    params["W7"] = scales[6] * np.random.randn(64 * 4 * 4, hidden_size)
    params["b7"] = np.zeros(hidden_size)
    params["W8"] = scales[7] * np.random.randn(hidden_size, output_size)
    params["b8"] = np.zeros(output_size)
    return params


def _assert_params_equal(net, book, dtype=np.float64):
    assert list(net.params) == list(book)
    for key, value in book.items():
        assert net.params[key].dtype == dtype, key
        np.testing.assert_array_equal(net.params[key], value.astype(dtype), err_msg=key)


NETWORKS = {
    "TwoLayerNet": (lambda **kw: TwoLayerNet(7, 5, 3, **kw), lambda: book_two_layer(7, 5, 3)),
    "TwoLayerNet-std": (lambda **kw: TwoLayerNet(7, 5, 3, weight_init_std=0.3, **kw),
                        lambda: book_two_layer(7, 5, 3, 0.3)),
    "TwoLayerNetCh4": (lambda **kw: TwoLayerNetCh4(784, 50, 10, **kw), lambda: book_two_layer(784, 50, 10)),
    "MultiLayerNet-relu": (lambda **kw: MultiLayerNet(9, [6, 5, 4], 3, **kw),
                           lambda: book_multi_layer(9, [6, 5, 4], 3)),
    "MultiLayerNet-sigmoid": (
        lambda **kw: MultiLayerNet(9, [6, 5], 3, activation="sigmoid", weight_init_std="xavier", **kw),
        lambda: book_multi_layer(9, [6, 5], 3, "xavier")),
    "MultiLayerNet-0.01": (lambda **kw: MultiLayerNet(9, [6], 3, weight_init_std=0.01, **kw),
                           lambda: book_multi_layer(9, [6], 3, 0.01)),
    "MultiLayerNetExtend": (
        lambda **kw: MultiLayerNetExtend(9, [6, 5], 3, use_dropout=True, use_batchnorm=False, **kw),
        lambda: book_multi_layer(9, [6, 5], 3)),
    "SimpleConvNet-default": (lambda **kw: SimpleConvNet(**kw),
                              lambda: book_simple_conv((1, 28, 28), 30, 5, 0, 1, 100, 10)),
    "SimpleConvNet-ch07-gradient-check": (
        lambda **kw: SimpleConvNet(input_dim=(1, 10, 10),
                                   conv_param={"filter_num": 10, "filter_size": 3, "pad": 0, "stride": 1},
                                   hidden_size=10, output_size=10, weight_init_std=0.01, **kw),
        lambda: book_simple_conv((1, 10, 10), 10, 3, 0, 1, 10, 10)),
    "DeepConvNet": (lambda **kw: DeepConvNet(**kw), book_deep_conv),
}


@pytest.mark.parametrize("name", list(NETWORKS))
def test_seeded_global_state_gives_the_books_weights(name):
    build, book = NETWORKS[name]
    np.random.seed(0)
    net = build()
    after_zerodl = np.random.random_sample()
    np.random.seed(0)
    expected = book()
    after_book = np.random.random_sample()
    _assert_params_equal(net, expected)
    # The same number of draws: the global state moved exactly as the book's code moves it.
    assert after_zerodl == after_book


@pytest.mark.parametrize("name", ["TwoLayerNet", "MultiLayerNet-sigmoid", "SimpleConvNet-ch07-gradient-check"])
def test_float32_networks_get_the_same_draws_cast(name):
    build, book = NETWORKS[name]
    np.random.seed(7)
    net = build(dtype=np.float32)
    np.random.seed(7)
    _assert_params_equal(net, book(), dtype=np.float32)


def test_batchnorm_extend_draws_only_the_weights():
    np.random.seed(4)
    net = MultiLayerNetExtend(9, [6, 5], 3, use_batchnorm=True, use_dropout=True)
    np.random.seed(4)
    book = book_multi_layer(9, [6, 5], 3)
    for key in book:
        np.testing.assert_array_equal(net.params[key], book[key])
    np.testing.assert_array_equal(net.params["gamma1"], np.ones(6))
    np.testing.assert_array_equal(net.params["beta2"], np.zeros(5))


def test_two_networks_in_a_row_continue_the_global_stream():
    # The book's optimizer_compare_mnist builds four nets one after another from one seed.
    np.random.seed(0)
    nets = [MultiLayerNet(9, [6, 5], 3) for _ in range(3)]
    np.random.seed(0)
    books = [book_multi_layer(9, [6, 5], 3) for _ in range(3)]
    for net, book in zip(nets, books):
        _assert_params_equal(net, book)
    assert not np.array_equal(nets[0].params["W1"], nets[1].params["W1"])


@pytest.mark.parametrize("name", ["TwoLayerNet", "MultiLayerNetExtend", "DeepConvNet", "TwoLayerNetCh4"])
def test_explicit_seed_keeps_zerodls_own_generator(name):
    build, _ = NETWORKS[name]
    np.random.seed(0)
    state = np.random.get_state()
    a = build(seed=3)
    # An explicit seed neither reads nor moves the global state.
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2] == state[2]
    np.random.seed(123)
    b = build(seed=3)
    c = build(seed=np.random.default_rng(3))
    for key in a.params:
        np.testing.assert_array_equal(a.params[key], b.params[key])
        np.testing.assert_array_equal(a.params[key], c.params[key])
    np.random.seed(0)
    unseeded = build()
    assert not np.array_equal(unseeded.params["W1"], a.params["W1"])


# ----------------------------------------------------------------------------- Dropout masks
def test_dropout_without_seed_draws_the_books_mask(backend, dtype):
    x = np.linspace(-1, 1, 24, dtype=dtype).reshape(4, 6) + 2
    np.random.seed(11)
    layer = Dropout(0.3)
    assert layer.rng is None
    out1 = layer.forward(x)
    mask1 = layer.mask.copy()
    out2 = layer.forward(x)
    np.random.seed(11)
    book1 = np.random.rand(*x.shape) > 0.3
    book2 = np.random.rand(*x.shape) > 0.3
    np.testing.assert_array_equal(mask1, book1)
    np.testing.assert_array_equal(layer.mask, book2)
    np.testing.assert_array_equal(out1, x * book1)
    np.testing.assert_array_equal(out2, x * book2)
    assert out1.dtype == dtype
    # Inference draws nothing.
    state = np.random.get_state()[1].copy()
    layer.forward(x, train_flg=False)
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_dropout_with_seed_ignores_the_global_state():
    x = np.ones((3, 5))
    np.random.seed(0)
    a = Dropout(0.5, seed=2)
    a.forward(x)
    np.random.seed(99)
    b = Dropout(0.5, seed=2)
    b.forward(x)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.mask, np.random.default_rng(2).random(x.shape) > 0.5)


def test_extend_masks_follow_the_books_forward_order(backend):
    np.random.seed(0)
    net = MultiLayerNetExtend(9, [6, 5], 3, use_dropout=True, dropout_ration=0.2)
    x = np.linspace(0.1, 1.0, 4 * 9).reshape(4, 9)
    t = np.array([0, 1, 2, 1])
    net.gradient(x, t)
    np.random.seed(0)
    book_multi_layer(9, [6, 5], 3)
    mask1 = np.random.rand(4, 6) > 0.2
    mask2 = np.random.rand(4, 5) > 0.2
    np.testing.assert_array_equal(net.layers["Dropout1"].mask, mask1)
    np.testing.assert_array_equal(net.layers["Dropout2"].mask, mask2)


def test_deep_convnet_masks_follow_the_book():
    np.random.seed(1)
    net = DeepConvNet()
    x = np.random.rand(2, 1, 28, 28)
    net.predict(x, train_flg=True)
    np.random.seed(1)
    book_deep_conv()
    np.random.rand(2, 1, 28, 28)
    mask1 = np.random.rand(2, 50) > 0.5
    mask2 = np.random.rand(2, 10) > 0.5
    np.testing.assert_array_equal(net.layers["Dropout1"].mask, mask1)
    np.testing.assert_array_equal(net.layers["Dropout2"].mask, mask2)


# ----------------------------------------------------------------------------- make_rng
@pytest.mark.parametrize("bad", [True, False, np.bool_(True), 1.5, "0"])
@pytest.mark.parametrize("build", [
    lambda s: TwoLayerNet(3, 2, 2, seed=s),
    lambda s: TwoLayerNetCh4(3, 2, 2, seed=s),
    lambda s: MultiLayerNetExtend(3, [2], 2, use_dropout=True, seed=s),
    lambda s: SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3}, 4, 2, seed=s),
    lambda s: Dropout(0.5, seed=s),
    lambda s: shuffle_dataset(np.zeros((2, 2)), np.zeros(2), seed=s),
], ids=["TwoLayerNet", "TwoLayerNetCh4", "MultiLayerNetExtend", "SimpleConvNet", "Dropout", "shuffle_dataset"])
def test_bad_seeds_are_refused_the_same_way_everywhere(build, bad):
    with pytest.raises(TypeError, match="seed must be an int, a numpy Generator or None"):
        build(bad)


def test_make_rng_contract():
    gen = np.random.default_rng(0)
    assert _random.make_rng(gen) is gen
    assert _random.make_rng(None) is None
    assert isinstance(_random.make_rng(np.int64(3)), np.random.Generator)
    with pytest.raises(ValueError, match="Dropout: seed must be >= 0, got -1"):
        Dropout(0.5, seed=-1)
    with pytest.raises(TypeError, match="MultiLayerNet: seed"):
        MultiLayerNet(3, [2], 2, seed=True)
    np.random.seed(5)
    np.testing.assert_array_equal(_random.normal(None, (2, 3)), np.random.RandomState(5).randn(2, 3))


# ----------------------------------------------------------------------------- labels (N, 1)
def _book_cross_entropy(y, t):
    # common/functions.py cross_entropy_error, for the (1, 1) label the book's ch07 script passes.
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


def test_a_column_of_labels_is_read_as_labels(backend):
    scores = np.array([[0.2, 1.5, -0.3], [2.0, 0.1, 0.4], [0.0, 0.0, 3.0]])
    flat, column = SoftmaxWithLoss(), SoftmaxWithLoss()
    t = np.array([1, 0, 2])
    loss = flat.forward(scores, t)
    assert column.forward(scores, t.reshape(3, 1)) == loss
    np.testing.assert_array_equal(column.backward(1), flat.backward(1))
    # The book's (1, 1) case: the same loss as the book's cross_entropy_error gives.
    one = SoftmaxWithLoss()
    y = np.exp(scores[:1] - scores[:1].max()) / np.exp(scores[:1] - scores[:1].max()).sum()
    np.testing.assert_allclose(one.forward(scores[:1], np.array([[1]])), _book_cross_entropy(y, np.array([[1]])),
                               rtol=1e-15)


def test_bad_label_columns_are_still_refused():
    scores = np.zeros((2, 3))
    with pytest.raises(ValueError, match="label 3 is out of range for 3 classes"):
        SoftmaxWithLoss().forward(scores, np.array([[0], [3]]))
    with pytest.raises(TypeError, match="label vector t must be integers"):
        SoftmaxWithLoss().forward(scores, np.array([[0.0], [1.0]]))
    with pytest.raises(ValueError, match=r"t must be labels of shape \(2,\)"):
        SoftmaxWithLoss().forward(scores, np.array([[0], [1], [2]]))
    # One class: (N, 1) is the one-hot shape and stays checked as one-hot.
    assert SoftmaxWithLoss().forward(np.zeros((2, 1)), np.ones((2, 1))) == pytest.approx(-np.log(1 + 1e-7))
    with pytest.raises(ValueError, match="one-hot t must hold exactly one 1 per row"):
        SoftmaxWithLoss().forward(np.zeros((2, 1)), np.array([[1], [0]]))


def test_the_books_ch07_gradient_check_runs():
    np.random.seed(0)
    net = SimpleConvNet(input_dim=(1, 10, 10),
                        conv_param={"filter_num": 10, "filter_size": 3, "pad": 0, "stride": 1},
                        hidden_size=10, output_size=10, weight_init_std=0.01)
    X = np.random.rand(100).reshape((1, 1, 10, 10))
    T = np.array([1]).reshape((1, 1))
    grad = net.gradient(X, T)
    assert net.loss(X, T) == net.loss(X, np.array([1]))
    for key, value in net.gradient(X, np.array([1])).items():
        np.testing.assert_array_equal(grad[key], value)


# ----------------------------------------------------------------------------- Convolution bias
@pytest.mark.parametrize("bias", [0, 0.0, np.float64(0.0), np.int32(0), np.array(0.0)])
def test_convolution_takes_the_books_scalar_bias(bias, dtype):
    w = np.arange(2 * 1 * 3 * 3, dtype=dtype).reshape(2, 1, 3, 3) / 10
    conv = Convolution(w, bias)
    assert conv.b.shape == (2,) and conv.b.dtype == dtype
    np.testing.assert_array_equal(conv.b, np.zeros(2, dtype=dtype))
    x = np.linspace(0, 1, 25, dtype=dtype).reshape(1, 1, 5, 5)
    np.testing.assert_array_equal(conv.forward(x), Convolution(w, np.zeros(2, dtype=dtype)).forward(x))


def test_a_scalar_bias_is_added_to_every_filter(backend):
    w = np.ones((3, 1, 2, 2))
    x = np.ones((1, 1, 3, 3))
    out = Convolution(w, 0.5).forward(x)
    np.testing.assert_array_equal(out, np.full((1, 3, 2, 2), 4.5))


@pytest.mark.parametrize("bias, error, fragment", [
    (True, TypeError, "Convolution: b must be a float32 or float64 array, got dtype bool"),
    ("0", TypeError, "Convolution: b"),
    (np.zeros(3), ValueError, r"Convolution: b must have shape \(2,\) to match W"),
    (np.zeros((2, 1)), ValueError, r"Convolution: b must have shape \(2,\)"),
])
def test_wrong_biases_still_fail_clearly(bias, error, fragment):
    with pytest.raises(error, match=fragment):
        Convolution(np.ones((2, 1, 3, 3)), bias)


def test_public_names():
    assert zerodl.networks.TwoLayerNetCh4 is TwoLayerNetCh4
    assert zerodl.TwoLayerNet is TwoLayerNet  # chapter 5's stays the default TwoLayerNet

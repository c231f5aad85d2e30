"""Dropout and BatchNormalization layers: the book's semantics, seeded masks, running statistics,
2-d and 4-d input, numerical gradient checks (float64, both backends), clear errors."""

import numpy as np
import pytest

import zerodl
from tests.book_chapter6 import BookBatchNorm
from tests.helpers import check_layer_gradient
from zerodl import BatchNormalization, Dropout
from zerodl.gradient import numerical_gradient

# ----------------------------------------------------------------------------- Dropout


def test_same_seed_same_masks_in_both_backends(rng):
    x = rng.standard_normal((6, 7))
    outs, masks = [], []
    for backend in zerodl.BACKENDS:
        with zerodl.use_backend(backend):
            layer = Dropout(0.4, seed=11)
            outs.append([layer.forward(x) for _ in range(3)])
            masks.append(layer.mask.copy())
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(masks[0], masks[1])


def test_mask_is_the_books_rule_on_the_generators_numbers(backend, rng):
    # The book draws np.random.rand(*x.shape) > ratio; zerodl draws the same kind of numbers
    # from its own Generator, in float64 whatever the input dtype.
    x = rng.standard_normal((5, 4)).astype(np.float32)
    layer = Dropout(0.3, seed=5)
    out = layer.forward(x)
    expected_mask = np.random.default_rng(5).random(x.shape) > 0.3
    np.testing.assert_array_equal(layer.mask, expected_mask)
    np.testing.assert_array_equal(out, x * expected_mask)  # no 1/(1-p) rescaling in training
    assert out.dtype == np.float32


def test_different_seeds_and_successive_calls_give_new_masks(backend, rng):
    x = np.ones((20, 20))
    a, b = Dropout(0.5, seed=1), Dropout(0.5, seed=2)
    m1 = a.forward(x).copy()
    assert not np.array_equal(m1, b.forward(x))
    assert not np.array_equal(m1, a.forward(x))


def test_shared_generator_is_used_as_is(backend):
    gen = np.random.default_rng(3)
    layer = Dropout(0.5, seed=gen)
    assert layer.rng is gen
    x = np.ones((4, 4))
    layer.forward(x)
    np.testing.assert_array_equal(layer.mask, np.random.default_rng(3).random((4, 4)) > 0.5)


def test_keep_fraction_is_about_one_minus_ratio(backend):
    layer = Dropout(0.25, seed=0)
    layer.forward(np.ones((200, 200)))
    assert abs(layer.mask.mean() - 0.75) < 0.01


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_test_mode_scales_by_keep_probability(backend, dtype, ratio, rng):
    x = rng.standard_normal((3, 5)).astype(dtype)
    before = x.copy()
    layer = Dropout(ratio, seed=0)
    out = layer.forward(x, train_flg=False)
    np.testing.assert_array_equal(out, x * (1.0 - ratio))  # the book's expression, bit for bit
    assert out.dtype == dtype
    np.testing.assert_array_equal(x, before)


def test_backward_is_dout_times_mask_and_leaves_dout_alone(backend, dtype, rng):
    x = rng.standard_normal((4, 3, 2)).astype(dtype)
    layer = Dropout(0.5, seed=9)
    layer.forward(x)
    dout = rng.standard_normal(x.shape).astype(dtype)
    before = dout.copy()
    dx = layer.backward(dout)
    np.testing.assert_array_equal(dx, dout * layer.mask)
    np.testing.assert_array_equal(dout, before)
    assert dx.dtype == dtype


def test_frozen_mask_makes_forward_deterministic_and_gradient_checks(backend, rng):
    x = rng.standard_normal((3, 4))
    layer = Dropout(0.5, seed=4)
    first = layer.forward(x)
    frozen = layer.freeze_mask()
    np.testing.assert_array_equal(layer.forward(x), first)
    np.testing.assert_array_equal(layer.forward(x), first)
    dout = rng.standard_normal(x.shape)
    layer.forward(x)
    check_layer_gradient(lambda z: layer.forward(z), x, dout, layer.backward(dout))
    layer.unfreeze_mask()
    assert layer.frozen_mask is None
    layer.forward(np.ones((30, 30)))
    assert layer.mask.shape == (30, 30) and frozen.shape == (3, 4)


def test_frozen_mask_of_wrong_shape_is_refused(backend):
    layer = Dropout(0.5, seed=0)
    layer.freeze_mask(np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"Dropout\.forward"):
        layer.forward(np.ones((3, 2)))
    with pytest.raises(TypeError, match="bool"):
        layer.freeze_mask(np.ones((2, 2)))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"dropout_ratio": 1.5}, ValueError, r"Dropout: dropout_ratio must be a number in \[0, 1\], got 1.5"),
        ({"dropout_ratio": -0.1}, ValueError, "dropout_ratio"),
        ({"dropout_ratio": "0.5"}, ValueError, "dropout_ratio"),
        ({"dropout_ratio": True}, ValueError, "dropout_ratio"),
        ({"seed": 1.5}, TypeError, "Dropout: seed must be an int"),
    ],
)
def test_dropout_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Dropout(**kwargs)


def test_dropout_bad_inputs(backend):
    layer = Dropout(0.5, seed=0)
    with pytest.raises(RuntimeError, match=r"Dropout\.backward called before forward"):
        layer.backward(np.ones(3))
    with pytest.raises(TypeError, match=r"Dropout\.forward: x must be a float32 or float64 array"):
        layer.forward(np.ones(3, dtype=np.int64))
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"Dropout\.backward: dout must have shape \(2, 3\)"):
        layer.backward(np.ones((3, 2)))
    assert repr(layer) == "Dropout(dropout_ratio=0.5)"


# ----------------------------------------------------------------------------- BatchNormalization


def _bn(d, dtype=np.float64, rng=None, **kw):
    rng = rng or np.random.default_rng(0)
    gamma = (1 + 0.5 * rng.standard_normal(d)).astype(dtype)
    beta = rng.standard_normal(d).astype(dtype)
    return BatchNormalization(gamma, beta, **kw), gamma.copy(), beta.copy()


def test_train_and_test_forward_match_the_book(backend, rng):
    layer, gamma, beta = _bn(5, rng=rng)
    book = BookBatchNorm(gamma, beta)
    for step in range(3):
        x = rng.standard_normal((8, 5)) * (step + 1) + step
        np.testing.assert_allclose(layer.forward(x, train_flg=True), book.forward(x, True), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.running_mean, book.running_mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(layer.running_var, book.running_var, rtol=1e-12, atol=1e-14)
        dout = rng.standard_normal(x.shape)
        np.testing.assert_allclose(layer.backward(dout), book.backward(dout), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.dgamma, book.dgamma, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.dbeta, book.dbeta, rtol=1e-12, atol=1e-12)
    x = rng.standard_normal((4, 5))
    np.testing.assert_allclose(layer.forward(x, train_flg=False), book.forward(x, False), rtol=1e-12)


def test_running_stats_lazy_zeros_of_the_layers_dtype_updated_in_place(backend, dtype, rng):
    layer, _, _ = _bn(3, dtype, rng)
    assert layer.running_mean is None and layer.running_var is None
    x1 = rng.standard_normal((6, 3)).astype(dtype)
    layer.forward(x1, train_flg=True)
    rm, rv = layer.running_mean, layer.running_var
    assert rm.dtype == rv.dtype == dtype
    np.testing.assert_allclose(rm, 0.1 * x1.mean(axis=0, dtype=np.float64), rtol=1e-5)
    np.testing.assert_allclose(rv, 0.1 * x1.var(axis=0, dtype=np.float64), rtol=1e-5)
    x2 = rng.standard_normal((6, 3)).astype(dtype) + 2
    expected_mean = 0.9 * rm.astype(np.float64) + 0.1 * x2.mean(axis=0, dtype=np.float64)
    layer.forward(x2, train_flg=True)
    assert layer.running_mean is rm and layer.running_var is rv  # updated in place, never rebound
    np.testing.assert_allclose(rm, expected_mean, rtol=1e-5)
    # Inference leaves them alone.
    before = rm.copy()
    layer.forward(x2, train_flg=False)
    np.testing.assert_array_equal(rm, before)


def test_caller_provided_running_stats_are_written_through(backend):
    rm, rv = np.zeros(2), np.ones(2)
    layer = BatchNormalization(np.ones(2), np.zeros(2), momentum=0.5, running_mean=rm, running_var=rv)
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    layer.forward(x)
    assert layer.running_mean is rm
    np.testing.assert_allclose(rm, [1.0, 2.0])
    np.testing.assert_allclose(rv, [0.5 + 0.5 * 1.0, 0.5 + 0.5 * 4.0])


def test_test_mode_uses_running_stats(backend, rng):
    layer = BatchNormalization(np.full(3, 2.0), np.full(3, 1.0), running_mean=np.array([1.0, 2.0, 3.0]),
                               running_var=np.array([4.0, 1.0, 0.25]))
    x = rng.standard_normal((4, 3))
    expected = 2.0 * (x - [1.0, 2.0, 3.0]) / np.sqrt(np.array([4.0, 1.0, 0.25]) + 10e-7) + 1.0
    np.testing.assert_allclose(layer.forward(x, train_flg=False), expected, rtol=1e-13)


def test_4d_input_is_normalised_per_activation_like_the_book(backend, dtype, rng):
    n, c, h, w = 5, 2, 3, 2
    layer, gamma, beta = _bn(c * h * w, dtype, rng)
    flat_layer = BatchNormalization(gamma.copy(), beta.copy())
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    out = layer.forward(x)
    assert out.shape == x.shape and out.dtype == dtype
    np.testing.assert_array_equal(out.reshape(n, -1), flat_layer.forward(x.reshape(n, -1)))
    dout = rng.standard_normal(x.shape).astype(dtype)
    dx = layer.backward(dout)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_array_equal(dx.reshape(n, -1), flat_layer.backward(dout.reshape(n, -1)))
    book = BookBatchNorm(gamma.astype(np.float64), beta.astype(np.float64))
    tol = {"rtol": 1e-4, "atol": 1e-4} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(out, book.forward(x.astype(np.float64)), **tol)


@pytest.mark.parametrize("shape", [(6, 4), (5, 2, 1, 2)], ids=["2d", "4d"])
def test_numerical_gradient_dx_dgamma_dbeta(backend, shape, rng):
    d = int(np.prod(shape[1:]))
    layer, _, _ = _bn(d, rng=rng)
    x = rng.standard_normal(shape)
    dout = rng.standard_normal(shape)

    def f(_=None):
        return float(np.sum(layer.forward(x, train_flg=True) * dout))

    layer.forward(x, train_flg=True)
    dx = layer.backward(dout)
    dgamma, dbeta = layer.dgamma.copy(), layer.dbeta.copy()
    check_layer_gradient(lambda z: layer.forward(z, train_flg=True), x, dout, dx)
    np.testing.assert_allclose(dgamma, numerical_gradient(f, layer.gamma, h=1e-6), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dbeta, numerical_gradient(f, layer.beta, h=1e-6), rtol=1e-5, atol=1e-6)


def test_float64_input_to_float32_layer_is_converted(backend):
    layer = BatchNormalization(np.ones(2, dtype=np.float32), np.zeros(2, dtype=np.float32))
    out = layer.forward(np.array([[1.0, 2.0], [3.0, 5.0]]))
    assert out.dtype == np.float32 and layer.running_mean.dtype == np.float32


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: BatchNormalization(np.ones(3), np.zeros(4)), ValueError,
         r"BatchNormalization: beta must have shape \(3,\) to match gamma, got \(4,\)"),
        (lambda: BatchNormalization(np.ones((2, 3)), np.zeros(3)), ValueError, r"gamma must have shape \(D,\)"),
        (lambda: BatchNormalization(np.ones(3), np.zeros(3), momentum=1.5), ValueError, "momentum"),
        (lambda: BatchNormalization(np.ones(3), np.zeros(3), running_mean=np.zeros(2), running_var=np.ones(2)),
         ValueError, r"running_mean must have shape \(3,\)"),
        (lambda: BatchNormalization(np.ones(3), np.zeros(3), running_mean=np.zeros(3)), ValueError, "both"),
        (lambda: BatchNormalization(np.ones(3, dtype=int), np.zeros(3)), TypeError, "gamma must be a float"),
    ],
)
def test_bn_bad_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


def test_bn_bad_inputs(backend):
    layer = BatchNormalization(np.ones(4), np.zeros(4))
    with pytest.raises(RuntimeError, match=r"BatchNormalization\.backward needs a training-mode forward"):
        layer.backward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"BatchNormalization\.forward: x has 5 features per sample "
                                         r"\(shape \(2, 5\)\) but gamma has 4"):
        layer.forward(np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"\(shape \(2, 1, 2, 3\), flattened to \(2, 6\)\) but gamma has 4"):
        layer.forward(np.ones((2, 1, 2, 3)))
    with pytest.raises(ValueError, match=r"must have shape \(N, D\) or \(N, C, H, W\), got shape \(2, 2, 2\)"):
        layer.forward(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="is empty"):
        layer.forward(np.ones((0, 4)))
    with pytest.raises(TypeError, match="x must be a float32 or float64"):
        layer.forward(np.ones((2, 4), dtype=np.int32))
    layer.forward(np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"BatchNormalization\.backward: dout must have shape \(2, 4\)"):
        layer.backward(np.ones((3, 4)))
    layer.forward(np.ones((2, 4)), train_flg=False)
    with pytest.raises(RuntimeError, match="training-mode forward"):
        layer.backward(np.ones((2, 4)))
    assert repr(layer) == "BatchNormalization(4, momentum=0.9)"

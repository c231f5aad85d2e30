"""zerodl.util: the book's common/util.py names, checked against transcriptions of the book's maths."""

from __future__ import annotations

import numpy as np
import pytest

from tests import naive
from zerodl import plots, util
from zerodl.experiments import _common


@pytest.fixture(autouse=True)
def _keep_global_random_state():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


def book_smooth_curve(x):
    # common/util.py: an 11-point Kaiser window (beta 2) over the curve with mirrored ends.
    window_len = 11
    s = np.r_[x[window_len - 1:0:-1], x, x[-1:-window_len:-1]]
    w = np.kaiser(window_len, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]


@pytest.mark.parametrize("n", [11, 12, 37, 500])
def test_smooth_curve_is_the_books_bit_for_bit(n):
    x = np.random.default_rng(n).random(n) * 3 + np.linspace(2.3, 0.1, n)
    got = util.smooth_curve(x)
    np.testing.assert_array_equal(got, book_smooth_curve(x))
    assert got.shape == (n,) and got.dtype == np.float64
    # A list of floats (the book's scripts pass their loss lists) gives the same.
    np.testing.assert_array_equal(util.smooth_curve(list(x)), got)
    # float32 losses: the book's np.r_/convolve promote to float64 the same way.
    np.testing.assert_array_equal(util.smooth_curve(x.astype(np.float32)),
                                  book_smooth_curve(x.astype(np.float32)))


def test_smooth_curve_edges_and_short_curves():
    # A constant curve stays constant (the window is normalised); a line bends only at the ends.
    np.testing.assert_allclose(util.smooth_curve(np.full(30, 2.5)), 2.5, rtol=1e-15)
    line = util.smooth_curve(np.arange(40.0))
    np.testing.assert_allclose(line[10:-10], np.arange(40.0)[10:-10], atol=1e-12)
    # The right end mirrors x[-1] itself (the book's asymmetric reflection): the last value drops.
    assert line[-1] < 39.0
    # Shorter than the window: returned unsmoothed (the book's would come back shorter than x).
    short = [3.0, 1.0, 2.0]
    np.testing.assert_array_equal(util.smooth_curve(short), short)
    assert util.smooth_curve([]).shape == (0,)
    with pytest.raises(ValueError, match="smooth_curve: x must be a 1-d sequence"):
        util.smooth_curve(np.zeros((12, 2)))


def test_one_smooth_curve_everywhere():
    assert plots.smooth_curve is util.smooth_curve
    assert _common.smooth_curve is util.smooth_curve


def book_shuffle(x, t):
    # common/util.py shuffle_dataset
    permutation = np.random.permutation(x.shape[0])
    x = x[permutation, :] if x.ndim == 2 else x[permutation, :, :, :]
    return x, t[permutation]


@pytest.mark.parametrize("shape", [(20, 3), (9, 1, 4, 4)])
def test_shuffle_dataset_is_the_books_under_np_random_seed(shape):
    x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    t = np.arange(shape[0]) % 4
    np.random.seed(3)
    xs, ts = util.shuffle_dataset(x, t)
    after = np.random.random_sample()
    np.random.seed(3)
    bx, bt = book_shuffle(x, t)
    np.testing.assert_array_equal(xs, bx)
    np.testing.assert_array_equal(ts, bt)
    assert np.random.random_sample() == after
    assert xs.dtype == np.float32 and sorted(ts.tolist()) == sorted(t.tolist())
    # The inputs are not touched.
    np.testing.assert_array_equal(x, np.arange(np.prod(shape), dtype=np.float32).reshape(shape))


def test_shuffle_dataset_with_a_seed_and_bad_input():
    x, t = np.arange(10.0).reshape(5, 2), np.arange(5)
    a = util.shuffle_dataset(x, t, seed=1)
    b = util.shuffle_dataset(x, t, seed=np.random.default_rng(1))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[0][:, 0] // 2, a[1])  # rows and labels moved together
    with pytest.raises(ValueError, match="shuffle_dataset: x has 5 samples but t has 4"):
        util.shuffle_dataset(x, t[:4])
    with pytest.raises(TypeError, match="shuffle_dataset: x and t must be arrays of samples"):
        util.shuffle_dataset(1.0, t)


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 1), (3, 2)])
def test_im2col_col2im_are_the_books(stride, pad):
    rng = np.random.default_rng(stride)
    x = rng.standard_normal((2, 3, 7, 6))
    col = util.im2col(x, 3, 2, stride=stride, pad=pad)
    np.testing.assert_array_equal(col, naive.im2col(x, 3, 2, stride, pad))
    # The book's argument names work as keywords.
    np.testing.assert_array_equal(util.im2col(input_data=x, filter_h=3, filter_w=2, stride=stride, pad=pad), col)
    back = util.col2im(col, x.shape, 3, 2, stride=stride, pad=pad)
    np.testing.assert_allclose(back, naive.col2im(col, x.shape, 3, 2, stride, pad), rtol=1e-13, atol=1e-13)
    assert back.shape == x.shape and back.flags.c_contiguous


def test_im2col_book_example_and_dtypes():
    # The book's chapter 7 example: x1 (1, 3, 7, 7) with 5x5 filters → (9, 75).
    assert util.im2col(np.random.default_rng(0).random((1, 3, 7, 7)), 5, 5, stride=1, pad=0).shape == (9, 75)
    x32 = np.ones((1, 1, 4, 4), dtype=np.float32)
    assert util.im2col(x32, 2, 2).dtype == np.float32
    ints = util.im2col(np.arange(16).reshape(1, 1, 4, 4), 2, 2)
    assert ints.dtype == np.float64  # the book's np.zeros buffer
    np.testing.assert_array_equal(ints[0], [0, 1, 4, 5])


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: util.im2col(np.zeros((3, 4, 4)), 2, 2), ValueError, r"im2col: input_data must have shape \(N, C, H, W\)"),
    (lambda: util.im2col(np.zeros((1, 1, 4, 4)), 5, 2), ValueError, "im2col: a 5x2 filter does not fit a 4x4 input"),
    (lambda: util.im2col(np.zeros((1, 1, 4, 4)), 2, 2, stride=0), ValueError, "im2col: stride must be a positive"),
    (lambda: util.im2col(np.array([["a"]]), 1, 1), TypeError, "im2col: input_data must be an array of numbers"),
    (lambda: util.col2im(np.zeros((9, 4)), (1, 1, 4), 2, 2), ValueError, r"col2im: input_shape must be \(N, C, H, W\)"),
    (lambda: util.col2im(np.zeros((8, 4)), (1, 1, 4, 4), 2, 2), ValueError, r"col2im: col must have shape \(9, 4\)"),
])
def test_bad_im2col_input_is_named(call, error, fragment):
    with pytest.raises(error, match=fragment):
        call()


def test_conv_output_size_stays_the_strict_int_version():
    assert util.conv_output_size(28, 5) == 24 and isinstance(util.conv_output_size(28, 5), int)
    with pytest.raises(ValueError, match="does not tile"):
        util.conv_output_size(28, 5, stride=2)

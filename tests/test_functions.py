"""zerodl.functions: the book's common/functions.py names and semantics."""

import numpy as np

from zerodl import functions as F


def test_activations():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(F.step_function(x), [0, 0, 1])
    assert F.step_function(x).dtype.kind == "i"
    np.testing.assert_array_equal(F.relu(x), [0, 0, 2])
    np.testing.assert_array_equal(F.relu_grad(x), [0, 1, 1])
    np.testing.assert_allclose(F.sigmoid(x), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(F.sigmoid_grad(x), F.sigmoid(x) * (1 - F.sigmoid(x)))
    assert F.identity_function(x) is x
    assert np.all(np.isfinite(F.sigmoid(np.array([-1e4, 1e4]))))


def test_softmax_stable_1d_and_2d():
    y = F.softmax(np.array([1010.0, 1000.0, 990.0]))
    assert np.all(np.isfinite(y)) and abs(y.sum() - 1) < 1e-12
    batch = F.softmax(np.array([[0.3, 2.9, 4.0], [1e4, -1e4, 0.0]]))
    np.testing.assert_allclose(batch.sum(axis=1), 1)
    np.testing.assert_allclose(batch[0], [0.01821127, 0.24519181, 0.73659691], rtol=1e-6)


def test_losses_match_the_book_examples():
    t = np.array([0, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    y = np.array([0.1, 0.05, 0.6, 0.0, 0.05, 0.1, 0.0, 0.1, 0.0, 0.0])
    assert abs(F.sum_squared_error(y, t) - 0.0975) < 1e-12
    assert abs(F.cross_entropy_error(y, t) - 0.510825457099338) < 1e-12
    assert abs(F.cross_entropy_error(y, np.array(2)) - 0.510825457099338) < 1e-12
    y2 = np.stack([y, y[::-1]])
    labels = np.array([2, 7])
    expected = -(np.log(0.6 + 1e-7) + np.log(0.6 + 1e-7)) / 2
    assert abs(F.cross_entropy_error(y2, labels) - expected) < 1e-12
    assert abs(F.cross_entropy_error(y2, np.eye(10)[labels]) - expected) < 1e-12
    assert np.isfinite(F.cross_entropy_error(np.array([[1.0, 0.0]]), np.array([1])))
    assert abs(F.softmax_loss(np.array([[0.0, 0.0]]), np.array([1])) - np.log(2)) < 1e-6

"""softmax_loss_forward / _backward: numpy vs numba, labels and one-hot, both dtypes."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import assert_backends_agree, tolerance


def _batch(rng, n, c, dtype, scale=3.0):
    x = (scale * rng.standard_normal((n, c))).astype(dtype)
    labels = rng.integers(0, c, n)
    one_hot = np.eye(c, dtype=dtype)[labels]
    return x, labels, one_hot


@given(n=st.integers(1, 8), c=st.integers(2, 12), seed=st.integers(0, 2**16))
def test_twins_agree_labels_and_one_hot(n, c, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x, labels, one_hot = _batch(rng, n, c, dtype)
        (y, loss), _ = assert_backends_agree("softmax_loss_forward", x, labels)
        (y2, loss2), _ = assert_backends_agree("softmax_loss_forward", x, one_hot)
        assert loss.dtype == dtype and y.dtype == dtype
        np.testing.assert_allclose(y.sum(axis=1), 1, **tolerance(dtype))
        np.testing.assert_allclose(loss, loss2, **tolerance(dtype))
        dx, _ = assert_backends_agree("softmax_loss_backward", y, labels, 1.0)
        dx2, _ = assert_backends_agree("softmax_loss_backward", y, one_hot, 1.0)
        np.testing.assert_allclose(dx, dx2, **tolerance(dtype))
        np.testing.assert_allclose(dx, (y - one_hot) / n, **tolerance(dtype))
        dx3, _ = assert_backends_agree("softmax_loss_backward", y, labels, 2.5)
        np.testing.assert_allclose(dx3, 2.5 * dx, **tolerance(dtype))


def test_huge_logits_stay_finite(dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=dtype)
    t = np.array([1, 0])
    (y, loss), _ = assert_backends_agree("softmax_loss_forward", x, t)
    assert np.all(np.isfinite(y)) and np.isfinite(loss)
    # Probability exactly 0 for the true class: the book's 1e-7 keeps the log finite.
    assert y[0, 1] == 0
    np.testing.assert_allclose(loss, (-np.log(np.float64(1e-7)) - np.log(1 / 3 + 1e-7)) / 2, rtol=1e-4)

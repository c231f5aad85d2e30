"""The book's ``common/functions.py``, same names and semantics, NumPy only.

These are the chapter 3–4 building blocks users call on small arrays; the layers use the compiled
kernels instead. ``softmax`` and ``cross_entropy_error`` accept 1-d (one sample) and 2-d (a batch)
input as the book's do.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels.softmax_loss import CROSS_ENTROPY_DELTA


def identity_function(x: np.ndarray) -> np.ndarray:
    """Return ``x`` unchanged (the output activation for regression)."""
    return x


def step_function(x: np.ndarray) -> np.ndarray:
    """``1`` where ``x > 0`` else ``0``, as an integer array of ``x``'s shape."""
    return np.array(np.asarray(x) > 0, dtype=int)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise ``1 / (1 + exp(-x))``; overflow of ``exp`` gives the correct limit 0."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def sigmoid_grad(x: np.ndarray) -> np.ndarray:
    """Derivative of :func:`sigmoid` at ``x``: ``(1 - s) s``."""
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x: np.ndarray) -> np.ndarray:
    """Elementwise ``max(0, x)``."""
    return np.maximum(0, x)


def relu_grad(x: np.ndarray) -> np.ndarray:
    """``1`` where ``x >= 0`` else ``0`` (the book's convention at 0), in ``x``'s dtype."""
    grad = np.zeros_like(x)
    grad[x >= 0] = 1
    return grad


def softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, ``(C,)`` or ``(N, C)``; stable for huge inputs (max subtracted)."""
    x = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(x)
    return e / np.sum(e, axis=-1, keepdims=True)


def sum_squared_error(y: np.ndarray, t: np.ndarray) -> float:
    """``0.5 Σ (y - t)²`` over all elements."""
    return 0.5 * np.sum((y - t) ** 2)


def cross_entropy_error(y: np.ndarray, t: np.ndarray) -> float:
    """Mean cross-entropy of probabilities ``y`` (``(C,)`` or ``(N, C)``) against ``t``.

    ``t`` is one-hot (same size as ``y``) or integer labels; ``1e-7`` is added inside the log, as in
    the book, so a probability of exactly 0 gives a finite loss.
    """
    y = np.asarray(y)
    t = np.asarray(t)
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + CROSS_ENTROPY_DELTA)) / batch_size


def softmax_loss(x: np.ndarray, t: np.ndarray) -> float:
    """:func:`cross_entropy_error` of :func:`softmax` of scores ``x``."""
    return cross_entropy_error(softmax(x), t)

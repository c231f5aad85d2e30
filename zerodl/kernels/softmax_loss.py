"""Softmax followed by cross-entropy: the book's ``SoftmaxWithLoss`` as two kernels.

Twins:

* ``softmax_loss_forward_{numpy,numba}(x, t) -> (y, loss)``: ``x (N, C)`` scores, ``t`` either
  integer labels ``(N,)`` or one-hot rows ``(N, C)`` of ``x``'s dtype; ``y (N, C)`` the softmax
  probabilities, ``loss`` the mean cross-entropy ``-Σ log(y[n, t_n] + 1e-7) / N`` as a scalar of
  ``x``'s dtype (the book's ``1e-7`` included).
* ``softmax_loss_backward_{numpy,numba}(y, t, dout) -> dx``: ``(y - t) / N * dout`` (for labels,
  ``t`` is the implied one-hot), shape ``(N, C)``.

* ``softmax_loss_grad_{numpy,numba}(x, t, dx) -> loss``: both at once with ``dout = 1``, the
  gradient written into the caller's ``dx`` (a fused training step's loss layer).

Softmax subtracts each row's maximum first, so scores of ±1e4 stay finite. Labels must already be
validated (in range, right length) by the caller: kernels do no checking.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("softmax_loss_forward", "softmax_loss_backward", "softmax_loss_grad")

#: Added inside the log, as the book's ``cross_entropy_error`` does (log(0) would be -inf).
CROSS_ENTROPY_DELTA = 1e-7


def _is_one_hot(y: np.ndarray, t: np.ndarray) -> bool:
    return t.size == y.size


def softmax_loss_forward_numpy(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.generic]:
    """Reference: the book's ``softmax`` then ``cross_entropy_error`` on a 2-d batch."""
    shifted = x - np.max(x, axis=-1, keepdims=True)
    y = np.exp(shifted) / np.sum(np.exp(shifted), axis=-1, keepdims=True)
    labels = t.argmax(axis=1) if _is_one_hot(y, t) else t
    batch_size = y.shape[0]
    loss = -np.sum(np.log(y[np.arange(batch_size), labels] + CROSS_ENTROPY_DELTA)) / batch_size
    return y, x.dtype.type(loss)


def softmax_loss_backward_numpy(y: np.ndarray, t: np.ndarray, dout: float = 1.0) -> np.ndarray:
    """Reference: the book's ``SoftmaxWithLoss.backward``, scaled by ``dout``."""
    batch_size = y.shape[0]
    if _is_one_hot(y, t):
        dx = (y - t) / batch_size
    else:
        dx = y.copy()
        dx[np.arange(batch_size), t] -= 1
        dx = dx / batch_size
    if dout != 1:
        dx = dx * y.dtype.type(dout)
    return dx


@jit
def _softmax_rows(x, y):
    n, c = x.shape
    for i in range(n):
        m = x[i, 0]
        for j in range(1, c):
            if x[i, j] > m:
                m = x[i, j]
        s = x.dtype.type(0)
        for j in range(c):
            e = np.exp(x[i, j] - m)
            y[i, j] = e
            s += e
        for j in range(c):
            y[i, j] = y[i, j] / s


@jit
def _cross_entropy_labels(y, labels, delta):
    n = y.shape[0]
    total = 0.0
    for i in range(n):
        total += np.log(y[i, labels[i]] + delta)
    return -total / n


@jit
def _argmax_rows(t, labels):
    n, c = t.shape
    for i in range(n):
        best = 0
        for j in range(1, c):
            if t[i, j] > t[i, best]:
                best = j
        labels[i] = best


@jit
def _backward_labels(y, labels, scale, dx):
    n, c = y.shape
    inv = y.dtype.type(n)
    one = y.dtype.type(1)
    for i in range(n):
        for j in range(c):
            v = y[i, j]
            if j == labels[i]:
                v -= one
            dx[i, j] = v / inv * scale


@jit
def _backward_one_hot(y, t, scale, dx):
    n, c = y.shape
    inv = y.dtype.type(n)
    for i in range(n):
        for j in range(c):
            dx[i, j] = (y[i, j] - t[i, j]) / inv * scale


def softmax_loss_forward_numba(x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.generic]:
    """Compiled twin of :func:`softmax_loss_forward_numpy`."""
    x = np.ascontiguousarray(x)
    y = np.empty_like(x)
    _softmax_rows(x, y)
    if _is_one_hot(y, t):
        labels = np.empty(y.shape[0], dtype=np.intp)
        _argmax_rows(np.ascontiguousarray(t), labels)
    else:
        labels = np.ascontiguousarray(t, dtype=np.intp)
    loss = _cross_entropy_labels(y, labels, y.dtype.type(CROSS_ENTROPY_DELTA))
    return y, x.dtype.type(loss)


def softmax_loss_backward_numba(y: np.ndarray, t: np.ndarray, dout: float = 1.0) -> np.ndarray:
    """Compiled twin of :func:`softmax_loss_backward_numpy`."""
    y = np.ascontiguousarray(y)
    dx = np.empty_like(y)
    scale = y.dtype.type(dout)
    if _is_one_hot(y, t):
        _backward_one_hot(y, np.ascontiguousarray(t, dtype=y.dtype), scale, dx)
    else:
        _backward_labels(y, np.ascontiguousarray(t, dtype=np.intp), scale, dx)
    return dx


# ----------------------------------------------------------------------------- fused-step piece
def softmax_loss_grad_numpy(x: np.ndarray, t: np.ndarray, dx: np.ndarray) -> np.generic:
    """Reference: :func:`softmax_loss_forward_numpy` then :func:`softmax_loss_backward_numpy` with
    ``dout = 1``, the gradient written into ``dx (N, C)`` (preallocated, may not be ``x``); returns
    the loss. What a fused training step's loss layer does in one call."""
    y, loss = softmax_loss_forward_numpy(x, t)
    np.copyto(dx, softmax_loss_backward_numpy(y, t, 1.0))
    return loss


@jit
def _softmax_loss_grad_labels(x, labels, dx, delta):
    # The three passes of the forward and backward twins in one call (one dispatch per step).
    _softmax_rows(x, dx)
    loss = _cross_entropy_labels(dx, labels, delta)
    _backward_labels(dx, labels, dx.dtype.type(1), dx)
    return loss


def softmax_loss_grad_numba(x: np.ndarray, t: np.ndarray, dx: np.ndarray) -> np.generic:
    """Compiled twin of :func:`softmax_loss_grad_numpy`: the probabilities are computed into ``dx``
    and turned into the gradient in place (the same helpers as the two twins above)."""
    x = np.ascontiguousarray(x)
    if _is_one_hot(dx, t):
        _softmax_rows(x, dx)
        t = np.ascontiguousarray(t, dtype=dx.dtype)
        labels = np.empty(dx.shape[0], dtype=np.intp)
        _argmax_rows(t, labels)
        loss = _cross_entropy_labels(dx, labels, dx.dtype.type(CROSS_ENTROPY_DELTA))
        _backward_one_hot(dx, t, dx.dtype.type(1), dx)
    else:
        labels = np.ascontiguousarray(t, dtype=np.intp)
        loss = _softmax_loss_grad_labels(x, labels, dx, dx.dtype.type(CROSS_ENTROPY_DELTA))
    return x.dtype.type(loss)

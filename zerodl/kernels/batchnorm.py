"""Batch normalization over the batch axis of an ``(N, D)`` matrix, forward and backward.

Twins (``<op>_numpy`` / ``<op>_numba``); ``x``/``dout`` ``(N, D)``, ``gamma``/``beta`` and the
running statistics ``(D,)``, all of one floating dtype (float32 or float64), outputs of that dtype:

* ``batchnorm_forward_train(x, gamma, beta, running_mean, running_var, momentum)
  -> (out, xc, xn, std)``: batch mean ``mu`` and (biased) variance ``var`` per column,
  ``xc = x - mu``, ``std = sqrt(var + 10e-7)``, ``xn = xc / std``, ``out = gamma * xn + beta``
  (``out``, ``xc``, ``xn`` ``(N, D)``; ``std`` ``(D,)``; ``xc``, ``xn``, ``std`` are the cache of the
  backward pass). **Writes** ``running_mean`` and ``running_var`` in place:
  ``running = momentum * running + (1 - momentum) * stat``, the book's exponential average.
* ``batchnorm_forward_test(x, gamma, beta, running_mean, running_var) -> out``: normalises with the
  running statistics; reads everything, writes nothing.
* ``batchnorm_backward(dout, gamma, xc, xn, std) -> (dx, dgamma, dbeta)``: the book's
  ``__backward`` through ``xc``, ``std`` and ``xn`` (``dx (N, D)``, ``dgamma``/``dbeta (D,)``).

The NumPy twin is the book's ``common/layers.py`` arithmetic, epsilon ``10e-7`` included. The Numba
twin walks the rows in the same order NumPy's column reductions do (row by row, a running sum per
column), computes the variance in a second pass over ``x - mu`` (never ``E[x²] - mu²``) and uses no
fastmath, so the two agree to the last bit except where NumPy switches to pairwise summation (a
single column, ``D == 1``), and then to rounding. 4-d inputs are the layer's business: it flattens
``(N, C, H, W)`` to ``(N, C·H·W)`` as the book does (statistics per activation, not per channel).
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("batchnorm_forward_train", "batchnorm_forward_test", "batchnorm_backward")

#: The book's epsilon inside the square root (sic: 10e-7 = 1e-6).
EPS = 10e-7


# ----------------------------------------------------------------------------- NumPy references
def batchnorm_forward_train_numpy(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    momentum: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference: the book's training ``__forward``; updates ``running_mean``/``running_var`` in place."""
    mu = x.mean(axis=0)
    xc = x - mu
    var = np.mean(xc**2, axis=0)
    std = np.sqrt(var + EPS)
    xn = xc / std
    running_mean[...] = momentum * running_mean + (1 - momentum) * mu
    running_var[...] = momentum * running_var + (1 - momentum) * var
    out = gamma * xn + beta
    return out, xc, xn, std


def batchnorm_forward_test_numpy(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
) -> np.ndarray:
    """Reference: the book's inference ``__forward`` with the running statistics."""
    xc = x - running_mean
    xn = xc / (np.sqrt(running_var + EPS))
    return gamma * xn + beta


def batchnorm_backward_numpy(
    dout: np.ndarray, gamma: np.ndarray, xc: np.ndarray, xn: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference: the book's ``__backward``; returns ``(dx, dgamma, dbeta)``."""
    batch_size = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(xn * dout, axis=0)
    dxn = gamma * dout
    dxc = dxn / std
    dstd = -np.sum((dxn * xc) / (std * std), axis=0)
    dvar = 0.5 * dstd / std
    dxc += (2.0 / batch_size) * xc * dvar
    dmu = np.sum(dxc, axis=0)
    dx = dxc - dmu / batch_size
    return dx, dgamma, dbeta


# ----------------------------------------------------------------------------- compiled loops
# Loops run row-outer / column-inner: the inner loop is contiguous (vectorisable across columns
# without reassociating any one column's sum), and each column's sum adds rows in order 0..N-1,
# which is the order of NumPy's axis-0 reduction on a C-contiguous matrix.
@jit
def _forward_train(x, gamma, beta, running_mean, running_var, momentum, keep, eps,
                   out, xc, xn, std):
    n, d = x.shape
    t = x.dtype.type
    count = t(n)
    mu = np.zeros(d, dtype=x.dtype)
    for i in range(n):
        for j in range(d):
            mu[j] += x[i, j]
    for j in range(d):
        mu[j] = mu[j] / count
    var = np.zeros(d, dtype=x.dtype)
    for i in range(n):
        for j in range(d):
            c = x[i, j] - mu[j]
            xc[i, j] = c
            var[j] += c * c
    for j in range(d):
        var[j] = var[j] / count
        std[j] = np.sqrt(var[j] + eps)
    for i in range(n):
        for j in range(d):
            v = xc[i, j] / std[j]
            xn[i, j] = v
            out[i, j] = gamma[j] * v + beta[j]
    for j in range(d):
        running_mean[j] = momentum * running_mean[j] + keep * mu[j]
        running_var[j] = momentum * running_var[j] + keep * var[j]


@jit
def _forward_test(x, gamma, beta, running_mean, running_var, eps, out):
    n, d = x.shape
    denom = np.empty(d, dtype=x.dtype)
    for j in range(d):
        denom[j] = np.sqrt(running_var[j] + eps)
    for i in range(n):
        for j in range(d):
            out[i, j] = gamma[j] * ((x[i, j] - running_mean[j]) / denom[j]) + beta[j]


@jit
def _backward(dout, gamma, xc, xn, std, half, two_over_n, dx, dgamma, dbeta):
    n, d = dout.shape
    t = dout.dtype.type
    count = t(n)
    acc = np.zeros(d, dtype=dout.dtype)
    std_sq = np.empty(d, dtype=dout.dtype)
    for j in range(d):
        dbeta[j] = 0
        dgamma[j] = 0
        std_sq[j] = std[j] * std[j]
    for i in range(n):
        for j in range(d):
            g = dout[i, j]
            dbeta[j] += g
            dgamma[j] += xn[i, j] * g
            acc[j] += (gamma[j] * g * xc[i, j]) / std_sq[j]
    dvar = np.empty(d, dtype=dout.dtype)
    for j in range(d):
        dvar[j] = half * (-acc[j]) / std[j]
    dmu = np.zeros(d, dtype=dout.dtype)
    for i in range(n):
        for j in range(d):
            v = (gamma[j] * dout[i, j]) / std[j] + two_over_n * xc[i, j] * dvar[j]
            dx[i, j] = v
            dmu[j] += v
    for j in range(d):
        dmu[j] = dmu[j] / count
    for i in range(n):
        for j in range(d):
            dx[i, j] -= dmu[j]


def _c(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a)


def batchnorm_forward_train_numba(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    momentum: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`batchnorm_forward_train_numpy` (running statistics written in place).

    ``running_mean`` and ``running_var`` are written through, never copied (C-contiguous arrays,
    as the layer keeps them, avoid a second compilation for strided views).
    """
    x = _c(x)
    t = x.dtype.type
    out = np.empty_like(x)
    xc = np.empty_like(x)
    xn = np.empty_like(x)
    std = np.empty(x.shape[1], dtype=x.dtype)
    _forward_train(
        x, _c(gamma), _c(beta), running_mean, running_var, t(momentum), t(1 - momentum), t(EPS),
        out, xc, xn, std,
    )
    return out, xc, xn, std


def batchnorm_forward_test_numba(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
) -> np.ndarray:
    """Compiled twin of :func:`batchnorm_forward_test_numpy`."""
    x = _c(x)
    out = np.empty_like(x)
    _forward_test(x, _c(gamma), _c(beta), _c(running_mean), _c(running_var), x.dtype.type(EPS), out)
    return out


def batchnorm_backward_numba(
    dout: np.ndarray, gamma: np.ndarray, xc: np.ndarray, xn: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`batchnorm_backward_numpy`."""
    dout = _c(dout)
    t = dout.dtype.type
    dx = np.empty_like(dout)
    dgamma = np.empty(dout.shape[1], dtype=dout.dtype)
    dbeta = np.empty(dout.shape[1], dtype=dout.dtype)
    # Python evaluates 2.0 / N in double before NumPy casts it to the array dtype; so do we.
    _backward(dout, _c(gamma), _c(xc), _c(xn), _c(std), t(0.5), t(2.0 / dout.shape[0]), dx, dgamma, dbeta)
    return dx, dgamma, dbeta

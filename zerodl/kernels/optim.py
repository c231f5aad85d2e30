"""Optimizer update loops, written into the parameter and state arrays **in place**.

The contract of every twin ``<name>_update_{numpy,numba}(param, grad, *state, *hyper) -> None``:
``param`` and the state arrays (velocity ``v``, accumulator ``h``, moments ``m``/``v``) are
C-contiguous arrays of one floating dtype and are overwritten; ``grad`` has the same shape and dtype
and is only read. Hyper-parameters are Python floats; the wrappers cast them to ``param``'s dtype
first, which is what NumPy does with a Python scalar (NEP 50), so float32 stays float32.

The formulas are the book's ``common/optimizer.py`` (the repository's current, corrected Nesterov),
with its ``1e-7`` epsilon passed in as ``eps``.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = (
    "sgd_update",
    "momentum_update",
    "nesterov_update",
    "adagrad_update",
    "rmsprop_update",
    "adam_update",
)


# ----------------------------------------------------------------------------- NumPy references
def sgd_update_numpy(param: np.ndarray, grad: np.ndarray, lr: float) -> None:
    """``param -= lr * grad``."""
    param -= lr * grad


def momentum_update_numpy(
    param: np.ndarray, grad: np.ndarray, v: np.ndarray, lr: float, momentum: float
) -> None:
    """``v = momentum * v - lr * grad``; ``param += v``."""
    v[...] = momentum * v - lr * grad
    param += v


def nesterov_update_numpy(
    param: np.ndarray, grad: np.ndarray, v: np.ndarray, lr: float, momentum: float
) -> None:
    """``v = momentum * v - lr * grad``; ``param += momentum² v - (1 + momentum) lr grad``."""
    v *= momentum
    v -= lr * grad
    param += momentum * momentum * v
    param -= (1 + momentum) * lr * grad


def adagrad_update_numpy(
    param: np.ndarray, grad: np.ndarray, h: np.ndarray, lr: float, eps: float
) -> None:
    """``h += grad²``; ``param -= lr * grad / (sqrt(h) + eps)``."""
    h += grad * grad
    param -= lr * grad / (np.sqrt(h) + eps)


def rmsprop_update_numpy(
    param: np.ndarray, grad: np.ndarray, h: np.ndarray, lr: float, decay_rate: float, eps: float
) -> None:
    """``h = decay h + (1 - decay) grad²``; ``param -= lr * grad / (sqrt(h) + eps)``."""
    h *= decay_rate
    h += (1 - decay_rate) * grad * grad
    param -= lr * grad / (np.sqrt(h) + eps)


def adam_update_numpy(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr_t: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """``m += (1-β1)(g - m)``; ``v += (1-β2)(g² - v)``; ``param -= lr_t m / (sqrt(v) + eps)``.

    ``lr_t`` is the bias-corrected rate ``lr sqrt(1 - β2^t) / (1 - β1^t)`` computed by the caller.
    """
    m += (1 - beta1) * (grad - m)
    v += (1 - beta2) * (grad**2 - v)
    param -= lr_t * m / (np.sqrt(v) + eps)


# ----------------------------------------------------------------------------- compiled loops
@jit
def _sgd(p, g, lr):
    for i in range(p.size):
        p[i] -= lr * g[i]


@jit
def _momentum(p, g, v, lr, momentum):
    for i in range(p.size):
        v[i] = momentum * v[i] - lr * g[i]
        p[i] += v[i]


@jit
def _nesterov(p, g, v, lr, momentum, momentum_sq, lr_plus):
    for i in range(p.size):
        v[i] = v[i] * momentum
        v[i] -= lr * g[i]
        p[i] += momentum_sq * v[i]
        p[i] -= lr_plus * g[i]


@jit
def _adagrad(p, g, h, lr, eps):
    for i in range(p.size):
        h[i] += g[i] * g[i]
        p[i] -= lr * g[i] / (np.sqrt(h[i]) + eps)


@jit
def _rmsprop(p, g, h, lr, decay_rate, keep, eps):
    for i in range(p.size):
        h[i] = h[i] * decay_rate
        h[i] += keep * g[i] * g[i]
        p[i] -= lr * g[i] / (np.sqrt(h[i]) + eps)


@jit
def _adam(p, g, m, v, lr_t, one_minus_b1, one_minus_b2, eps):
    for i in range(p.size):
        m[i] += one_minus_b1 * (g[i] - m[i])
        v[i] += one_minus_b2 * (g[i] * g[i] - v[i])
        p[i] -= lr_t * m[i] / (np.sqrt(v[i]) + eps)


def _flat(a: np.ndarray) -> np.ndarray:
    # reshape(-1) of a C-contiguous array is a view, so writes reach the caller's array.
    return a.reshape(-1)


def _flat_read(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=dtype).reshape(-1)


def sgd_update_numba(param: np.ndarray, grad: np.ndarray, lr: float) -> None:
    """Compiled twin of :func:`sgd_update_numpy`."""
    t = param.dtype.type
    _sgd(_flat(param), _flat_read(grad, param.dtype), t(lr))


def momentum_update_numba(
    param: np.ndarray, grad: np.ndarray, v: np.ndarray, lr: float, momentum: float
) -> None:
    """Compiled twin of :func:`momentum_update_numpy`."""
    t = param.dtype.type
    _momentum(_flat(param), _flat_read(grad, param.dtype), _flat(v), t(lr), t(momentum))


def nesterov_update_numba(
    param: np.ndarray, grad: np.ndarray, v: np.ndarray, lr: float, momentum: float
) -> None:
    """Compiled twin of :func:`nesterov_update_numpy`."""
    t = param.dtype.type
    # Python computes the scalar products exactly as the reference's left-to-right evaluation.
    momentum_sq = t(momentum * momentum)
    lr_plus = t((1 + momentum) * lr)
    _nesterov(
        _flat(param), _flat_read(grad, param.dtype), _flat(v), t(lr), t(momentum), momentum_sq, lr_plus
    )


def adagrad_update_numba(
    param: np.ndarray, grad: np.ndarray, h: np.ndarray, lr: float, eps: float
) -> None:
    """Compiled twin of :func:`adagrad_update_numpy`."""
    t = param.dtype.type
    _adagrad(_flat(param), _flat_read(grad, param.dtype), _flat(h), t(lr), t(eps))


def rmsprop_update_numba(
    param: np.ndarray, grad: np.ndarray, h: np.ndarray, lr: float, decay_rate: float, eps: float
) -> None:
    """Compiled twin of :func:`rmsprop_update_numpy`."""
    t = param.dtype.type
    _rmsprop(
        _flat(param), _flat_read(grad, param.dtype), _flat(h), t(lr), t(decay_rate),
        t(1 - decay_rate), t(eps),
    )


def adam_update_numba(
    param: np.ndarray,
    grad: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    lr_t: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """Compiled twin of :func:`adam_update_numpy`."""
    t = param.dtype.type
    _adam(
        _flat(param), _flat_read(grad, param.dtype), _flat(m), _flat(v), t(lr_t), t(1 - beta1),
        t(1 - beta2), t(eps),
    )

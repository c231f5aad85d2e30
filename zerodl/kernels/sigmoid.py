"""Sigmoid: ``out = 1 / (1 + exp(-x))`` and ``dx = dout * (1 - out) * out``.

Twins: ``sigmoid_forward_{numpy,numba}(x) -> out`` and
``sigmoid_backward_{numpy,numba}(dout, out) -> dx``. Any shape, output dtype = input dtype.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("sigmoid_forward", "sigmoid_backward")


def sigmoid_forward_numpy(x: np.ndarray) -> np.ndarray:
    """Reference: the book's ``sigmoid``, elementwise ``1 / (1 + exp(-x))``."""
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives the correct limit 0
        return 1 / (1 + np.exp(-x))


def sigmoid_backward_numpy(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Reference: the book's ``Sigmoid.backward``, ``dout * (1 - out) * out``."""
    return dout * (1.0 - out) * out


@jit
def _sigmoid_forward(x, out):
    one = x.dtype.type(1)
    for i in range(x.size):
        out[i] = one / (one + np.exp(-x[i]))


@jit
def _sigmoid_backward(dout, out, dx):
    one = out.dtype.type(1)
    for i in range(dout.size):
        dx[i] = dout[i] * (one - out[i]) * out[i]


def sigmoid_forward_numba(x: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`sigmoid_forward_numpy`."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _sigmoid_forward(x.reshape(-1), out.reshape(-1))
    return out


def sigmoid_backward_numba(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`sigmoid_backward_numpy`."""
    dout = np.ascontiguousarray(dout)
    out = np.ascontiguousarray(out)
    dx = np.empty_like(dout)
    _sigmoid_backward(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx

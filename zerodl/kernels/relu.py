"""ReLU: ``out = max(x, 0)`` with the mask ``x <= 0`` kept for the backward pass.

Twins: ``relu_forward_{numpy,numba}(x) -> (out, mask)`` and
``relu_backward_{numpy,numba}(dout, mask) -> dx``. Any shape; ``mask`` is a bool array of ``x``'s
shape. Unlike the book's ``Relu.backward``, ``dout`` is never written: ``dx`` is a new array.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("relu_forward", "relu_backward")


def relu_forward_numpy(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: ``mask = x <= 0``; ``out = x`` with masked entries set to 0 (same shape, dtype)."""
    mask = x <= 0
    out = x.copy()
    out[mask] = 0
    return out, mask


def relu_backward_numpy(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reference: ``dx = dout`` with entries where ``mask`` is set to 0; ``dout`` is not modified."""
    dx = dout.copy()
    dx[mask] = 0
    return dx


@jit
def _relu_forward(x, out, mask):
    for i in range(x.size):
        v = x[i]
        if v <= 0:
            out[i] = 0
            mask[i] = True
        else:
            out[i] = v
            mask[i] = False


@jit
def _relu_backward(dout, mask, dx):
    for i in range(dout.size):
        dx[i] = 0 if mask[i] else dout[i]


def relu_forward_numba(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Compiled twin of :func:`relu_forward_numpy`."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.bool_)
    _relu_forward(x.reshape(-1), out.reshape(-1), mask.reshape(-1))
    return out, mask


def relu_backward_numba(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`relu_backward_numpy`."""
    dout = np.ascontiguousarray(dout)
    mask = np.ascontiguousarray(mask)
    dx = np.empty_like(dout)
    _relu_backward(dout.reshape(-1), mask.reshape(-1), dx.reshape(-1))
    return dx

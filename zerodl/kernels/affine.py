"""Affine (fully connected) layer: ``out = x @ W + b`` and its gradients.

Twins: ``affine_forward_numpy`` / ``affine_forward_numba`` and ``affine_backward_numpy`` /
``affine_backward_numba``. The matrix products go to NumPy's BLAS in both twins (one thread pool
for the whole process; see NUMBA-NOTES); the Numba twin compiles what surrounds them: the bias add
is fused into the product's output buffer and the bias gradient is a single pass over ``dout``.

Contract (both twins): ``x (N, D)``, ``W (D, H)``, ``b (H,)``, ``dout (N, H)``, all C-contiguous and
of one floating dtype; outputs are new arrays of that dtype; inputs are never written.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("affine_forward", "affine_backward")


def affine_forward_numpy(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference: ``x (N, D) @ W (D, H) + b (H,)`` → ``(N, H)``, the book's ``Affine.forward``."""
    return np.dot(x, W) + b


def affine_backward_numpy(
    dout: np.ndarray, x: np.ndarray, W: np.ndarray, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Reference: ``dx = dout @ W.T (N, D)``, ``dW = x.T @ dout (D, H)``, ``db = Σ_n dout (H,)``.

    ``need_dx=False`` (a network's first layer, whose input needs no gradient) returns ``dx = None``
    and skips its product.
    """
    dx = np.dot(dout, W.T) if need_dx else None
    dW = np.dot(x.T, dout)
    db = np.sum(dout, axis=0)
    return dx, dW, db


@jit
def _add_bias_rows(out, b):
    n, h = out.shape
    for i in range(n):
        for j in range(h):
            out[i, j] += b[j]


@jit
def _column_sums(a, out):
    # Accumulate row by row so the inner loop runs over contiguous memory (vectorises).
    n, h = a.shape
    for j in range(h):
        out[j] = 0
    for i in range(n):
        for j in range(h):
            out[j] += a[i, j]


def affine_forward_numba(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`affine_forward_numpy`: BLAS product, bias added in place, compiled."""
    out = np.dot(x, W)
    _add_bias_rows(out, b)
    return out


def affine_backward_numba(
    dout: np.ndarray, x: np.ndarray, W: np.ndarray, need_dx: bool = True
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`affine_backward_numpy` (same outputs, same dtype)."""
    dx = np.dot(dout, W.T) if need_dx else None
    dW = np.dot(x.T, dout)
    db = np.empty(dout.shape[1], dtype=dout.dtype)
    _column_sums(dout, db)
    return dx, dW, db

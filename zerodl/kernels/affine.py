"""Affine (fully connected) layer: ``out = x @ W + b`` and its gradients.

Twins: ``affine_forward_numpy`` / ``affine_forward_numba`` and ``affine_backward_numpy`` /
``affine_backward_numba``. The matrix products go to NumPy's BLAS in both twins (one thread pool
for the whole process; see NUMBA-NOTES); the Numba twin compiles what surrounds them: the bias add
is fused into the product's output buffer and the bias gradient is a single pass over ``dout``.

Contract (both twins): ``x (N, D)``, ``W (D, H)``, ``b (H,)``, ``dout (N, H)``, all C-contiguous and
of one floating dtype; outputs are new arrays of that dtype; inputs are never written.

The fused training step's pieces (``bias_forward``, ``affine_backward_into``) write into buffers the
caller owns instead of allocating; their docstrings say which arguments they write.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit
from zerodl.kernels._tasks import matmul_in_parts

OPS = ("affine_forward", "affine_backward", "bias_forward", "affine_backward_into")


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


# ----------------------------------------------------------------------------- fused-step pieces
def _as3d(a: np.ndarray) -> np.ndarray:
    # (N, C, ...) -> (N, C, S) view; (N, C) -> (N, C, 1). Callers pass C-contiguous arrays.
    return a.reshape(a.shape[0], a.shape[1], -1)


def bias_forward_numpy(z: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Reference: ``z += b`` along axis 1, then ``out[...] = z`` (the identity "activation").

    ``z (N, C, ...)`` C-contiguous, **updated in place** (it holds the pre-activation afterwards);
    ``b (C,)``; ``out`` of ``z``'s shape and dtype, may be ``z`` itself. The epilogue a fused step
    runs after an Affine's or a Convolution's product when no activation follows; ``np.dot(x, W) +
    b`` of the book's ``Affine.forward`` to the bit.
    """
    z3 = _as3d(z)
    np.add(z3, b[:, None], out=z3)
    if out is not z:
        np.copyto(out, z)


def affine_backward_into_numpy(
    dout: np.ndarray, x: np.ndarray, W: np.ndarray, dx: np.ndarray | None, dW: np.ndarray, db: np.ndarray,
    parts: int = 1,
) -> None:
    """Reference: :func:`affine_backward_numpy` written into preallocated ``dx (N, D)`` (or ``None``:
    not computed), ``dW (D, H)`` and ``db (H,)`` — the same products and sum, so the same bits.

    ``parts``: the compiled twin may cut its products into that many row blocks run on both cores;
    this twin always multiplies whole (the book's bits), so it ignores it."""
    if dx is not None:
        np.dot(dout, W.T, out=dx)
    np.dot(x.T, dout, out=dW)
    np.sum(dout, axis=0, out=db)


@jit
def _bias_forward(z3, b, out3):
    n, c, s = z3.shape
    if s == 1:  # an Affine's (N, H): vectorise along H
        for i in range(n):
            for j in range(c):
                v = z3[i, j, 0] + b[j]
                z3[i, j, 0] = v
                out3[i, j, 0] = v
    else:
        for i in range(n):
            for j in range(c):
                bj = b[j]
                for k in range(s):
                    v = z3[i, j, k] + bj
                    z3[i, j, k] = v
                    out3[i, j, k] = v


def bias_forward_numba(z: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Compiled twin of :func:`bias_forward_numpy`: one pass over ``z``."""
    if out is z and z.ndim == 2:
        _add_bias_rows(z, b)  # one array written: vectorises (see relu.py)
    else:
        _bias_forward(_as3d(z), b, _as3d(out))


def affine_backward_into_numba(
    dout: np.ndarray, x: np.ndarray, W: np.ndarray, dx: np.ndarray | None, dW: np.ndarray, db: np.ndarray,
    parts: int = 1,
) -> None:
    """Compiled twin of :func:`affine_backward_into_numpy`: NumPy's BLAS into the buffers, the bias
    gradient in one compiled pass. With ``parts`` > 1 each product is cut into that many blocks of
    rows (of ``dx``: samples; of ``dW``: inputs) run as tasks on both cores
    (:func:`~zerodl.kernels._tasks.matmul_in_parts`; for steps whose BLAS runs on one thread): the
    reduction order of every entry is the product's own, the blocks fixed by ``parts`` alone."""
    if dx is not None:
        matmul_in_parts(dout, W.T, dx, parts)
    matmul_in_parts(x.T, dout, dW, parts)
    _column_sums(dout, db)

"""Affine (fully connected) layer: ``out = x @ W + b`` and its gradients.

Twins: ``affine_forward_numpy`` / ``affine_forward_numba`` and ``affine_backward_numpy`` /
``affine_backward_numba``. The matrix products go to NumPy's BLAS in both twins (one thread pool
for the whole process; see NUMBA-NOTES); the Numba twin compiles what surrounds them: the bias add
is fused into the product's output buffer and the bias gradient is a single pass over ``dout``.

Contract (both twins): ``x (N, D)``, ``W (D, H)``, ``b (H,)``, ``dout (N, H)``, all C-contiguous and
of one floating dtype; outputs are new arrays of that dtype; inputs are never written.

The fused training step's pieces (``bias_forward``, ``affine_backward_into``,
``affine_sgd_update``) write into buffers the caller owns instead of allocating; their
docstrings say which arguments they write.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels import _blas
from zerodl.kernels._blas import DGEMM, NO_TRANS, ROW_MAJOR, SGEMM, TRANS
from zerodl.kernels._jit import jit
from zerodl.kernels._tasks import in_row_blocks, matmul_in_parts, matmuls_side_by_side
from zerodl.kernels.optim import sgd_update_numba

OPS = ("affine_forward", "affine_backward", "bias_forward", "affine_backward_into", "affine_sgd_update")


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
    dout: np.ndarray, x: np.ndarray, W: np.ndarray, dx: np.ndarray | None, dW: np.ndarray | None, db: np.ndarray,
    parts: int = 1,
) -> None:
    """Reference: :func:`affine_backward_numpy` written into preallocated ``dx (N, D)`` (or ``None``:
    not computed), ``dW (D, H)`` (or ``None``: not computed, for a step that folds ``W``'s update into
    that product, :func:`affine_sgd_update_numpy`) and ``db (H,)`` — the same products and sum, so
    the same bits.

    ``parts``: the compiled twin may cut its products into that many row blocks run on both cores;
    this twin always multiplies whole (the book's bits), so it ignores it."""
    if dx is not None:
        np.dot(dout, W.T, out=dx)
    if dW is not None:
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
    dout: np.ndarray, x: np.ndarray, W: np.ndarray, dx: np.ndarray | None, dW: np.ndarray | None, db: np.ndarray,
    parts: int = 1,
) -> None:
    """Compiled twin of :func:`affine_backward_into_numpy`: NumPy's BLAS into the buffers, the bias
    gradient in one compiled pass. With ``parts`` > 1 (steps whose BLAS runs on one thread) the
    products take both cores: ``dx`` and ``dW`` side by side, each whole
    (:func:`~zerodl.kernels._tasks.matmuls_side_by_side`: the reference's bits), or, for ``dW``
    alone, cut into ``parts`` blocks of rows (:func:`~zerodl.kernels._tasks.matmul_in_parts`: the
    reduction order of every entry is the product's own, the blocks fixed by ``parts`` alone)."""
    if dx is not None and dW is not None and parts > 1:
        matmuls_side_by_side([(dout, W.T, dx), (x.T, dout, dW)])
    else:
        if dx is not None:
            matmul_in_parts(dout, W.T, dx, parts)
        if dW is not None:
            matmul_in_parts(x.T, dout, dW, parts)
    _column_sums(dout, db)


# ----------------------------------------------------------------------------- SGD in the product
def affine_sgd_update_numpy(
    dout: np.ndarray, x: np.ndarray, W: np.ndarray, dW: np.ndarray, lr: float, parts: int = 1
) -> None:
    """Reference: SGD's update of an Affine's weight from the gradient's factors, ``W -= lr * (x.T @
    dout)`` — ``dW = x.T @ dout`` as :func:`affine_backward_into_numpy` computes it, then the book's
    ``SGD.update`` for that one parameter, bit for bit. ``x (N, D)``, ``dout (N, H)`` (the gradient at
    the product's output); ``W (D, H)`` is **updated in place**; ``dW (D, H)`` is a work buffer whose
    content afterwards is unspecified (this twin leaves the gradient there, the compiled one may not
    write it at all).

    ``parts``: as :func:`affine_backward_into_numpy` (the compiled twin may cut the product into
    row blocks; this twin multiplies whole)."""
    np.dot(x.T, dout, out=dW)
    W -= lr * dW


@jit
def _sgd_product(x, dout, W, alpha):
    # W (D, H) += alpha · x (N, D)ᵀ @ dout (N, H): one BLAS gemm with beta = 1, so the gradient is
    # never stored (C-contiguous dout; x the matching block of columns of a C-contiguous matrix and
    # W a block of rows of one). NumPy's own BLAS (see _blas.py).
    n, d = x.shape
    h = dout.shape[1]
    if n == 0 or d == 0 or h == 0:
        return
    order, ta, tb = np.int32(ROW_MAJOR), np.int32(TRANS), np.int32(NO_TRANS)
    lda = x.strides[0] // x.itemsize if n > 1 else d  # a one-row matrix's row stride may be anything
    ldc = W.strides[0] // W.itemsize if d > 1 else h
    if x.itemsize == 4:
        SGEMM(order, ta, tb, d, h, n, np.float32(alpha), x.ctypes, lda, dout.ctypes, h,
              np.float32(1), W.ctypes, ldc)
    else:
        DGEMM(order, ta, tb, d, h, n, np.float64(alpha), x.ctypes, lda, dout.ctypes, h,
              np.float64(1), W.ctypes, ldc)


def affine_sgd_update_numba(
    dout: np.ndarray, x: np.ndarray, W: np.ndarray, dW: np.ndarray, lr: float, parts: int = 1
) -> None:
    """Compiled twin of :func:`affine_sgd_update_numpy`: one BLAS call adds ``-lr · x.T @ dout``
    straight into ``W`` (``gemm`` with ``alpha = -lr``, ``beta = 1``): the gradient is never written,
    nor read back by an update pass, and OpenBLAS skips its ``beta = 0`` clearing of the output (MLP
    784-1000-1000, batch 256, float32: the dW products plus updates of both weights 4.13 → 3.00 ms).
    The same product as ``x.T @ dout``; the BLAS kernel adds it to ``W`` with one fused multiply-add
    per entry, so ``W`` agrees with the reference to rounding, a fixed function of the inputs (the
    row blocks, with ``parts`` > 1, are fixed by ``parts`` and the shapes). Without NumPy's BLAS at
    hand (:func:`~zerodl.kernels._blas.available`), or with operands that are not C-contiguous, the
    gradient goes through ``dW`` and a compiled update pass instead."""
    if not (_blas.available() and x.flags.c_contiguous and dout.flags.c_contiguous and W.flags.c_contiguous):
        matmul_in_parts(x.T, dout, dW, parts)
        sgd_update_numba(W, dW, lr)  # the optimizer's own compiled update
        return
    alpha = -float(W.dtype.type(lr))
    d = W.shape[0]
    in_row_blocks(d, parts, d * x.shape[0] * W.shape[1],
                  lambda r0, r1: _sgd_product(x[:, r0:r1], dout, W[r0:r1], alpha))

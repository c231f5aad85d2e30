"""ReLU: ``out = max(x, 0)`` with the mask ``x <= 0`` kept for the backward pass.

Twins: ``relu_forward_{numpy,numba}(x) -> (out, mask)`` and
``relu_backward_{numpy,numba}(dout, mask) -> dx``. Any shape; ``mask`` is a bool array of ``x``'s
shape. Unlike the book's ``Relu.backward``, ``dout`` is never written: ``dx`` is a new array.

The fused training step's pieces: ``relu_bias_forward(z, b, out)`` and
``relu_backward_into(dout, out, dx)`` (what every activation offers a fused step; see
:mod:`zerodl.layers.fused`).
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("relu_forward", "relu_backward", "relu_bias_forward", "relu_backward_into")


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


# ----------------------------------------------------------------------------- fused-step pieces
# The activation's part of a fused step: the bias of the producing layer (Affine, Convolution) added
# in the same pass, the output kept for backward (ReLU's mask x <= 0 is out <= 0: out is exactly 0
# there, so no mask array is stored).
def _as3d(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1], -1)


def relu_bias_forward_numpy(z: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Reference: ``z += b`` along axis 1 (``z (N, C, ...)`` **updated in place**, ``b (C,)``), then
    ``out = relu(z)`` as :func:`relu_forward_numpy` computes it; ``out`` may be ``z``."""
    z3 = _as3d(z)
    np.add(z3, b[:, None], out=z3)
    if out is not z:
        np.copyto(out, z)
    np.copyto(out, 0, where=out <= 0)


def relu_backward_into_numpy(dout: np.ndarray, out: np.ndarray, dx: np.ndarray) -> None:
    """Reference: ``dx = dout`` where the forward's ``out > 0``, else 0 (:func:`relu_backward_numpy`
    with ``mask = out <= 0``); ``dx`` may be ``dout``."""
    if dx is not dout:
        np.copyto(dx, dout)
    np.copyto(dx, 0, where=out <= 0)


@jit
def _relu_bias_forward(z3, b, out3):
    n, c, s = z3.shape
    zero = z3.dtype.type(0)
    for i in range(n):
        for j in range(c):
            bj = b[j]
            for k in range(s):
                v = z3[i, j, k] + bj
                z3[i, j, k] = v
                # "<= 0 -> 0" (not "> 0 -> v") so that NaN passes through, as the book's mask does.
                out3[i, j, k] = zero if v <= zero else v  # noqa: FURB136


@jit
def _relu_bias_inplace_rows(z, b):
    # out is z: one array written, so LLVM knows nothing aliases and vectorises the select
    # (two arrays that are really one made this loop scalar and branchy: 8x slower).
    n, c = z.shape
    zero = z.dtype.type(0)
    for i in range(n):
        for j in range(c):
            v = z[i, j] + b[j]
            z[i, j] = zero if v <= zero else v  # noqa: FURB136


@jit
def _relu_bias_inplace_channels(z3, b):
    n, c, s = z3.shape
    zero = z3.dtype.type(0)
    for i in range(n):
        for j in range(c):
            bj = b[j]
            for k in range(s):
                v = z3[i, j, k] + bj
                z3[i, j, k] = zero if v <= zero else v  # noqa: FURB136


@jit
def _relu_backward_into(dout, out, dx):
    zero = dx.dtype.type(0)
    for i in range(dout.size):
        dx[i] = zero if out[i] <= zero else dout[i]


@jit
def _relu_backward_inplace(d, out):
    # dx is dout: a masked store into one array (vectorises; the two-array form with aliased
    # arguments compiled to a mispredicted branch per element, 20x slower).
    zero = d.dtype.type(0)
    for i in range(d.size):
        if out[i] <= zero:
            d[i] = zero


def relu_bias_forward_numba(z: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Compiled twin of :func:`relu_bias_forward_numpy`: one pass."""
    if out is z:
        if z.ndim == 2:
            _relu_bias_inplace_rows(z, b)
        else:
            _relu_bias_inplace_channels(_as3d(z), b)
    else:
        _relu_bias_forward(_as3d(z), b, _as3d(out))


def relu_backward_into_numba(dout: np.ndarray, out: np.ndarray, dx: np.ndarray) -> None:
    """Compiled twin of :func:`relu_backward_into_numpy`."""
    if dx is dout:
        _relu_backward_inplace(dout.reshape(-1), out.reshape(-1))
    else:
        _relu_backward_into(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))

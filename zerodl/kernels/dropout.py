"""Dropout: apply a keep-mask in training, scale by the keep probability at test time.

The random numbers never come from here: the :class:`~zerodl.layers.Dropout` layer draws them in
Python (the book's ``np.random.rand(*x.shape)`` on NumPy's global state, or its own seeded
:class:`numpy.random.Generator`), so both backends see the very same numbers and therefore the very
same masks. The kernels only apply (and, in the fused op, build) the
mask.

Twins (``<op>_numpy`` / ``<op>_numba``), any shape, ``x``/``dout`` float32 or float64:

* ``dropout_mask_forward(x, u, ratio) -> (out, mask)``: ``mask = u > ratio`` (bool, ``x``'s
  shape; ``u`` uniform numbers in ``[0, 1)`` of ``x``'s shape, any float dtype) and
  ``out = x * mask``, in one pass. This is the book's training forward with ``np.random.rand``
  replaced by the caller's ``u``.
* ``dropout_forward(x, mask) -> out``: ``out = x * mask`` for a given bool mask (a frozen mask, e.g.
  for a gradient check).
* ``dropout_predict(x, keep) -> out``: ``out = x * keep`` with ``keep = 1 - ratio`` a Python float
  (the book's test-time scaling; training outputs are *not* rescaled, as in the book).
* ``dropout_backward(dout, mask) -> dx``: ``dx = dout * mask``.

Outputs are new arrays of the input's dtype; inputs are never written. The multiplications are real
multiplications by 1 or 0 in both twins (not selections), so NaN/inf/-0.0 behave exactly like the
book's ``x * self.mask``.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("dropout_mask_forward", "dropout_forward", "dropout_predict", "dropout_backward")


# ----------------------------------------------------------------------------- NumPy references
def dropout_mask_forward_numpy(
    x: np.ndarray, u: np.ndarray, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: ``mask = u > ratio``; ``out = x * mask`` (the book's ``Dropout.forward``, training)."""
    mask = u > ratio
    return x * mask, mask


def dropout_forward_numpy(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reference: ``out = x * mask`` for a bool ``mask`` of ``x``'s shape."""
    return x * mask


def dropout_predict_numpy(x: np.ndarray, keep: float) -> np.ndarray:
    """Reference: ``out = x * keep`` (``keep = 1 - dropout_ratio``), in ``x``'s dtype."""
    return x * x.dtype.type(keep)


def dropout_backward_numpy(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Reference: ``dx = dout * mask``; ``dout`` is not modified."""
    return dout * mask


# ----------------------------------------------------------------------------- compiled loops
@jit
def _mask_forward(x, u, ratio, out, mask):
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    for i in range(x.size):
        m = u[i] > ratio
        mask[i] = m
        out[i] = x[i] * (one if m else zero)


@jit
def _apply_mask(x, mask, out):
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    for i in range(x.size):
        out[i] = x[i] * (one if mask[i] else zero)


@jit
def _scale(x, keep, out):
    for i in range(x.size):
        out[i] = x[i] * keep


def _flat(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1)


def dropout_mask_forward_numba(
    x: np.ndarray, u: np.ndarray, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Compiled twin of :func:`dropout_mask_forward_numpy` (mask and product in one pass)."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.bool_)
    # ``u > ratio`` in NumPy compares in u's dtype against the Python float; do the same here.
    _mask_forward(x.reshape(-1), _flat(u), u.dtype.type(ratio), out.reshape(-1), mask.reshape(-1))
    return out, mask


def dropout_forward_numba(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`dropout_forward_numpy`."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _apply_mask(x.reshape(-1), _flat(mask), out.reshape(-1))
    return out


def dropout_predict_numba(x: np.ndarray, keep: float) -> np.ndarray:
    """Compiled twin of :func:`dropout_predict_numpy`."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _scale(x.reshape(-1), x.dtype.type(keep), out.reshape(-1))
    return out


def dropout_backward_numba(dout: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`dropout_backward_numpy` (the same loop as the forward mask)."""
    dout = np.ascontiguousarray(dout)
    dx = np.empty_like(dout)
    _apply_mask(dout.reshape(-1), _flat(mask), dx.reshape(-1))
    return dx

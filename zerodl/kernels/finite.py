"""Non-finite scan: how many entries of an array are NaN, +inf or -inf.

Twins: ``count_nonfinite_{numpy,numba}(x) -> int``. ``x``: float32 or float64, any shape (0-d
included) and any strides; it is never written. The result is the number of entries for which
``np.isfinite`` is False. Any other dtype is refused with a TypeError by both twins (integers
cannot hold NaN; the boundary checks in :mod:`zerodl._validate` decide what to do with them).

A training step calls this once per batch, before anything is updated (see
:func:`zerodl._validate.check_finite_batch`), so it must cost next to nothing: the compiled twin
reads the float bits as unsigned integers and counts the entries whose exponent bits are all ones
(NaN and ±inf are exactly those, in IEEE 754). An integer compare-and-count vectorises without
fastmath; a float sum (``isfinite(sum(x))``) would not, and fastmath may delete NaN tests
altogether. Measured on a 100 x 784 batch: about the time of one copy of it (≈ 7 µs).
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("count_nonfinite",)

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _check_dtype(x: np.ndarray) -> None:
    if x.dtype not in _FLOATS:
        raise TypeError(f"count_nonfinite: x must be a float32 or float64 array, got dtype {x.dtype}")


def count_nonfinite_numpy(x: np.ndarray) -> int:
    """Reference: the number of entries of ``x`` (float32/float64, any shape) that are NaN or ±inf."""
    x = np.asarray(x)
    _check_dtype(x)
    return int(x.size - np.count_nonzero(np.isfinite(x)))


# An entry is NaN or ±inf exactly when all its exponent bits are set; an integer count over the
# bits vectorises (no float compare, no branch). ``bits`` is the 1-d unsigned-integer view of the
# floats and ``exponent`` the mask of its width (numba compiles one signature per width).
@jit
def _count_exponent_all_ones(bits, exponent):
    count = 0
    for i in range(bits.size):
        if (bits[i] & exponent) == exponent:
            count += 1
    return count


#: Exponent mask of each float width (bytes): all exponent bits set.
_EXPONENT_MASKS = {4: np.uint32(0x7F80_0000), 8: np.uint64(0x7FF0_0000_0000_0000)}


def count_nonfinite_numba(x: np.ndarray) -> int:
    """Compiled twin of :func:`count_nonfinite_numpy`: one pass over the bits of ``x``.

    A C-contiguous ``x`` is read in place (as one 1-d view: one compiled signature per dtype); any
    other layout is copied once first.
    """
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    _check_dtype(x)
    flat = x.reshape(-1) if x.flags.c_contiguous else x.ravel(order="K")  # ravel: contiguous copy/view
    mask = _EXPONENT_MASKS[x.dtype.itemsize]
    return _count_exponent_all_ones(flat.view(mask.dtype), mask)

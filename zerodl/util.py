"""The book's ``common/util.py``: every name it has, with the book's signatures.

``from common.util import smooth_curve, shuffle_dataset, im2col, col2im, conv_output_size`` becomes
``from zerodl.util import ...``:

* :func:`smooth_curve` — the book's Kaiser-window smoothing, the same maths;
* :func:`shuffle_dataset` — the book's ``np.random.permutation`` on NumPy's global state (so
  ``np.random.seed`` reproduces the book's shuffle), or a ``seed=`` of zerodl's own;
* :func:`im2col` / :func:`col2im` — the NumPy twins of :mod:`zerodl.kernels.im2col` (the book's
  algorithm; the layers call the active backend's twin instead), with the book's argument names;
* :func:`conv_output_size` — the size arithmetic the layers and networks share (an ``int``, and a
  clear error when the window does not tile, where the book returns a float).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from zerodl._random import SeedLike, make_rng
from zerodl.kernels.im2col import col2im_numpy, im2col_numpy, out_hw

__all__ = ["col2im", "conv_output_size", "im2col", "shuffle_dataset", "smooth_curve"]

#: The book's ``window_len`` of :func:`smooth_curve`.
SMOOTH_WINDOW = 11


def _check_int(value: object, name: str, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{where}: {name} must be {kind}, got {value!r}")
    return int(value)


def conv_output_size(
    input_size: int, filter_size: int, stride: int = 1, pad: int = 0, *, where: str = "conv_output_size",
    axis: str = "input size",
) -> int:
    """Output length of a sliding window: ``(input_size + 2·pad - filter_size) / stride + 1``.

    The book returns this as a float and lets ``im2col`` floor it silently; zerodl returns an ``int``
    and raises ``ValueError`` when the window does not tile the padded input exactly (or does not
    fit at all), naming ``where`` (the layer), the sizes and what would fit.

    >>> conv_output_size(28, 5)
    24
    >>> conv_output_size(24, 2, stride=2)
    12
    """
    size = _check_int(input_size, axis, where, 1)
    filt = _check_int(filter_size, "filter size", where, 1)
    stride = _check_int(stride, "stride", where, 1)
    pad = _check_int(pad, "pad", where, 0)
    span = size + 2 * pad - filt
    if span < 0:
        raise ValueError(
            f"{where}: a filter of size {filt} does not fit the {axis} {size} with pad {pad} "
            f"(expected filter size <= {size + 2 * pad})"
        )
    if span % stride:
        below = size - span % stride
        above = below + stride
        sizes = f"{below} or {above}" if below >= 1 and below + 2 * pad >= filt else f"{above}"
        fits = [p for p in range(pad + 1, pad + stride) if (size + 2 * p - filt) % stride == 0]
        hint = f", or pad={fits[0]}" if fits else ""
        raise ValueError(
            f"{where}: filter size {filt} with stride {stride} and pad {pad} does not tile the "
            f"{axis} {size}: (size + 2*pad - filter) = {span} is not a multiple of the stride "
            f"{stride} (expected {axis} {sizes}{hint})"
        )
    return span // stride + 1


def smooth_curve(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """The book's smoothing of a loss curve: ``x (n,)`` → float64 ``(n,)``.

    A moving average with an 11-point Kaiser window (β = 2), the ends extended by reflection
    exactly as the book's ``common/util.smooth_curve`` does (the first 10 points after ``x[0]``
    mirrored before it, the last 10 points including ``x[-1]`` mirrored after it), then the
    5 + 5 extra points cut off. For ``n >= 11`` the result is the book's, to the last bit.

    Departure: a curve shorter than the window (``n < 11``), for which the book returns a shorter
    array that no longer lines up with ``x``, is returned unsmoothed (a float64 copy).
    """
    values = np.asarray(x, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"smooth_curve: x must be a 1-d sequence of numbers, got shape {values.shape}")
    n = SMOOTH_WINDOW
    if values.size < n:
        return values.copy()
    s = np.r_[values[n - 1:0:-1], values, values[-1:-n:-1]]
    w = np.kaiser(n, 2)
    y = np.convolve(w / w.sum(), s, mode="valid")
    return y[5:len(y) - 5]


def shuffle_dataset(x: np.ndarray, t: np.ndarray, *, seed: SeedLike = None) -> tuple[np.ndarray, np.ndarray]:
    """The book's ``shuffle_dataset``: ``x (N, ...)`` and ``t (N, ...)`` in one random order.

    The order is ``np.random.permutation(N)`` on NumPy's global state, the book's call, so a script
    seeded with ``np.random.seed`` shuffles as the book's does; ``seed=`` (int or Generator) uses a
    generator of zerodl's own instead. Returns new arrays (``x[perm]``, ``t[perm]``); the inputs are
    not changed. The book handles 2-d and 4-d ``x``; any number of dimensions works here.

    Raises ValueError when ``x`` and ``t`` hold different numbers of samples, TypeError for
    non-array input (a 0-d value has no samples to shuffle).
    """
    x_arr, t_arr = np.asarray(x), np.asarray(t)
    if x_arr.ndim == 0 or t_arr.ndim == 0:
        raise TypeError("shuffle_dataset: x and t must be arrays of samples (N, ...), "
                        f"got shapes {x_arr.shape} and {t_arr.shape}")
    if x_arr.shape[0] != t_arr.shape[0]:
        raise ValueError(f"shuffle_dataset: x has {x_arr.shape[0]} samples but t has {t_arr.shape[0]} "
                         f"(shapes {x_arr.shape} and {t_arr.shape})")
    rng = make_rng(seed, "shuffle_dataset")
    perm = np.random.permutation(x_arr.shape[0]) if rng is None else rng.permutation(x_arr.shape[0])
    return x_arr[perm], t_arr[perm]


def _book_float(a: Any, where: str, name: str) -> np.ndarray:
    """float32/float64 kept; integers and bools become float64 (the book's ``np.zeros`` result)."""
    arr = np.asarray(a)
    if arr.dtype.kind in "iub":
        return arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise TypeError(f"{where}: {name} must be an array of numbers, got dtype {arr.dtype}")
    if arr.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return arr.astype(np.float64)
    return arr


def _window(where: str, height: int, width: int, filter_h: Any, filter_w: Any, stride: Any,
            pad: Any) -> tuple[int, int, int, int, int, int]:
    fh = _check_int(filter_h, "filter_h", where, 1)
    fw = _check_int(filter_w, "filter_w", where, 1)
    st = _check_int(stride, "stride", where, 1)
    pd = _check_int(pad, "pad", where, 0)
    oh, ow = out_hw(height, width, fh, fw, st, pd)
    if oh < 1 or ow < 1:
        raise ValueError(f"{where}: a {fh}x{fw} filter does not fit a {height}x{width} input with pad {pd}")
    return fh, fw, st, pd, oh, ow


def im2col(input_data: np.ndarray, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """The book's ``im2col``: ``input_data (N, C, H, W)`` → ``col (N·OH·OW, C·FH·FW)``.

    ``OH = (H + 2·pad - filter_h) // stride + 1`` (floored, as the book's; the layers refuse windows
    that do not tile). Each row is one zero-padded patch in ``(c, fy, fx)`` order. This is the NumPy
    twin :func:`zerodl.kernels.im2col.im2col_numpy`, whatever the active backend. Float32 input stays
    float32 (the book's ``np.zeros`` gives float64 always); integer input gives float64 as the book's.
    """
    where = "im2col"
    x = _book_float(input_data, where, "input_data")
    if x.ndim != 4:
        raise ValueError(f"{where}: input_data must have shape (N, C, H, W), got shape {x.shape}")
    fh, fw, st, pd, _, _ = _window(where, x.shape[2], x.shape[3], filter_h, filter_w, stride, pad)
    return im2col_numpy(x, fh, fw, st, pd)


def col2im(col: np.ndarray, input_shape: Sequence[int], filter_h: int, filter_w: int, stride: int = 1,
           pad: int = 0) -> np.ndarray:
    """The book's ``col2im``: ``col (N·OH·OW, C·FH·FW)`` → an image batch of ``input_shape (N, C, H, W)``.

    The adjoint of :func:`im2col` (overlapping patches add up), the NumPy twin
    :func:`zerodl.kernels.im2col.col2im_numpy`. Returns a contiguous array (the book returns a view
    of a padded buffer); float32 ``col`` stays float32.
    """
    where = "col2im"
    arr = _book_float(col, where, "col")
    shape = tuple(input_shape) if isinstance(input_shape, (tuple, list)) else None
    if shape is None or len(shape) != 4:
        raise ValueError(f"{where}: input_shape must be (N, C, H, W), got {input_shape!r}")
    n, c, h, w = (_check_int(v, "input_shape entry", where, 1) for v in shape)
    fh, fw, st, pd, oh, ow = _window(where, h, w, filter_h, filter_w, stride, pad)
    expected = (n * oh * ow, c * fh * fw)
    if arr.size != expected[0] * expected[1]:
        raise ValueError(f"{where}: col must have shape {expected} for input_shape {(n, c, h, w)}, "
                         f"got {arr.shape}")
    return col2im_numpy(arr, (n, c, h, w), fh, fw, st, pd)

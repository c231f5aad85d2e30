"""``im2col`` / ``col2im``: the book's unfolding of image patches into matrix rows, and its adjoint.

Twins: ``im2col_numpy`` / ``im2col_numba`` and ``col2im_numpy`` / ``col2im_numba``.

Contract (both twins), with ``OH = (H + 2 pad - FH) // stride + 1`` and ``OW`` likewise:

* ``im2col(x (N, C, H, W), filter_h, filter_w, stride, pad)`` → ``col (N·OH·OW, C·FH·FW)``; row
  ``(n, oh, ow)`` holds the zero-padded patch whose top-left corner is ``(oh·stride, ow·stride)``,
  flattened in ``(c, fy, fx)`` order — the book's ``common/util.py`` layout exactly.
* ``col2im(col (N·OH·OW, C·FH·FW), input_shape, filter_h, filter_w, stride, pad)`` → ``(N, C, H, W)``:
  every entry of ``col`` is added back onto the pixel it was copied from (padding dropped). It is the
  adjoint of ``im2col``, not its inverse: overlapping patches accumulate.

Outputs are new C-contiguous arrays of the input's dtype (the book's ``np.zeros`` would promote
float32 to float64; zerodl keeps float32). Inputs are never written. Shapes are validated by the
layers; these kernels assume a positive ``stride``, ``pad >= 0`` and ``OH, OW >= 1``.

The NumPy twins follow the book: one strided slice copy per filter offset, then a 6-d transpose.
The Numba twins walk memory directly: ``im2col`` writes ``col`` sequentially row by row, and
``col2im`` adds the filter offsets in the book's order (``fy`` outer, ``fx`` inner, starting from
zero), so both backends sum every pixel's contributions in the same order and agree bit for bit.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("im2col", "col2im")


def out_hw(h: int, w: int, filter_h: int, filter_w: int, stride: int, pad: int) -> tuple[int, int]:
    """``(OH, OW)`` of a sliding window: ``(H + 2 pad - FH) // stride + 1`` per axis."""
    return (h + 2 * pad - filter_h) // stride + 1, (w + 2 * pad - filter_w) // stride + 1


# ----------------------------------------------------------------------------- NumPy references
def im2col_numpy(
    x: np.ndarray, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """Reference: the book's ``im2col`` (``x (N, C, H, W)`` → ``(N·OH·OW, C·FH·FW)``), dtype kept."""
    N, C, H, W = x.shape
    out_h, out_w = out_hw(H, W, filter_h, filter_w, stride, pad)
    img = np.pad(x, [(0, 0), (0, 0), (pad, pad), (pad, pad)], "constant")
    col = np.zeros((N, C, filter_h, filter_w, out_h, out_w), dtype=x.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for xx in range(filter_w):
            x_max = xx + stride * out_w
            col[:, :, y, xx, :, :] = img[:, :, y:y_max:stride, xx:x_max:stride]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * out_h * out_w, -1)


def col2im_numpy(
    col: np.ndarray,
    input_shape: tuple[int, int, int, int],
    filter_h: int,
    filter_w: int,
    stride: int = 1,
    pad: int = 0,
) -> np.ndarray:
    """Reference: the book's ``col2im`` (``(N·OH·OW, C·FH·FW)`` → ``input_shape``), dtype kept.

    Returns a C-contiguous array (the book returns a view of a larger padded buffer).
    """
    N, C, H, W = input_shape
    out_h, out_w = out_hw(H, W, filter_h, filter_w, stride, pad)
    col6 = col.reshape(N, out_h, out_w, C, filter_h, filter_w).transpose(0, 3, 4, 5, 1, 2)
    img = np.zeros((N, C, H + 2 * pad + stride - 1, W + 2 * pad + stride - 1), dtype=col.dtype)
    for y in range(filter_h):
        y_max = y + stride * out_h
        for xx in range(filter_w):
            x_max = xx + stride * out_w
            img[:, :, y:y_max:stride, xx:x_max:stride] += col6[:, :, y, xx, :, :]
    return np.ascontiguousarray(img[:, :, pad : H + pad, pad : W + pad])


# ----------------------------------------------------------------------------- compiled kernels
@jit
def _im2col(x, fh, fw, stride, pad, out_h, out_w, col):
    n_img, n_ch, h, w = x.shape
    zero = x.dtype.type(0)
    row = 0
    for n in range(n_img):
        for oh in range(out_h):
            for ow in range(out_w):
                k = 0
                for c in range(n_ch):
                    for fy in range(fh):
                        y = oh * stride + fy - pad
                        inside_y = 0 <= y < h
                        for fx in range(fw):
                            xx = ow * stride + fx - pad
                            if inside_y and 0 <= xx < w:
                                col[row, k] = x[n, c, y, xx]
                            else:
                                col[row, k] = zero
                            k += 1
                row += 1


@jit
def _col2im(col, fh, fw, stride, pad, out_h, out_w, img):
    # Loop order (n, c, fy, fx, oh, ow) adds each pixel's contributions in the book's order
    # (filter offset by offset, from zero), so the result matches col2im_numpy bit for bit.
    n_img, n_ch, h, w = img.shape
    n_pos = out_h * out_w
    kk = fh * fw
    for n in range(n_img):
        for c in range(n_ch):
            for y in range(h):
                for xx in range(w):
                    img[n, c, y, xx] = 0
            for fy in range(fh):
                for fx in range(fw):
                    k = c * kk + fy * fw + fx
                    for oh in range(out_h):
                        y = oh * stride + fy - pad
                        if y < 0 or y >= h:
                            continue
                        base = n * n_pos + oh * out_w
                        for ow in range(out_w):
                            xx = ow * stride + fx - pad
                            if 0 <= xx < w:
                                img[n, c, y, xx] += col[base + ow, k]


def im2col_numba(
    x: np.ndarray, filter_h: int, filter_w: int, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """Compiled twin of :func:`im2col_numpy`: one sequential pass writing ``col``."""
    N, C, H, W = x.shape
    out_h, out_w = out_hw(H, W, filter_h, filter_w, stride, pad)
    col = np.empty((N * out_h * out_w, C * filter_h * filter_w), dtype=x.dtype)
    _im2col(np.ascontiguousarray(x), filter_h, filter_w, stride, pad, out_h, out_w, col)
    return col


def col2im_numba(
    col: np.ndarray,
    input_shape: tuple[int, int, int, int],
    filter_h: int,
    filter_w: int,
    stride: int = 1,
    pad: int = 0,
) -> np.ndarray:
    """Compiled twin of :func:`col2im_numpy`: accumulates straight into the unpadded image."""
    N, C, H, W = (int(s) for s in input_shape)
    out_h, out_w = out_hw(H, W, filter_h, filter_w, stride, pad)
    img = np.empty((N, C, H, W), dtype=col.dtype)
    _col2im(np.ascontiguousarray(col), filter_h, filter_w, stride, pad, out_h, out_w, img)
    return img

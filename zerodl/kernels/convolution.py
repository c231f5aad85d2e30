"""Convolution forward and backward: the book's ``im2col`` + matrix product, and a compiled twin.

Twins: ``conv_forward_numpy`` / ``conv_forward_numba`` and ``conv_backward_numpy`` /
``conv_backward_numba``.

Contract (both twins), ``K = C·FH·FW``, ``P = OH·OW`` (see :mod:`zerodl.kernels.im2col`):

* ``conv_forward(x (N, C, H, W), W (FN, C, FH, FW), b (FN,), stride, pad)`` → ``(out, col)``:
  ``out (N, FN, OH, OW)`` is the cross-correlation plus bias. ``col`` is what the twin keeps for
  its backward pass: the NumPy twin returns ``im2col(x) (N·P, K)`` as the book keeps ``self.col``;
  the Numba twin returns ``None`` because it rebuilds patches image by image (cheaper than storing
  them, and the step's peak memory drops by the size of ``col``).
* ``conv_backward(dout (N, FN, OH, OW), x, W, col=None, stride, pad)`` → ``(dx, dW, db)`` with
  ``dx`` of ``x``'s shape, ``dW (FN, C, FH, FW)``, ``db (FN,)``. Either twin accepts either
  forward's ``col`` (``None`` included), so switching backends between forward and backward is safe.

All arrays share one floating dtype; outputs are new C-contiguous arrays of it; inputs are never
written. The NumPy twins are the book's ``Convolution`` in structure (``np.dot`` and NumPy
transposes around ``im2col`` / ``col2im``). The matrix products of both twins go to NumPy's BLAS (one
thread pool per process; see NUMBA-NOTES), so the twins differ only by the rounding of differently
blocked products; the bias gradient and the ``col2im`` summation order match the book's exactly.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit
from zerodl.kernels.im2col import col2im_numpy, im2col_numpy, out_hw

OPS = ("conv_forward", "conv_backward")


# ----------------------------------------------------------------------------- NumPy references
def conv_forward_numpy(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reference: the book's ``Convolution.forward`` → ``(out (N, FN, OH, OW), col (N·P, K))``."""
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    out_h, out_w = out_hw(H, Wd, FH, FW, stride, pad)
    col = im2col_numpy(x, FH, FW, stride, pad)
    col_W = W.reshape(FN, -1).T
    out = np.dot(col, col_W) + b
    out = out.reshape(N, out_h, out_w, -1).transpose(0, 3, 1, 2)
    # The book hands the transposed view on; the next layer would copy it anyway.
    return np.ascontiguousarray(out), col


def conv_backward_numpy(
    dout: np.ndarray,
    x: np.ndarray,
    W: np.ndarray,
    col: np.ndarray | None = None,
    stride: int = 1,
    pad: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reference: the book's ``Convolution.backward`` → ``(dx, dW, db)``.

    Uses the forward's ``col`` when given, else rebuilds it with ``im2col(x)``.
    """
    FN, C, FH, FW = W.shape
    if col is None:
        col = im2col_numpy(x, FH, FW, stride, pad)
    dout = dout.transpose(0, 2, 3, 1).reshape(-1, FN)
    db = np.sum(dout, axis=0)
    dW = np.dot(col.T, dout)
    dW = np.ascontiguousarray(dW.transpose(1, 0).reshape(FN, C, FH, FW))
    col_W = W.reshape(FN, -1).T
    dcol = np.dot(dout, col_W.T)
    dx = col2im_numpy(dcol, x.shape, FH, FW, stride, pad)
    return dx, dW, db


# ----------------------------------------------------------------------------- compiled kernels
@jit
def _tap_range(out_w, w, stride, shift):
    # Output columns [lo, hi) whose input column ow·stride + shift lies inside the image.
    lo = 0
    while lo < out_w and lo * stride + shift < 0:
        lo += 1
    hi = out_w
    while hi > lo and (hi - 1) * stride + shift >= w:
        hi -= 1
    return lo, hi


@jit
def _patches_one(x, fh, fw, stride, pad, out_h, out_w, buf):
    # One image x (C, H, W) → buf (K, P): row k = (c, fy, fx) holds that filter tap over all output
    # positions, so each write run is a contiguous output row and each read an image row.
    n_ch, h, w = x.shape
    k = 0
    for c in range(n_ch):
        for fy in range(fh):
            for fx in range(fw):
                shift = fx - pad
                lo, hi = _tap_range(out_w, w, stride, shift)
                dst = buf[k]
                for oh in range(out_h):
                    y = oh * stride + fy - pad
                    base = oh * out_w
                    if y < 0 or y >= h:
                        dst[base : base + out_w] = 0
                        continue
                    dst[base : base + lo] = 0
                    if stride == 1:
                        # Slice copies compile to vectorised moves; indexing element by element
                        # was twice as slow (negative-index checks block vectorisation).
                        dst[base + lo : base + hi] = x[c, y, lo + shift : hi + shift]
                    else:
                        src = x[c, y]
                        for ow in range(lo, hi):
                            dst[base + ow] = src[ow * stride + shift]
                    dst[base + hi : base + out_w] = 0
                k += 1


@jit
def _unpatch_one(buf, fh, fw, stride, pad, out_h, out_w, dx):
    # Adjoint of _patches_one for one image: dx (C, H, W) = Σ over taps, added tap by tap in the
    # book's col2im order (fy outer, fx inner, from zero).
    n_ch, h, w = dx.shape
    dx[...] = 0
    k = 0
    for c in range(n_ch):
        for fy in range(fh):
            for fx in range(fw):
                shift = fx - pad
                lo, hi = _tap_range(out_w, w, stride, shift)
                src = buf[k]
                for oh in range(out_h):
                    y = oh * stride + fy - pad
                    if y < 0 or y >= h:
                        continue
                    base = oh * out_w
                    dst = dx[c, y]
                    if stride == 1:
                        d = dst[lo + shift : hi + shift]
                        s = src[base + lo : base + hi]
                        for i in range(hi - lo):
                            d[i] += s[i]
                    else:
                        for ow in range(lo, hi):
                            dst[ow * stride + shift] += src[base + ow]
                k += 1


@jit
def _wide_taps(x, pad, fh, fw, xpad, buf):
    # Unit stride only. Copy image x (C, H, W) into the interior of the flat zero-padded buffer
    # xpad (C·Hp·Wp + FW slack; its borders are zero from allocation and never written), then
    # copy tap k = (c, fy, fx) as ONE contiguous run: buf[k, j] = xpad[c·Hp·Wp + fy·Wp + fx + j]
    # for j < OH·Wp. Column j = oh·Wp + ow is output (oh, ow) for ow < OW; the FW - 1 columns per
    # row beyond OW are junk the caller drops. One long copy per tap instead of OH short ones.
    n_ch, h, w = x.shape
    wp = w + 2 * pad
    hpwp = (h + 2 * pad) * wp
    n_cols = buf.shape[1]
    for c in range(n_ch):
        for y in range(h):
            base = c * hpwp + (y + pad) * wp + pad
            xpad[base : base + w] = x[c, y]
    k = 0
    for c in range(n_ch):
        for fy in range(fh):
            for fx in range(fw):
                off = c * hpwp + fy * wp + fx
                buf[k] = xpad[off : off + n_cols]
                k += 1


@jit
def _wide_to_out(wide, b, out):
    # wide (FN, OH·Wp) → out (FN, OH, OW) + bias, dropping the junk columns.
    fn, out_h, out_w = out.shape
    wp = wide.shape[1] // out_h
    for f in range(fn):
        bf = b[f]
        for oh in range(out_h):
            row = wide[f, oh * wp : oh * wp + out_w]
            dst = out[f, oh]
            for ow in range(out_w):
                dst[ow] = row[ow] + bf


@jit
def _out_to_wide(dout, wide):
    # dout (FN, OH, OW) → wide (FN, OH·Wp); the junk columns are left as they are (zero).
    fn, out_h, out_w = dout.shape
    wp = wide.shape[1] // out_h
    for f in range(fn):
        for oh in range(out_h):
            wide[f, oh * wp : oh * wp + out_w] = dout[f, oh]


@jit
def _wide_fold(dbuf, fh, fw, pad, dxpad, dx):
    # Adjoint of _wide_taps: add tap rows back onto the padded image in the book's col2im order
    # (fy outer, fx inner, from zero), then crop. Junk columns of dbuf are exactly zero (they come
    # from the zero junk columns of dout), so they add nothing.
    n_ch, h, w = dx.shape
    wp = w + 2 * pad
    hpwp = (h + 2 * pad) * wp
    n_cols = dbuf.shape[1]
    dxpad[:] = 0
    k = 0
    for c in range(n_ch):
        for fy in range(fh):
            for fx in range(fw):
                off = c * hpwp + fy * wp + fx
                d = dxpad[off : off + n_cols]
                src = dbuf[k]
                for j in range(n_cols):
                    d[j] += src[j]
                k += 1
    for c in range(n_ch):
        for y in range(h):
            base = c * hpwp + (y + pad) * wp + pad
            dx[c, y] = dxpad[base : base + w]


@jit
def _add_bias_channels(out, b):
    # out (FN, P) of one image, still in cache after its matrix product.
    fn, n_pos = out.shape
    for f in range(fn):
        bf = b[f]
        for p in range(n_pos):
            out[f, p] += bf


@jit
def _bias_grad(dout, db):
    # db[f] = Σ_{n, p} dout[n, f, p], summed n-major then p, the order of the book's
    # np.sum(axis=0) over the (N·P, FN) transposed matrix, so the sums agree bit for bit.
    n_img, fn, n_pos = dout.shape
    for f in range(fn):
        db[f] = 0
    for n in range(n_img):
        for f in range(fn):
            acc = db[f]
            for p in range(n_pos):
                acc += dout[n, f, p]
            db[f] = acc


def conv_forward_numba(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Compiled twin of :func:`conv_forward_numpy`; returns ``(out, None)``.

    Image by image: the patches of one image go to a reused ``(K, P)`` buffer that stays in cache,
    one BLAS product ``W (FN, K) @ patches (K, P)`` writes the image's ``(FN, P)`` output block in
    its final layout, and the bias is added while that block is still in cache. No ``(N·P, K)``
    matrix is kept (``conv_backward_numba`` rebuilds the patches), which saves both the memory
    traffic and the peak memory of the book's ``col``.
    """
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    out_h, out_w = out_hw(H, Wd, FH, FW, stride, pad)
    n_pos = out_h * out_w
    x = np.ascontiguousarray(x)
    W_mat = np.ascontiguousarray(W).reshape(FN, -1)
    b = np.ascontiguousarray(b)
    if stride == 1:
        return _forward_wide(x, W_mat, b, FH, FW, pad, out_h, out_w).reshape(N, FN, out_h, out_w), None
    out = np.empty((N, FN, n_pos), dtype=x.dtype)
    buf = np.empty((W_mat.shape[1], n_pos), dtype=x.dtype)
    for n in range(N):
        _patches_one(x[n], FH, FW, stride, pad, out_h, out_w, buf)
        np.matmul(W_mat, buf, out=out[n])
        _add_bias_channels(out[n], b)
    return out.reshape(N, FN, out_h, out_w), None


def conv_backward_numba(
    dout: np.ndarray,
    x: np.ndarray,
    W: np.ndarray,
    col: np.ndarray | None = None,
    stride: int = 1,
    pad: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`conv_backward_numpy`; ``col`` is ignored (patches are rebuilt).

    Image by image: rebuild the ``(K, P)`` patches, accumulate ``dW += dout_n (FN, P) @ patchesᵀ``,
    form ``dpatches = Wᵀ @ dout_n`` and fold them straight into ``dx[n]``. Every intermediate is one
    image's worth and stays in cache.
    """
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    out_h, out_w = out_hw(H, Wd, FH, FW, stride, pad)
    n_pos = out_h * out_w
    x = np.ascontiguousarray(x)
    dout3 = np.ascontiguousarray(dout).reshape(N, FN, n_pos)
    W_mat = np.ascontiguousarray(W).reshape(FN, -1)
    W_t = W_mat.T
    K = W_mat.shape[1]
    db = np.empty(FN, dtype=dout.dtype)
    _bias_grad(dout3, db)
    if stride == 1:
        dx, dW = _backward_wide(x, dout3.reshape(N, FN, out_h, out_w), W_mat, FH, FW, pad)
        return dx, dW.reshape(FN, C, FH, FW), db
    dW = np.zeros((FN, K), dtype=dout.dtype)
    dW_n = np.empty((FN, K), dtype=dout.dtype)
    dx = np.empty(x.shape, dtype=dout.dtype)
    buf = np.empty((K, n_pos), dtype=dout.dtype)
    dbuf = np.empty((K, n_pos), dtype=dout.dtype)
    for n in range(N):
        _patches_one(x[n], FH, FW, stride, pad, out_h, out_w, buf)
        np.matmul(dout3[n], buf.T, out=dW_n)
        dW += dW_n
        np.matmul(W_t, dout3[n], out=dbuf)
        _unpatch_one(dbuf, FH, FW, stride, pad, out_h, out_w, dx[n])
    return dx, dW.reshape(FN, C, FH, FW), db


def _forward_wide(
    x: np.ndarray, W_mat: np.ndarray, b: np.ndarray, fh: int, fw: int, pad: int, out_h: int, out_w: int
) -> np.ndarray:
    """Unit-stride forward on the "wide" grid (see :func:`_wide_taps`) → ``(N, FN, OH, OW)``.

    Costs ``(FW - 1) / OW`` extra multiply-adds (the junk columns) but copies each tap as one
    contiguous run; on the book's networks that is 2–10x less patch-building time.
    """
    N, C, H, Wd = x.shape
    FN, K = W_mat.shape
    wp = Wd + 2 * pad
    n_cols = out_h * wp
    xpad = np.zeros(C * (H + 2 * pad) * wp + fw, dtype=x.dtype)
    buf = np.empty((K, n_cols), dtype=x.dtype)
    wide = np.empty((FN, n_cols), dtype=x.dtype)
    out = np.empty((N, FN, out_h, out_w), dtype=x.dtype)
    for n in range(N):
        _wide_taps(x[n], pad, fh, fw, xpad, buf)
        np.matmul(W_mat, buf, out=wide)
        _wide_to_out(wide, b, out[n])
    return out


def _backward_wide(
    x: np.ndarray, dout: np.ndarray, W_mat: np.ndarray, fh: int, fw: int, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-stride ``(dx, dW (FN, K))`` on the wide grid, image by image (bias gradient elsewhere)."""
    N, C, H, Wd = x.shape
    FN, K = W_mat.shape
    out_h = dout.shape[2]
    wp = Wd + 2 * pad
    n_cols = out_h * wp
    xpad = np.zeros(C * (H + 2 * pad) * wp + fw, dtype=x.dtype)
    dxpad = np.empty_like(xpad)
    buf = np.empty((K, n_cols), dtype=x.dtype)
    dbuf = np.empty((K, n_cols), dtype=x.dtype)
    dwide = np.zeros((FN, n_cols), dtype=x.dtype)  # junk columns stay zero
    W_t = W_mat.T
    dW = np.zeros((FN, K), dtype=x.dtype)
    dW_n = np.empty((FN, K), dtype=x.dtype)
    dx = np.empty(x.shape, dtype=x.dtype)
    for n in range(N):
        _wide_taps(x[n], pad, fh, fw, xpad, buf)
        _out_to_wide(dout[n], dwide)
        np.matmul(dwide, buf.T, out=dW_n)
        dW += dW_n
        np.matmul(W_t, dwide, out=dbuf)
        _wide_fold(dbuf, fh, fw, pad, dxpad, dx[n])
    return dx, dW

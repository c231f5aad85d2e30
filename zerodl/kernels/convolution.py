"""Convolution forward and backward: the book's ``im2col`` + matrix product, and a compiled twin.

Twins: ``conv_forward_numpy`` / ``conv_forward_numba``, ``conv_backward_numpy`` /
``conv_backward_numba`` and the ReLU-fused ``conv_relu_forward_*`` / ``conv_relu_backward_*``.

Contract (both twins), ``K = C·FH·FW``, ``P = OH·OW`` (see :mod:`zerodl.kernels.im2col`):

* ``conv_forward(x (N, C, H, W), W (FN, C, FH, FW), b (FN,), stride, pad)`` → ``(out, col)``:
  ``out (N, FN, OH, OW)`` is the cross-correlation plus bias. ``col`` is what the twin keeps for
  its backward pass: the NumPy twin returns ``im2col(x) (N·P, K)`` as the book keeps ``self.col``;
  the Numba twin returns ``None`` because it rebuilds patches chunk by chunk of images (cheaper
  than storing them, and the step's peak memory drops by the size of ``col``).
* ``conv_backward(dout (N, FN, OH, OW), x, W, col=None, stride, pad)`` → ``(dx, dW, db)`` with
  ``dx`` of ``x``'s shape, ``dW (FN, C, FH, FW)``, ``db (FN,)``. Either twin accepts either
  forward's ``col`` (``None`` included), so switching backends between forward and backward is safe.

Fused with the book's ReLU after the convolution (a conv layer followed by ``Relu``, as in both
books' nets), for fused training steps; same arguments, same ``col``:

* ``conv_relu_forward(x, W, b, stride, pad)`` → ``(out, col)`` with ``out = relu(conv(x) + b)``
  (entries ``<= 0`` become 0, NaN passes — the book's ``Relu``). ``out`` doubles as the ReLU's mask.
* ``conv_relu_backward(dout, out, x, W, col=None, stride, pad, need_dx=True)`` → ``(dx, dW, db)``:
  ``conv_backward`` of ``dout`` zeroed where ``out <= 0`` (``out`` is the forward's output), i.e. the
  book's ``Relu.backward`` then ``Convolution.backward``, without storing the masked gradient.

All arrays share one floating dtype; outputs are new C-contiguous arrays of it; inputs are never
written. The NumPy twins are the book's ``Convolution`` in structure (``np.dot`` and NumPy
transposes around ``im2col`` / ``col2im``). The Numba twins take one of two routes, chunk by chunk
of images:

* 3x3 filters, unit stride, at least :data:`WINO_MIN_CHANNELS` channels (every DeepConvNet layer
  but the first): Winograd's F(2x2, 3x3) — forward, dx and dW each as 16 batched BLAS products on
  transformed tiles, 2.25x fewer multiplications (details above ``_wino_filter``). Its results
  differ from the direct sums by rounding only (a few float32 ulps; the tests' tolerances cover
  it, and the book's weights give the book's accuracies in both backends).
* otherwise: a per-chunk ``(K, columns)`` patch matrix whose product with ``W (FN, K)`` is already
  in output order, scattered with the bias in one compiled pass (details above ``_patches_wide``);
  the twins then differ only by the rounding of differently blocked products.

The matrix products of both twins go to NumPy's BLAS (one thread pool per process; see
NUMBA-NOTES; BLAS inside njit would load SciPy's second OpenBLAS pool), the Numba twin's limited to
one thread per product while it runs (:func:`_one_blas_thread`). The bias gradient (and, on the
patch route, the ``col2im`` summation order) match the book's exactly. The Numba twins use both
cores by running fixed groups of chunks on ``numba.get_num_threads()`` threads
(:func:`~zerodl.kernels._tasks.run_tasks`); chunks and groups depend on the shapes only and the
weight gradient's partial sums are added group by group in order, so results are bit-identical
whatever the number of threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from zerodl.kernels import _blas, _threads
from zerodl.kernels._blas import DGEMM, NO_TRANS, ROW_MAJOR, SGEMM, TRANS
from zerodl.kernels._jit import jit
from zerodl.kernels._tasks import run_tasks
from zerodl.kernels.im2col import col2im_numpy, im2col_numpy, out_hw

# Bind the BLAS symbols now (3 ms): a compiled helper that calls them must never run unbound.
_blas.available()

OPS = ("conv_forward", "conv_backward", "conv_relu_forward", "conv_relu_backward")


# ----------------------------------------------------------------------------- NumPy references
def conv_forward_numpy(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reference: the book's ``Convolution.forward`` → ``(out (N, FN, OH, OW), col (N·P, K))``."""
    FN, _, FH, FW = W.shape
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
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Reference: the book's ``Convolution.backward`` → ``(dx, dW, db)``.

    Uses the forward's ``col`` when given, else rebuilds it with ``im2col(x)``. ``need_dx=False``
    (a network's first layer) returns ``dx = None`` and skips its product and ``col2im``.
    """
    FN, C, FH, FW = W.shape
    if col is None:
        col = im2col_numpy(x, FH, FW, stride, pad)
    # A C-ordered copy, as the book's reshape of its (always non-contiguous) dout makes: for a single
    # image the reshape of a contiguous dout is a view in another memory order, and db / dW would be
    # summed in that order instead of the book's (ch07/gradient_check.py printed other last digits).
    dout = np.ascontiguousarray(dout.transpose(0, 2, 3, 1)).reshape(-1, FN)
    db = np.sum(dout, axis=0)
    dW = np.dot(col.T, dout)
    dW = np.ascontiguousarray(dW.transpose(1, 0).reshape(FN, C, FH, FW))
    if not need_dx:
        return None, dW, db
    col_W = W.reshape(FN, -1).T
    dcol = np.dot(dout, col_W.T)
    dx = col2im_numpy(dcol, x.shape, FH, FW, stride, pad)
    return dx, dW, db


# ----------------------------------------------------------------------------- compiled kernels
# The Numba twins build a "patch matrix" for a CHUNK of images at a time: buf (K, B·L), where
# image j of the chunk owns columns [j·L, (j+1)·L) and column j·L + oh·R + ow is its output
# (oh, ow). Unit stride uses the "wide grid" (R = Wp, the padded width, L = OH·Wp): each filter
# tap is then ONE contiguous run of the padded image, at the price of FW - 1 junk columns per
# output row that the products compute and the scatter drops. Other strides use R = OW, L = OH·OW
# and copy tap rows one output row at a time. Chunks amortise the per-call costs (Python, BLAS
# dispatch) over several images while buf stays in L2, instead of the book's whole (N·P, K) col
# going through memory. The products run on one BLAS thread (see _one_blas_thread).

#: Bytes of patch matrix per chunk (see above); a module constant, not read inside kernels.
#: Measured (1 BLAS thread, batch 100, the books' layers): 128-512 KiB best — the chunk's patches
#: and product stay in L2 — while 4 MiB was 1.3-2x slower.
CHUNK_BYTES = 512 * 2**10

#: Use the wide grid (unit stride) when its junk columns are at most this fraction of the output
#: width. Measured on all the books' layers (junk 7-25 %): wide was as fast or up to 1.5x faster
#: than row-by-row copies, forward and backward, so every unit-stride layer uses it.
WIDE_MAX_JUNK = 1.0


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
def _patches_wide(x, fh, fw, pad, xpad, buf):
    # x (B, C, H, W) → buf (K, B·L) on the unit-stride wide grid, through xpad, a flat zero-padded
    # image buffer (its borders are zero from allocation and never written). A function of its
    # own: sharing one with the strided copies made LLVM compile these loops 4x slower.
    n_img, n_ch, h, w = x.shape
    n_cols = buf.shape[1] // n_img
    wp = w + 2 * pad
    hpwp = (h + 2 * pad) * wp
    for j in range(n_img):
        for c in range(n_ch):
            for y in range(h):
                base = c * hpwp + (y + pad) * wp + pad
                src = x[j, c, y]
                dst = xpad[base : base + w]
                for i in range(w):
                    dst[i] = src[i]
        k = 0
        for c in range(n_ch):
            for fy in range(fh):
                for fx in range(fw):
                    # Element loop over two slice views: numba's slice-to-slice assignment takes
                    # a generic strided copy and an offset index (xpad[off + i]) keeps LLVM from
                    # vectorising; this form measured 5-9x faster than either.
                    off = c * hpwp + fy * wp + fx
                    src = xpad[off : off + n_cols]
                    dst = buf[k, j * n_cols : (j + 1) * n_cols]
                    for i in range(n_cols):
                        dst[i] = src[i]
                    k += 1


@jit
def _patches_rows(x, fh, fw, stride, pad, out_h, out_w, buf):
    # x (B, C, H, W) → buf (K, B·L), any stride: tap rows copied one output row at a time.
    n_img, n_ch, h, w = x.shape
    n_cols = buf.shape[1] // n_img
    for j in range(n_img):
        k = 0
        for c in range(n_ch):
            for fy in range(fh):
                for fx in range(fw):
                    shift = fx - pad
                    lo, hi = _tap_range(out_w, w, stride, shift)
                    dst = buf[k, j * n_cols : (j + 1) * n_cols]
                    for oh in range(out_h):
                        y = oh * stride + fy - pad
                        base = oh * out_w
                        if y < 0 or y >= h:
                            dst[base : base + out_w] = 0
                            continue
                        dst[base : base + lo] = 0
                        src = x[j, c, y]
                        for ow in range(lo, hi):
                            dst[base + ow] = src[ow * stride + shift]
                        dst[base + hi : base + out_w] = 0
                    k += 1


@jit
def _fold_wide(dbuf, fh, fw, pad, dxpad, dx):
    # Adjoint of _patches_wide: dx (B, C, H, W) = Σ over taps of dbuf (K, B·L), added tap by tap
    # in the book's col2im order (fy outer, fx inner, from zero) so the sums match it exactly. The
    # junk columns of dbuf are exactly zero (see _out_to_cols) and add nothing.
    n_img, n_ch, h, w = dx.shape
    n_cols = dbuf.shape[1] // n_img
    wp = w + 2 * pad
    hpwp = (h + 2 * pad) * wp
    zero = dx.dtype.type(0)
    for j in range(n_img):
        for i in range(dxpad.shape[0]):
            dxpad[i] = zero
        k = 0
        for c in range(n_ch):
            for fy in range(fh):
                for fx in range(fw):
                    off = c * hpwp + fy * wp + fx
                    d = dxpad[off : off + n_cols]
                    src = dbuf[k, j * n_cols : (j + 1) * n_cols]
                    for i in range(n_cols):
                        d[i] += src[i]
                    k += 1
        for c in range(n_ch):
            for y in range(h):
                base = c * hpwp + (y + pad) * wp + pad
                src = dxpad[base : base + w]
                dst = dx[j, c, y]
                for i in range(w):
                    dst[i] = src[i]


@jit
def _fold_rows(dbuf, fh, fw, stride, pad, out_h, out_w, dx):
    # Adjoint of _patches_rows, in the book's col2im order like _fold_wide.
    n_img, n_ch, h, w = dx.shape
    n_cols = dbuf.shape[1] // n_img
    for j in range(n_img):
        dx[j] = 0
        k = 0
        for c in range(n_ch):
            for fy in range(fh):
                for fx in range(fw):
                    shift = fx - pad
                    lo, hi = _tap_range(out_w, w, stride, shift)
                    src = dbuf[k, j * n_cols : (j + 1) * n_cols]
                    for oh in range(out_h):
                        y = oh * stride + fy - pad
                        if y < 0 or y >= h:
                            continue
                        dst = dx[j, c, y]
                        base = oh * out_w
                        for ow in range(lo, hi):
                            dst[ow * stride + shift] += src[base + ow]
                    k += 1


# Direct convolution for single-channel layers with 3-wide filters (DeepConvNet's first layer,
# 1->16 3x3 on 28x28 MNIST): with C = 1 the patch matrix has only K = 9 rows, so its BLAS product
# is skinny and slow (26 GFLOP/s measured, one thread) and building the patches costs as much
# again. These kernels write the same product, prod (FN, B·L) on the unit-stride wide grid
# (see _patches_wide; the junk columns hold sums over the padding and are dropped by the scatter),
# straight from the zero-padded image: one filter row at a time, FW multiply-adds per output in a
# flat loop over the image's whole wide grid (long, contiguous: it vectorises; the padded image
# stays in L1). Compiled with contract=True (see _jit.py): the multiply-adds become FMAs. Sum
# order: filter row by filter row, taps left to right (the patch matrix's k order), each tap one
# FMA, so results differ from the BLAS product by rounding only.
@jit(contract=True)
def _direct_c1_fw3(x, W, pad, xpad, prod):
    # x (B, 1, H, Wd), W (FN, 1, FH, 3) → prod (FN, B·OH·Wp), Wp = Wd + 2 pad; xpad: flat padded
    # image of at least (H + 2 pad)·Wp + 2 values, borders zero (never written). Filters four at
    # a time share each tap's loads (one filter per pass measured 1.3x slower on the 5x5 layer).
    n_img, _, h, w = x.shape
    fn, fh = W.shape[0], W.shape[2]
    wp = w + 2 * pad
    n_cols = prod.shape[1] // n_img
    for j in range(n_img):
        for y in range(h):
            base = (y + pad) * wp + pad
            src = x[j, 0, y]
            dst = xpad[base : base + w]
            for i in range(w):
                dst[i] = src[i]
        c0 = j * n_cols
        f = 0
        while f < fn:
            nf = min(4, fn - f)  # a block of four filters, or the last one to three singly
            if nf < 4:
                nf = 1
            for fy in range(fh):
                off = fy * wp
                s0 = xpad[off : off + n_cols]
                s1 = xpad[off + 1 : off + 1 + n_cols]
                s2 = xpad[off + 2 : off + 2 + n_cols]
                if nf == 4:
                    a00, a01, a02 = W[f, 0, fy, 0], W[f, 0, fy, 1], W[f, 0, fy, 2]
                    o0 = prod[f, c0 : c0 + n_cols]
                    a10, a11, a12 = W[f + 1, 0, fy, 0], W[f + 1, 0, fy, 1], W[f + 1, 0, fy, 2]
                    o1 = prod[f + 1, c0 : c0 + n_cols]
                    a20, a21, a22 = W[f + 2, 0, fy, 0], W[f + 2, 0, fy, 1], W[f + 2, 0, fy, 2]
                    o2 = prod[f + 2, c0 : c0 + n_cols]
                    a30, a31, a32 = W[f + 3, 0, fy, 0], W[f + 3, 0, fy, 1], W[f + 3, 0, fy, 2]
                    o3 = prod[f + 3, c0 : c0 + n_cols]
                    if fy == 0:
                        for q in range(n_cols):
                            v0 = s0[q]
                            v1 = s1[q]
                            v2 = s2[q]
                            o0[q] = a00 * v0 + a01 * v1 + a02 * v2
                            o1[q] = a10 * v0 + a11 * v1 + a12 * v2
                            o2[q] = a20 * v0 + a21 * v1 + a22 * v2
                            o3[q] = a30 * v0 + a31 * v1 + a32 * v2
                    else:
                        for q in range(n_cols):
                            v0 = s0[q]
                            v1 = s1[q]
                            v2 = s2[q]
                            o0[q] = o0[q] + a00 * v0 + a01 * v1 + a02 * v2
                            o1[q] = o1[q] + a10 * v0 + a11 * v1 + a12 * v2
                            o2[q] = o2[q] + a20 * v0 + a21 * v1 + a22 * v2
                            o3[q] = o3[q] + a30 * v0 + a31 * v1 + a32 * v2
                else:
                    a00, a01, a02 = W[f, 0, fy, 0], W[f, 0, fy, 1], W[f, 0, fy, 2]
                    o0 = prod[f, c0 : c0 + n_cols]
                    if fy == 0:
                        for q in range(n_cols):
                            o0[q] = a00 * s0[q] + a01 * s1[q] + a02 * s2[q]
                    else:
                        for q in range(n_cols):
                            o0[q] = o0[q] + a00 * s0[q] + a01 * s1[q] + a02 * s2[q]
            f += nf


#: Filter widths with a direct single-channel kernel. 3 only: DeepConvNet's first layer (K = 9, the
#: patch product's skinniest) measured 1.25-1.35x faster forward (one thread, both dtypes), while
#: the same kernel for SimpleConvNet's 5x5 filters (K = 25, where OpenBLAS runs the patch product at
#: ~100 GFLOP/s) measured 1.2-1.3x slower than the patch route: numba's vector loops here use
#: 256-bit registers (LLVM's preference on this CPU), half of what OpenBLAS's kernels use.
DIRECT_C1_KERNELS = {3: _direct_c1_fw3}

#: Switch for the direct single-channel route (tests and A/B measurements turn it off).
DIRECT_C1 = True


# The passes below move rows of at most OW (4-28) values; they index flat arrays with unsigned
# integers rather than making two row views per row (see the Winograd comment: the views and the
# signed indices' wraparound tests cost more than the copies at these widths).
@jit
def _cols_to_out(prod, b, row_stride, out):
    # prod (FN, B·L) → out (B, FN, OH, OW) + bias, dropping junk columns.
    n_img, fn, out_h, out_w = out.shape
    u = np.uint64
    total = u(prod.shape[1])
    n_cols = prod.shape[1] // n_img
    pf = prod.reshape(-1)
    of = out.reshape(-1)
    uow = u(out_w)
    for j in range(n_img):
        for f in range(fn):
            bf = b[f]
            for oh in range(out_h):
                src = u(f) * total + u(j * n_cols + oh * row_stride)
                dst = u(((j * fn + f) * out_h + oh) * out_w)
                for ow in range(uow):
                    of[dst + ow] = pf[src + ow] + bf


@jit
def _cols_to_out_relu(prod, b, row_stride, out):
    # _cols_to_out followed by the book's ReLU (x <= 0 → 0; NaN passes), in the same pass.
    n_img, fn, out_h, out_w = out.shape
    u = np.uint64
    total = u(prod.shape[1])
    n_cols = prod.shape[1] // n_img
    pf = prod.reshape(-1)
    of = out.reshape(-1)
    uow = u(out_w)
    zero = out.dtype.type(0)
    for j in range(n_img):
        for f in range(fn):
            bf = b[f]
            for oh in range(out_h):
                src = u(f) * total + u(j * n_cols + oh * row_stride)
                dst = u(((j * fn + f) * out_h + oh) * out_w)
                for ow in range(uow):
                    v = pf[src + ow] + bf
                    of[dst + ow] = zero if v <= zero else v  # noqa: FURB136 (max() would change NaN handling)


@jit
def _cols_to_pooled_relu(prod, b, row_stride, pooled):
    # Inference: prod (FN, B·L) (see _cols_to_out) → pooled (B, FN, OH // 2, OW // 2), the 2x2
    # stride-2 max pooling of the book's ReLU of prod + bias, without writing the full output.
    # The value of max_pool_forward(relu(out)) exactly: NaN if any of the four is NaN, else
    # relu(max + bias), as rounding is monotonic (max(fl(a + b), fl(c + b)) = fl(max(a, c) + b)) -
    # so, with no arg-max to keep, the order of the comparisons is free. Two passes: the maximum of
    # horizontal pairs over the chunk's whole flat row of columns (one long loop per filter: it
    # vectorises), then of vertical pairs of those, with bias and ReLU, per pooled row. (One pass
    # over each 2x2 window measured 3.5x slower than the full-resolution scatter: pooled rows of
    # 12 are too short to vectorise.)
    n_img, fn, ph, pw = pooled.shape
    u = np.uint64
    total = prod.shape[1]
    half = total // 2
    n_cols = total // n_img
    pf = prod.reshape(-1)
    of = pooled.reshape(-1)
    hmax = np.empty(fn * half + 1, dtype=prod.dtype)
    uhalf = u(half)
    utotal = u(total)
    one, two = u(1), u(2)
    for f in range(fn):
        src = u(f) * utotal
        dst = u(f) * uhalf
        for q in range(uhalf):
            a = pf[src + two * q]
            c = pf[src + two * q + one]
            hmax[dst + q] = a if (a >= c) | (a != a) else c  # noqa: PLR0124 (a != a: NaN)
    zero = pooled.dtype.type(0)
    hrow = u(row_stride // 2)
    upw = u(pw)
    # Each image's columns start at an even offset (n_cols = OH·row_stride, row_stride even
    # or OH even) only if n_cols is even; otherwise fall back to the window-by-window pass.
    if n_cols % 2 != 0 or row_stride % 2 != 0:
        for j in range(n_img):
            for f in range(fn):
                bf = b[f]
                for i in range(ph):
                    s = u(f) * utotal + u(j * n_cols + 2 * i * row_stride)
                    d = u(((j * fn + f) * ph + i) * pw)
                    for k in range(upw):
                        a = s + two * k
                        m = pf[a]
                        for v in (pf[a + one], pf[a + u(row_stride)], pf[a + u(row_stride) + one]):
                            m = m if (m >= v) | (m != m) else v  # noqa: PLR0124
                        m = m + bf
                        of[d + k] = zero if m <= zero else m  # noqa: FURB136 (NaN must pass)
        return
    for j in range(n_img):
        for f in range(fn):
            bf = b[f]
            for i in range(ph):
                r0 = u(f) * uhalf + u((j * n_cols + 2 * i * row_stride) // 2)
                d = u(((j * fn + f) * ph + i) * pw)
                for k in range(upw):
                    a = hmax[r0 + k]
                    c = hmax[r0 + hrow + k]
                    m = (a if (a >= c) | (a != a) else c) + bf  # noqa: PLR0124
                    of[d + k] = zero if m <= zero else m  # noqa: FURB136 (NaN must pass)


@jit
def _out_to_cols_masked(dout, out, row_stride, cols):
    # _out_to_cols of the gradient through the ReLU whose output is `out`: dout where out > 0
    # (the book's Relu.backward zeroes where its input was <= 0, i.e. where out <= 0).
    n_img, fn, out_h, out_w = dout.shape
    u = np.uint64
    total = u(cols.shape[1])
    n_cols = cols.shape[1] // n_img
    df = dout.reshape(-1)
    mf = out.reshape(-1)
    cf = cols.reshape(-1)
    uow = u(out_w)
    zero = cols.dtype.type(0)
    for j in range(n_img):
        for f in range(fn):
            for oh in range(out_h):
                src = u(((j * fn + f) * out_h + oh) * out_w)
                dst = u(f) * total + u(j * n_cols + oh * row_stride)
                for ow in range(uow):
                    v = df[src + ow]  # loaded before the select (see _bias_grad_masked)
                    cf[dst + ow] = zero if mf[src + ow] <= zero else v


@jit
def _bias_grad_masked(dout, out, db):
    # _bias_grad of the gradient through the ReLU whose output is `out`, in the same order (the
    # masked entries add +0, as the NumPy twin's zeros do). Both values are loaded before the
    # select: a load inside the ternary's branch became a branch, mispredicted on ReLU masks
    # (measured 33x slower).
    n_img, fn = dout.shape[0], dout.shape[1]
    n_pos = dout.shape[2] * dout.shape[3]
    d = dout.reshape(n_img, fn, n_pos)
    m = out.reshape(n_img, fn, n_pos)
    zero = db.dtype.type(0)
    f = 0
    while f + 4 <= fn:
        a0 = a1 = a2 = a3 = zero
        for n in range(n_img):
            r0, r1, r2, r3 = d[n, f], d[n, f + 1], d[n, f + 2], d[n, f + 3]
            m0, m1, m2, m3 = m[n, f], m[n, f + 1], m[n, f + 2], m[n, f + 3]
            for p in range(n_pos):
                v0, v1, v2, v3 = r0[p], r1[p], r2[p], r3[p]
                a0 += zero if m0[p] <= zero else v0
                a1 += zero if m1[p] <= zero else v1
                a2 += zero if m2[p] <= zero else v2
                a3 += zero if m3[p] <= zero else v3
        db[f], db[f + 1], db[f + 2], db[f + 3] = a0, a1, a2, a3
        f += 4
    while f < fn:
        acc = zero
        for n in range(n_img):
            row = d[n, f]
            mr = m[n, f]
            for p in range(n_pos):
                v = row[p]
                acc += zero if mr[p] <= zero else v
        db[f] = acc
        f += 1


@jit
def _out_to_cols(dout, row_stride, cols):
    # dout (B, FN, OH, OW) → cols (FN, B·L); junk columns are left untouched (zero).
    n_img, fn, out_h, out_w = dout.shape
    u = np.uint64
    total = u(cols.shape[1])
    n_cols = cols.shape[1] // n_img
    df = dout.reshape(-1)
    cf = cols.reshape(-1)
    uow = u(out_w)
    for j in range(n_img):
        for f in range(fn):
            for oh in range(out_h):
                src = u(((j * fn + f) * out_h + oh) * out_w)
                dst = u(f) * total + u(j * n_cols + oh * row_stride)
                for ow in range(uow):
                    cf[dst + ow] = df[src + ow]


@jit
def _unpool_masked_into(dpooled, pooled, arg_max, out_h, out_w, row_stride, image_stride, channel_stride, flat):
    # The 2x2 max pooling's backward of dpooled (B, FN, PH, PW), zeroed where the window's maximum
    # (pooled) was <= 0 (the ReLU's mask there), into the flat array `flat`: image j, channel f,
    # position (y, xx) at j·image_stride + f·channel_stride + y·row_stride + xx, for y < out_h and
    # xx < out_w (rows and columns no window covers get 0; positions out_w ≤ xx < row_stride are
    # not written). Walks the output row pair by row pair through flat unsigned indices (as
    # pooling's _max_pool_backward_2x2: 3.2x faster than strided stores per window). Layouts:
    # the (B, FN, OH, OW) gradient (_unpool_masked) and the patch route's product columns
    # (FN, B·L), L = out_h·row_stride (_patch_gather, see _out_to_cols).
    n_img, fn, ph, pw = dpooled.shape
    u = np.uint64
    gf = dpooled.reshape(-1)
    pf = pooled.reshape(-1)
    af = arg_max.reshape(-1)
    W = u(out_w)
    R = u(row_stride)
    covered = u(2 * pw)
    one, two = u(1), u(2)
    zero = flat.dtype.type(0)
    for j in range(n_img):
        for f in range(fn):
            base = u(j) * u(image_stride) + u(f) * u(channel_stride)
            for i in range(ph):
                s = u(((j * fn + f) * ph + i) * pw)
                d = base + u(2 * i) * R
                for xx in range(covered):
                    o = s + (xx >> one)
                    k = af[o]
                    v = gf[o]  # loaded before the select (see _bias_grad_masked)
                    v = zero if pf[o] <= zero else v
                    par = xx & one
                    flat[d + xx] = v if k == par else zero
                    flat[d + R + xx] = v if k == par + two else zero
                for xx in range(covered, W):
                    flat[d + xx] = zero
                    flat[d + R + xx] = zero
            for y in range(2 * ph, out_h):
                d = base + u(y) * R
                for xx in range(W):
                    flat[d + xx] = zero


def _unpool_masked(dpooled: np.ndarray, pooled: np.ndarray, arg_max: np.ndarray, dout: np.ndarray) -> None:
    """``dout (B, FN, OH, OW)`` (C-contiguous) = the 2x2 max pooling's backward of ``dpooled (B, FN,
    PH, PW)``, zeroed where the window's maximum ``pooled`` was <= 0 (conv_relu_pool's backward)."""
    _, fn, out_h, out_w = dout.shape
    _unpool_masked_into(dpooled, pooled, arg_max, out_h, out_w, out_w, fn * out_h * out_w, out_h * out_w,
                        dout.reshape(-1))


#: How a compiled patch-route group writes its output / reads its gradient (see _Plan.forward_group
#: and _Plan.backward_group): the scatter after the forward product and the copy before the backward's.
SCATTER_OUT, SCATTER_RELU, SCATTER_POOLED = 0, 1, 2
GATHER_DOUT, GATHER_MASKED, GATHER_UNPOOL = 0, 1, 2


@jit
def _patches_into(x, wide, fh, fw, stride, pad, out_h, out_w, xpad, buf):
    # The patch matrix of images x into buf, on the unit-stride wide grid or row by row.
    if wide:
        _patches_wide(x, fh, fw, pad, xpad, buf)
    else:
        _patches_rows(x, fh, fw, stride, pad, out_h, out_w, buf)


@jit
def _patch_scatter(prod, b, row_stride, scatter, out):
    # A chunk's product to its images of out: the output (+ bias), + ReLU, or pooled.
    if scatter == SCATTER_OUT:
        _cols_to_out(prod, b, row_stride, out)
    elif scatter == SCATTER_RELU:
        _cols_to_out_relu(prod, b, row_stride, out)
    else:
        _cols_to_pooled_relu(prod, b, row_stride, out)


@jit
def _patch_gather(gather, dout, relu_out, dpooled, pooled, arg_max, out_h, out_w, row_stride, dcols):
    # A chunk's gradient to the product layout: dout as is, masked by relu_out, or unpooled from
    # dpooled / pooled / arg_max (the arrays the mode does not read may be placeholders).
    if gather == GATHER_UNPOOL:  # junk columns (out_w ≤ xx < row_stride) stay zero
        n_cols = dcols.shape[1] // dpooled.shape[0]
        _unpool_masked_into(dpooled, pooled, arg_max, out_h, out_w, row_stride, n_cols, dcols.shape[1],
                            dcols.reshape(-1))
    elif gather == GATHER_DOUT:
        _out_to_cols(dout, row_stride, dcols)
    else:
        _out_to_cols_masked(dout, relu_out, row_stride, dcols)


@jit
def _patch_forward_chunks(x, W, b, wide, direct, stride, pad, out_h, out_w, row_stride, xpad_size,
                          bounds, block, scatter, out):
    # One group of the patch route's forward in one call (see _patch_forward; the same passes and
    # products, in the same order, as its Python loop).
    fn, n_ch, fh, fw = W.shape
    dt = x.dtype
    W_mat = W.reshape(fn, n_ch * fh * fw)
    K = W_mat.shape[1]
    n_cols = out_h * row_stride
    xpad = np.zeros(xpad_size, dtype=dt)
    width = -1
    buf = np.empty((K, 1), dtype=dt)
    prod = np.empty((fn, 1), dtype=dt)
    for i in range(bounds.shape[0] - 1):
        n0, n1 = bounds[i], bounds[i + 1]
        if (n1 - n0) * n_cols != width:
            width = (n1 - n0) * n_cols
            buf = np.empty((K, width), dtype=dt)
            prod = np.empty((fn, width), dtype=dt)
        if direct:
            _direct_c1_fw3(x[n0:n1], W, pad, xpad, prod)
        else:
            _patches_into(x[n0:n1], wide, fh, fw, stride, pad, out_h, out_w, xpad, buf)
            for c0 in range(0, width, block):
                c1 = min(c0 + block, width)
                _gemm(W_mat, buf[:, c0:c1], prod[:, c0:c1], False)
        _patch_scatter(prod, b, row_stride, scatter, out[n0:n1])


@jit
def _patch_backward_chunks(x, W_t, need_dW, fold_dx, wide, fh, fw, stride, pad, out_h, out_w, row_stride,
                           xpad_size, bounds, block, gather, dout, relu_out, dpooled, pooled, arg_max,
                           dW_part, dx):
    # One group of the patch route's backward in one call (see _backward_numba's patch_group: the
    # same passes, products and partial-sum order). gather: how a chunk's gradient reaches the
    # product layout (dout as is, masked by relu_out, or unpooled from dpooled / pooled / arg_max).
    K, fn = W_t.shape
    dt = x.dtype
    n_cols = out_h * row_stride
    xpad = np.zeros(xpad_size, dtype=dt)
    dxpad = np.empty_like(xpad)
    dW_chunk = np.empty((K, fn), dtype=dt)
    dWf = dW_part.reshape(-1)
    dcf = dW_chunk.reshape(-1)
    width = -1
    buf = np.empty((K, 1), dtype=dt)
    dbuf = np.empty((K, 1), dtype=dt)
    dcols = np.zeros((fn, 1), dtype=dt)
    for i in range(bounds.shape[0] - 1):
        n0, n1 = bounds[i], bounds[i + 1]
        if (n1 - n0) * n_cols != width:
            width = (n1 - n0) * n_cols
            buf = np.empty((K, width), dtype=dt)
            dbuf = np.empty((K, width), dtype=dt)
            dcols = np.zeros((fn, width), dtype=dt)  # junk columns stay zero
        if need_dW:
            _patches_into(x[n0:n1], wide, fh, fw, stride, pad, out_h, out_w, xpad, buf)
        _patch_gather(gather, dout[n0:n1], relu_out[n0:n1], dpooled[n0:n1], pooled[n0:n1], arg_max[n0:n1],
                      out_h, out_w, row_stride, dcols)
        for c0 in range(0, width, block):
            c1 = min(c0 + block, width)
            if need_dW and i == 0 and c0 == 0:
                _gemm(buf[:, c0:c1], dcols[:, c0:c1], dW_part, True)
            elif need_dW:
                _gemm(buf[:, c0:c1], dcols[:, c0:c1], dW_chunk, True)
                for k in range(dWf.shape[0]):
                    dWf[k] += dcf[k]
            if fold_dx:
                _gemm(W_t, dcols[:, c0:c1], dbuf[:, c0:c1], False)
        if fold_dx:
            if wide:
                _fold_wide(dbuf, fh, fw, pad, dxpad, dx[n0:n1])
            else:
                _fold_rows(dbuf, fh, fw, stride, pad, out_h, out_w, dx[n0:n1])


@jit
def _bias_grad(dout, db):
    # db[f] = Σ dout[:, f] summed image by image, then position by position, from zero: the order
    # of the book's np.sum(axis=0) over its (N·P, FN) matrix, so db matches it bit for bit. That
    # order is one chain of dependent additions per channel; eight channels at a time give the
    # CPU eight independent chains (measured 4x faster than one channel at a time).
    n_img, fn = dout.shape[0], dout.shape[1]
    d = dout.reshape(n_img, fn, dout.shape[2] * dout.shape[3])
    n_pos = d.shape[2]
    zero = db.dtype.type(0)
    f = 0
    while f + 8 <= fn:
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = zero
        for n in range(n_img):
            r0, r1, r2, r3 = d[n, f], d[n, f + 1], d[n, f + 2], d[n, f + 3]
            r4, r5, r6, r7 = d[n, f + 4], d[n, f + 5], d[n, f + 6], d[n, f + 7]
            for p in range(n_pos):
                a0 += r0[p]
                a1 += r1[p]
                a2 += r2[p]
                a3 += r3[p]
                a4 += r4[p]
                a5 += r5[p]
                a6 += r6[p]
                a7 += r7[p]
        db[f], db[f + 1], db[f + 2], db[f + 3] = a0, a1, a2, a3
        db[f + 4], db[f + 5], db[f + 6], db[f + 7] = a4, a5, a6, a7
        f += 8
    while f < fn:
        acc = zero
        for n in range(n_img):
            row = d[n, f]
            for p in range(n_pos):
                acc += row[p]
        db[f] = acc
        f += 1


# ----------------------------------------------------------------------------- Winograd F(2x2, 3x3)
# For 3x3 filters at unit stride the Numba twins use Winograd's minimal filtering (Lavin & Gray,
# "Fast Algorithms for Convolutional Neural Networks", 2016): each 2x2 output tile is
# Aᵀ [Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B)] A for the 4x4 input tile d_c of every channel c, so a chunk of
# images needs 16 products U[ξ] (FN, C) @ V[ξ] (C, tiles) — 2.25x fewer multiplications than
# the patch matrix, still in BLAS. The transforms add and subtract (and halve, exactly, in G), so
# the results differ from the direct sums by rounding only: about 2-4x the direct products'
# rounding error (measured 2e-7 vs 6e-7 relative in float32, 1e-15 in float64 on the books' layers;
# the tests' float32/float64 tolerances cover it). The backward's dx is the same transform applied
# to dout with the filters flipped and transposed (a 3x3 "full" correlation, padding 2 - pad); its
# dW is Gᵀ [Σ_tiles (A g Aᵀ) ⊙ (Bᵀ d B)] G, the adjoint of the forward (16 products Z[ξ] @ V[ξ]ᵀ
# per chunk, g the 2x2 tiles of dout): measured 13-30 % faster backward than the patch matrix.
#
# Transforms index flat arrays with unsigned integers: numba's negative-index wraparound test on a
# signed computed index kept LLVM from vectorising (measured 9x slower on a copy loop), and array
# views made per tile row cost more than the arithmetic at these widths.

@jit
def _wino_filter(W, U):
    # W (FN, C, 3, 3) → U (16, FN, C): U[4a + b, f, c] = (G g Gᵀ)[a, b] with g = W[f, c],
    # G = [[1, 0, 0], [½, ½, ½], [½, -½, ½], [0, 0, 1]]. One filter's 16 rows go to a small buffer
    # first, then row by row into U: stored straight into U's 16 planes, an element each, the stores
    # hit the same L1 sets whenever a plane is a multiple of 4 KiB (benchmarks_scripts/wino_filter.py,
    # float32: 32x32 58-59 → 10-11 µs, 64x64 232 → 37-41 µs; the small 16x1 0.9 → 1.2-1.3 µs), and
    # DeepConvNet's step makes ten such transforms.
    fn, n_ch = W.shape[0], W.shape[1]
    half = W.dtype.type(0.5)
    t = np.empty((4, 3), dtype=W.dtype)
    rows = np.empty((16, n_ch), dtype=W.dtype)
    for f in range(fn):
        for c in range(n_ch):
            g = W[f, c]
            for k in range(3):
                g0, g1, g2 = g[0, k], g[1, k], g[2, k]
                t[0, k] = g0
                t[1, k] = half * (g0 + g1 + g2)
                t[2, k] = half * (g0 - g1 + g2)
                t[3, k] = g2
            for a in range(4):
                r0, r1, r2 = t[a, 0], t[a, 1], t[a, 2]
                rows[4 * a, c] = r0
                rows[4 * a + 1, c] = half * (r0 + r1 + r2)
                rows[4 * a + 2, c] = half * (r0 - r1 + r2)
                rows[4 * a + 3, c] = r2
        for k in range(16):
            for c in range(n_ch):
                U[k, f, c] = rows[k, c]


@jit
def _wino_input(x, pad, th, tw, pe, po, R, V):
    # x (B, C, H, W) → V (16, C, B·th·(tw + 1)): V[4a + b, c, t] = (Bᵀ d B)[a, b] for the 4x4 tile d
    # with corner (2i - pad, 2j - pad) of image x[n, c], t = (n·th + i)·(tw + 1) + j, where
    # Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]. "Wide" tile rows: tw + 1 tiles,
    # the last one junk, so that tile t starts at column 2t of the flattened tile rows and every
    # loop runs over a whole image (tile rows alone, 4-14 tiles, are too short to vectorise:
    # measured 2-4x slower). pe / po (th + 1, 2tw + 2): the even / odd rows of one zero-padded
    # channel (borders zero from allocation, never written); R (4, B·th·(2tw + 2) + 2): Bᵀ d of
    # one channel of every image of the chunk (its last two columns spare, zero). Channel by
    # channel, so that the second pass is one loop over all the chunk's tiles: per image (tile
    # rows of one image, 20-210 tiles) it measured 3-5x slower per value on the 7x7 and 14x14
    # layers (the vector loops' set-up and remainders dominated).
    n_img, n_ch, h, w = x.shape
    u = np.uint64
    wp = u(pe.shape[1])
    Q = u(th) * wp
    T = u(V.shape[2])
    CT = u(n_ch) * T
    Vf = V.reshape(-1)
    pef = pe.reshape(-1)
    pof = po.reshape(-1)
    r0, r1, r2, r3 = R[0], R[1], R[2], R[3]
    one, two, three = u(1), u(2), u(3)
    xf = x.reshape(-1)
    uw = u(w)
    upad = u(pad)
    for c in range(n_ch):
        for n in range(n_img):
            for y in range(h):
                # Flat unsigned indices here too: two row views per input row cost more than
                # copying the row.
                yy = y + pad
                src = u(((n * n_ch + c) * h + y) * w)
                dst = u(yy // 2) * wp + upad
                if yy % 2 == 0:
                    for k in range(uw):
                        pef[dst + k] = xf[src + k]
                else:
                    for k in range(uw):
                        pof[dst + k] = xf[src + k]
            rb = u(n) * Q
            for q in range(Q):
                e0 = pef[q]
                e1 = pef[q + wp]
                o0 = pof[q]
                o1 = pof[q + wp]
                r0[rb + q] = e0 - e1
                r1[rb + q] = o0 + e1
                r2[rb + q] = e1 - o0
                r3[rb + q] = o0 - o1
        # Image n's tiles start at R column n·Q = 2·n·th·(tw + 1): tile t of the chunk reads
        # columns 2t … 2t + 3, so one loop covers the chunk's tiles of channel c (its output run
        # V[ξ, c] is contiguous). A junk tile reads the next tile row's (or image's) first
        # columns, the chunk's last one R's two spare columns.
        for a in range(4):
            rf = R[a]
            o = u(4 * a) * CT + u(c) * T
            for t in range(T):
                e0 = rf[two * t]
                p0 = rf[two * t + one]
                e1 = rf[two * t + two]
                p1 = rf[two * t + three]
                Vf[o + t] = e0 - e1
                Vf[o + CT + t] = p0 + e1
                Vf[o + two * CT + t] = e1 - p0
                Vf[o + three * CT + t] = p0 - p1


@jit(inline=True)
def _wino_tile_out(Mf, m, FT, bf):
    # Aᵀ m A + bias of one tile: Mf the flat products (16 planes FT apart), m the tile's index in the
    # first → (y00, y01, y10, y11). Inlined (a call would keep the callers' loops from vectorising);
    # every output transform below uses it, so they round alike.
    u = np.uint64
    p0 = Mf[m] + Mf[m + FT] + Mf[m + u(2) * FT]
    q0 = Mf[m + FT] - Mf[m + u(2) * FT] - Mf[m + u(3) * FT]
    p1 = Mf[m + u(4) * FT] + Mf[m + u(5) * FT] + Mf[m + u(6) * FT]
    q1 = Mf[m + u(5) * FT] - Mf[m + u(6) * FT] - Mf[m + u(7) * FT]
    p2 = Mf[m + u(8) * FT] + Mf[m + u(9) * FT] + Mf[m + u(10) * FT]
    q2 = Mf[m + u(9) * FT] - Mf[m + u(10) * FT] - Mf[m + u(11) * FT]
    p3 = Mf[m + u(12) * FT] + Mf[m + u(13) * FT] + Mf[m + u(14) * FT]
    q3 = Mf[m + u(13) * FT] - Mf[m + u(14) * FT] - Mf[m + u(15) * FT]
    return p0 + p1 + p2 + bf, q0 + q1 + q2 + bf, p1 - p2 - p3 + bf, q1 - q2 - q3 + bf


@jit
def _wino_output_wide(M, b, relu, Y):
    # M (16, FN, T) → Y (4, FN, T), T = B·th·(tw + 1) (wide tile rows, see _wino_input): the 2x2
    # tile Aᵀ m A + bias of every tile t, then the book's ReLU when relu, as four planes
    # Y[2r + s, f, t] = y_rs; Aᵀ = [[1, 1, 1, 0], [0, 1, -1, -1]]. One flat loop over all the
    # chunk's tiles (junk tiles too) per filter: tile rows alone (4-14 tiles) are shorter than a
    # vector loop's trip, so the row-by-row form ran scalar (measured 2-2.4x slower in float32).
    fn = M.shape[1]
    u = np.uint64
    T = u(M.shape[2])
    FT = u(fn) * T
    Mf = M.reshape(-1)
    Yf = Y.reshape(-1)
    zero = Y.dtype.type(0)
    for f in range(fn):
        bf = b[f]
        base = u(f) * T
        for t in range(T):
            k = base + t
            y00, y01, y10, y11 = _wino_tile_out(Mf, k, FT, bf)
            if relu:
                y00 = zero if y00 <= zero else y00  # noqa: FURB136 (NaN must pass)
                y01 = zero if y01 <= zero else y01  # noqa: FURB136 (NaN must pass)
                y10 = zero if y10 <= zero else y10  # noqa: FURB136 (NaN must pass)
                y11 = zero if y11 <= zero else y11  # noqa: FURB136 (NaN must pass)
            Yf[k] = y00
            Yf[k + FT] = y01
            Yf[k + u(2) * FT] = y10
            Yf[k + u(3) * FT] = y11


@jit
def _wino_tiles_to_out(Y, th, tw, out):
    # Y (4, FN, B·th·(tw + 1)) from _wino_output_wide → out (B, FN, 2th, 2tw): each tile's four
    # values to their places, junk tiles dropped. (Writing whole-image rows and copying them out
    # measured slower than tile rows.)
    n_img, fn = out.shape[0], out.shape[1]
    u = np.uint64
    T = u(Y.shape[2])
    FT = u(fn) * T
    Yf = Y.reshape(-1)
    Of = out.reshape(-1)
    ow = u(2 * tw)
    plane_size = u(4 * th * tw)
    one, two, three = u(1), u(2), u(3)
    for n in range(n_img):
        for f in range(fn):
            ob = (u(n) * u(fn) + u(f)) * plane_size
            for i in range(th):
                m = u(f) * T + u((n * th + i) * (tw + 1))
                o = ob + u(2 * i) * ow
                for j in range(u(tw)):
                    Of[o + two * j] = Yf[m + j]
                    Of[o + two * j + one] = Yf[m + FT + j]
                    Of[o + ow + two * j] = Yf[m + two * FT + j]
                    Of[o + ow + two * j + one] = Yf[m + three * FT + j]


@jit
def _wino_wide_to_tiles(P, th, tw, pooled):
    # P (FN, B·th·(tw + 1)), one value per wide tile → pooled (B, FN, ph, pw), junk tiles dropped.
    # ph, pw (pooled's) are th, tw, or one less where the output size is odd: 2x2 pooling then
    # drops the output's last row or column, i.e. the last tile row or column. Works for any dtype
    # of P (the pooled values and their arg-max indices).
    n_img, fn, ph, pw = pooled.shape
    u = np.uint64
    T = u(P.shape[1])
    Pf = P.reshape(-1)
    of = pooled.reshape(-1)
    upw = u(pw)
    for n in range(n_img):
        for f in range(fn):
            for i in range(ph):
                m = u(f) * T + u((n * th + i) * (tw + 1))
                o = u(((n * fn + f) * ph + i) * pw)
                for j in range(upw):
                    of[o + j] = Pf[m + j]


@jit
def _wino_dout(dout, th, tw, E, O, R, Z):
    # dout (B, FN, OH, OW) → Z (16, FN, B·th·(tw + 1)): Z[4a + b, f, t] = (A g Aᵀ)[a, b] for the
    # 2x2 tile g of dout[n, f] with corner (2i, 2j) (zeros beyond OH, OW and in junk tiles),
    # A = [[1, 0], [1, 1], [1, -1], [0, -1]]. E / O (th, 2tw + 2): even / odd rows of one channel,
    # zero beyond the output (never written); R (4, B·th·(2tw + 2)): A g of one filter's planes
    # of every image of the chunk (filter by filter, as _wino_input goes channel by channel).
    n_img, fn, out_h, out_w = dout.shape
    u = np.uint64
    wp = u(E.shape[1])
    Q = u(th) * wp
    T = u(Z.shape[2])
    FT = u(fn) * T
    Zf = Z.reshape(-1)
    ef = E.reshape(-1)
    of = O.reshape(-1)
    r0, r1, r2, r3 = R[0], R[1], R[2], R[3]
    one, two, three = u(1), u(2), u(3)
    df = dout.reshape(-1)
    uow = u(out_w)
    for f in range(fn):
        for n in range(n_img):
            for y in range(out_h):
                src = u(((n * fn + f) * out_h + y) * out_w)
                dst = u(y // 2) * wp
                if y % 2 == 0:
                    for k in range(uow):
                        ef[dst + k] = df[src + k]
                else:
                    for k in range(uow):
                        of[dst + k] = df[src + k]
            rb = u(n) * Q
            for q in range(Q):
                g0 = ef[q]
                g1 = of[q]
                r0[rb + q] = g0
                r1[rb + q] = g0 + g1
                r2[rb + q] = g0 - g1
                r3[rb + q] = -g1
        # One loop over the chunk's tiles of filter f (see _wino_input).
        for a in range(4):
            rf = R[a]
            o = u(4 * a) * FT + u(f) * T
            for t in range(T):
                c0 = rf[two * t]
                c1 = rf[two * t + one]
                Zf[o + t] = c0
                Zf[o + FT + t] = c0 + c1
                Zf[o + two * FT + t] = c0 - c1
                Zf[o + three * FT + t] = -c1


@jit
def _wino_filter_grad(X, dW):
    # X (16, FN, C) → dW (FN, C, 3, 3) = Gᵀ X G per (f, c), the adjoint of _wino_filter.
    fn, n_ch = dW.shape[0], dW.shape[1]
    half = dW.dtype.type(0.5)
    t = np.empty((3, 4), dtype=dW.dtype)
    for f in range(fn):
        for c in range(n_ch):
            for b in range(4):
                x0, x1, x2, x3 = X[b, f, c], X[4 + b, f, c], X[8 + b, f, c], X[12 + b, f, c]
                t[0, b] = x0 + half * (x1 + x2)
                t[1, b] = half * (x1 - x2)
                t[2, b] = half * (x1 + x2) + x3
            g = dW[f, c]
            for a in range(3):
                x0, x1, x2, x3 = t[a, 0], t[a, 1], t[a, 2], t[a, 3]
                g[a, 0] = x0 + half * (x1 + x2)
                g[a, 1] = half * (x1 - x2)
                g[a, 2] = half * (x1 + x2) + x3


@jit
def _wino_output_pool(M, b, th, tw, pooled, arg_max):
    # Winograd's output transform (see _wino_output_wide: M (16, FN, B·th·(tw + 1)), wide
    # tile rows) + bias + the book's ReLU + the 2x2 max pooling of each output tile:
    # pooled / arg_max (B, FN, ph, pw), ph, pw th, tw or one less (odd output sizes: the last tile
    # row or column is dropped, as 2x2 pooling drops the output's last row or column). First
    # maximum in (y00, y01, y10, y11) order; a NaN wins and sticks (max_pool_forward's rule).
    n_img, fn, ph, pw = pooled.shape
    u = np.uint64
    T = u(M.shape[2])
    FT = u(fn) * T
    Mf = M.reshape(-1)
    zero = pooled.dtype.type(0)
    pf = pooled.reshape(-1)
    af = arg_max.reshape(-1)
    for n in range(n_img):
        for f in range(fn):
            bf = b[f]
            for i in range(ph):
                m = u(f) * T + u((n * th + i) * (tw + 1))
                o = u(((n * fn + f) * ph + i) * pw)
                for j in range(u(pw)):
                    v0, v1, v2, v3 = _wino_tile_out(Mf, m + j, FT, bf)
                    v = v0
                    best = zero if v <= zero else v  # noqa: FURB136 (max() would change NaN handling)
                    k = 0
                    v = v1
                    v = zero if v <= zero else v  # noqa: FURB136
                    take = (not np.isnan(best)) & ((v > best) | np.isnan(v))
                    best = v if take else best
                    k = 1 if take else k
                    v = v2
                    v = zero if v <= zero else v  # noqa: FURB136
                    take = (not np.isnan(best)) & ((v > best) | np.isnan(v))
                    best = v if take else best
                    k = 2 if take else k
                    v = v3
                    v = zero if v <= zero else v  # noqa: FURB136
                    take = (not np.isnan(best)) & ((v > best) | np.isnan(v))
                    best = v if take else best
                    k = 3 if take else k
                    pf[o + j] = best
                    af[o + j] = k


@jit
def _wino_pool_wide_finite(M, b, P, K):
    # _wino_output_pool for NaN-free tiles, into wide planes P / K (FN, B·th·(tw + 1)) (junk
    # tiles too; _wino_wide_to_tiles drops them): plain strict comparisons (the ReLU folded into
    # the first), which LLVM turns into vector selects, in one flat loop over the chunk's tiles per
    # filter (tile rows of 4-14 are too short to vectorise: the row-by-row form measured 3-4x
    # slower in float32). Returns True if some value was NaN: the caller then reruns
    # _wino_output_pool on the chunk.
    fn = M.shape[1]
    u = np.uint64
    T = u(M.shape[2])
    FT = u(fn) * T
    Mf = M.reshape(-1)
    Pf = P.reshape(-1)
    Kf = K.reshape(-1)
    zero = P.dtype.type(0)
    found = False
    for f in range(fn):
        bf = b[f]
        base = u(f) * T
        for t in range(T):
            m = base + t
            v0, v1, v2, v3 = _wino_tile_out(Mf, m, FT, bf)
            found |= np.isnan(v0) | np.isnan(v1) | np.isnan(v2) | np.isnan(v3)
            # relu(v0), then a later value wins only if strictly larger (so it is > 0 and its
            # ReLU is itself): the first maximum of the four ReLU outputs.
            best = zero if v0 <= zero else v0  # noqa: FURB136 (max() would change NaN handling)
            w = v1 > best
            best = v1 if w else best
            k = 1 if w else 0
            w = v2 > best
            best = v2 if w else best
            k = 2 if w else k
            w = v3 > best
            best = v3 if w else best
            k = 3 if w else k
            Pf[m] = best
            Kf[m] = k
    return found


@jit
def _wino_pool_wide(M, b, P):
    # Inference: P (FN, B·th·(tw + 1)) = the 2x2 max of relu(Aᵀ m A + bias) per wide tile, no
    # arg-max. The values of _wino_output_pool exactly, NaN included: a NaN among the four wins
    # (the selects below keep the first NaN, as the training kernel does), so no NaN pre-check or
    # rerun is needed. One flat vectorised loop per filter, as _wino_pool_wide_finite.
    fn = M.shape[1]
    u = np.uint64
    T = u(M.shape[2])
    FT = u(fn) * T
    Mf = M.reshape(-1)
    Pf = P.reshape(-1)
    zero = P.dtype.type(0)
    for f in range(fn):
        bf = b[f]
        base = u(f) * T
        for t in range(T):
            m = base + t
            v0, v1, v2, v3 = _wino_tile_out(Mf, m, FT, bf)
            best = zero if v0 <= zero else v0  # noqa: FURB136 (NaN must pass)
            # A later value wins if it is larger or NaN, unless best is NaN already (x != x: NaN).
            best = v1 if ((v1 > best) | (v1 != v1)) & (best == best) else best  # noqa: PLR0124
            best = v2 if ((v2 > best) | (v2 != v2)) & (best == best) else best  # noqa: PLR0124
            best = v3 if ((v3 > best) | (v3 != v3)) & (best == best) else best  # noqa: PLR0124
            Pf[m] = best


# ----------------------------------------------------------------------------- products without the GIL
# When NumPy's BLAS can be called from compiled code (``_blas.available()``), a group of chunks is one
# compiled call: transforms, products and output passes of every chunk with the GIL released once,
# instead of a return to Python (and a GIL hand-off between the two task threads) for each product.
# The products are the same BLAS calls np.matmul makes for the same operands (same bits).

@jit
def _gemm(A, B, C, trans_b):
    # C (m, n) = A (m, k) @ B (k, n), or A @ Bᵀ with B (n, k) when trans_b; rows of each may be
    # strided (slices of columns), elements contiguous. NumPy's own BLAS (see _blas.py).
    m, n = C.shape[0], C.shape[1]
    k = A.shape[1]
    size = C.itemsize
    # A one-row matrix may have any row stride (NumPy's relaxed strides): BLAS wants >= its width.
    lda = A.strides[0] // size if A.shape[0] > 1 else max(1, A.shape[1])
    ldb = B.strides[0] // size if B.shape[0] > 1 else max(1, B.shape[1])
    ldc = C.strides[0] // size if C.shape[0] > 1 else max(1, C.shape[1])
    tb = np.int32(TRANS if trans_b else NO_TRANS)
    order, ta = np.int32(ROW_MAJOR), np.int32(NO_TRANS)
    if size == 4:  # float32 (the twins take float32 and float64 only)
        SGEMM(order, ta, tb, m, n, k, np.float32(1), A.ctypes, lda, B.ctypes, ldb, np.float32(0), C.ctypes, ldc)
    else:
        DGEMM(order, ta, tb, m, n, k, np.float64(1), A.ctypes, lda, B.ctypes, ldb, np.float64(0), C.ctypes, ldc)


#: _Wino.group's outputs: the full output, pooled with arg-max (training), pooled only (inference).
WINO_FULL, WINO_POOL, WINO_POOL_INFER = 0, 1, 2


@jit
def _wino_emit(M, b, relu, th, tw, mode, out_full, pooled, arg_max):
    # The products M (16, FN, tiles) of one chunk to its images: the full output (+ bias, + ReLU
    # when relu), or pooled with the first maximum's arg-max (a NaN chunk by the NaN-aware pass),
    # or pooled only. The arrays the mode does not write may be placeholders.
    fn, width = M.shape[1], M.shape[2]
    dt = M.dtype
    if mode == WINO_FULL:
        Y = np.empty((4, fn, width), dtype=dt)
        _wino_output_wide(M, b, relu, Y)
        _wino_tiles_to_out(Y, th, tw, out_full)
    elif mode == WINO_POOL:
        P = np.empty((fn, width), dtype=dt)
        K = np.empty((fn, width), dtype=arg_max.dtype)
        if _wino_pool_wide_finite(M, b, P, K):
            _wino_output_pool(M, b, th, tw, pooled, arg_max)
        else:
            _wino_wide_to_tiles(P, th, tw, pooled)
            _wino_wide_to_tiles(K, th, tw, arg_max)
    else:
        P = np.empty((fn, width), dtype=dt)
        _wino_pool_wide(M, b, P)
        _wino_wide_to_tiles(P, th, tw, pooled)


@jit
def _wino_forward_chunks(x, U, b, relu, pad, th, tw, bounds, mode, out_full, pooled, arg_max):
    # One group of _Wino.group in one call: images bounds[i] … bounds[i + 1] are chunk i. The same
    # passes and products as the Python loop, in the same order (the same bits).
    fn, n_ch = U.shape[1], U.shape[2]
    dt = x.dtype
    tiles = th * (tw + 1)
    pe = np.zeros((th + 1, 2 * tw + 2), dtype=dt)
    po = np.zeros_like(pe)
    width = -1
    R = np.zeros((4, 2), dtype=dt)
    V = np.empty((16, n_ch, 1), dtype=dt)
    M = np.empty((16, fn, 1), dtype=dt)
    for i in range(bounds.shape[0] - 1):
        n0, n1 = bounds[i], bounds[i + 1]
        if (n1 - n0) * tiles != width:
            width = (n1 - n0) * tiles
            R = np.zeros((4, 2 * width + 2), dtype=dt)
            V = np.empty((16, n_ch, width), dtype=dt)
            M = np.empty((16, fn, width), dtype=dt)
        _wino_input(x[n0:n1], pad, th, tw, pe, po, R, V)
        for xi in range(16):
            _gemm(U[xi], V[xi], M[xi], False)
        _wino_emit(M, b, relu, th, tw, mode, out_full[n0:n1], pooled[n0:n1], arg_max[n0:n1])


@jit
def _wino_weight_grad_chunks(x, dout, pad, th, tw, bounds, X):
    # One group of _Wino.weight_grad_group in one call (same passes, products and partial-sum
    # order as the Python loop).
    fn, n_ch = X.shape[1], X.shape[2]
    dt = x.dtype
    tiles = th * (tw + 1)
    wp = 2 * tw + 2
    pe = np.zeros((th + 1, wp), dtype=dt)
    po = np.zeros_like(pe)
    E = np.zeros((th, wp), dtype=dt)
    O = np.zeros_like(E)
    X_chunk = np.empty_like(X)
    Xf = X.reshape(-1)
    Xcf = X_chunk.reshape(-1)
    width = -1
    R = np.zeros((4, 2), dtype=dt)
    RZ = np.empty((4, 2), dtype=dt)
    V = np.empty((16, n_ch, 1), dtype=dt)
    Z = np.empty((16, fn, 1), dtype=dt)
    for i in range(bounds.shape[0] - 1):
        n0, n1 = bounds[i], bounds[i + 1]
        if (n1 - n0) * tiles != width:
            width = (n1 - n0) * tiles
            R = np.zeros((4, 2 * width + 2), dtype=dt)
            RZ = np.empty((4, 2 * width), dtype=dt)
            V = np.empty((16, n_ch, width), dtype=dt)
            Z = np.empty((16, fn, width), dtype=dt)
        _wino_input(x[n0:n1], pad, th, tw, pe, po, R, V)
        _wino_dout(dout[n0:n1], th, tw, E, O, RZ, Z)
        target = X if i == 0 else X_chunk
        for xi in range(16):
            _gemm(Z[xi], V[xi], target[xi], True)
        if i > 0:
            for k in range(Xf.shape[0]):
                Xf[k] += Xcf[k]


@jit
def _relu_masked(dout, out, masked):
    # masked = dout where out > 0, else 0 (the book's Relu.backward, out being the ReLU's output).
    d = dout.reshape(-1)
    o = out.reshape(-1)
    m = masked.reshape(-1)
    zero = masked.dtype.type(0)
    for i in range(d.shape[0]):
        v = d[i]  # loaded before the select (see _bias_grad_masked)
        m[i] = zero if o[i] <= zero else v


#: Winograd for 3x3 unit-stride layers with at least this many input channels (it needs C ≥ 2 to
#: pay: its 16 products have inner dimension C; with one channel they measured 10x slower).
WINO_MIN_CHANNELS = 4


#: Transform bytes (V and M) per chunk of a Winograd forward or dx (a module constant, like
#: CHUNK_BYTES; read when a call is planned). 1 MiB (two images of DeepConvNet's 28x28 layers in
#: float32) against 512 KiB, in-process A/B, DeepConvNet float32, loaded machine: inference 5-12 %
#: faster in four runs (1 and 2 threads), the training step 0-4 %; 1.5 MiB was slower again (L2 is
#: 2 MiB per core here).
WINO_CHUNK_BYTES = 2**20


#: Transform bytes per chunk of the Winograd weight gradient (a module constant, like CHUNK_BYTES):
#: longer reductions per product and fewer partial-sum additions with bigger chunks. Once 512 KiB
#: (1 and 2 MiB within noise then); with the transforms' one-loop-per-channel second pass, 1 MiB
#: measured 6-7 % faster over DeepConvNet's five Winograd backwards in float32, 3 % in float64
#: (in-process A/B, 15 rounds, 1 and 2 threads, loaded machine); 1.5 and 2 MiB in between.
WINO_DW_CHUNK_BYTES = 2**20


def _winograd_ok(C: int, FH: int, FW: int, stride: int, pad: int) -> bool:
    return WINOGRAD and FH == 3 and FW == 3 and stride == 1 and pad <= 2 and C >= WINO_MIN_CHANNELS


#: Switch for the Winograd route (tests and A/B measurements turn it off).
WINOGRAD = True


class _Wino:
    """Chunks and groups of a Winograd convolution ``x (N, C, H, W)`` ⋆ ``(FN, C, 3, 3)``, unit stride.

    Like :class:`_Plan`, chunks and groups depend on the shapes only. ``out_full`` is
    ``(N, FN, 2·th, 2·tw)``: the output rounded up to whole 2x2 tiles (cropped by :meth:`result`).
    """

    def __init__(self, x_shape: tuple[int, ...], fn: int, pad: int, dtype: np.dtype,
                 full_output: bool = True, chunk_bytes: int | None = None) -> None:
        N, C, H, Wd = x_shape
        self.out_h, self.out_w = H + 2 * pad - 2, Wd + 2 * pad - 2
        self.th, self.tw = (self.out_h + 1) // 2, (self.out_w + 1) // 2
        self.tiles = self.th * (self.tw + 1)  # wide tile rows (see _wino_input)
        self.C, self.fn, self.pad, self.dtype, self.n = C, fn, pad, dtype, N
        budget = WINO_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
        self.chunk = int(max(1, min(N, budget // (16 * (C + fn) * self.tiles * dtype.itemsize))))
        self.ranges = _group_chunks(N, self.chunk)
        self.groups = len(self.ranges)
        # Callers that emit something else (conv_relu_pool's pooled tiles) need no full output.
        self.out_full = np.empty((N, fn, 2 * self.th, 2 * self.tw), dtype=dtype) if full_output else None

    def group(self, g: int, x: np.ndarray, U: np.ndarray, b: np.ndarray, relu: bool,
              mode: int = WINO_FULL, pooled: np.ndarray | None = None,
              arg_max: np.ndarray | None = None) -> None:
        """Transform, multiply and transform back the chunks of group ``g`` into ``out_full``
        (``mode`` :data:`WINO_FULL`), or pool each output tile into ``pooled`` and ``arg_max``
        (:data:`WINO_POOL`, the book's first maximum) or into ``pooled`` alone
        (:data:`WINO_POOL_INFER`; ``relu`` is then implied)."""
        placeholder = np.empty((self.n, 1, 1, 1), dtype=self.dtype)  # for the outputs mode does not write
        out_full = placeholder if self.out_full is None else self.out_full
        pooled = placeholder if pooled is None else pooled
        arg_max = np.empty((self.n, 1, 1, 1), dtype=np.intp) if arg_max is None else arg_max
        if _blas.available():
            _wino_forward_chunks(x, U, b, relu, self.pad, self.th, self.tw, _chunk_bounds(self.ranges[g]), mode,
                                 out_full, pooled, arg_max)
            return
        dt = self.dtype
        pe = np.zeros((self.th + 1, 2 * self.tw + 2), dtype=dt)
        po = np.zeros_like(pe)
        width = -1
        for n0, n1 in self.ranges[g]:
            if (n1 - n0) * self.tiles != width:
                width = (n1 - n0) * self.tiles
                R = np.zeros((4, 2 * width + 2), dtype=dt)  # see _wino_input
                V = np.empty((16, self.C, width), dtype=dt)
                M = np.empty((16, self.fn, width), dtype=dt)
            _wino_input(x[n0:n1], self.pad, self.th, self.tw, pe, po, R, V)
            np.matmul(U, V, out=M)
            _wino_emit(M, b, relu, self.th, self.tw, mode, out_full[n0:n1], pooled[n0:n1], arg_max[n0:n1])

    def weight_grad_group(self, g: int, x: np.ndarray, dout: np.ndarray, X: np.ndarray) -> None:
        """``X (16, FN, C)`` = Σ over the chunks of group ``g`` of ``Z[ξ] @ V[ξ]ᵀ``: the Winograd-domain
        weight gradient (``Z`` the transform of ``dout``'s tiles, ``V`` that of ``x``'s), summed
        chunk by chunk in order; :func:`_wino_filter_grad` maps it back to ``(FN, C, 3, 3)``."""
        if _blas.available():
            _wino_weight_grad_chunks(x, dout, self.pad, self.th, self.tw, _chunk_bounds(self.ranges[g]), X)
            return
        dt = self.dtype
        wp = 2 * self.tw + 2
        pe = np.zeros((self.th + 1, wp), dtype=dt)
        po = np.zeros_like(pe)
        E = np.zeros((self.th, wp), dtype=dt)
        O = np.zeros_like(E)
        X_chunk = np.empty_like(X)
        width = -1
        for i, (n0, n1) in enumerate(self.ranges[g]):
            if (n1 - n0) * self.tiles != width:
                width = (n1 - n0) * self.tiles
                R = np.zeros((4, 2 * width + 2), dtype=dt)  # see _wino_input
                RZ = np.empty((4, 2 * width), dtype=dt)
                V = np.empty((16, self.C, width), dtype=dt)
                Z = np.empty((16, self.fn, width), dtype=dt)
            _wino_input(x[n0:n1], self.pad, self.th, self.tw, pe, po, R, V)
            _wino_dout(dout[n0:n1], self.th, self.tw, E, O, RZ, Z)
            if i == 0:
                np.matmul(Z, V.transpose(0, 2, 1), out=X)
            else:
                np.matmul(Z, V.transpose(0, 2, 1), out=X_chunk)
                X += X_chunk

    def result(self) -> np.ndarray:
        """The output ``(N, FN, OH, OW)`` (a copy only when OH or OW is odd)."""
        if self.out_full.shape[2:] == (self.out_h, self.out_w):
            return self.out_full
        return np.ascontiguousarray(self.out_full[:, :, : self.out_h, : self.out_w])


def _wino_filters(W: np.ndarray) -> np.ndarray:
    U = np.empty((16, W.shape[0], W.shape[1]), dtype=W.dtype)
    _wino_filter(np.ascontiguousarray(W), U)
    return U


def _one_blas_thread():
    """NumPy's BLAS limited to one thread while a compiled conv twin runs.

    The twins call BLAS once per chunk of images, between compiled passes, on their own worker
    threads. With OpenBLAS's default two threads on a 2-core machine, its worker spins between those
    calls and fights the compiled code (and any other process) for the cores: a SimpleConvNet step
    measured 15x slower on a busy machine. Process-wide (BLAS has no per-thread setting), so it goes
    through the package's one owner of the limit (:mod:`zerodl.kernels._threads`): overlapping uses,
    here or in ``zerodl.num_threads``, combine and the last one restores the limits.
    """
    return _threads.limited(1)




class _Plan:
    """Geometry of the compiled twins' patch matrices for one call (see the comment above).

    The images are cut into ``groups`` contiguous groups of equal size and each group into chunks
    of at most ``chunk`` images (:func:`_group_chunks`) — fixed by the shapes alone, never by the
    number of threads, so that every product and every partial sum is the same whichever thread
    runs it.
    """

    def __init__(self, x_shape: tuple[int, ...], W_shape: tuple[int, ...], stride: int, pad: int,
                 itemsize: int) -> None:
        N, C, H, Wd = x_shape
        _, _, FH, FW = W_shape
        self.out_h, self.out_w = out_hw(H, Wd, FH, FW, stride, pad)
        self.wide = stride == 1 and (FW - 1) <= WIDE_MAX_JUNK * self.out_w
        self.row_stride = Wd + 2 * pad if self.wide else self.out_w
        self.n_cols = self.out_h * self.row_stride
        self.K = C * FH * FW
        # Single-channel unit-stride layers: the direct kernels replace patches + product (forward).
        self.direct = DIRECT_C1_KERNELS.get(FW) if DIRECT_C1 and C == 1 and self.wide else None
        self.chunk = int(max(1, min(N, CHUNK_BYTES // (self.K * self.n_cols * itemsize))))
        # Flat padded image for the unit-stride copies, with FW slack for the last tap's run.
        self.xpad_size = C * (H + 2 * pad) * (Wd + 2 * pad) + FW if self.wide else 1
        self.ranges = _group_chunks(N, self.chunk)
        self.groups = len(self.ranges)
        self.n = N
        self.fh, self.fw, self.stride, self.pad = FH, FW, stride, pad

    def patches(self, x: np.ndarray, xpad: np.ndarray, buf: np.ndarray) -> None:
        """Patch matrix ``buf (K, B·L)`` of the images ``x (B, C, H, W)`` (see the comment above)."""
        if self.wide:
            _patches_wide(x, self.fh, self.fw, self.pad, xpad, buf)
        else:
            _patches_rows(x, self.fh, self.fw, self.stride, self.pad, self.out_h, self.out_w, buf)

    def fold(self, dbuf: np.ndarray, dxpad: np.ndarray, dx: np.ndarray) -> None:
        """``dx (B, C, H, W)`` = the adjoint of :meth:`patches` applied to ``dbuf (K, B·L)``."""
        if self.wide:
            _fold_wide(dbuf, self.fh, self.fw, self.pad, dxpad, dx)
        else:
            _fold_rows(dbuf, self.fh, self.fw, self.stride, self.pad, self.out_h, self.out_w, dx)

    def chunks(self, group: int):
        """``(n0, n1, columns)`` for each chunk of images ``[n0, n1)`` of ``group``."""
        for n0, n1 in self.ranges[group]:
            yield n0, n1, (n1 - n0) * self.n_cols


def _chunk_bounds(chunks: list[tuple[int, int]]) -> np.ndarray:
    """A group's chunks (one entry of :func:`_group_chunks`' result) as the compiled group loops take
    them: chunk ``i`` is images ``[bounds[i], bounds[i + 1])``."""
    return np.array([n0 for n0, _ in chunks] + [chunks[-1][1]], dtype=np.intp)


def _group_chunks(n: int, max_chunk: int) -> list[list[tuple[int, int]]]:
    """The images ``[0, n)`` cut into :data:`GROUPS` groups of (nearly) equal numbers of images,
    each group into chunks of at most ``max_chunk`` images: ``ranges[g] = [(n0, n1), ...]``.

    Groups of equal work keep both cores busy to the end of a call (chunks dealt out in equal
    numbers left groups of 17 and 34 images for DeepConvNet's first layer at batch 100); within a
    group, chunks of equal size but the last. Fixed by the shapes alone, never by the number of
    threads, so every product and partial sum is the same whichever thread runs it.
    """
    groups = min(GROUPS, n)
    ranges = []
    for g in range(groups):
        a, z = g * n // groups, (g + 1) * n // groups
        size = -(-(z - a) // -(-(z - a) // max_chunk))  # fewest chunks, as equal as they can be
        ranges.append([(c, min(c + size, z)) for c in range(a, z, size)])
    return ranges


#: Columns per BLAS product: a chunk's products are cut into blocks of at most this many columns
#: (patch-matrix columns; for dW, the length of the reduction). Measured with one thread: OpenBLAS
#: runs these small-filter-count products 15-40 % faster on ~400-600 columns than on 840-4032
#: (the first layers' dW, inner dimension 9-25: 87-94 vs 24-42 GFLOP/s in float32).
GEMM_COLS = 512

#: Columns per product of a patch-route backward that computes dW alone (a network's first layer,
#: the only patch-route backward in the books' nets): the reduction of ``patches @ doutᵀ`` in
#: blocks of this many columns. 1024 against 512, one thread, in-process A/B on a loaded machine:
#: the first-layer backward (DeepConvNet's 1→16 3x3, SimpleConvNet's 1→30 5x5) 5-7 % faster in
#: float32, within noise in float64 (fewer calls and partial-sum additions; OpenBLAS's
#: throughput on K = 9-25 rows fell off only beyond ~1,500 columns).
GEMM_DW_COLS = 1024

#: Fixed number of groups of chunks per call; the groups run in parallel, one thread each at a time.
#: A constant (not the thread count) so that the weight gradient's partial sums, one per group
#: added in group order, do not depend on the number of threads. 4 keeps 2 cores evenly loaded.
GROUPS = 4


def _forward_numba(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, pad: int,
                   relu: bool) -> np.ndarray:
    # conv_forward_numba's work (and conv_relu_forward_numba's when relu): see their docstrings.
    FN, C, FH, FW = W.shape
    N = x.shape[0]
    x = np.ascontiguousarray(x)
    b = np.ascontiguousarray(b)
    if _winograd_ok(C, FH, FW, stride, pad):
        wino = _Wino(x.shape, FN, pad, x.dtype)
        U = _wino_filters(W)
        with _one_blas_thread():
            run_tasks(lambda g: wino.group(g, x, U, b, relu), wino.groups)
        return wino.result()
    plan = _Plan(x.shape, W.shape, stride, pad, x.dtype.itemsize)
    out = np.empty((N, FN, plan.out_h, plan.out_w), dtype=x.dtype)
    _patch_forward(plan, x, W, b, SCATTER_RELU if relu else SCATTER_OUT, out)
    return out


def _patch_forward(plan: _Plan, x: np.ndarray, W: np.ndarray, b: np.ndarray, scatter: int,
                   out: np.ndarray, after_group: Callable[[int, int], None] | None = None) -> None:
    """The patch-matrix route's forward (``x`` C-contiguous): chunk by chunk of images, the
    product ``W (FN, K) @ patches`` written to the chunk's images of ``out`` by
    :func:`_patch_scatter` (``scatter``: :data:`SCATTER_OUT`, :data:`SCATTER_RELU` or
    :data:`SCATTER_POOLED`: the convolution's output, with ReLU, or its pooled form).
    ``after_group(n0, n1)``, if given, runs in the same task right after a group has written its
    images ``n0 … n1 - 1`` of ``out`` (a pass that reads them while they are still in the core's cache)."""
    FN = W.shape[0]
    W = np.ascontiguousarray(W)
    W_mat = W.reshape(FN, -1)

    def group(g: int) -> None:
        one_group(g)
        if after_group is not None:
            after_group(plan.ranges[g][0][0], plan.ranges[g][-1][1])

    def one_group(g: int) -> None:
        if _blas.available():
            _patch_forward_chunks(x, W, b, plan.wide, plan.direct is not None, plan.stride, plan.pad,
                                  plan.out_h, plan.out_w, plan.row_stride, plan.xpad_size,
                                  _chunk_bounds(plan.ranges[g]), GEMM_COLS, scatter, out)
            return
        xpad = np.zeros(plan.xpad_size, dtype=x.dtype)
        width = -1
        for n0, n1, cols in plan.chunks(g):
            if cols != width:
                # New buffers only for the first and a short last chunk: every array a kernel
                # sees is C-contiguous (one compiled specialisation per dtype).
                width = cols
                buf = np.empty((plan.K, width), dtype=x.dtype) if plan.direct is None else None
                prod = np.empty((FN, width), dtype=x.dtype)
            if plan.direct is not None:
                plan.direct(x[n0:n1], W, plan.pad, xpad, prod)
            else:
                plan.patches(x[n0:n1], xpad, buf)
                for c0 in range(0, width, GEMM_COLS):
                    c1 = min(c0 + GEMM_COLS, width)
                    np.matmul(W_mat, buf[:, c0:c1], out=prod[:, c0:c1])
            _patch_scatter(prod, b, plan.row_stride, scatter, out[n0:n1])

    with _one_blas_thread():
        run_tasks(group, plan.groups)


class _PreparedGroups:
    """Calling ``ready(g)`` makes sure ``prepare(n0, n1)`` has run, once, for group ``g``'s images
    (``ranges``: the groups' chunk lists of every pass that reads them, which must agree: they do,
    as :func:`_group_chunks` cuts the same group boundaries whatever the chunk size). The tasks of
    one group (its dW and its dx) each call it first: the first prepares, the other waits for it."""

    def __init__(self, prepare: Callable[[int, int], None] | None, ranges: list[list[list[tuple[int, int]]]]) -> None:
        self.prepare = prepare
        spans = [[(r[0][0], r[-1][1]) for r in rs] for rs in ranges]
        if prepare is not None:
            assert all(s == spans[0] for s in spans), "every pass that reads the prepared images must cut the same groups"
        self.spans = spans[0] if spans else []
        self.locks = [threading.Lock() for _ in self.spans]
        self.done = [prepare is None] * len(self.spans)

    def __call__(self, g: int) -> None:
        if self.done[g]:
            return
        with self.locks[g]:
            if not self.done[g]:
                self.prepare(*self.spans[g])
                self.done[g] = True

    def all(self) -> None:
        """Every group prepared (by this thread, or waited for)."""
        for g in range(len(self.spans)):
            self(g)


def _backward_numba(dout: np.ndarray | None, relu_out: np.ndarray | None, x: np.ndarray, W: np.ndarray,
                    stride: int, pad: int, need_dx: bool,
                    unpool: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                    bias: Callable[[np.ndarray], None] | None = None,
                    prepare: Callable[[int, int], None] | None = None,
                    ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    # conv_backward_numba's work; with relu_out (the output of a ReLU applied to the convolution),
    # that of conv_relu_backward_numba: dout masked where relu_out <= 0. With unpool and bias
    # (patch route only, dout None): unpool = (dpooled, pooled, arg_max) of a 2x2 max pooling
    # after the ReLU, unpooled chunk by chunk straight into the product layout
    # (_patch_gather; junk columns stay zero), and bias(db) the bias gradient, in the book's
    # order - conv_relu_pool's backward, which never stores the full-resolution gradient.
    # With prepare and bias (Winograd route, relu_out None): dout is a buffer whose images
    # n0 … n1 - 1 prepare(n0, n1) fills (conv_relu_pool's unpooling), group by group inside the
    # tasks that read them, and bias(db) sums db without reading dout.
    FN, C, FH, FW = W.shape
    x = np.ascontiguousarray(x)
    if unpool is not None:
        assert dout is None and relu_out is None and bias is not None
        assert not _winograd_ok(C, FH, FW, stride, pad)
        assert not (need_dx and pad <= 2 and _winograd_ok(FN, FH, FW, stride, 2 - pad))
    else:
        dout = np.ascontiguousarray(dout)
    if relu_out is not None:
        relu_out = np.ascontiguousarray(relu_out)
    db = np.empty(FN, dtype=x.dtype)
    # Winograd where it applies: dW from the transforms of x's and dout's tiles; dx as the 3x3
    # "full" correlation of dout with the flipped, transposed filters (padding 2 - pad).
    wino_dW = (_Wino(x.shape, FN, pad, x.dtype, full_output=False, chunk_bytes=WINO_DW_CHUNK_BYTES)
               if _winograd_ok(C, FH, FW, stride, pad) else None)
    wino_dx = None
    if need_dx and pad <= 2 and _winograd_ok(FN, FH, FW, stride, 2 - pad):
        wino_dx = _Wino(dout.shape, C, 2 - pad, dout.dtype)
        U_t = _wino_filters(np.ascontiguousarray(W[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)))
        zero_b = np.zeros(C, dtype=dout.dtype)
    g_src = dout
    if relu_out is not None and (wino_dW is not None or wino_dx is not None):
        # The Winograd transforms read the masked gradient, stored once (masking inside the
        # transforms' row copies measured 25-35 % slower: the branch spoilt their loops), group by
        # group in the tasks that read it (both cores, and still in the core's cache).
        assert prepare is None
        g_src = np.empty_like(dout)
        masked = g_src

        def prepare(n0: int, n1: int) -> None:
            _relu_masked(dout[n0:n1], relu_out[n0:n1], masked[n0:n1])

    fold_dx = need_dx and wino_dx is None
    plan = _Plan(x.shape, W.shape, stride, pad, x.dtype.itemsize) if wino_dW is None or fold_dx else None
    ready = _PreparedGroups(prepare, [p.ranges for p in (wino_dW, wino_dx, plan) if p is not None])
    tasks: list = []
    # Task order. With Winograd's dx: the dx groups first (each prepares its images), then the dW
    # groups, then the bias gradient, which by then can sum the masked gradient the groups stored
    # (one array read instead of dout and relu_out). DeepConvNet, 2 threads, both trees in
    # alternating processes (4 pairs): float32 23.0-23.8 -> 22.7-22.9 ms a step, float64
    # 43.6-44.6 -> 41.8-44.6; the calls' end-of-call imbalance (busiest less idlest thread's
    # task time) 1.6-1.7 -> 1.1-1.25 ms a step in float32. dW first and dx last measured the
    # slowest order, dW and dx of a group side by side slower still (one waits for the other's
    # preparing). Elsewhere the bias first (the first layer's patch route: measured better so).
    bias_last = wino_dx is not None

    def bias_task() -> None:
        if bias is not None:
            bias(db)
        elif relu_out is None:
            _bias_grad(g_src, db)
        elif bias_last:  # with relu_out and Winograd's dx, g_src is the masked gradient's buffer
            ready.all()  # every group's masked gradient stored (its dx task did it)
            _bias_grad(g_src, db)  # the same additions in the same order as the masked sum
        else:
            # Not from g_src while groups are being prepared: the masked sum reads dout and
            # relu_out (the same additions in the same order as _bias_grad of the masked gradient).
            _bias_grad_masked(dout, relu_out, db)

    if wino_dW is not None:
        X_parts = np.empty((wino_dW.groups, 16, FN, C), dtype=x.dtype)
        tasks += [lambda g=g: (ready(g), wino_dW.weight_grad_group(g, x, g_src, X_parts[g]))
                  for g in range(wino_dW.groups)]
    if wino_dx is not None:
        tasks = [lambda g=g: (ready(g), wino_dx.group(g, g_src, U_t, zero_b, False))
                 for g in range(wino_dx.groups)] + tasks
    if plan is not None:
        W_t = np.ascontiguousarray(np.ascontiguousarray(W).reshape(FN, -1).T)  # (K, FN), rows contiguous
        dW_parts = np.empty((plan.groups, plan.K, FN), dtype=x.dtype)  # transposed: see below
        dx = np.empty(x.shape, dtype=x.dtype) if fold_dx else None
        need_dW = wino_dW is None
        # How each chunk's gradient reaches the products (_patch_gather), and placeholders (one
        # image row per image, never read) for the arrays that mode does not read.
        placeholder = np.empty((x.shape[0], 1, 1, 1), dtype=x.dtype)
        gather = GATHER_UNPOOL if unpool is not None else GATHER_DOUT if relu_out is None else GATHER_MASKED
        dp, pp, am = unpool if unpool is not None else (placeholder, placeholder,
                                                         np.empty((x.shape[0], 1, 1, 1), dtype=np.intp))
        g_dout = placeholder if dout is None else dout
        g_relu = placeholder if relu_out is None else relu_out

        def patch_group(g: int) -> None:
            # The patch-matrix route: dW (unless Winograd does it) and, when dx is not Winograd's, dx.
            block = GEMM_COLS if fold_dx else GEMM_DW_COLS
            if _blas.available():
                _patch_backward_chunks(x, W_t, need_dW, fold_dx, plan.wide, plan.fh, plan.fw, plan.stride,
                                       plan.pad, plan.out_h, plan.out_w, plan.row_stride, plan.xpad_size,
                                       _chunk_bounds(plan.ranges[g]), block, gather, g_dout, g_relu, dp, pp, am,
                                       dW_parts[g], dx if fold_dx else placeholder)
                return
            xpad = np.zeros(plan.xpad_size, dtype=x.dtype)
            dxpad = np.empty_like(xpad) if fold_dx else None
            dW_chunk = np.empty((plan.K, FN), dtype=x.dtype)
            width = -1
            for n0, n1, cols in plan.chunks(g):
                if cols != width:
                    width = cols
                    buf = np.empty((plan.K, width), dtype=x.dtype)
                    dbuf = np.empty_like(buf) if fold_dx else None
                    dcols = np.zeros((FN, width), dtype=x.dtype)  # junk columns stay zero
                if need_dW:
                    plan.patches(x[n0:n1], xpad, buf)
                _patch_gather(gather, g_dout[n0:n1], g_relu[n0:n1], dp[n0:n1], pp[n0:n1], am[n0:n1], plan.out_h,
                              plan.out_w, plan.row_stride, dcols)
                for c0 in range(0, width, block):
                    c1 = min(c0 + block, width)
                    # dWᵀ (K, FN) = patches @ doutᵀ: measured 1.8x faster than dout @ patchesᵀ in
                    # float32 when FN is 16 (74 vs 41 GFLOP/s, one thread), never slower.
                    if need_dW and n0 == plan.ranges[g][0][0] and c0 == 0:
                        np.matmul(buf[:, c0:c1], dcols[:, c0:c1].T, out=dW_parts[g])
                    elif need_dW:
                        np.matmul(buf[:, c0:c1], dcols[:, c0:c1].T, out=dW_chunk)
                        dW_parts[g] += dW_chunk
                    if fold_dx:
                        np.matmul(W_t, dcols[:, c0:c1], out=dbuf[:, c0:c1])
                if fold_dx:
                    plan.fold(dbuf, dxpad, dx[n0:n1])

        tasks += [lambda g=g: (ready(g), patch_group(g)) for g in range(plan.groups)]
    tasks = [*tasks, bias_task] if bias_last else [bias_task, *tasks]

    with _one_blas_thread():
        run_tasks(lambda i: tasks[i](), len(tasks))
    # Partial sums added group by group, in order: the same bits for any number of threads.
    if wino_dW is not None:
        X = X_parts[0].copy()
        for g in range(1, wino_dW.groups):
            X += X_parts[g]
        dW = np.empty((FN, C, FH, FW), dtype=x.dtype)
        _wino_filter_grad(X, dW)
    else:
        dW_t = dW_parts[0].copy()
        for g in range(1, plan.groups):
            dW_t += dW_parts[g]
        dW = np.ascontiguousarray(dW_t.T).reshape(FN, C, FH, FW)
    if wino_dx is not None:
        dx = wino_dx.result()
    return (dx if need_dx else None), dW, db


def conv_forward_numba(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Compiled twin of :func:`conv_forward_numpy`; returns ``(out, None)``.

    Chunk by chunk of images: compiled patch copies into a reused ``(K, B·L)`` buffer, ONE BLAS
    product ``W (FN, K) @ patches``, then a compiled pass scattering the product into ``out`` in
    its final ``(N, FN, OH, OW)`` layout with the bias added. No ``(N·P, K)`` matrix is kept
    (``conv_backward_numba`` rebuilds the patches): less memory traffic, lower peak memory. The
    groups of chunks run on both cores (:func:`~zerodl.kernels._tasks.run_tasks`).
    """
    return _forward_numba(x, W, b, stride, pad, False), None


def conv_backward_numba(
    dout: np.ndarray,
    x: np.ndarray,
    W: np.ndarray,
    col: np.ndarray | None = None,
    stride: int = 1,
    pad: int = 0,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`conv_backward_numpy`; ``col`` is ignored (patches are rebuilt).

    Chunk by chunk: rebuild the patches, ``dWᵀ_group += patches @ dout_chunkᵀ (B·L, FN)`` and
    ``dpatches = Wᵀ @ dout_chunk`` (two BLAS products), then fold ``dpatches`` straight into
    ``dx``. ``dW`` is the sum of the groups' partial sums in group order (see :data:`GROUPS`); the
    bias gradient is one more task, summed in the book's order.
    """
    return _backward_numba(dout, None, x, W, stride, pad, need_dx)


# ----------------------------------------------------------------------------- conv + ReLU, fused
def conv_relu_forward_numpy(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reference: the book's ``Convolution.forward`` then ``Relu.forward`` → ``(out, col)``.

    ``out (N, FN, OH, OW)`` is ``relu(conv(x) + b)`` (entries ``<= 0`` set to 0, NaN kept, as the
    book's ``Relu``); ``col`` is what :func:`conv_forward_numpy` keeps.
    """
    out, col = conv_forward_numpy(x, W, b, stride, pad)
    out[out <= 0] = 0  # out is the twin's own new array: writing it mutates no input
    return out, col


def conv_relu_backward_numpy(
    dout: np.ndarray,
    out: np.ndarray,
    x: np.ndarray,
    W: np.ndarray,
    col: np.ndarray | None = None,
    stride: int = 1,
    pad: int = 0,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Reference: the book's ``Relu.backward`` then ``Convolution.backward`` → ``(dx, dW, db)``.

    ``out`` is the forward's output (the ReLU's): the gradient passes where ``out > 0`` (the book
    zeroes it where the ReLU's input was ``<= 0``, the same entries). ``dout`` is not written.
    """
    masked = np.where(out <= 0, dout.dtype.type(0), dout)
    return conv_backward_numpy(masked, x, W, col, stride, pad, need_dx)


def conv_relu_forward_numba(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Compiled twin of :func:`conv_relu_forward_numpy`; returns ``(out, None)``.

    :func:`conv_forward_numba` with the ReLU applied in the scatter pass: no extra pass over
    ``out`` and no separate mask array (the backward reads the mask off ``out``).
    """
    return _forward_numba(x, W, b, stride, pad, True), None


def conv_relu_backward_numba(
    dout: np.ndarray,
    out: np.ndarray,
    x: np.ndarray,
    W: np.ndarray,
    col: np.ndarray | None = None,
    stride: int = 1,
    pad: int = 0,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`conv_relu_backward_numpy`; ``col`` is ignored.

    :func:`conv_backward_numba` with the ReLU's mask (``out <= 0``) applied while ``dout`` is
    copied into the products' layout and while the bias gradient is summed: the masked gradient
    is never stored.
    """
    return _backward_numba(dout, out, x, W, stride, pad, need_dx)

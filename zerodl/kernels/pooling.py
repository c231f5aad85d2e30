"""Max pooling forward (with the arg-max of every window) and backward.

Twins: ``max_pool_forward_numpy`` / ``max_pool_forward_numba`` and ``max_pool_backward_numpy`` /
``max_pool_backward_numba``.

Contract (both twins), with ``OH = (H + 2 pad - pool_h) // stride + 1`` and ``OW`` likewise:

* ``max_pool_forward(x (N, C, H, W), pool_h, pool_w, stride, pad)`` → ``(out, arg_max)``, both
  ``(N, C, OH, OW)``: ``out`` is the maximum of each window (dtype of ``x``), ``arg_max`` (``intp``)
  the window-local index ``fy·pool_w + fx`` of its **first** maximum in row-major order (NumPy's
  ``argmax`` rule; a NaN counts as the maximum and propagates, as ``np.max`` does). Padding cells
  hold 0 and take part in the maximum, exactly as the book's ``im2col``-based pooling does.
* ``max_pool_backward(dout (N, C, OH, OW), arg_max, x_shape, pool_h, pool_w, stride, pad)`` →
  ``dx (x_shape)``: each ``dout`` entry is added to the pixel its window's maximum came from (nothing
  when that was padding); overlapping windows accumulate.

Departures from the book's ``Pooling``: the book computes ``OH`` without the padding (so it breaks
for ``pad > 0``) and stores ``arg_max`` in ``(N, OH, OW, C)`` order; here ``OH`` includes the
padding, like ``im2col``, and ``arg_max`` has the output's layout. Outputs are new arrays; inputs
are never written. The NumPy twins are the book's ``im2col`` / ``col2im`` route; the Numba twins
scan each window directly and scatter each gradient once, adding them in the book's order (filter
offset by offset), so the backends agree bit for bit.
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit
from zerodl.kernels._tasks import run_tasks
from zerodl.kernels.im2col import col2im_numpy, im2col_numpy, out_hw

OPS = ("max_pool_forward", "max_pool_backward")


# ----------------------------------------------------------------------------- NumPy references
def max_pool_forward_numpy(
    x: np.ndarray, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Reference: the book's ``Pooling.forward`` → ``(out, arg_max)``, both ``(N, C, OH, OW)``."""
    N, C, H, W = x.shape
    out_h, out_w = out_hw(H, W, pool_h, pool_w, stride, pad)
    col = im2col_numpy(x, pool_h, pool_w, stride, pad).reshape(-1, pool_h * pool_w)
    arg_max = np.argmax(col, axis=1)
    out = np.max(col, axis=1)
    out = np.ascontiguousarray(out.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2))
    arg_max = np.ascontiguousarray(arg_max.reshape(N, out_h, out_w, C).transpose(0, 3, 1, 2))
    return out, arg_max


def max_pool_backward_numpy(
    dout: np.ndarray,
    arg_max: np.ndarray,
    x_shape: tuple[int, int, int, int],
    pool_h: int,
    pool_w: int,
    stride: int = 2,
    pad: int = 0,
) -> np.ndarray:
    """Reference: the book's ``Pooling.backward`` (scatter into ``dmax``, then ``col2im``)."""
    pool_size = pool_h * pool_w
    dout_t = dout.transpose(0, 2, 3, 1)
    arg_t = arg_max.transpose(0, 2, 3, 1)
    dmax = np.zeros((dout_t.size, pool_size), dtype=dout.dtype)
    dmax[np.arange(arg_t.size), arg_t.flatten()] = dout_t.flatten()
    dmax = dmax.reshape(dout_t.shape + (pool_size,))
    dcol = dmax.reshape(dmax.shape[0] * dmax.shape[1] * dmax.shape[2], -1)
    return col2im_numpy(dcol, x_shape, pool_h, pool_w, stride, pad)


# ----------------------------------------------------------------------------- compiled kernels
@jit
def _any_nan(x):
    # One vectorised pass (about a fifth of the pooling itself): lets the common NaN-free case
    # take the 4x faster _max_pool_2x2_finite.
    flat = x.reshape(-1)
    found = False
    for i in range(flat.size):
        found |= np.isnan(flat[i])
    return found


@jit
def _max_pool_2x2_finite(x, out, arg_max):
    # _max_pool_2x2 for NaN-free input: with no NaN, "first maximum" is a plain chain of strict
    # comparisons, which LLVM turns into vector selects.
    n_img, n_ch = x.shape[0], x.shape[1]
    out_h, out_w = out.shape[2], out.shape[3]
    for n in range(n_img):
        for c in range(n_ch):
            for oh in range(out_h):
                r0 = x[n, c, 2 * oh]
                r1 = x[n, c, 2 * oh + 1]
                o = out[n, c, oh]
                a = arg_max[n, c, oh]
                for ow in range(out_w):
                    v0 = r0[2 * ow]
                    v1 = r0[2 * ow + 1]
                    v2 = r1[2 * ow]
                    v3 = r1[2 * ow + 1]
                    t = v1 > v0
                    best = v1 if t else v0
                    k = 1 if t else 0
                    t = v2 > best
                    best = v2 if t else best
                    k = 2 if t else k
                    t = v3 > best
                    best = v3 if t else best
                    k = 3 if t else k
                    o[ow] = best
                    a[ow] = k


@jit
def _max_pool_2x2(x, out, arg_max):
    # The books' only pooling (2x2 windows, stride 2, no padding), unrolled: ~2.5x faster than the
    # general loop. Same first-maximum / NaN rule as _max_pool_forward.
    n_img, n_ch = x.shape[0], x.shape[1]
    out_h, out_w = out.shape[2], out.shape[3]
    for n in range(n_img):
        for c in range(n_ch):
            for oh in range(out_h):
                r0 = x[n, c, 2 * oh]
                r1 = x[n, c, 2 * oh + 1]
                o = out[n, c, oh]
                a = arg_max[n, c, oh]
                for ow in range(out_w):
                    best = r0[2 * ow]
                    k = 0
                    v = r0[2 * ow + 1]
                    take = (not np.isnan(best)) & ((v > best) | np.isnan(v))
                    best = v if take else best
                    k = 1 if take else k
                    v = r1[2 * ow]
                    take = (not np.isnan(best)) & ((v > best) | np.isnan(v))
                    best = v if take else best
                    k = 2 if take else k
                    v = r1[2 * ow + 1]
                    take = (not np.isnan(best)) & ((v > best) | np.isnan(v))
                    best = v if take else best
                    k = 3 if take else k
                    o[ow] = best
                    a[ow] = k


@jit
def _max_pool_forward(x, ph, pw, stride, pad, out, arg_max):
    n_img, n_ch, h, w = x.shape
    out_h, out_w = out.shape[2], out.shape[3]
    zero = x.dtype.type(0)
    if ph == 2 and pw == 2 and stride == 2 and pad == 0:
        if _any_nan(x):
            _max_pool_2x2(x, out, arg_max)
        else:
            _max_pool_2x2_finite(x, out, arg_max)
        return
    for n in range(n_img):
        for c in range(n_ch):
            plane = x[n, c]
            for oh in range(out_h):
                y0 = oh * stride - pad
                for ow in range(out_w):
                    x0 = ow * stride - pad
                    inside = (y0 >= 0) & (x0 >= 0) & (y0 + ph <= h) & (x0 + pw <= w)
                    best = zero
                    best_k = 0
                    k = 0
                    for fy in range(ph):
                        y = y0 + fy
                        for fx in range(pw):
                            xx = x0 + fx
                            # Windows inside the image (all of them when pad == 0) skip the
                            # per-tap bounds test; border windows see the padding's zeros.
                            if inside or (0 <= y < h and 0 <= xx < w):
                                v = plane[y, xx]
                            else:
                                v = zero
                            # First maximum wins; a NaN beats everything and then sticks
                            # (np.argmax / np.max semantics). Bitwise ops and selects instead of
                            # short-circuit branches: random data mispredicts them (~1.6x slower).
                            take = (k == 0) | ((not np.isnan(best)) & ((v > best) | np.isnan(v)))
                            best = v if take else best
                            best_k = k if take else best_k
                            k += 1
                    out[n, c, oh, ow] = best
                    arg_max[n, c, oh, ow] = best_k


@jit
def _max_pool_backward_2x2(dout, arg_max, dx):
    # 2x2 windows, stride 2, no padding, tiling dx exactly: every dx entry is written once (the
    # gradient or zero), so no separate zeroing pass. Walks dx, not dout: each pair of dx rows is
    # written contiguously from its output row (element xx comes from window xx // 2), through
    # flat unsigned indices — measured 3.2x faster than four strided stores per window from row
    # views with signed indices (whose wraparound tests kept LLVM from vectorising).
    n_img, n_ch, out_h, out_w = dout.shape
    u = np.uint64
    W = u(dx.shape[3])
    OW = u(out_w)
    gf = dout.reshape(-1)
    af = arg_max.reshape(-1)
    df = dx.reshape(-1)
    zero = dx.dtype.type(0)
    one, two = u(1), u(2)
    for rr in range(u(n_img * n_ch * out_h)):
        bg = rr * OW
        bd = rr * two * W
        for xx in range(W):
            o = bg + (xx >> one)
            k = af[o]
            v = gf[o]
            par = xx & one
            df[bd + xx] = v if k == par else zero
            df[bd + W + xx] = v if k == par + two else zero


@jit
def _max_pool_backward(dout, arg_max, ph, pw, stride, pad, dx):
    n_img, n_ch, h, w = dx.shape
    out_h, out_w = dout.shape[2], dout.shape[3]
    if ph == 2 and pw == 2 and stride == 2 and pad == 0 and h == 2 * out_h and w == 2 * out_w:
        _max_pool_backward_2x2(dout, arg_max, dx)
        return
    for n in range(n_img):
        for c in range(n_ch):
            for y in range(h):
                for xx in range(w):
                    dx[n, c, y, xx] = 0
            if stride >= ph and stride >= pw:
                # Windows do not overlap: every pixel receives at most one gradient.
                for oh in range(out_h):
                    for ow in range(out_w):
                        k = arg_max[n, c, oh, ow]
                        y = oh * stride + k // pw - pad
                        xx = ow * stride + k % pw - pad
                        if 0 <= y < h and 0 <= xx < w:
                            dx[n, c, y, xx] += dout[n, c, oh, ow]
            else:
                # Overlapping windows: add offset by offset, the order of the book's col2im.
                for k in range(ph * pw):
                    fy = k // pw
                    fx = k % pw
                    for oh in range(out_h):
                        y = oh * stride + fy - pad
                        if y < 0 or y >= h:
                            continue
                        for ow in range(out_w):
                            xx = ow * stride + fx - pad
                            if arg_max[n, c, oh, ow] == k and 0 <= xx < w:
                                dx[n, c, y, xx] += dout[n, c, oh, ow]


#: Parts of the batch the compiled twins hand to threads (:func:`~zerodl.kernels._tasks.run_tasks`);
#: every output element is computed the same way whatever the split, so any number is exact.
PARTS = 4


def _parts(n: int) -> list[tuple[int, int]]:
    k = min(PARTS, n)
    return [(i * n // k, (i + 1) * n // k) for i in range(k)]


def max_pool_forward_numba(
    x: np.ndarray, pool_h: int, pool_w: int, stride: int = 2, pad: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Compiled twin of :func:`max_pool_forward_numpy`: one pass over each window, no ``col``.

    Parts of the batch run on both cores.
    """
    N, C, H, W = x.shape
    out_h, out_w = out_hw(H, W, pool_h, pool_w, stride, pad)
    out = np.empty((N, C, out_h, out_w), dtype=x.dtype)
    arg_max = np.empty((N, C, out_h, out_w), dtype=np.intp)
    x = np.ascontiguousarray(x)
    parts = _parts(N)

    def part(i: int) -> None:
        n0, n1 = parts[i]
        _max_pool_forward(x[n0:n1], pool_h, pool_w, stride, pad, out[n0:n1], arg_max[n0:n1])

    run_tasks(part, len(parts))
    return out, arg_max


def max_pool_backward_numba(
    dout: np.ndarray,
    arg_max: np.ndarray,
    x_shape: tuple[int, int, int, int],
    pool_h: int,
    pool_w: int,
    stride: int = 2,
    pad: int = 0,
) -> np.ndarray:
    """Compiled twin of :func:`max_pool_backward_numpy`: scatters ``dout`` straight into ``dx``.

    Parts of the batch run on both cores.
    """
    dx = np.empty(tuple(int(s) for s in x_shape), dtype=dout.dtype)
    dout = np.ascontiguousarray(dout)
    arg_max = np.ascontiguousarray(arg_max, dtype=np.intp)
    parts = _parts(dx.shape[0])

    def part(i: int) -> None:
        n0, n1 = parts[i]
        _max_pool_backward(dout[n0:n1], arg_max[n0:n1], pool_h, pool_w, stride, pad, dx[n0:n1])

    run_tasks(part, len(parts))
    return dx

"""Slow, loop-per-element oracles for the convolution family (and the Affine gradient folded into
SGD's update), written from the definitions.

Every function here computes one output element at a time with plain Python loops (float64
accumulation via Python floats where a sum is involved), so it shares nothing with the kernels
under test: not the ``im2col`` layout trick, not BLAS, not NumPy's transposes. Use tiny shapes.

Conventions (the book's): ``x (N, C, H, W)``, filters ``(FN, C, FH, FW)``, zero padding ``pad`` on
every side, output size ``(H + 2 pad - FH) // stride + 1``; ``col`` rows ``(n, oh, ow)``, columns
``(c, fy, fx)``; pooling ``arg_max`` = window-local ``fy·pool_w + fx`` of the first maximum.
"""

from __future__ import annotations

import math

import numpy as np


def out_size(size: int, filt: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - filt) // stride + 1


def padded_value(x: np.ndarray, n: int, c: int, y: int, xx: int) -> float:
    """``x[n, c, y, xx]``, or 0 where ``(y, xx)`` falls in the padding."""
    if 0 <= y < x.shape[2] and 0 <= xx < x.shape[3]:
        return x[n, c, y, xx]
    return x.dtype.type(0)


def im2col(x: np.ndarray, fh: int, fw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    N, C, H, W = x.shape
    oh_n, ow_n = out_size(H, fh, stride, pad), out_size(W, fw, stride, pad)
    col = np.empty((N * oh_n * ow_n, C * fh * fw), dtype=x.dtype)
    for n in range(N):
        for oh in range(oh_n):
            for ow in range(ow_n):
                row = (n * oh_n + oh) * ow_n + ow
                for c in range(C):
                    for fy in range(fh):
                        for fx in range(fw):
                            col[row, (c * fh + fy) * fw + fx] = padded_value(
                                x, n, c, oh * stride + fy - pad, ow * stride + fx - pad
                            )
    return col


def col2im(col: np.ndarray, shape, fh: int, fw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Each pixel = the sum of the ``col`` entries copied from it (exact sum with math.fsum)."""
    N, C, H, W = shape
    oh_n, ow_n = out_size(H, fh, stride, pad), out_size(W, fw, stride, pad)
    terms: dict[tuple[int, int, int, int], list[float]] = {}
    for n in range(N):
        for oh in range(oh_n):
            for ow in range(ow_n):
                row = (n * oh_n + oh) * ow_n + ow
                for c in range(C):
                    for fy in range(fh):
                        for fx in range(fw):
                            y, xx = oh * stride + fy - pad, ow * stride + fx - pad
                            if 0 <= y < H and 0 <= xx < W:
                                terms.setdefault((n, c, y, xx), []).append(
                                    float(col[row, (c * fh + fy) * fw + fx])
                                )
    img = np.zeros(shape, dtype=np.float64)
    for idx, vals in terms.items():
        img[idx] = math.fsum(vals)
    return img


def conv_terms(x: np.ndarray, W: np.ndarray, b: np.ndarray, n: int, f: int, oh: int, ow: int,
               stride: int, pad: int) -> list[float]:
    """The products summed into ``conv[n, f, oh, ow]``: the bias, then ``W[f, c, fy, fx]`` times the
    (zero-padded) input under it, one Python float each, in ``c, fy, fx`` order."""
    C, FH, FW = W.shape[1:]
    terms = [float(b[f])]
    for c in range(C):
        for fy in range(FH):
            for fx in range(FW):
                v = padded_value(x, n, c, oh * stride + fy - pad, ow * stride + fx - pad)
                terms.append(float(W[f, c, fy, fx]) * float(v))
    return terms


def conv_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """``out[n, f, oh, ow] = b[f] + Σ_{c, fy, fx} W[f, c, fy, fx] · xpad[n, c, oh·s + fy, ow·s + fx]``."""
    N, _, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    oh_n, ow_n = out_size(H, FH, stride, pad), out_size(Wd, FW, stride, pad)
    out = np.empty((N, FN, oh_n, ow_n), dtype=np.float64)
    for n in range(N):
        for f in range(FN):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    out[n, f, oh, ow] = math.fsum(conv_terms(x, W, b, n, f, oh, ow, stride, pad))
    return out


def conv_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray, stride: int = 1, pad: int = 0):
    """``(dx, dW, db)`` by the chain rule applied to :func:`conv_forward` element by element."""
    N, C, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    oh_n, ow_n = dout.shape[2], dout.shape[3]
    dx = np.zeros(x.shape, dtype=np.float64)
    dW = np.zeros(W.shape, dtype=np.float64)
    db = np.zeros(FN, dtype=np.float64)
    for n in range(N):
        for f in range(FN):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    g = float(dout[n, f, oh, ow])
                    db[f] += g
                    for c in range(C):
                        for fy in range(FH):
                            for fx in range(FW):
                                y, xx = oh * stride + fy - pad, ow * stride + fx - pad
                                if 0 <= y < H and 0 <= xx < Wd:
                                    dW[f, c, fy, fx] += g * float(x[n, c, y, xx])
                                    dx[n, c, y, xx] += g * float(W[f, c, fy, fx])
    return dx, dW, db


def max_pool_forward(x: np.ndarray, ph: int, pw: int, stride: int = 2, pad: int = 0):
    """``(out, arg_max)``: first maximum of each window in row-major order; padding counts as 0."""
    N, C, H, W = x.shape
    oh_n, ow_n = out_size(H, ph, stride, pad), out_size(W, pw, stride, pad)
    out = np.empty((N, C, oh_n, ow_n), dtype=x.dtype)
    arg = np.empty((N, C, oh_n, ow_n), dtype=np.intp)
    for n in range(N):
        for c in range(C):
            for oh in range(oh_n):
                for ow in range(ow_n):
                    window = [
                        padded_value(x, n, c, oh * stride + fy - pad, ow * stride + fx - pad)
                        for fy in range(ph)
                        for fx in range(pw)
                    ]
                    best = max(window)
                    out[n, c, oh, ow] = best
                    arg[n, c, oh, ow] = window.index(best)
    return out, arg


def max_pool_backward(dout: np.ndarray, arg: np.ndarray, shape, ph: int, pw: int, stride: int = 2, pad: int = 0):
    """Each ``dout`` entry added to the pixel its window's maximum came from."""
    N, C, H, W = shape
    dx = np.zeros(shape, dtype=np.float64)
    for n in range(N):
        for c in range(C):
            for oh in range(dout.shape[2]):
                for ow in range(dout.shape[3]):
                    k = int(arg[n, c, oh, ow])
                    y, xx = oh * stride + k // pw - pad, ow * stride + k % pw - pad
                    if 0 <= y < H and 0 <= xx < W:
                        dx[n, c, y, xx] += float(dout[n, c, oh, ow])
    return dx


def conv_relu_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """:func:`conv_forward` then the book's ReLU, element by element (``v <= 0`` → 0)."""
    out = conv_forward(x, W, b, stride, pad)
    for idx in np.ndindex(out.shape):
        if out[idx] <= 0:
            out[idx] = 0.0
    return out


def conv_relu_backward(dout: np.ndarray, out: np.ndarray, x: np.ndarray, W: np.ndarray, stride: int = 1,
                       pad: int = 0):
    """:func:`conv_backward` of ``dout`` with every entry where the ReLU output ``out <= 0`` dropped."""
    masked = np.zeros(dout.shape, dtype=np.float64)
    for idx in np.ndindex(dout.shape):
        if not out[idx] <= 0:
            masked[idx] = float(dout[idx])
    return conv_backward(masked, x, W, stride, pad)


def conv_relu_pool_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0):
    """``(pooled, arg_max)``: :func:`max_pool_forward` (2x2, stride 2) of :func:`conv_relu_forward`."""
    return max_pool_forward(conv_relu_forward(x, W, b, stride, pad), 2, 2, 2, 0)


def conv_relu_pool_backward(dpooled: np.ndarray, pooled: np.ndarray, arg: np.ndarray, x: np.ndarray,
                            W: np.ndarray, stride: int = 1, pad: int = 0):
    """:func:`max_pool_backward` of ``dpooled`` (entries whose maximum ``pooled <= 0`` dropped: the
    ReLU's mask), then :func:`conv_backward`."""
    N, _, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    shape = (N, FN, out_size(H, FH, stride, pad), out_size(Wd, FW, stride, pad))
    masked = np.zeros(dpooled.shape, dtype=np.float64)
    for idx in np.ndindex(dpooled.shape):
        if not pooled[idx] <= 0:
            masked[idx] = float(dpooled[idx])
    return conv_backward(max_pool_backward(masked, arg, shape, 2, 2, 2, 0), x, W, stride, pad)


def count_nonfinite(x: np.ndarray) -> int:
    """Entries of ``x`` that are NaN or ±inf, one Python float at a time (``math.isfinite``)."""
    return sum(1 for v in np.asarray(x, dtype=np.float64).reshape(-1).tolist() if not math.isfinite(v))


def conv_relu_pool_inference(x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """``pooled[n, f, i, j]`` = the first maximum (a NaN wins) of ``relu(conv)`` over the 2x2 window
    at ``(2i, 2j)``, each of the four convolution values summed on the spot from its definition."""
    N, _, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    ph, pw = out_size(H, FH, stride, pad) // 2, out_size(Wd, FW, stride, pad) // 2
    pooled = np.empty((N, FN, ph, pw), dtype=np.float64)
    for n in range(N):
        for f in range(FN):
            for i in range(ph):
                for j in range(pw):
                    best = None
                    for oh, ow in ((2 * i, 2 * j), (2 * i, 2 * j + 1), (2 * i + 1, 2 * j), (2 * i + 1, 2 * j + 1)):
                        terms = conv_terms(x, W, b, n, f, oh, ow, stride, pad)
                        s = math.fsum(terms) if all(map(math.isfinite, terms)) else sum(terms)
                        v = 0.0 if s <= 0 else s
                        if best is None or (not math.isnan(best) and (v > best or math.isnan(v))):
                            best = v
                    pooled[n, f, i, j] = best
    return pooled


def affine_sgd_update_naive(dout: np.ndarray, x: np.ndarray, W: np.ndarray, lr: float) -> np.ndarray:
    """``W - lr · Σ_n x[n, i] · dout[n, j]`` entry by entry (a new array; ``W`` untouched)."""
    out = W.copy()
    n_rows, d = x.shape
    h = dout.shape[1]
    for i in range(d):
        for j in range(h):
            s = 0.0
            for n in range(n_rows):
                s += float(x[n, i]) * float(dout[n, j])
            out[i, j] = W[i, j] - lr * s
    return out

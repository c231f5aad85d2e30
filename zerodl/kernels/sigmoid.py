"""Sigmoid: ``out = 1 / (1 + exp(-x))`` and ``dx = dout * (1 - out) * out``.

Twins: ``sigmoid_forward_{numpy,numba}(x) -> out`` and
``sigmoid_backward_{numpy,numba}(dout, out) -> dx``. Any shape, output dtype = input dtype.

The fused training step's pieces: ``sigmoid_bias_forward(z, b, out)`` and
``sigmoid_backward_into(dout, out, dx)`` (see :mod:`zerodl.layers.fused`).
"""

from __future__ import annotations

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("sigmoid_forward", "sigmoid_backward", "sigmoid_bias_forward", "sigmoid_backward_into")


def sigmoid_forward_numpy(x: np.ndarray) -> np.ndarray:
    """Reference: the book's ``sigmoid``, elementwise ``1 / (1 + exp(-x))``."""
    with np.errstate(over="ignore"):  # exp(-x) = inf for x << 0 gives the correct limit 0
        return 1 / (1 + np.exp(-x))


def sigmoid_backward_numpy(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Reference: the book's ``Sigmoid.backward``, ``dout * (1 - out) * out``."""
    return dout * (1.0 - out) * out


# exp(y) = 2**k * exp(r), k = round(y / ln 2), |r| <= ln(2) / 2, exp(r) by its Taylor series to r**13
# (truncation < 1e-17 relative). Written out instead of calling libm's exp so that LLVM vectorises
# the loop: the scalar libm call made this kernel 2x slower than NumPy's SIMD exp. Results agree
# with NumPy to a few ulp (float64) and are computed in float64 for float32 input, then rounded.
_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact for |k| < 2**11
_LN2_LO = 1.90821492927058770002e-10
_ROUND_SHIFT = 6755399441055744.0  # 1.5 * 2**52: y + shift rounds y to an integer in the low bits
_CHUNK = 512


@jit
def _sigmoid_into(x, out):
    """``out[i] = 1 / (1 + exp(-x[i]))`` for 1-d contiguous ``x``, ``out`` (``out`` may be ``x``)."""
    shifted = np.empty(_CHUNK, np.float64)
    shifted_bits = shifted.view(np.int64)
    scale_bits = np.empty(_CHUNK, np.int64)
    scale = scale_bits.view(np.float64)
    e = np.empty(_CHUNK, np.float64)
    for start in range(0, x.size, _CHUNK):
        m = min(_CHUNK, x.size - start)
        # Slices, not x[start + j]: a possibly negative index blocks vectorisation.
        xs = x[start:start + m]
        os = out[start:start + m]
        for j in range(m):
            # exp(-x) saturates to inf below -745 and to 0 above 710; NaN passes through min/max.
            y = min(max(-np.float64(xs[j]), -746.0), 710.0)
            t = y * _LOG2E + _ROUND_SHIFT
            k = t - _ROUND_SHIFT
            r = (y - k * _LN2_HI) - k * _LN2_LO
            p = 1.0 / 6227020800.0
            p = p * r + 1.0 / 479001600.0
            p = p * r + 1.0 / 39916800.0
            p = p * r + 1.0 / 3628800.0
            p = p * r + 1.0 / 362880.0
            p = p * r + 1.0 / 40320.0
            p = p * r + 1.0 / 5040.0
            p = p * r + 1.0 / 720.0
            p = p * r + 1.0 / 120.0
            p = p * r + 1.0 / 24.0
            p = p * r + 1.0 / 6.0
            p = p * r + 0.5
            p = p * r + 1.0
            p = p * r + 1.0
            shifted[j] = t
            e[j] = p
        for j in range(m):
            # 2**k as two normal powers of two, so k down to -1076 and up to 1024 scale correctly.
            k_int = (shifted_bits[j] << 12) >> 12
            half = k_int >> 1
            scale_bits[j] = (half + 1023) << 52
            e[j] = e[j] * scale[j]
            scale_bits[j] = (k_int - half + 1023) << 52
            e[j] = e[j] * scale[j]
        for j in range(m):
            os[j] = 1.0 / (1.0 + e[j])


# The same in float32 arithmetic for float32 arrays (twice the vector width, a shorter series: r**7
# leaves < 2e-9 relative truncation): within ~1 ulp of the exact value, closer than NumPy's float32.
_LN2_HI_F32 = 0.693359375  # few mantissa bits, so k * _LN2_HI_F32 is exact in float32
_LN2_LO_F32 = -2.12194440e-4
_ROUND_SHIFT_F32 = 12582912.0  # 1.5 * 2**23


@jit
def _sigmoid_into_float32(x, out):
    """``out[i] = 1 / (1 + exp(-x[i]))`` for 1-d contiguous float32 ``x``, ``out``."""
    f = np.float32
    shifted = np.empty(_CHUNK, np.float32)
    shifted_bits = shifted.view(np.int32)
    scale_bits = np.empty(_CHUNK, np.int32)
    scale = scale_bits.view(np.float32)
    e = np.empty(_CHUNK, np.float32)
    log2e, ln2_hi, ln2_lo, shift = f(_LOG2E), f(_LN2_HI_F32), f(_LN2_LO_F32), f(_ROUND_SHIFT_F32)
    lowest, highest, one = f(-104.0), f(89.0), f(1.0)  # exp saturates to 0 and inf beyond
    for start in range(0, x.size, _CHUNK):
        m = min(_CHUNK, x.size - start)
        xs = x[start:start + m]
        os = out[start:start + m]
        for j in range(m):
            y = min(max(-xs[j], lowest), highest)
            t = y * log2e + shift
            k = t - shift
            r = (y - k * ln2_hi) - k * ln2_lo
            p = f(1.0 / 5040.0)
            p = p * r + f(1.0 / 720.0)
            p = p * r + f(1.0 / 120.0)
            p = p * r + f(1.0 / 24.0)
            p = p * r + f(1.0 / 6.0)
            p = p * r + f(0.5)
            p = p * r + one
            p = p * r + one
            shifted[j] = t
            e[j] = p
        for j in range(m):
            k_int = np.int32((shifted_bits[j] << 9) >> 9)
            half = np.int32(k_int >> 1)
            scale_bits[j] = np.int32((half + 127) << 23)
            e[j] = e[j] * scale[j]
            scale_bits[j] = np.int32((k_int - half + 127) << 23)
            e[j] = e[j] * scale[j]
        for j in range(m):
            os[j] = one / (one + e[j])


@jit
def _sigmoid_backward(dout, out, dx):
    one = out.dtype.type(1)
    for i in range(dout.size):
        dx[i] = dout[i] * (one - out[i]) * out[i]


def sigmoid_forward_numba(x: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`sigmoid_forward_numpy`."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    into = _sigmoid_into_float32 if x.dtype == np.float32 else _sigmoid_into
    into(x.reshape(-1), out.reshape(-1))
    return out


def sigmoid_backward_numba(dout: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`sigmoid_backward_numpy`."""
    dout = np.ascontiguousarray(dout)
    out = np.ascontiguousarray(out)
    dx = np.empty_like(dout)
    _sigmoid_backward(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx


# ----------------------------------------------------------------------------- fused-step pieces
def _as3d(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1], -1)


def sigmoid_bias_forward_numpy(z: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Reference: ``z += b`` along axis 1 (``z (N, C, ...)`` **updated in place**, ``b (C,)``), then
    ``out = sigmoid(z)`` as :func:`sigmoid_forward_numpy` computes it; ``out`` may be ``z``."""
    z3 = _as3d(z)
    np.add(z3, b[:, None], out=z3)
    np.copyto(out, sigmoid_forward_numpy(z))


def sigmoid_backward_into_numpy(dout: np.ndarray, out: np.ndarray, dx: np.ndarray) -> None:
    """Reference: :func:`sigmoid_backward_numpy` from the forward's ``out``, written into ``dx``
    (which may be ``dout``)."""
    np.copyto(dx, sigmoid_backward_numpy(dout, out))


@jit
def _add_bias3(z3, b):
    n, c, s = z3.shape
    if s == 1:
        for i in range(n):
            for j in range(c):
                z3[i, j, 0] += b[j]
    else:
        for i in range(n):
            for j in range(c):
                bj = b[j]
                for k in range(s):
                    z3[i, j, k] += bj


@jit
def _sigmoid_bias_forward(z3, b, out):
    _add_bias3(z3, b)
    _sigmoid_into(z3.reshape(-1), out)


@jit
def _sigmoid_bias_forward_float32(z3, b, out):
    _add_bias3(z3, b)
    _sigmoid_into_float32(z3.reshape(-1), out)


def sigmoid_bias_forward_numba(z: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Compiled twin of :func:`sigmoid_bias_forward_numpy`: bias and sigmoid in one call."""
    fused = _sigmoid_bias_forward_float32 if z.dtype == np.float32 else _sigmoid_bias_forward
    fused(_as3d(z), b, out.reshape(-1))


@jit
def _sigmoid_backward_inplace(d, out):
    # dx is dout: one array written, so the loop vectorises (aliased arguments would not).
    one = out.dtype.type(1)
    for i in range(d.size):
        d[i] = d[i] * (one - out[i]) * out[i]


def sigmoid_backward_into_numba(dout: np.ndarray, out: np.ndarray, dx: np.ndarray) -> None:
    """Compiled twin of :func:`sigmoid_backward_into_numpy`."""
    if dx is dout:
        _sigmoid_backward_inplace(dout.reshape(-1), out.reshape(-1))
    else:
        _sigmoid_backward(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))

"""GELU (tanh form): ``out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))``.

Not in the book; zerodl's example of an activation whose derivative needs its *input* (ReLU and
Sigmoid get theirs from the output), so the fused step keeps the pre-activation for it.

Twins (any shape, output dtype = input dtype, inputs never written unless said):

* ``gelu_forward_{numpy,numba}(x) -> out``;
* ``gelu_backward_{numpy,numba}(dout, x) -> dx = dout * gelu'(x)`` with
  ``gelu'(x) = 0.5 (1 + t) + 0.5 x (1 - t²) sqrt(2/pi) (1 + 3·0.044715 x²)``, ``t = tanh(u)``;
* the fused step's pieces: ``gelu_bias_forward(z, b, out)``: ``z += b`` along axis 1 (``z (N, C,
  ...)`` **updated in place**: it is the kept pre-activation), ``out = gelu(z)`` (``out`` must not
  be ``z``); ``gelu_backward_into(dout, z, dx)``: ``dx = dout * gelu'(z)`` (``dx`` may be ``dout``).

Both twins evaluate the same expression in the same order in the input's dtype (float32 stays
float32); they differ only by the last bits of ``tanh``.
"""

from __future__ import annotations

import math

import numpy as np

from zerodl.kernels._jit import jit

OPS = ("gelu_forward", "gelu_backward", "gelu_bias_forward", "gelu_backward_into")

#: sqrt(2 / pi) and the cubic coefficient of the tanh form (Hendrycks & Gimpel, 2016).
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
CUBIC = 0.044715


def _as3d(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], a.shape[1], -1)


# ----------------------------------------------------------------------------- NumPy references
def gelu_forward_numpy(x: np.ndarray) -> np.ndarray:
    """Reference: ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))`` elementwise."""
    t = x.dtype.type
    u = t(SQRT_2_OVER_PI) * (x + t(CUBIC) * (x * x * x))
    return t(0.5) * x * (t(1) + np.tanh(u))


def gelu_backward_numpy(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reference: ``dout * gelu'(x)`` (see the module docstring)."""
    t = x.dtype.type
    x2 = x * x
    th = np.tanh(t(SQRT_2_OVER_PI) * (x + t(CUBIC) * (x2 * x)))
    du = t(SQRT_2_OVER_PI) * (t(1) + t(3 * CUBIC) * x2)
    grad = t(0.5) * (t(1) + th) + t(0.5) * x * (t(1) - th * th) * du
    return dout * grad


def gelu_bias_forward_numpy(z: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Reference: ``z += b`` along axis 1 (in place), then ``out = gelu(z)``."""
    z3 = _as3d(z)
    np.add(z3, b[:, None], out=z3)
    np.copyto(out, gelu_forward_numpy(z))


def gelu_backward_into_numpy(dout: np.ndarray, z: np.ndarray, dx: np.ndarray) -> None:
    """Reference: :func:`gelu_backward_numpy` written into ``dx`` (which may be ``dout``)."""
    np.copyto(dx, gelu_backward_numpy(dout, z))


# ----------------------------------------------------------------------------- compiled loops
@jit
def _gelu(v, k, c, half, one):
    u = k * (v + c * (v * v * v))
    return half * v * (one + np.tanh(u))


@jit
def _gelu_grad(v, k, c, c3, half, one):
    v2 = v * v
    th = np.tanh(k * (v + c * (v2 * v)))
    du = k * (one + c3 * v2)
    return half * (one + th) + half * v * (one - th * th) * du


@jit
def _gelu_forward(x, out):
    t = x.dtype.type
    k, c, half, one = t(SQRT_2_OVER_PI), t(CUBIC), t(0.5), t(1)
    for i in range(x.size):
        out[i] = _gelu(x[i], k, c, half, one)


@jit
def _gelu_backward(dout, x, dx):
    t = x.dtype.type
    k, c, c3, half, one = t(SQRT_2_OVER_PI), t(CUBIC), t(3 * CUBIC), t(0.5), t(1)
    for i in range(x.size):
        dx[i] = dout[i] * _gelu_grad(x[i], k, c, c3, half, one)


@jit
def _gelu_bias_forward(z3, b, out3):
    t = z3.dtype.type
    k, c, half, one = t(SQRT_2_OVER_PI), t(CUBIC), t(0.5), t(1)
    n, ch, s = z3.shape
    for i in range(n):
        for j in range(ch):
            bj = b[j]
            for m in range(s):
                v = z3[i, j, m] + bj
                z3[i, j, m] = v
                out3[i, j, m] = _gelu(v, k, c, half, one)


def gelu_forward_numba(x: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`gelu_forward_numpy`."""
    x = np.ascontiguousarray(x)
    out = np.empty_like(x)
    _gelu_forward(x.reshape(-1), out.reshape(-1))
    return out


def gelu_backward_numba(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Compiled twin of :func:`gelu_backward_numpy`."""
    dout = np.ascontiguousarray(dout)
    x = np.ascontiguousarray(x)
    dx = np.empty_like(dout)
    _gelu_backward(dout.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx


def gelu_bias_forward_numba(z: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Compiled twin of :func:`gelu_bias_forward_numpy`: bias and GELU in one pass."""
    _gelu_bias_forward(_as3d(z), b, _as3d(out))


@jit
def _gelu_backward_inplace(d, x):
    # dx is dout: one array written, so the loop vectorises (aliased arguments would not).
    t = x.dtype.type
    k, c, c3, half, one = t(SQRT_2_OVER_PI), t(CUBIC), t(3 * CUBIC), t(0.5), t(1)
    for i in range(x.size):
        d[i] = d[i] * _gelu_grad(x[i], k, c, c3, half, one)


def gelu_backward_into_numba(dout: np.ndarray, z: np.ndarray, dx: np.ndarray) -> None:
    """Compiled twin of :func:`gelu_backward_into_numpy`."""
    if dx is dout:
        _gelu_backward_inplace(dout.reshape(-1), z.reshape(-1))
    else:
        _gelu_backward(dout.reshape(-1), z.reshape(-1), dx.reshape(-1))

"""Optimizer update loops, written into the parameter and state arrays **in place**.

The contract of every twin ``<name>_update_{numpy,numba}(param, grad, *state, *hyper) -> None``:
``param``, ``grad`` and each state (velocity ``v``, accumulator ``h``, moments ``m``/``v``) are
either one array or a sequence of arrays (parameter ``k`` of the sequence pairs with ``grad[k]``,
``state[k]``), C-contiguous, of one floating dtype, pairwise of one shape. ``param`` and the
states are overwritten; ``grad`` is only read. One call updates every parameter of a network: that
is how both :meth:`zerodl.optimizer.Optimizer.update` and the fused training step call it (one
compiled call per step, not one per parameter). Hyper-parameters are Python floats; the wrappers
cast them to ``param``'s dtype first, which is what NumPy does with a Python scalar (NEP 50), so
float32 stays float32.

The formulas are the book's ``common/optimizer.py`` as the repository has it now, including the
2021 fix of ``Nesterov`` (parameters moved with the old velocity, then the velocity updated), with
its ``1e-7`` epsilon passed in as ``eps``. Each formula is written once per backend, here; the
scalar set-up (Adam's bias-corrected rate) lives in :meth:`zerodl.optimizer.Adam.update_rule`.

``weight_decay_grad(grad, param, lam)``: ``grad += lam * param`` (the book's L2 term of
``MultiLayerNet.gradient``), same sequence contract, ``grad`` written.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from zerodl.kernels import _threads
from zerodl.kernels._jit import jit
from zerodl.kernels._tasks import run_tasks

OPS = (
    "sgd_update",
    "momentum_update",
    "nesterov_update",
    "adagrad_update",
    "rmsprop_update",
    "adam_update",
    "weight_decay_grad",
)

ArrayOrArrays = np.ndarray | Sequence[np.ndarray]


def _seq(a: ArrayOrArrays) -> Sequence[np.ndarray]:
    return (a,) if isinstance(a, np.ndarray) else a


# ----------------------------------------------------------------------------- NumPy references
def sgd_update_numpy(param: ArrayOrArrays, grad: ArrayOrArrays, lr: float) -> None:
    """``param -= lr * grad``."""
    for p, g in zip(_seq(param), _seq(grad)):
        p -= lr * g


def momentum_update_numpy(
    param: ArrayOrArrays, grad: ArrayOrArrays, v: ArrayOrArrays, lr: float, momentum: float
) -> None:
    """``v = momentum * v - lr * grad``; ``param += v``."""
    for p, g, vk in zip(_seq(param), _seq(grad), _seq(v)):
        vk[...] = momentum * vk - lr * g
        p += vk


def nesterov_update_numpy(
    param: ArrayOrArrays, grad: ArrayOrArrays, v: ArrayOrArrays, lr: float, momentum: float
) -> None:
    """The book's current form: ``param += momentum² v``; ``param -= (1 + momentum) lr grad``;
    then ``v *= momentum``; ``v -= lr grad`` (``v`` is the velocity before this step's update)."""
    for p, g, vk in zip(_seq(param), _seq(grad), _seq(v)):
        p += momentum * momentum * vk
        p -= (1 + momentum) * lr * g
        vk *= momentum
        vk -= lr * g


def adagrad_update_numpy(
    param: ArrayOrArrays, grad: ArrayOrArrays, h: ArrayOrArrays, lr: float, eps: float
) -> None:
    """``h += grad²``; ``param -= lr * grad / (sqrt(h) + eps)``."""
    for p, g, hk in zip(_seq(param), _seq(grad), _seq(h)):
        hk += g * g
        p -= lr * g / (np.sqrt(hk) + eps)


def rmsprop_update_numpy(
    param: ArrayOrArrays, grad: ArrayOrArrays, h: ArrayOrArrays, lr: float, decay_rate: float, eps: float
) -> None:
    """``h = decay h + (1 - decay) grad²``; ``param -= lr * grad / (sqrt(h) + eps)``."""
    for p, g, hk in zip(_seq(param), _seq(grad), _seq(h)):
        hk *= decay_rate
        hk += (1 - decay_rate) * g * g
        p -= lr * g / (np.sqrt(hk) + eps)


def adam_update_numpy(
    param: ArrayOrArrays,
    grad: ArrayOrArrays,
    m: ArrayOrArrays,
    v: ArrayOrArrays,
    lr_t: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """``m += (1-β1)(g - m)``; ``v += (1-β2)(g² - v)``; ``param -= lr_t m / (sqrt(v) + eps)``.

    ``lr_t`` is the bias-corrected rate ``lr sqrt(1 - β2^t) / (1 - β1^t)`` computed by the caller.
    """
    for p, g, mk, vk in zip(_seq(param), _seq(grad), _seq(m), _seq(v)):
        mk += (1 - beta1) * (g - mk)
        vk += (1 - beta2) * (g**2 - vk)
        p -= lr_t * mk / (np.sqrt(vk) + eps)


def weight_decay_grad_numpy(grad: ArrayOrArrays, param: ArrayOrArrays, lam: float) -> None:
    """``grad += lam * param``: the book's ``dW + λ W``, written into ``grad``."""
    for g, p in zip(_seq(grad), _seq(param)):
        g += lam * p


# ----------------------------------------------------------------------------- compiled loops
# One parameter's loop per optimizer (the formula, once), and a loop over tuples of flat views that
# calls it for every parameter: one dispatch per step for a whole network, one plain call for a single
# array. Every iteration reads all its inputs before it writes: LLVM then vectorises the loop behind a
# runtime no-overlap check (written as "x[i] += ...", Adam ran 3x slower, scalar). Same expressions,
# same rounding as the NumPy twins.
@jit
def _sgd_one(p, g, lr):
    for i in range(p.size):
        p[i] = p[i] - lr * g[i]


@jit
def _sgd(ps, gs, lr):
    for k in range(len(ps)):
        _sgd_one(ps[k], gs[k], lr)


@jit
def _momentum_one(p, g, v, lr, momentum):
    for i in range(p.size):
        vi = momentum * v[i] - lr * g[i]
        pi = p[i] + vi
        v[i] = vi
        p[i] = pi


@jit
def _momentum(ps, gs, vs, lr, momentum):
    for k in range(len(ps)):
        _momentum_one(ps[k], gs[k], vs[k], lr, momentum)


@jit
def _nesterov_one(p, g, v, lr, momentum, momentum_sq, lr_plus):
    for i in range(p.size):
        gi, vi = g[i], v[i]
        pi = (p[i] + momentum_sq * vi) - lr_plus * gi
        vi = vi * momentum - lr * gi
        p[i] = pi
        v[i] = vi


@jit
def _nesterov(ps, gs, vs, lr, momentum, momentum_sq, lr_plus):
    for k in range(len(ps)):
        _nesterov_one(ps[k], gs[k], vs[k], lr, momentum, momentum_sq, lr_plus)


@jit
def _adagrad_one(p, g, h, lr, eps):
    for i in range(p.size):
        gi = g[i]
        hi = h[i] + gi * gi
        pi = p[i] - lr * gi / (np.sqrt(hi) + eps)
        h[i] = hi
        p[i] = pi


@jit
def _adagrad(ps, gs, hs, lr, eps):
    for k in range(len(ps)):
        _adagrad_one(ps[k], gs[k], hs[k], lr, eps)


@jit
def _rmsprop_one(p, g, h, lr, decay_rate, keep, eps):
    for i in range(p.size):
        gi = g[i]
        hi = h[i] * decay_rate + keep * gi * gi
        pi = p[i] - lr * gi / (np.sqrt(hi) + eps)
        h[i] = hi
        p[i] = pi


@jit
def _rmsprop(ps, gs, hs, lr, decay_rate, keep, eps):
    for k in range(len(ps)):
        _rmsprop_one(ps[k], gs[k], hs[k], lr, decay_rate, keep, eps)


@jit
def _adam_one(p, g, m, v, lr_t, one_minus_b1, one_minus_b2, eps):
    for i in range(p.size):
        gi, mi, vi = g[i], m[i], v[i]
        mi = mi + one_minus_b1 * (gi - mi)
        vi = vi + one_minus_b2 * (gi * gi - vi)
        pi = p[i] - lr_t * mi / (np.sqrt(vi) + eps)
        m[i] = mi
        v[i] = vi
        p[i] = pi


@jit
def _adam(ps, gs, ms, vs, lr_t, one_minus_b1, one_minus_b2, eps):
    for k in range(len(ps)):
        _adam_one(ps[k], gs[k], ms[k], vs[k], lr_t, one_minus_b1, one_minus_b2, eps)


@jit
def _weight_decay_one(g, p, lam):
    for i in range(g.size):
        gi = g[i] + lam * p[i]
        g[i] = gi


@jit
def _weight_decay(gs, ps, lam):
    for k in range(len(gs)):
        _weight_decay_one(gs[k], ps[k], lam)


def _call(loop_all, loop_one, arrays: list[tuple[np.ndarray, ...]], *scalars: object) -> None:
    # One array each: the single-array loop (a tuple costs numba more to dispatch than the update of
    # a small parameter takes); sequences: the loop over all of them.
    if not arrays[0]:
        return  # nothing to update (and numba cannot type an empty tuple)
    if len(arrays[0]) == 1:
        loop_one(*(a[0] for a in arrays), *scalars)
    else:
        loop_all(*arrays, *scalars)


#: Elements from which an update with a square root and a division per element (Adam, AdaGrad,
#: RMSprop: bound by those, not by memory) runs as two halves side by side on the task threads
#: (:func:`~zerodl.kernels._tasks.run_tasks`) while BLAS is held to one thread (a convolutional
#: network's fused step keeps the cores for the task threads so): the parameters laid end to end,
#: cut at the middle element, each piece by the single-array loop. Elementwise, so the same bits
#: however it is cut. 2 threads, in-process A/B (whole / halves, medians of 6-8 rounds):
#: SimpleConvNet (434K parameters) float64 Adam 6.43 / 6.17 ms and 6.87 / 6.46, RMSprop 6.14 / 5.94;
#: float32 Adam 3.35 / 3.37, AdaGrad 3.45 / 3.43 (level); both trees alternating, 4 pairs: float64 Adam
#: 5.93-6.15 -> 5.87-5.89 ms, float32 level. With BLAS on two threads (an MLP's step) the
#: halves were slower, OpenBLAS's spinning workers taking the second core: MLP 784-1000-1000-10 Adam
#: float32 9.61 / 11.03 ms, float64 22.4 / 23.7; so then the update stays whole.
SPLIT_MIN_ELEMENTS = 2**18


def _call_halves(loop_all, loop_one, arrays: list[tuple[np.ndarray, ...]], *scalars: object) -> None:
    # _call, cut in two halves of equal element counts (one array may be cut) on the task threads
    # when there are at least SPLIT_MIN_ELEMENTS and BLAS is held to one thread; each piece a
    # single-array call (no new tuple types).
    sizes = [p.size for p in arrays[0]]
    total = sum(sizes)
    if total < SPLIT_MIN_ELEMENTS or min(_threads.active_limits(), default=0) != 1:
        _call(loop_all, loop_one, arrays, *scalars)
        return
    middle = total // 2
    halves: tuple[list, list] = ([], [])
    start = 0
    for k, n in enumerate(sizes):
        if start + n <= middle:
            halves[0].append((k, 0, n))
        elif start >= middle:
            halves[1].append((k, 0, n))
        else:
            halves[0].append((k, 0, middle - start))
            halves[1].append((k, middle - start, n))
        start += n

    def half(i: int) -> None:
        for k, lo, hi in halves[i]:
            loop_one(*(a[k][lo:hi] for a in arrays), *scalars)

    run_tasks(half, 2)


def _flat(a: ArrayOrArrays) -> tuple[np.ndarray, ...]:
    # reshape(-1) of a C-contiguous array is a view, so writes reach the caller's arrays. A tuple
    # of 1-d arrays (what a fused step hands over, prepared once) is used as it is.
    if type(a) is tuple and all(x.ndim == 1 for x in a):
        return a
    return tuple(x.reshape(-1) for x in _seq(a))


def _flat_read(a: ArrayOrArrays, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    # Read-only arrays are another numba type: one of them would make the tuple heterogeneous.
    if type(a) is tuple and all(x.ndim == 1 and x.dtype == dtype and x.flags.writeable for x in a):
        return a
    flat = []
    for x in _seq(a):
        x = np.ascontiguousarray(x, dtype=dtype)
        flat.append((x if x.flags.writeable else x.copy()).reshape(-1))
    return tuple(flat)


def _dtype(param: ArrayOrArrays) -> np.dtype:
    return _seq(param)[0].dtype


def sgd_update_numba(param: ArrayOrArrays, grad: ArrayOrArrays, lr: float) -> None:
    """Compiled twin of :func:`sgd_update_numpy`."""
    dt = _dtype(param)
    _call(_sgd, _sgd_one, [_flat(param), _flat_read(grad, dt)], dt.type(lr))


def momentum_update_numba(
    param: ArrayOrArrays, grad: ArrayOrArrays, v: ArrayOrArrays, lr: float, momentum: float
) -> None:
    """Compiled twin of :func:`momentum_update_numpy`."""
    dt = _dtype(param)
    t = dt.type
    _call(_momentum, _momentum_one, [_flat(param), _flat_read(grad, dt), _flat(v)], t(lr), t(momentum))


def nesterov_update_numba(
    param: ArrayOrArrays, grad: ArrayOrArrays, v: ArrayOrArrays, lr: float, momentum: float
) -> None:
    """Compiled twin of :func:`nesterov_update_numpy`."""
    dt = _dtype(param)
    t = dt.type
    # Python computes the scalar products exactly as the reference's left-to-right evaluation.
    momentum_sq = t(momentum * momentum)
    lr_plus = t((1 + momentum) * lr)
    _call(_nesterov, _nesterov_one, [_flat(param), _flat_read(grad, dt), _flat(v)], t(lr), t(momentum), momentum_sq,
          lr_plus)


def adagrad_update_numba(
    param: ArrayOrArrays, grad: ArrayOrArrays, h: ArrayOrArrays, lr: float, eps: float
) -> None:
    """Compiled twin of :func:`adagrad_update_numpy`."""
    dt = _dtype(param)
    t = dt.type
    _call_halves(_adagrad, _adagrad_one, [_flat(param), _flat_read(grad, dt), _flat(h)], t(lr), t(eps))


def rmsprop_update_numba(
    param: ArrayOrArrays, grad: ArrayOrArrays, h: ArrayOrArrays, lr: float, decay_rate: float, eps: float
) -> None:
    """Compiled twin of :func:`rmsprop_update_numpy`."""
    dt = _dtype(param)
    t = dt.type
    _call_halves(_rmsprop, _rmsprop_one, [_flat(param), _flat_read(grad, dt), _flat(h)], t(lr), t(decay_rate), t(1 - decay_rate),
          t(eps))


def adam_update_numba(
    param: ArrayOrArrays,
    grad: ArrayOrArrays,
    m: ArrayOrArrays,
    v: ArrayOrArrays,
    lr_t: float,
    beta1: float,
    beta2: float,
    eps: float,
) -> None:
    """Compiled twin of :func:`adam_update_numpy`."""
    dt = _dtype(param)
    t = dt.type
    _call_halves(_adam, _adam_one, [_flat(param), _flat_read(grad, dt), _flat(m), _flat(v)], t(lr_t), t(1 - beta1),
          t(1 - beta2), t(eps))


def weight_decay_grad_numba(grad: ArrayOrArrays, param: ArrayOrArrays, lam: float) -> None:
    """Compiled twin of :func:`weight_decay_grad_numpy`."""
    dt = _dtype(grad)
    _call(_weight_decay, _weight_decay_one, [_flat(grad), _flat_read(param, dt)], dt.type(lam))

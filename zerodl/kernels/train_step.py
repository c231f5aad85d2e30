"""The fused training step of a multi-layer perceptron: forward, loss, backward and update at once.

Twins: ``mlp_train_step_numpy`` / ``mlp_train_step_numba``, both with the signature

``mlp_train_step(x, labels, Ws, bs, acts, bufs, opt, hyper, state1, state2, lam) -> loss``

for the network ``(Affine_k → activation_k)`` for ``k = 1..L``, then ``SoftmaxWithLoss``:

* ``x (N, D)`` the batch, ``labels (N,)`` intp class indices (one-hot teacher rows are turned into
  indices by the caller; validation guarantees they are exact one-hot rows, so this is lossless).
* ``Ws`` a tuple of ``L`` weight matrices ``(D_{k-1}, D_k)`` and ``bs`` of ``L`` biases ``(D_k,)``,
  C-contiguous, one floating dtype (``x``'s): **updated in place**.
* ``acts (L,)`` int64: the activation after each Affine (:data:`ACT_IDENTITY`, :data:`ACT_RELU`,
  :data:`ACT_SIGMOID`); the last one is usually identity (the scores go to the softmax).
* ``bufs`` an :class:`MLPBuffers` of work arrays, allocated once per batch size and reused.
* ``opt`` one of :data:`OPT_SGD` … :data:`OPT_ADAM` or :data:`OPT_NONE` (gradients only: they are
  left in ``bufs.dWs`` / ``bufs.dbs`` for a Python optimizer, weight decay included; after a fused
  update those buffers hold scratch values, the NumPy twin reuses them); ``hyper (4,)``
  the optimizer's constants in the parameters' dtype, laid out by :func:`optimizer_hyper`.
* ``state1`` / ``state2`` tuples of ``2L`` flat views of the optimizer's state arrays in parameter
  order ``W1, b1, W2, b2, …`` (velocity / accumulator / Adam's ``m``, and Adam's ``v``), **updated in
  place**; optimizers without that state pass empty arrays.
* ``lam`` the L2 weight-decay λ (a Python float; ``0`` for none), applied as the book's
  ``MultiLayerNet`` does: ``0.5 λ ΣW²`` added to the loss, ``λ W`` added to each ``dW``.

The returned loss (a scalar of the parameters' dtype) is the loss of the forward pass on this batch
**before** the update, weight decay included: what ``net.loss(x, t, train_flg=True)`` returns just
before ``optimizer.update(net.params, net.gradient(x, t))``, and what that pair leaves in the
parameters is what this step leaves in them (to rounding; tests/kernels/test_train_step.py).

How the two twins are built:

* The NumPy twin is the layer-by-layer NumPy path rewritten with preallocated buffers and ``out=``
  arguments, operation for operation in the same order (the same ``np.dot`` calls, the same
  reductions), so it reproduces ``gradient`` + ``update`` of the NumPy backend, and allocates only
  a few ``(N,)``-sized temporaries of the softmax's label lookup.
* The Numba twin does the matrix products with ``np.dot(a, b, out=buffer)`` (NumPy's BLAS, no
  allocation) and everything between two products in **one** compiled call: the bias add fused
  with the activation in one pass over the product's output; the softmax, cross-entropy and its
  gradient in one pass per row; after each layer's ``dx`` and ``dW`` products, one call computes
  ``db``, adds the weight decay and updates ``W`` and ``b`` (while ``dW``/``db`` are still in
  cache) and applies the previous layer's activation derivative. The first layer's ``dx`` is never
  computed (nobody reads it) and nothing is allocated per step. ``2L + 1`` compiled calls and
  ``3L - 1`` products per step for ``L`` Affine layers.

  Why not a single compiled call with ``np.dot`` inside the kernel? It was built and measured
  (commit 0c426a2): numba's ``np.dot`` calls SciPy's OpenBLAS, a second BLAS with its own thread
  pool beside NumPy's, which the rest of a training (the layers' ``predict`` for the accuracy, the
  Trainer's loss) keeps using. The two pools then busy-wait against each other on a small machine:
  with 2 threads on 2 cores, 100 steps + one accuracy over 10,000 samples took 1.1 ms per step and
  34 ms per accuracy with the single call, against 0.34 ms and 19 ms with NumPy's BLAS here, while
  on steady back-to-back steps the two designs were within noise of each other (TwoLayerNet
  0.29-0.53 ms vs 0.32-0.44 ms). One BLAS per process wins where it matters.

The optimizer formulas are those of :mod:`zerodl.kernels.optim` (the book's), with the same
evaluation order, so float32 stays float32 and the results match the optimizers' own kernels.
"""

from __future__ import annotations

import math

import numpy as np

from zerodl.kernels._jit import jit
from zerodl.kernels.affine import affine_forward_numpy
from zerodl.kernels.relu import relu_forward_numpy
from zerodl.kernels.sigmoid import _sigmoid_into, sigmoid_forward_numpy

OPS = ("mlp_train_step", "mlp_predict")

#: Activation codes for ``acts``.
ACT_IDENTITY, ACT_RELU, ACT_SIGMOID = 0, 1, 2

#: Optimizer codes; ``OPT_NONE`` computes the gradients only (for optimizers without a fused kernel).
OPT_NONE, OPT_SGD, OPT_MOMENTUM, OPT_NESTEROV, OPT_ADAGRAD, OPT_RMSPROP, OPT_ADAM = -1, 0, 1, 2, 3, 4, 5

#: The book's cross-entropy delta inside the log (as :mod:`zerodl.kernels.softmax_loss`).
CROSS_ENTROPY_DELTA = 1e-7


class MLPBuffers:
    """Work arrays of one fused step, for batch size ``n`` and widths ``sizes = (D, H1, …, C)``.

    ``hs[k] (n, sizes[k+1])``: layer ``k``'s output after its activation (the scores for the last);
    ``ds[k]``: the loss gradient with respect to layer ``k``'s pre-activation; ``dWs[k]``, ``dbs[k]``:
    the parameter gradients. The NumPy twin's extra scratch arrays are created on its first use.
    """

    def __init__(self, n: int, sizes: tuple[int, ...], dtype: np.dtype) -> None:
        self.n = int(n)
        self.sizes = tuple(int(s) for s in sizes)
        self.dtype = np.dtype(dtype)
        outs = self.sizes[1:]
        self.hs = tuple(np.empty((self.n, h), self.dtype) for h in outs)
        self.ds = tuple(np.empty((self.n, h), self.dtype) for h in outs)
        self.dWs = tuple(np.empty((a, b), self.dtype) for a, b in zip(self.sizes[:-1], outs))
        self.dbs = tuple(np.empty(h, self.dtype) for h in outs)
        self._numpy_scratch: dict[str, tuple[np.ndarray, ...]] | None = None

    @property
    def grads(self) -> tuple[np.ndarray, ...]:
        """The gradient buffers in parameter order ``dW1, db1, dW2, db2, …``."""
        return tuple(g for pair in zip(self.dWs, self.dbs) for g in pair)

    def numpy_scratch(self) -> dict[str, tuple[np.ndarray, ...]]:
        """Scratch arrays of the NumPy twin (created once, on first use)."""
        if self._numpy_scratch is None:
            n, dt, outs = self.n, self.dtype, self.sizes[1:]
            self._numpy_scratch = {
                "rows": (np.arange(n, dtype=np.intp) * outs[-1], np.empty(n, np.intp)),
                "picked": (np.empty(n, dt),),
                "rowbuf": (np.empty((n, 1), dt),),
                "masks": tuple(np.empty((n, h), np.bool_) for h in outs),
                "act": tuple(np.empty((n, h), dt) for h in outs),
                "W": tuple(np.empty_like(w) for w in self.dWs),
                "b": tuple(np.empty_like(b) for b in self.dbs),
            }
        return self._numpy_scratch

    def nbytes(self) -> int:
        """Bytes held by the buffers (scratch included once created)."""
        arrays = [*self.hs, *self.ds, *self.dWs, *self.dbs]
        if self._numpy_scratch is not None:
            arrays += [a for group in self._numpy_scratch.values() for a in group]
        return sum(a.nbytes for a in arrays)


def optimizer_hyper(opt: int, dtype: np.dtype, out: np.ndarray | None = None, **hp: float) -> np.ndarray:
    """The ``hyper (4,)`` array of optimizer ``opt`` in ``dtype``, the scalars precomputed in Python
    exactly as :mod:`zerodl.kernels.optim`'s wrappers do (so both twins round alike).

    Keyword arguments: ``lr`` (all; for Adam the bias-corrected ``lr_t``), ``momentum`` (Momentum,
    Nesterov), ``decay_rate`` (RMSprop), ``beta1``, ``beta2`` (Adam), ``eps`` (AdaGrad, RMSprop, Adam).
    """
    t = np.dtype(dtype).type
    lr = hp.get("lr", 0.0)
    if opt in (OPT_NONE, OPT_SGD):
        vals = (lr, 0.0, 0.0, 0.0)
    elif opt == OPT_MOMENTUM:
        vals = (lr, hp["momentum"], 0.0, 0.0)
    elif opt == OPT_NESTEROV:
        m = hp["momentum"]
        vals = (lr, m, m * m, (1 + m) * lr)
    elif opt == OPT_ADAGRAD:
        vals = (lr, hp["eps"], 0.0, 0.0)
    elif opt == OPT_RMSPROP:
        d = hp["decay_rate"]
        vals = (lr, d, 1 - d, hp["eps"])
    elif opt == OPT_ADAM:
        vals = (lr, 1 - hp["beta1"], 1 - hp["beta2"], hp["eps"])
    else:
        raise ValueError(f"unknown optimizer code {opt!r}")
    if out is None:
        out = np.empty(4, dtype=dtype)
    for i, v in enumerate(vals):
        out[i] = t(v)
    return out


# ----------------------------------------------------------------------------- NumPy reference
def _numpy_act_forward(h: np.ndarray, act: int, mask: np.ndarray) -> None:
    if act == ACT_RELU:
        # The book: mask = x <= 0; out = x.copy(); out[mask] = 0 (here in place).
        np.less_equal(h, 0, out=mask)
        np.copyto(h, 0, where=mask)
    elif act == ACT_SIGMOID:
        # The book: 1 / (1 + exp(-x)), one ufunc at a time into h.
        np.negative(h, out=h)
        with np.errstate(over="ignore"):
            np.exp(h, out=h)
        np.add(1, h, out=h)
        np.divide(1, h, out=h)


def _numpy_act_backward(d: np.ndarray, h: np.ndarray, act: int, mask: np.ndarray, tmp: np.ndarray) -> None:
    if act == ACT_RELU:
        np.copyto(d, 0, where=mask)
    elif act == ACT_SIGMOID:
        # The book: dout * (1.0 - out) * out, left to right.
        np.subtract(1.0, h, out=tmp)
        np.multiply(d, tmp, out=d)
        np.multiply(d, h, out=d)


def _numpy_update(p: np.ndarray, g: np.ndarray, s1: np.ndarray, s2: np.ndarray, opt: int,
                  hyper: np.ndarray, tmp: np.ndarray) -> None:
    """One parameter's update, the formulas of ``optim.<name>_update_numpy`` with ``out=`` buffers.

    ``g`` is consumed (used as a second scratch array once it has been read for the last time).
    """
    a, b, c, e = hyper[0], hyper[1], hyper[2], hyper[3]
    if opt == OPT_SGD:  # param -= lr * grad
        np.multiply(a, g, out=tmp)
        p -= tmp
    elif opt == OPT_MOMENTUM:  # v = momentum * v - lr * grad; param += v
        np.multiply(b, s1, out=tmp)
        np.multiply(a, g, out=g)
        np.subtract(tmp, g, out=s1)
        p += s1
    elif opt == OPT_NESTEROV:  # v *= m; v -= lr g; p += m² v; p -= (1 + m) lr g
        s1 *= b
        np.multiply(a, g, out=tmp)
        s1 -= tmp
        np.multiply(c, s1, out=tmp)
        p += tmp
        np.multiply(e, g, out=tmp)
        p -= tmp
    elif opt == OPT_ADAGRAD:  # h += g²; p -= lr g / (sqrt(h) + eps)
        np.multiply(g, g, out=tmp)
        s1 += tmp
        np.multiply(a, g, out=g)
        np.sqrt(s1, out=tmp)
        tmp += b
        np.divide(g, tmp, out=g)
        p -= g
    elif opt == OPT_RMSPROP:  # h = d h + (1 - d) g g; p -= lr g / (sqrt(h) + eps)
        s1 *= b
        np.multiply(c, g, out=tmp)
        np.multiply(tmp, g, out=tmp)
        s1 += tmp
        np.multiply(a, g, out=g)
        np.sqrt(s1, out=tmp)
        tmp += e
        np.divide(g, tmp, out=g)
        p -= g
    elif opt == OPT_ADAM:  # m += (1-β1)(g - m); v += (1-β2)(g² - v); p -= lr_t m / (sqrt(v) + eps)
        np.subtract(g, s1, out=tmp)
        np.multiply(b, tmp, out=tmp)
        s1 += tmp
        np.multiply(g, g, out=tmp)
        tmp -= s2
        np.multiply(c, tmp, out=tmp)
        s2 += tmp
        np.multiply(a, s1, out=g)
        np.sqrt(s2, out=tmp)
        tmp += e
        np.divide(g, tmp, out=g)
        p -= g


def mlp_train_step_numpy(
    x: np.ndarray,
    labels: np.ndarray,
    Ws: tuple[np.ndarray, ...],
    bs: tuple[np.ndarray, ...],
    acts: np.ndarray,
    bufs: MLPBuffers,
    opt: int,
    hyper: np.ndarray,
    state1: tuple[np.ndarray, ...],
    state2: tuple[np.ndarray, ...],
    lam: float,
) -> np.generic:
    """Reference: the layer-by-layer NumPy ``gradient`` + ``update`` with preallocated buffers.

    ``x (N, D)``, ``labels (N,)``; see the module docstring for every argument. Returns the loss
    before the update (a scalar of ``x``'s dtype); ``Ws``, ``bs`` and the state arrays are updated
    in place.
    """
    L = len(Ws)
    n = x.shape[0]
    sc = bufs.numpy_scratch()
    masks, act_tmp, tmpW, tmpb = sc["masks"], sc["act"], sc["W"], sc["b"]
    hs, ds, dWs, dbs = bufs.hs, bufs.ds, bufs.dWs, bufs.dbs

    # The book's weight_decay(), before anything changes: Σ 0.5 λ Σ W².
    decay = 0
    if lam:
        for k in range(L):
            np.multiply(Ws[k], Ws[k], out=tmpW[k])
            decay += 0.5 * lam * np.sum(tmpW[k])

    inp = x
    for k in range(L):  # Affine (np.dot(x, W) + b), then the activation
        np.dot(inp, Ws[k], out=hs[k])
        np.add(hs[k], bs[k], out=hs[k])
        _numpy_act_forward(hs[k], int(acts[k]), masks[k])
        inp = hs[k]

    # SoftmaxWithLoss.forward, then .backward(1), into ds[-1].
    y, rowbuf = ds[L - 1], sc["rowbuf"][0]
    np.max(hs[L - 1], axis=-1, keepdims=True, out=rowbuf)
    np.subtract(hs[L - 1], rowbuf, out=y)
    np.exp(y, out=y)
    np.sum(y, axis=-1, keepdims=True, out=rowbuf)
    np.divide(y, rowbuf, out=y)
    rows, flat_idx = sc["rows"]
    np.add(rows, labels, out=flat_idx)
    picked = sc["picked"][0]
    y_flat = y.reshape(-1)
    np.take(y_flat, flat_idx, out=picked)
    np.add(picked, CROSS_ENTROPY_DELTA, out=picked)
    np.log(picked, out=picked)
    loss = x.dtype.type(-np.sum(picked) / n)
    np.take(y_flat, flat_idx, out=picked)
    np.subtract(picked, 1, out=picked)
    np.put(y_flat, flat_idx, picked)
    np.divide(y, n, out=y)
    _numpy_act_backward(y, hs[L - 1], int(acts[L - 1]), masks[L - 1], act_tmp[L - 1])

    for k in range(L - 1, -1, -1):  # Affine.backward, then the update of this layer's parameters
        d = ds[k]
        if k > 0:
            np.dot(d, Ws[k].T, out=ds[k - 1])
            _numpy_act_backward(ds[k - 1], hs[k - 1], int(acts[k - 1]), masks[k - 1], act_tmp[k - 1])
        np.dot((x if k == 0 else hs[k - 1]).T, d, out=dWs[k])
        np.sum(d, axis=0, out=dbs[k])
        if lam:  # grad = dW + λ W
            np.multiply(lam, Ws[k], out=tmpW[k])
            np.add(dWs[k], tmpW[k], out=dWs[k])
        if opt != OPT_NONE:
            # Flat views: element-wise maths is layout-free and the states arrive flat.
            _numpy_update(Ws[k].reshape(-1), dWs[k].reshape(-1), state1[2 * k], state2[2 * k],
                          opt, hyper, tmpW[k].reshape(-1))
            _numpy_update(bs[k], dbs[k], state1[2 * k + 1], state2[2 * k + 1], opt, hyper, tmpb[k])
    return loss + decay if lam else loss


# ----------------------------------------------------------------------------- compiled kernel
@jit
def _bias_act(h, b, act):
    # One pass over the product's output: bias, then the activation, as the layers compute them.
    n, m = h.shape
    zero = h.dtype.type(0)
    if act == 1:
        for i in range(n):
            for j in range(m):
                v = h[i, j] + b[j]
                # "<= 0 → 0" (not "> 0 → v") so that NaN passes through, as in the book's mask.
                h[i, j] = zero if v <= zero else v  # noqa: FURB136 (max() would change NaN handling)
    elif act == 2:
        for i in range(n):
            for j in range(m):
                h[i, j] += b[j]
        flat = h.reshape(-1)  # the step's buffers are C-contiguous
        _sigmoid_into(flat, flat)
    else:
        for i in range(n):
            for j in range(m):
                h[i, j] += b[j]


@jit
def _act_backward(d, h, act):
    # ReLU's mask x <= 0 is h <= 0 (h = 0 exactly where x <= 0), so no mask array is kept.
    n, m = d.shape
    zero = d.dtype.type(0)
    one = d.dtype.type(1)
    if act == 1:
        for i in range(n):
            for j in range(m):
                if h[i, j] <= zero:
                    d[i, j] = zero
    elif act == 2:
        for i in range(n):
            for j in range(m):
                d[i, j] = d[i, j] * (one - h[i, j]) * h[i, j]


@jit
def _softmax_loss_grad(s, labels, y, delta):
    # softmax_loss_forward then _backward(dout=1) of kernels/softmax_loss.py in one pass per row;
    # returns the mean cross-entropy (accumulated in float64, as that kernel does).
    n, c = s.shape
    inv = s.dtype.type(n)
    one = s.dtype.type(1)
    total = 0.0
    for i in range(n):
        m = s[i, 0]
        for j in range(1, c):
            if s[i, j] > m:
                m = s[i, j]
        z = s.dtype.type(0)
        for j in range(c):
            e = np.exp(s[i, j] - m)
            y[i, j] = e
            z += e
        for j in range(c):
            y[i, j] = y[i, j] / z
        lab = labels[i]
        total += np.log(y[i, lab] + delta)
        y[i, lab] -= one
        for j in range(c):
            y[i, j] = y[i, j] / inv
    return -total / n


@jit
def _column_sums(a, out):
    # Row by row, as NumPy's sum(axis=0) adds, so the inner loop is contiguous (and the sums agree).
    n, h = a.shape
    for j in range(h):
        out[j] = 0
    for i in range(n):
        for j in range(h):
            out[j] += a[i, j]


@jit
def _add_decay(g, p, lam):
    for i in range(p.size):
        g[i] = g[i] + lam * p[i]


@jit
def _update(p, g, s1, s2, opt, hyper):
    # The loops of kernels/optim.py, same evaluation order; p, g, s1, s2 are flat views.
    a = hyper[0]
    b = hyper[1]
    c = hyper[2]
    e = hyper[3]
    if opt == 0:
        for i in range(p.size):
            p[i] -= a * g[i]
    elif opt == 1:
        for i in range(p.size):
            s1[i] = b * s1[i] - a * g[i]
            p[i] += s1[i]
    elif opt == 2:
        for i in range(p.size):
            s1[i] = s1[i] * b
            s1[i] -= a * g[i]
            p[i] += c * s1[i]
            p[i] -= e * g[i]
    elif opt == 3:
        for i in range(p.size):
            s1[i] += g[i] * g[i]
            p[i] -= a * g[i] / (np.sqrt(s1[i]) + b)
    elif opt == 4:
        for i in range(p.size):
            s1[i] = s1[i] * b
            s1[i] += c * g[i] * g[i]
            p[i] -= a * g[i] / (np.sqrt(s1[i]) + e)
    elif opt == 5:
        for i in range(p.size):
            s1[i] += b * (g[i] - s1[i])
            s2[i] += c * (g[i] * g[i] - s2[i])
            p[i] -= a * s1[i] / (np.sqrt(s2[i]) + e)


@jit
def _sum_squares(a):
    total = 0.0
    for i in range(a.size):
        total += a[i] * a[i]
    return total


@jit
def _loss_head(s, labels, y, delta, act):
    # The softmax-with-loss gradient, then the last layer's activation derivative, in one call.
    ce = _softmax_loss_grad(s, labels, y, delta)
    _act_backward(y, s, act)
    return ce


@jit
def _backward_tail(d, db, W, dW, b, s1w, s2w, s1b, s2b, opt, hyper, lam, d_prev, h_prev, act_prev):
    # Everything of layer k after its two products (dx into d_prev, dW), in one call: the bias
    # gradient, weight decay, the update of W and b while dW/db are still in cache, then the
    # activation derivative of layer k-1 applied to d_prev (act_prev = 0 for the first layer).
    _column_sums(d, db)
    w = W.reshape(-1)
    gw = dW.reshape(-1)
    if lam != 0:
        _add_decay(gw, w, lam)
    if opt >= 0:
        _update(w, gw, s1w, s2w, opt, hyper)
        _update(b, db, s1b, s2b, opt, hyper)
    _act_backward(d_prev, h_prev, act_prev)


def mlp_train_step_numba(
    x: np.ndarray,
    labels: np.ndarray,
    Ws: tuple[np.ndarray, ...],
    bs: tuple[np.ndarray, ...],
    acts: np.ndarray,
    bufs: MLPBuffers,
    opt: int,
    hyper: np.ndarray,
    state1: tuple[np.ndarray, ...],
    state2: tuple[np.ndarray, ...],
    lam: float,
) -> np.generic:
    """Compiled twin of :func:`mlp_train_step_numpy`: NumPy's BLAS for the products (into the
    preallocated buffers), one compiled call for everything between two products.

    Per layer: forward ``np.dot`` + one compiled bias/activation pass; backward two ``np.dot``
    (``dx``, ``dW``) + one compiled call (bias gradient, weight decay, update of ``W`` and ``b``,
    the previous layer's activation derivative); plus one compiled softmax/loss/gradient call.
    """
    t = x.dtype.type
    hs, ds, dWs, dbs = bufs.hs, bufs.ds, bufs.dWs, bufs.dbs
    L = len(Ws)
    lam_t = t(lam)
    decay = 0.0
    if lam:  # the penalty of the weights before the update
        half = t(0.5 * lam)
        for W in Ws:
            decay += half * _sum_squares(W.reshape(-1))
    inp = x
    for k in range(L):
        np.dot(inp, Ws[k], out=hs[k])
        _bias_act(hs[k], bs[k], acts[k])
        inp = hs[k]
    ce = _loss_head(hs[L - 1], labels, ds[L - 1], t(CROSS_ENTROPY_DELTA), acts[L - 1])
    for k in range(L - 1, -1, -1):
        d = ds[k]
        if k > 0:
            # dx of layer k with W_k as it was in the forward pass (it is updated just below).
            np.dot(d, Ws[k].T, out=ds[k - 1])
            d_prev, h_prev, act_prev = ds[k - 1], hs[k - 1], acts[k - 1]
        else:
            d_prev, h_prev, act_prev = d, d, ACT_IDENTITY  # the input needs no gradient
        np.dot((x if k == 0 else hs[k - 1]).T, d, out=dWs[k])
        _backward_tail(d, dbs[k], Ws[k], dWs[k], bs[k], state1[2 * k], state2[2 * k], state1[2 * k + 1],
                       state2[2 * k + 1], opt, hyper, lam_t, d_prev, h_prev, act_prev)
    return t(ce) + t(decay) if lam else t(ce)


# ----------------------------------------------------------------------------- inference
#: Rows per chunk of the compiled predict: the chunk's input (cast to the weights' dtype) and its
#: activations stay in cache instead of whole-batch temporaries (10,000 MNIST rows in float64 are a
#: 63 MB cast and a page fault per 4 KiB). Measured on TwoLayerNet over 10,000 rows: 256-1024 rows
#: best (13-15 ms, against 25 ms for the layers' predict), 2048 rows 20 % slower.
PREDICT_ROWS = 512


def mlp_predict_numpy(
    x: np.ndarray, Ws: tuple[np.ndarray, ...], bs: tuple[np.ndarray, ...], acts: np.ndarray
) -> np.ndarray:
    """Reference: the scores ``(N, C)`` of an Affine/activation stack, as its layers compute them.

    ``x (N, D)`` float32 or float64 (cast to the weights' dtype, as ``Affine`` does); ``Ws``, ``bs``,
    ``acts`` as in :func:`mlp_train_step_numpy`. Nothing is modified.
    """
    h = x.astype(Ws[0].dtype, copy=False)
    for W, b, act in zip(Ws, bs, acts):
        h = affine_forward_numpy(h, W, b)
        if act == ACT_RELU:
            h = relu_forward_numpy(h)[0]
        elif act == ACT_SIGMOID:
            h = sigmoid_forward_numpy(h)
    return h


def mlp_predict_numba(
    x: np.ndarray, Ws: tuple[np.ndarray, ...], bs: tuple[np.ndarray, ...], acts: np.ndarray
) -> np.ndarray:
    """Compiled twin of :func:`mlp_predict_numpy`: :data:`PREDICT_ROWS` rows at a time, each chunk
    cast into a reused buffer, NumPy's BLAS into reused activation buffers (the last product straight
    into the output rows) and one compiled bias + activation pass per product."""
    dtype = Ws[0].dtype
    n = x.shape[0]
    out = np.empty((n, Ws[-1].shape[1]), dtype=dtype)
    rows = max(1, min(n, PREDICT_ROWS))
    hidden = [np.empty((rows, W.shape[1]), dtype=dtype) for W in Ws[:-1]]
    cast = None if x.dtype == dtype and x.flags.c_contiguous else np.empty((rows, x.shape[1]), dtype=dtype)
    last = len(Ws) - 1
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        inp = x[r0:r1]
        if cast is not None:
            np.copyto(cast[: r1 - r0], inp)
            inp = cast[: r1 - r0]
        for k, (W, b) in enumerate(zip(Ws, bs)):
            dst = out[r0:r1] if k == last else hidden[k][: r1 - r0]
            np.dot(inp, W, out=dst)
            _bias_act(dst, b, acts[k])
            inp = dst
    return out


# ----------------------------------------------------------------------------- the network's step
#: Per-network cache attribute (set on the network instance by :func:`sequential_train_step`).
_CACHE_ATTR = "_train_step_cache"


class _Plan:
    """What the fused step needs from a network, built once per architecture."""

    def __init__(self, key, Ws, bs, acts, names, sizes, dtype, lam):
        self.key = key
        self.Ws = Ws
        self.bs = bs
        self.acts = acts
        self.names = names  # parameter names in the order W1, b1, W2, b2, ...
        self.params = tuple(p for pair in zip(Ws, bs) for p in pair)
        self.sizes = sizes
        self.dtype = dtype
        self.lam = lam
        self.bufs: MLPBuffers | None = None
        self.hyper = np.empty(4, dtype=dtype)
        self.empty_state = (np.empty(0, dtype=dtype),) * (2 * len(Ws))
        self.state_cache: tuple | None = None  # (optimizer, state arrays, flat views)


def _arch_key(net) -> tuple:
    # Identities of everything the plan depends on; the plan holds references to all of them, so
    # an id cannot be recycled while the plan lives.
    return (
        *map(id, net.layers.values()),
        id(net.last_layer),
        *[id(getattr(layer, attr)) for _, layer, attr in net._param_index],
        *map(id, net.params.values()),
        net.weight_decay_lambda,
    )


def _fused_layout(net):
    """``(Ws, bs, acts, names)`` when ``net`` is an Affine/activation stack the kernel computes
    exactly, else ``None`` (and the generic step is used)."""
    from zerodl.layers.core import Affine, Relu, Sigmoid, SoftmaxWithLoss
    from zerodl.networks.sequential import Sequential

    cls = type(net)
    if not isinstance(net, Sequential) or type(net.last_layer) is not SoftmaxWithLoss:
        return None
    # A subclass that redefines the maths is not what the kernel computes.
    for method in ("predict", "loss", "gradient", "weight_decay"):
        if getattr(cls, method) is not getattr(Sequential, method):
            return None
    names_by_layer: dict[int, dict[str, str]] = {}
    for name, layer, attr in net._param_index:
        names_by_layer.setdefault(id(layer), {})[attr] = name
    Ws, bs, acts, names = [], [], [], []
    for layer in net.layers.values():
        kind = type(layer)
        if kind is Affine:
            Ws.append(layer.W)
            bs.append(layer.b)
            acts.append(ACT_IDENTITY)
            pnames = names_by_layer.get(id(layer), {})
            names += [pnames.get("W"), pnames.get("b")]
        elif kind in (Relu, Sigmoid) and Ws and acts[-1] == ACT_IDENTITY:
            acts[-1] = ACT_RELU if kind is Relu else ACT_SIGMOID
        else:
            return None
    if not Ws or None in names or list(names) != list(net.params):
        return None
    dtype = Ws[0].dtype
    for k, (W, b) in enumerate(zip(Ws, bs)):
        if (W.dtype != dtype or b.dtype != dtype or W.ndim != 2 or b.shape != (W.shape[1],)
                or not W.flags.c_contiguous or not b.flags.c_contiguous
                or not W.flags.writeable or not b.flags.writeable
                or net.params[names[2 * k]] is not W or net.params[names[2 * k + 1]] is not b):
            return None
        if k and Ws[k - 1].shape[1] != W.shape[0]:
            return None
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        return None
    return tuple(Ws), tuple(bs), np.array(acts, dtype=np.int64), tuple(names)


def _plan_for(net) -> _Plan | None:
    key = _arch_key(net)
    cached = net.__dict__.get(_CACHE_ATTR)
    if cached is not None and cached[0] == key:
        return cached[1]
    layout = _fused_layout(net)
    plan = None
    if layout is not None:
        Ws, bs, acts, names = layout
        sizes = (Ws[0].shape[0], *(W.shape[1] for W in Ws))
        plan = _Plan(key, Ws, bs, acts, names, sizes, Ws[0].dtype, net.weight_decay_lambda)
    # The (key, plan) pair also keeps every keyed object alive, so ids stay unique.
    net.__dict__[_CACHE_ATTR] = (key, plan, layout)
    return plan


_OPT_CODES: dict[type, int] = {}


def _optimizer_code(optimizer) -> int:
    """The fused kernel's code for ``optimizer``: exact types only (a subclass may change the maths)."""
    if not _OPT_CODES:
        from zerodl import optimizer as optim_mod

        _OPT_CODES.update({
            optim_mod.SGD: OPT_SGD,
            optim_mod.Momentum: OPT_MOMENTUM,
            optim_mod.Nesterov: OPT_NESTEROV,
            optim_mod.AdaGrad: OPT_ADAGRAD,
            optim_mod.RMSprop: OPT_RMSPROP,
            optim_mod.Adam: OPT_ADAM,
        })
    return _OPT_CODES.get(type(optimizer), OPT_NONE)


def _fill_hyper(opt: int, optimizer, out: np.ndarray) -> None:
    """:func:`optimizer_hyper` for an optimizer object, written into ``out`` (one assignment per step)."""
    from zerodl.optimizer import EPS

    lr = getattr(optimizer, "lr", 0.0)
    if opt == OPT_ADAM:
        it = optimizer.iter  # already incremented for this step, as Adam.update does
        lr_t = lr * math.sqrt(1.0 - optimizer.beta2**it) / (1.0 - optimizer.beta1**it)
        vals = (lr_t, 1 - optimizer.beta1, 1 - optimizer.beta2, EPS)
    elif opt == OPT_MOMENTUM:
        vals = (lr, optimizer.momentum, 0.0, 0.0)
    elif opt == OPT_NESTEROV:
        m = optimizer.momentum
        vals = (lr, m, m * m, (1 + m) * lr)
    elif opt == OPT_RMSPROP:
        d = optimizer.decay_rate
        vals = (lr, d, 1 - d, EPS)
    elif opt == OPT_ADAGRAD:
        vals = (lr, EPS, 0.0, 0.0)
    else:
        vals = (lr, 0.0, 0.0, 0.0)
    # Python floats, each rounded once to out's dtype: what optimizer_hyper (and optim.py) do.
    out[:] = vals


def _state_views(plan: _Plan, optimizer) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Flat views of ``optimizer``'s state arrays in parameter order, created as ``update`` would.

    Cached on the plan while the optimizer's tables still hold the very same arrays (a
    ``load_state_dict`` or a new optimizer replaces them and the views are rebuilt).
    """
    names = optimizer.state_names
    cached = plan.state_cache
    if cached is not None and cached[0] is optimizer:
        arrays = cached[1]
        if all(optimizer.state[s].get(key) is a
               for s, group in zip(names, arrays) for key, a in zip(plan.names, group)):
            return cached[2]
    arrays = tuple(
        tuple(optimizer._state_array(s, key, p) for key, p in zip(plan.names, plan.params)) for s in names
    )
    flat = [tuple(a.reshape(-1) for a in group) for group in arrays]
    views = (flat[0] if len(flat) > 0 else plan.empty_state, flat[1] if len(flat) > 1 else plan.empty_state)
    plan.state_cache = (optimizer, arrays, views)
    return views


def generic_train_step(net, x: np.ndarray, t: np.ndarray, optimizer) -> np.generic:
    """``loss``, ``gradient``, ``update`` through the layers: the step of any network.

    Returns the loss of the forward pass made by ``net.gradient`` (before the update), weight decay
    included.
    """
    grads = net.gradient(x, t)
    loss = getattr(net.last_layer, "loss", None)
    if loss is None:  # a loss layer that does not keep its loss: one more forward pass
        loss = net.loss(x, t, train_flg=True)
    else:
        loss = loss + net.weight_decay()
    optimizer.update(net.params, grads)
    return loss


def sequential_train_step(net, x: np.ndarray, t: np.ndarray, optimizer) -> np.generic:
    """One training step of ``net`` on ``(x, t)`` with ``optimizer``; returns the loss before the update.

    Networks made only of ``Affine`` layers each followed by at most one ``Relu`` or ``Sigmoid``,
    ending in ``SoftmaxWithLoss`` (``TwoLayerNet``, ``MultiLayerNet`` and such ``Sequential`` stacks,
    weight decay included) get the fused step (:func:`mlp_train_step_numba` /
    :func:`mlp_train_step_numpy` by backend), with buffers cached on the network and reused while
    the batch size, dtype and architecture stay the same. The optimizer update is fused too for the
    six book optimizers; any other optimizer object gets the fused gradients and its own ``update``.
    Every other network (convolution, Dropout, BatchNormalization, custom layers, subclasses that
    redefine ``loss``/``gradient``) takes :func:`generic_train_step`.

    The per-layer caches of the layer-by-layer API (``layer.x``, ``layer.dW``, ``last_layer.y``)
    are not refreshed by the fused step.
    """
    plan = _plan_for(net)
    if plan is None:
        return generic_train_step(net, x, t, optimizer)

    from zerodl import kernels
    from zerodl._validate import check_labels

    where = f"{type(net).__name__}.train_step"
    x = _checked_batch(x, plan, where, plan.dtype)
    n = x.shape[0]
    if not x.flags.writeable:  # a read-only array is another type to numba: one signature only
        x = x.copy()
    t = check_labels(t, n, plan.sizes[-1], where, plan.dtype)
    labels = t if t.ndim == 1 else np.argmax(t, axis=1)
    if not labels.flags.writeable:
        labels = labels.copy()

    if plan.bufs is None or plan.bufs.n != n:
        plan.bufs = MLPBuffers(n, plan.sizes, plan.dtype)

    opt = _optimizer_code(optimizer)
    if opt != OPT_NONE:
        # The same bookkeeping as Optimizer.update: the step count, then lazily created state.
        optimizer.iter += 1
        state1, state2 = _state_views(plan, optimizer)
    else:
        state1 = state2 = plan.empty_state
    _fill_hyper(opt, optimizer, plan.hyper)

    loss = kernels.get("mlp_train_step")(
        x, labels, plan.Ws, plan.bs, plan.acts, plan.bufs, opt, plan.hyper, state1, state2, plan.lam
    )
    if opt == OPT_NONE:
        optimizer.update(net.params, dict(zip(plan.names, plan.bufs.grads)))
    return loss


def sequential_scores(net, x: np.ndarray) -> np.ndarray | None:
    """Inference scores of ``net`` for ``x`` through :func:`mlp_predict_numba` /
    :func:`mlp_predict_numpy` (active backend) when ``net`` is a stack the fused step computes, else
    ``None`` (the caller runs ``predict``). Used by ``accuracy``; the layers' caches are not touched.
    """
    plan = _plan_for(net)
    if plan is None:
        return None
    from zerodl import kernels

    # dtype=None: float32 stays float32, the kernel casts chunk by chunk.
    x = _checked_batch(x, plan, f"{type(net).__name__}.accuracy", None)
    return kernels.get("mlp_predict")(x, plan.Ws, plan.bs, plan.acts)


def _checked_batch(x: np.ndarray, plan: _Plan, where: str, dtype: np.dtype | None) -> np.ndarray:
    """``x`` as a non-empty float batch ``(N, D)`` of the first layer's width (N-d samples
    flattened), converted to ``dtype`` when given; a clear error naming ``where`` otherwise."""
    from zerodl._validate import as_float_array, check_nonempty

    x = as_float_array(x, where, "x", dtype=dtype)
    if x.ndim < 2:
        raise ValueError(f"{where}: x must be a batch of shape (N, {plan.sizes[0]}), got shape {x.shape}")
    check_nonempty(x, where)
    n = x.shape[0]
    if x.size != n * plan.sizes[0]:
        raise ValueError(
            f"{where}: x has {x.size // n} features per sample (shape {x.shape}) but the first "
            f"layer expects {plan.sizes[0]}"
        )
    return x.reshape(n, plan.sizes[0])

"""The fused training step of a network, composed from the pieces its layers declare.

``Sequential.train_step(x, t, optimizer)`` asks :func:`plan_for` for the network's
:class:`FusedStep`. The plan is built from the layers (``layer.fused_piece()``, see
:mod:`zerodl.layers.fused`): an activation right after an Affine or a Convolution is absorbed into
that layer's epilogue; the loss layer brings its own piece. When a layer cannot join (a user's layer
without a piece, a subclass that redefines the network's maths, parameters that are not the layers'
arrays), there is no plan and the network runs the generic ``gradient`` + ``update``; the reason is
in ``net.step_path`` and the network's ``repr``, never silent.

One step, on either backend (the pieces call the active backend's kernels):

1. the batch is validated once (dtype, shapes through every piece, labels) before anything changes;
   a batch holding NaN/inf is refused before anything changes too: when the first piece is an
   Affine, its product is screened (one compiled count over ``(N, H)``, see
   :attr:`zerodl.layers.fused.Piece.can_screen_product`) and ``x`` is scanned only if that finds
   something; otherwise ``x`` is scanned up front (:func:`zerodl._validate.check_finite_batch`);
2. forward through the pieces into their reused buffers, then the loss and its gradient at once;
3. backward through the pieces (the first layer computes no input gradient);
4. the optimizer's update of every parameter in **one** kernel call, described by
   :meth:`zerodl.optimizer.Optimizer.update_rule` (an optimizer that redefines its maths instead gets
   the gradients through its own ``update``). Weight decay is added to the weight gradients first.

The step is atomic: nothing is written into the parameters, the optimizer's state or its ``iter``
before the whole backward pass has succeeded. Gradients handed to an optimizer's ``update`` are
the pieces' buffers: valid until ``update`` returns (the next step overwrites them).

On the NumPy backend the pieces use the NumPy twins with the layer path's operations in the same
order, so a fused step leaves bit for bit what ``optimizer.update(net.params, net.gradient(x, t))``
leaves; on the Numba backend it agrees to rounding.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

import zerodl.kernels as kernels  # noqa: PLR0402 (names the module, not the package: no edge to zerodl/__init__)
from zerodl._validate import as_float_array, check_finite_batch, check_labels, check_nonempty
from zerodl.kernels import _threads
from zerodl.layers.base import Layer
from zerodl.layers.core import product_propagates_nonfinite
from zerodl.layers.fused import LossPiece, Piece

#: Rows per chunk of :meth:`FusedStep.scores`: the chunk's activations stay in cache and the
#: buffers stay small (measured on TwoLayerNet over 10,000 rows: 256-1024 rows best).
PREDICT_ROWS = 512

#: Row blocks per Affine product in a step whose BLAS runs on one thread (a convolution's step):
#: both cores, a fixed cut (the same bits for any thread count). SimpleConvNet float32 step, quiet
#: machine, old and new trees alternating (2 runs, piece timer): 6.28-6.40 -> 6.00 ms.
PRODUCT_PARTS = 2

_CACHE_ATTR = "_fused_step_cache"


class NotFusable(Exception):
    """Why a network cannot run the fused step (the message goes into ``net.step_path``)."""


class FusedStep:
    """A network's fused training step and inference, built once per architecture.

    Attributes: ``pieces`` (forward order, activations absorbed), ``loss`` (the loss piece),
    ``names``/``params`` (the network's parameters in ``net.params`` order, the very arrays),
    ``decay_idx`` (indices of the weights that get weight decay), ``dtype``.
    """

    def __init__(self, net: Any, pieces: list[Piece], loss: LossPiece, names: list[str],
                 params: list[np.ndarray], decay_idx: list[int]) -> None:
        self.owner = type(net).__name__
        self.pieces = pieces
        self.loss = loss
        self.names = names
        self.params = params
        self.decay_idx = decay_idx
        self.lam = net.weight_decay_lambda
        self.dtype = params[0].dtype if params else np.dtype(np.float64)
        self._net_weight_decay = net.weight_decay
        self._shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
        self._flat_params = tuple(p.reshape(-1) for p in params)
        self._grads_cache: tuple[list[np.ndarray], tuple[np.ndarray, ...]] | None = None
        self._states_cache: tuple | None = None
        self._sgd_lr: float | None = None
        self._sgd_done: tuple[bool, ...] | None = None
        self._sgd_pieces: list[Piece] = []
        self._one_blas_thread = any(p.uses_task_threads for p in pieces)
        if self._one_blas_thread:
            # BLAS on one thread for the whole step: the products of the other pieces (Affine)
            # take both cores as fixed row blocks on the task threads instead.
            for p in pieces:
                if hasattr(p, "product_parts"):
                    p.product_parts = PRODUCT_PARTS
        for p, nxt in itertools.pairwise(pieces):
            p.chain(nxt)  # a piece may compute the next one's product (Piece.chain)
        # NaN/inf in the batch: the first piece screens its product when it can (an Affine: a scan
        # of (N, H) instead of (N, D), see Piece.can_screen_product), else x is scanned up front.
        first = pieces[0] if pieces else None
        self.screen_by_product = bool(first is not None and first.can_screen_product
                                      and product_propagates_nonfinite(self.dtype))
        if first is not None:
            first.screen_product = self.screen_by_product

    # -- validation -------------------------------------------------------------------------
    def check_batch(self, x: Any, where: str, dtype: np.dtype | None) -> tuple[np.ndarray, tuple[int, ...]]:
        """``x`` as a float array (of ``dtype`` when given) that flows through every piece, and the
        scores' shape; a clear error naming ``where`` otherwise."""
        x = as_float_array(x, where, "x", dtype=dtype)
        if x.ndim < 2:
            first = self.pieces[0].layer
            width = getattr(first, "W", None)
            expect = f"(N, {width.shape[0]})" if width is not None and width.ndim == 2 else "(N, ...)"
            raise ValueError(f"{where}: x must be a batch of shape {expect}, got shape {x.shape}")
        check_nonempty(x, where)
        out = self._shapes.get(x.shape)
        if out is None:
            shape = x.shape
            for piece in self.pieces:
                shape = piece.out_shape(shape, where)
            if len(shape) != 2:
                raise ValueError(f"{where}: the last layer gives scores of shape {shape}, not (N, C)")
            self._shapes[x.shape] = out = shape
        if not x.flags.c_contiguous or not x.flags.writeable:
            x = np.array(x, order="C")  # one array type for the kernels
        return x, out

    # -- training ---------------------------------------------------------------------------
    def _blas_threads(self) -> Any:
        # See Piece.uses_task_threads: with convolutions, every BLAS call of the step on one thread.
        if self._one_blas_thread:
            return _threads.limited(1)
        return contextlib.nullcontext()

    def run(self, x: Any, t: Any, optimizer: Any) -> np.generic:
        """One step: returns the loss before the update (weight decay included)."""
        with self._blas_threads():
            return self._run(x, t, optimizer)

    def _run(self, x: Any, t: Any, optimizer: Any) -> np.generic:
        where = f"{self.owner}.train_step"
        x, scores_shape = self.check_batch(x, where, self.dtype)
        t = check_labels(t, x.shape[0], scores_shape[1], where, self.dtype)
        screen = self.screen_by_product
        if not screen:
            check_finite_batch(x, where)  # refused before any piece runs (BatchNorm, Dropout)
        rule = optimizer.update_rule() if hasattr(optimizer, "update_rule") else None

        h = x
        for piece in self.pieces:
            h = piece.forward(h, True)
            if screen:
                # The first piece (stateless: it wrote only its own buffers) found a non-finite
                # product: a NaN/inf in x, refused here, or finite inputs that overflowed it, which
                # the step then runs as it always did.
                screen = False
                if piece.product_nonfinite:
                    check_finite_batch(x, where)
        loss, d = self.loss.loss_and_grad(h, t)
        decay = self._net_weight_decay() if self.lam else 0  # before the update, as the book
        # Plain SGD without weight decay: pieces that can (Affine) fold their weights' update into
        # the gradient's own product, after the whole backward; the update call below takes the rest.
        sgd_lr = rule.scalars[0] if rule is not None and rule.op == "sgd_update" and not self.lam else None
        done = self._sgd_folded(sgd_lr)
        last = len(self.pieces) - 1
        for i in range(last, -1, -1):
            d = self.pieces[i].backward(d, i > 0)
        for piece in self._sgd_pieces:  # the backward has succeeded: now the parameters change
            piece.apply_sgd_update()
        grads = [g for piece in self.pieces for g in piece.grad_arrays()]
        if self.lam:
            kernels.get("weight_decay_grad")([grads[i] for i in self.decay_idx],
                                             [self.params[i] for i in self.decay_idx], self.lam)
        if rule is None:
            optimizer.update(dict(zip(self.names, self.params)), dict(zip(self.names, grads)))
        else:
            params, flat_grads = self._flat_params, self._flat_grads(grads)
            if done:
                params = tuple(p for p, skip in zip(params, done) if not skip)
                flat_grads = tuple(g for g, skip in zip(flat_grads, done) if not skip)
            kernels.get(rule.op)(params, flat_grads, *self._flat_states(optimizer, rule), *rule.scalars)
            optimizer.iter += 1
        return loss + decay if self.lam else loss

    def _sgd_folded(self, lr: float | None) -> tuple[bool, ...]:
        """Tell the pieces the step's SGD learning rate (``None``: another update); returns which
        parameters (``params`` order) the pieces update themselves after the backward
        (``Piece.apply_sgd_update``), or ``()`` for none."""
        if self._sgd_lr != lr or self._sgd_done is None:
            flags: list[bool] = []
            pieces = []
            for piece in self.pieces:
                n_grads = len(piece.grad_arrays())
                taken = piece.take_sgd_update(lr) or (False,) * n_grads
                flags.extend(taken)
                if any(taken):
                    pieces.append(piece)
            self._sgd_lr = lr
            self._sgd_done = tuple(flags) if any(flags) else ()
            self._sgd_pieces = pieces
        return self._sgd_done

    def loss_value(self, x: Any, t: Any, train: bool) -> np.generic:
        """The value of the network's ``loss(x, t, train_flg=train)`` (weight decay included),
        through the pieces: their reused buffers instead of the layers' caches, Dropout masks drawn
        and BatchNorm statistics updated as the layers would (``train``), no gradient kept. To
        rounding on Numba, bit for bit on the NumPy backend."""
        with self._blas_threads():
            where = f"{self.owner}.loss"
            x, scores_shape = self.check_batch(x, where, self.dtype)
            t = check_labels(t, x.shape[0], scores_shape[1], where, self.dtype)
            h = x
            for piece in self.pieces:
                h = piece.forward(h, train)
            loss, _ = self.loss.loss_and_grad(h, t)
            return loss + self._net_weight_decay() if self.lam else loss

    # Flat views handed to the update kernel (its sequences of 1-d arrays), kept while the arrays
    # behind them stay the same: the per-step cost of a deep MLP is its Python overhead.
    def _flat_grads(self, grads: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        cached = self._grads_cache
        if cached is None or len(cached[0]) != len(grads) or any(a is not b for a, b in zip(cached[0], grads)):
            cached = self._grads_cache = (grads, tuple(g.reshape(-1) for g in grads))
        return cached[1]

    def _flat_states(self, optimizer: Any, rule: Any) -> list[tuple[np.ndarray, ...]]:
        cached = self._states_cache
        if cached is not None and cached[0] is optimizer and cached[1] == rule.state_names:
            tables = [optimizer.state.get(name, {}) for name in rule.state_names]
            if all(table.get(key) is arr for table, arrays in zip(tables, cached[2])
                   for key, arr in zip(self.names, arrays)):
                return cached[3]
        states = [optimizer.state_arrays(key, p) for key, p in zip(self.names, self.params)]
        per_name = [[st[k] for st in states] for k in range(len(rule.state_names))]
        flat = [tuple(a.reshape(-1) for a in arrays) for arrays in per_name]
        self._states_cache = (optimizer, rule.state_names, per_name, flat)
        return flat

    # -- inference --------------------------------------------------------------------------
    def scores(self, x: Any, where: str) -> np.ndarray:
        """Inference scores ``(N, C)`` of the network's dtype, :data:`PREDICT_ROWS` rows at a time
        through the pieces' reused buffers; ``predict(x)``'s scores to rounding (bit for bit on the
        NumPy backend). The layers' own caches are not touched."""
        with self._blas_threads():
            return self._scores(x, where)

    def _scores(self, x: Any, where: str) -> np.ndarray:
        x, scores_shape = self.check_batch(x, where, None)  # float32 images are cast chunk by chunk
        n = x.shape[0]
        out = np.empty((n, scores_shape[1]), dtype=self.dtype)
        for r0 in range(0, n, PREDICT_ROWS):
            h = x[r0 : r0 + PREDICT_ROWS]
            if h.dtype != self.dtype:
                cast = self.pieces[0].buffers.get("cast", h.shape, self.dtype)
                np.copyto(cast, h)
                h = cast
            for piece in self.pieces:
                h = piece.forward(h, False)
            out[r0 : r0 + h.shape[0]] = h
        return out

    def nbytes(self) -> int:
        """Bytes of the reused buffers."""
        return sum(p.buffers.nbytes() for p in self.pieces) + self.loss.buffers.nbytes()

    def __repr__(self) -> str:
        inner = " → ".join(p.describe() for p in self.pieces)
        return f"FusedStep({inner} → {type(self.loss.layer).__name__})"


# ----------------------------------------------------------------------------- planning
def _arch_key(net: Any) -> tuple:
    # Identities of everything a plan depends on; the cached (key, plan) pair keeps every keyed
    # object alive, so an id cannot be recycled while the plan lives.
    return (
        type(net),
        *map(id, net.layers.values()),
        id(net.last_layer),
        *[id(getattr(layer, attr)) for _, layer, attr in net._param_index],
        *map(id, net.params.values()),
        net.weight_decay_lambda,
    )


def _method_overridden(net: Any, base: type) -> str | None:
    for method in ("predict", "loss", "gradient", "weight_decay"):
        if getattr(type(net), method) is not getattr(base, method):
            return method
    return None


def build_plan(net: Any, base: type) -> FusedStep:
    """The :class:`FusedStep` of ``net`` (a ``base`` = ``Sequential`` instance); raises
    :class:`NotFusable` with the reason when the network cannot take the fused path."""
    method = _method_overridden(net, base)
    if method is not None:
        raise NotFusable(f"{type(net).__name__} redefines {method}()")
    seen: set[int] = set()
    pieces: list[Piece] = []
    for name, layer in net.layers.items():
        if id(layer) in seen:
            raise NotFusable(f"layer {name} is used twice")
        seen.add(id(layer))
        spec = getattr(layer, "fused_activation", None)
        if spec is not None and pieces and pieces[-1].absorb(spec, type(layer).__name__):
            continue
        if spec is None and pieces and pieces[-1].absorb_layer(layer):
            continue
        piece = layer.fused_piece() if isinstance(layer, Layer) else None
        if piece is None:
            raise NotFusable(f"{name} ({type(layer).__name__}) declares no fused piece")
        pieces.append(piece)
    loss = net.last_layer.fused_piece() if isinstance(net.last_layer, Layer) else None
    if not isinstance(loss, LossPiece):
        raise NotFusable(f"the loss layer {type(net.last_layer).__name__} declares no fused piece")

    params = [a for piece in pieces for a in piece.param_arrays()]
    names = list(net.params)
    if len(params) != len(names) or any(p is not net.params[k] for p, k in zip(params, names)):
        raise NotFusable("the layers' parameters are not the arrays of net.params")
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1 or not dtypes <= {np.dtype(np.float32), np.dtype(np.float64)}:
        raise NotFusable(f"parameters of dtypes {sorted(map(str, dtypes))} (one of float32/float64 needed)")
    for key, p in zip(names, params):
        if not p.flags.c_contiguous or not p.flags.writeable:
            raise NotFusable(f"parameter {key} is not a writeable C-contiguous array")
    decay_idx = [i for i, (_, _, attr) in enumerate(net._param_index) if attr == "W"]
    return FusedStep(net, pieces, loss, names, params, decay_idx)


def plan_for(net: Any, base: type) -> FusedStep | None:
    """The cached plan of ``net``, rebuilt when its architecture or parameter arrays change;
    ``None`` (and ``net.step_path`` says why) when it cannot be fused."""
    key = _arch_key(net)
    cached = net.__dict__.get(_CACHE_ATTR)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        plan, reason = build_plan(net, base), None
    except NotFusable as exc:
        plan, reason = None, str(exc)
    net.__dict__[_CACHE_ATTR] = (key, plan, reason)
    return plan


def step_path(net: Any, base: type) -> str:
    """``"fused"`` or ``"generic (<reason>)"``: which path ``net.train_step`` takes."""
    plan = plan_for(net, base)
    return "fused" if plan is not None else f"generic ({net.__dict__[_CACHE_ATTR][2]})"


def generic_step(net: Any, x: Any, t: Any, optimizer: Any) -> Any:
    """``gradient`` + ``update`` through the layers: the step of any network. Returns the loss of
    the forward pass that ``gradient`` made (before the update), weight decay included."""
    # Named as the caller knows it; ``gradient`` scans again (the generic path is not the fast one).
    check_finite_batch(x, f"{type(net).__name__}.train_step")
    grads = net.gradient(x, t)
    loss = getattr(net.last_layer, "loss", None)
    if loss is None:  # a loss layer that does not keep its loss: one more forward pass
        loss = net.loss(x, t, train_flg=True)
    else:
        loss = loss + net.weight_decay()
    optimizer.update(net.params, grads)
    return loss


__all__: Sequence[str] = ("FusedStep", "NotFusable", "build_plan", "generic_step", "plan_for", "step_path")

"""``Sequential``: the one container every zerodl network is built on."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from zerodl._validate import check_class_labels, check_distinct_layers, check_finite_batch
from zerodl.gradient import numerical_gradient as _numerical_gradient
from zerodl.kernels import _threads
from zerodl.layers.base import Layer
from zerodl.layers.core import SoftmaxWithLoss
from zerodl.networks.fused import generic_step, plan_for, step_path


class ParamDict(dict):
    """``net.params``: name → the very arrays the layers compute with.

    Assigning ``params["W1"] = new`` copies ``new`` *into* the existing array (after checking its
    shape), so layers and optimizers keep sharing one array; the book's habit of rebinding
    ``params[key]`` keeps working without silently disconnecting the layers.
    """

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in self:
            raise KeyError(f"params: unknown parameter {key!r}; known: {', '.join(self)}")
        target = dict.__getitem__(self, key)
        value = np.asarray(value)
        if value.shape != target.shape:
            raise ValueError(f"params[{key!r}]: expected shape {target.shape}, got {value.shape}")
        if value is not target:
            np.copyto(target, value, casting="same_kind")

    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value


def _auto_names(layers: Iterable[Layer]) -> OrderedDict[str, Layer]:
    counts: dict[str, int] = {}
    named: OrderedDict[str, Layer] = OrderedDict()
    for layer in layers:
        kind = type(layer).__name__
        counts[kind] = counts.get(kind, 0) + 1
        named[f"{kind}{counts[kind]}"] = layer
    return named


class Sequential:
    """A stack of layers ending in a loss layer, with the book's network methods.

    Args:
        layers: layers in forward order, a list (named ``Affine1``, ``Relu1``, … automatically) or a
            mapping name → layer.
        last_layer: the loss layer (default :class:`~zerodl.layers.SoftmaxWithLoss`).
        weight_decay_lambda: L2 weight decay λ: ``0.5 λ ΣW²`` is added to the loss and ``λ W`` to each
            ``dW``, exactly as the book's ``MultiLayerNet`` does.

    Parameters are exposed in :attr:`params` with the book's names: the ``k``-th layer that has a
    ``W`` contributes ``Wk``, ``bk``; a normalisation layer contributes ``gammak``, ``betak`` with
    ``k`` the index of the weight layer before it.
    """

    #: Default batch size of :meth:`accuracy` (``None``: the whole input at once, as the MLPs do).
    accuracy_batch_size: int | None = None

    def __init__(
        self,
        layers: Iterable[Layer] | Mapping[str, Layer],
        last_layer: Layer | None = None,
        weight_decay_lambda: float = 0.0,
    ) -> None:
        self.layers: OrderedDict[str, Layer] = (
            OrderedDict(layers) if isinstance(layers, Mapping) else _auto_names(layers)
        )
        if not self.layers:
            raise ValueError("Sequential: needs at least one layer")
        for name, layer in self.layers.items():
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: {name} is a {type(layer).__name__}, not a zerodl Layer")
        self.last_layer = last_layer if last_layer is not None else SoftmaxWithLoss()
        # One layer object twice would share its caches between two places: wrong gradients.
        check_distinct_layers(self.layers, type(self).__name__, self.last_layer)
        if weight_decay_lambda < 0:
            raise ValueError(f"weight_decay_lambda must be >= 0, got {weight_decay_lambda}")
        self.weight_decay_lambda = float(weight_decay_lambda)
        self._param_index: list[tuple[str, Layer, str]] = self._index_params()
        self.params = ParamDict({name: getattr(layer, attr) for name, layer, attr in self._param_index})

    def _index_params(self) -> list[tuple[str, Layer, str]]:
        index: list[tuple[str, Layer, str]] = []
        k = 0
        for layer in self.layers.values():
            if "W" in layer.param_names:
                k += 1
            for attr in layer.param_names:
                index.append((f"{attr}{max(k, 1)}", layer, attr))
        return index

    # -- the book's methods ------------------------------------------------------------------
    def predict(self, x: np.ndarray, train_flg: bool = False) -> np.ndarray:
        """Scores ``(N, C)`` for input ``x (N, ...)``; ``train_flg`` drives Dropout / BatchNorm.

        In inference mode (``train_flg=False``) a convolutional network on the fused path computes
        its scores as :meth:`accuracy` does: the fused pieces' inference kernels (conv + ReLU + 2x2
        max pooling in one op, no arg-max masks, no kept activations), chunk by chunk, the layers'
        own caches untouched; the layer-by-layer scores to rounding (bit for bit on the NumPy
        backend). Other networks, and training mode, run the layers one by one.
        """
        plan = None if train_flg else self._inference_plan(x)
        if plan is not None:
            return plan.scores(x, f"{type(self).__name__}.predict")
        return self._forward_layers(x, train_flg)

    def _forward_layers(self, x: np.ndarray, train_flg: bool) -> np.ndarray:
        # The book's forward: every layer in turn, each keeping what its backward needs.
        with self._blas_threads():
            for layer in self.layers.values():
                x = layer.forward(x, train_flg) if layer.takes_train_flg else layer.forward(x)
        return x

    def _inference_plan(self, x: Any) -> Any:
        # The fused plan for predict(train_flg=False): convolutional networks (their task-thread
        # kernels are where inference time goes) given a batch of images; anything else (an MLP's
        # single 1-d sample, say) keeps the layer path and its error messages.
        if not (isinstance(x, np.ndarray) and x.ndim == 4 and x.size):
            return None
        if not any(layer.uses_task_threads for layer in self.layers.values()):
            return None
        return plan_for(self, Sequential)

    def _blas_threads(self) -> Any:
        # With convolutions every BLAS call runs on one thread, as in the fused step: an OpenBLAS
        # worker woken by a two-thread product (an Affine) spins and takes a core from the
        # convolutions' task threads (see zerodl.layers.fused.Piece.uses_task_threads).
        if any(layer.uses_task_threads for layer in self.layers.values()):
            return _threads.limited(1)
        return contextlib.nullcontext()

    def weight_decay(self) -> float:
        """The L2 penalty ``Σ 0.5 λ ΣW²`` over the weight matrices (0 when λ = 0)."""
        if not self.weight_decay_lambda:
            return 0
        decay = 0
        for name, _, attr in self._param_index:
            if attr == "W":
                decay += 0.5 * self.weight_decay_lambda * np.sum(self.params[name] ** 2)
        return decay

    #: ``train_flg`` of :meth:`loss` when not given: ``False`` (the book's ``MultiLayerNetExtend``);
    #: the book's ``DeepConvNet.loss`` always runs its Dropout layers in training mode (``True``).
    loss_train_flg: bool = False

    def loss(self, x: np.ndarray, t: np.ndarray, train_flg: bool | None = None) -> Any:
        """Mean loss of batch ``x`` against ``t`` (labels ``(N,)`` or one-hot), plus weight decay.

        ``train_flg`` drives Dropout / BatchNorm; default :attr:`loss_train_flg`. Every layer keeps
        its forward cache, as in the book, so a backward through the layers may follow.
        """
        flg = self.loss_train_flg if train_flg is None else train_flg
        # As the book: the loss runs the layers one by one, so each keeps its forward cache and a
        # backward through them (the book's gradient, also in a user's subclass) follows this very
        # batch; predict's cache-less inference plan is for scores only. A subclass's own predict
        # is honoured.
        overridden = type(self).predict is not Sequential.predict
        y = self.predict(x, flg) if overridden else self._forward_layers(x, flg)
        return self.last_layer.forward(y, t) + self.weight_decay()

    def loss_value(self, x: np.ndarray, t: np.ndarray, train_flg: bool | None = None) -> Any:
        """:meth:`loss`'s value for a batch ``x (N, ...)`` and teacher ``t`` (labels ``(N,)`` or one-hot
        ``(N, C)``), a scalar of the network's dtype, without the layers' forward caches: through the
        fused plan's pieces when the network has one (:attr:`step_path` ``"fused"``), else :meth:`loss`.

        The same Dropout masks are drawn and the same BatchNorm statistics updated as :meth:`loss`
        would (``train_flg`` as there); the value is :meth:`loss`'s to rounding on the Numba backend,
        bit for bit on NumPy. No backward through the layers may follow (they keep no cache of this
        batch): what a training loop wants when it records the loss after an update.
        """
        plan = plan_for(self, Sequential)
        if plan is None:
            return self.loss(x, t, train_flg)
        return plan.loss_value(x, t, self.loss_train_flg if train_flg is None else train_flg)

    def accuracy(self, x: np.ndarray, t: np.ndarray, batch_size: int | None = None) -> float:
        """Fraction of samples whose arg-max score equals the label (``t`` labels or one-hot).

        Evaluates ``batch_size`` samples at a time (default :attr:`accuracy_batch_size`).
        """
        n = np.shape(x)[0] if np.ndim(x) else 0
        if n == 0:
            raise ValueError(f"{type(self).__name__}.accuracy: x is empty")
        batch_size = batch_size or self.accuracy_batch_size or n
        correct = 0
        for start in range(0, n, batch_size):
            y = self._scores(x[start : start + batch_size])
            if start == 0:  # the labels checked as the loss checks them (class count from the scores)
                t = check_class_labels(t, n, y.shape[1], f"{type(self).__name__}.accuracy")
            correct += int(np.sum(np.argmax(y, axis=1) == t[start : start + batch_size]))
        return correct / float(n)

    def _scores(self, x: np.ndarray) -> np.ndarray:
        # Networks on the fused path: their pieces in inference mode, chunk by chunk into reused
        # buffers (no layer caches touched); predict()'s scores to rounding. Others: predict.
        plan = plan_for(self, Sequential)
        if plan is None:
            return self.predict(x, train_flg=False)
        return plan.scores(x, f"{type(self).__name__}.accuracy")

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Backprop gradients ``{name: d loss / d param}`` for the batch (training mode).

        A batch ``x`` holding NaN or ±inf is refused with
        :class:`~zerodl._validate.NonFiniteInputError` (a ValueError naming the samples) before any
        layer runs, so batch-norm statistics and Dropout's random streams stay as they were.
        """
        check_finite_batch(x, f"{type(self).__name__}.gradient")
        with self._blas_threads():
            self.loss(x, t, train_flg=True)
            dout = self.last_layer.backward(1)
            layers = list(self.layers.values())
            for layer in reversed(layers[1:]):
                dout = layer.backward(dout)
            if layers:
                # Nobody reads the gradient of the input: the first layer sets only its parameters'.
                layers[0].backward_params(dout)
        grads: dict[str, np.ndarray] = {}
        for name, layer, attr in self._param_index:
            grad = getattr(layer, "d" + attr)
            if attr == "W" and self.weight_decay_lambda:
                grad = grad + self.weight_decay_lambda * layer.W
            grads[name] = grad
        return grads

    def numerical_gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Central-difference gradients of :meth:`loss` (training mode); slow, for checking only."""

        def loss_at(_: np.ndarray) -> float:
            return float(self.loss(x, t, train_flg=True))

        return {name: _numerical_gradient(loss_at, param) for name, param in self.params.items()}

    def train_step(self, x: np.ndarray, t: np.ndarray, optimizer: Any) -> Any:
        """One training step: forward, loss, backward and ``optimizer``'s update, in place.

        Returns the loss of the forward pass on this batch **before** the update (weight decay
        included), and leaves in :attr:`params` what ``optimizer.update(net.params,
        net.gradient(x, t))`` would (bit for bit on the NumPy backend, to rounding on Numba). A
        network whose layers all declare a fused piece runs the fused step composed from them
        (:mod:`zerodl.networks.fused`: buffers reused across steps, activations fused into the
        Affine/Convolution before them, one update call); others run ``gradient`` + ``update``.
        :attr:`step_path` says which, and why. The step is atomic: a refused batch or an error
        leaves parameters and optimizer untouched. A batch ``x`` holding NaN or ±inf is refused
        (:class:`~zerodl._validate.NonFiniteInputError`, a ValueError naming the samples) before any
        layer runs; :meth:`predict` and :meth:`loss` let NaN through, as NumPy would.
        """
        plan = plan_for(self, Sequential)
        if plan is None:
            return generic_step(self, x, t, optimizer)
        return plan.run(x, t, optimizer)

    @property
    def step_path(self) -> str:
        """``"fused"``, or ``"generic (<reason>)"`` when a layer (or the loss, or a redefined
        method) keeps this network off the fused path of :meth:`train_step`."""
        return step_path(self, Sequential)

    # -- dropout masks ---------------------------------------------------------------------------
    def freeze_dropout(self) -> None:
        """Make every layer with a ``freeze_mask`` (Dropout) reuse the mask of its last training
        forward, so the loss is a deterministic function of the parameters — what a numerical gradient
        check needs: ``net.predict(x, train_flg=True); net.freeze_dropout(); gradient_check(net, x, t)``.

        Raises RuntimeError if such a layer has not run a training forward yet.
        """
        for layer in self.layers.values():
            if hasattr(layer, "freeze_mask"):
                layer.freeze_mask()

    def unfreeze_dropout(self) -> None:
        """Undo :meth:`freeze_dropout`: fresh masks on every training forward again."""
        for layer in self.layers.values():
            if hasattr(layer, "unfreeze_mask"):
                layer.unfreeze_mask()

    # -- non-trainable state (running statistics) ----------------------------------------------
    def _buffer_index(self) -> list[tuple[str, Layer, str]]:
        # Named like params: attribute + index of the weight layer before it ('running_mean1').
        index: list[tuple[str, Layer, str]] = []
        k = 0
        for layer in self.layers.values():
            if "W" in layer.param_names:
                k += 1
            for attr in getattr(layer, "buffer_names", ()):
                index.append((f"{attr}{max(k, 1)}", layer, attr))
        return index

    def buffers(self) -> dict[str, np.ndarray]:
        """Non-trainable state a checkpoint must save with :attr:`params`, by book-style name.

        Collects every layer attribute listed in its ``buffer_names`` (BatchNormalization:
        ``running_mean``, ``running_var``), named after the preceding weight layer's index like the
        parameters: ``{'running_mean1': ..., 'running_var1': ..., ...}``. The values are the live
        arrays (layers update them in place), not copies; a statistic a layer has not created yet
        (lazily, on its first forward) is left out. Restore with :meth:`load_buffers`.
        """
        return {
            name: getattr(layer, attr)
            for name, layer, attr in self._buffer_index()
            if getattr(layer, attr) is not None
        }

    def load_buffers(self, buffers: Mapping[str, Any]) -> None:
        """Copy saved :meth:`buffers` back into the layers (into the existing arrays when present).

        Raises KeyError for a name this network does not have and ValueError for a shape mismatch.
        """
        index = {name: (layer, attr) for name, layer, attr in self._buffer_index()}
        for name, value in buffers.items():
            if name not in index:
                raise KeyError(f"load_buffers: unknown buffer {name!r}; known: {', '.join(index) or 'none'}")
            layer, attr = index[name]
            current = getattr(layer, attr)
            value = np.asarray(value)
            if current is None:
                ref = next((getattr(layer, p) for p in layer.param_names), None)
                dtype = ref.dtype if ref is not None else value.dtype
                setattr(layer, attr, np.array(value, dtype=dtype, copy=True, order="C"))
            elif value.shape != current.shape:
                raise ValueError(f"load_buffers: {name!r} expected shape {current.shape}, got {value.shape}")
            else:
                np.copyto(current, value, casting="same_kind")

    # -- saving and loading (format logic in zerodl.io) ------------------------------------------
    def save_params(self, file_name: str | Any = "params.npz", metadata: Mapping[str, Any] | None = None) -> Any:
        """Save parameters, buffers and architecture to a ``.npz`` file, atomically.

        Departs from the book on purpose: npz (read without pickle) instead of a pickle, and the
        architecture travels with it, so :func:`zerodl.load_network` rebuilds the network.
        """
        from zerodl.io import save_network

        return save_network(self, file_name, metadata)

    def load_params(self, file_name: str | Any = "params.npz", *, strict_dtype: bool = False) -> dict[str, Any]:
        """Load a zerodl ``.npz`` file or a book pickle (``{'W1': ..., ...}``) into this network, in place.

        Names, shapes and dtypes are checked first (see :func:`zerodl.io.load_params`); a pickle
        that would build anything but arrays and plain containers is refused unrun.
        """
        from zerodl.io import load_params

        return load_params(self, file_name, strict_dtype=strict_dtype)

    # -- conveniences --------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        """The parameters' dtype (float64 unless the network was built with ``dtype=float32``)."""
        first = next(iter(self.params.values()), None)
        return first.dtype if first is not None else np.dtype(np.float64)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}("]
        for name, layer in self.layers.items():
            lines.append(f"  ({name}): {layer!r}")
        lines.append(f"  (loss): {self.last_layer!r}")
        if self.weight_decay_lambda:
            lines.append(f"  weight_decay_lambda={self.weight_decay_lambda}")
        lines.append(f"  step_path={self.step_path}")
        lines.append(")")
        return "\n".join(lines)

"""How a layer joins a fused training step: the open protocol between layers and networks.

A network's fused step (:mod:`zerodl.networks.fused`) is composed from the layers it holds, never
from a list of known classes. Each layer answers :meth:`~zerodl.layers.base.Layer.fused_piece`
with a :class:`Piece` — its part of the step — or ``None`` (it cannot join; the network then takes
the generic ``gradient`` + ``update`` path and says so in ``net.step_path``).

A :class:`Piece` computes with the kernels of the active backend into buffers it owns (reused from
step to step while the batch size allows), keeps what its backward needs, and skips the validation
that the layer-by-layer API does on every call (the step validates the batch once, up front).

Elementwise activations declare themselves with an :class:`ActivationSpec`: two kernel ops and
whether their derivative needs the activation's output (ReLU, Sigmoid) or its input (GELU). A
producing piece (Affine, Convolution) may *absorb* the activation that follows it: its bias add and
the activation become one compiled pass over the product's output (the epilogue), and the
activation's backward runs on ``dout`` before the producer's own. An activation that no piece
absorbs runs as an :class:`ActivationPiece` of its own.

Contract of a piece inside a step: ``forward`` may return a buffer the piece owns (valid until its
next ``forward``); ``backward`` may overwrite the ``dout`` it is handed (it belongs to the step), but
leaves its forward's input and output as they were: a piece that folds SGD's update into its
gradient's product (:meth:`Piece.take_sgd_update`) reads its input and its ``dout`` again after the
whole backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import zerodl.kernels as kernels  # noqa: PLR0402 (names the module, not the package: no edge to zerodl/__init__)

#: A :class:`zerodl.layers.base.Layer` (not imported: that module imports this one).
Layer = Any


@dataclass(frozen=True)
class ActivationSpec:
    """An elementwise activation's part in a fused step.

    ``forward_op``: kernel op ``(z, b, out) -> None``: ``z (N, C, ...)`` += ``b (C,)`` in place, then
    ``out = act(z)``; ``backward_op``: kernel op ``(dout, kept, dx) -> None``: ``dx = dout · act'``
    from ``kept``; ``keeps``: ``"output"`` (``kept`` is ``out``, which may then be ``z`` itself) or
    ``"input"`` (``kept`` is the pre-activation ``z``, and ``out`` is a separate buffer).
    """

    forward_op: str
    backward_op: str
    keeps: str = "output"

    def __post_init__(self) -> None:
        if self.keeps not in ("output", "input"):
            raise ValueError(f"ActivationSpec.keeps must be 'output' or 'input', got {self.keeps!r}")


class Buffers:
    """Arrays of ``(rows, *tail)`` reused across calls; a larger batch reallocates them."""

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A C-contiguous ``shape`` array of ``dtype`` (a leading-rows slice of a kept one)."""
        arr = self._arrays.get(name)
        if arr is None or arr.dtype != dtype or arr.shape[1:] != shape[1:] or arr.shape[0] < shape[0]:
            arr = self._arrays[name] = np.empty(shape, dtype=dtype)
        return arr[: shape[0]]

    def nbytes(self) -> int:
        """Bytes held."""
        return sum(a.nbytes for a in self._arrays.values())


class Piece:
    """One layer's part of a fused step (see the module docstring). Subclasses implement
    :meth:`out_shape`, :meth:`forward`, :meth:`backward` and, with parameters, :meth:`grad_arrays`."""

    #: The piece's kernels spread their work over zerodl's own task threads (the convolutions,
    #: :mod:`zerodl.kernels._tasks`) with one BLAS thread per product. A step holding such a piece
    #: runs all its BLAS calls on one thread: an OpenBLAS worker woken by a two-thread product
    #: elsewhere in the step (an Affine) spins for a while afterwards and takes a core from the task
    #: threads (measured: DeepConvNet float32 step 63 ms, 36 ms with the whole step on one BLAS thread).
    uses_task_threads: bool = False

    #: The piece can screen its input for NaN/inf through its linear product (an Affine): a NaN or
    #: ±inf anywhere in a sample makes every entry of that sample's row of ``x @ W`` NaN or ±inf in
    #: IEEE arithmetic (NaN·w = NaN, inf·0 = NaN, inf·w = ±inf, and no sum brings a non-finite term
    #: back), so counting the non-finite entries of the product, before the epilogue (ReLU maps
    #: -inf to 0), finds every bad sample for the price of a scan of ``(N, H)`` instead of
    #: ``(N, D)``. A fused step sets :attr:`screen_product` on its first piece when it can.
    can_screen_product: bool = False

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.buffers = Buffers()
        self.uses_task_threads = bool(getattr(layer, "uses_task_threads", False))
        #: Set by the step: count the product's non-finite entries in training forwards.
        self.screen_product = False
        #: That count, from the last training forward (0 when not screening).
        self.product_nonfinite = 0

    @property
    def name(self) -> str:
        """What the step's repr and errors call this piece."""
        return type(self.layer).__name__

    def param_arrays(self) -> tuple[np.ndarray, ...]:
        """The layer's parameters, the very arrays (``layer.param_names`` order)."""
        return tuple(getattr(self.layer, p) for p in self.layer.param_names)

    def grad_arrays(self) -> tuple[np.ndarray, ...]:
        """Gradients of :meth:`param_arrays` from the last ``backward`` (same order)."""
        return ()

    def take_sgd_update(self, lr: float | None) -> tuple[bool, ...]:
        """Told by the step before a backward: ``lr`` when its update is plain SGD (``W -= lr *
        dW``, no weight decay), else ``None``. A piece that can apply that update to some of its
        parameters itself, in :meth:`apply_sgd_update` (its ``backward`` then need not store their
        gradients), answers which, in :meth:`grad_arrays` order; the step's update call leaves those
        out. Default: none."""
        return ()

    def apply_sgd_update(self) -> None:
        """Apply the SGD update this piece took (:meth:`take_sgd_update`) from its last backward.
        Called by the step once the whole backward pass has succeeded, before the step's update call,
        so that nothing reaches the parameters of a step that fails."""

    def out_shape(self, in_shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        """The output shape for input ``in_shape``; a ValueError naming ``where`` if it does not fit."""
        return in_shape

    def absorb(self, activation: ActivationSpec, name: str) -> bool:
        """Take the following activation (``name``: its layer's name) as this piece's epilogue;
        ``False`` if it cannot."""
        return False

    def absorb_layer(self, layer: Layer) -> bool:
        """Take the following (non-activation) layer into this piece's own fused kernels (a
        Convolution + ReLU takes a 2x2 max pooling); ``False`` if it cannot."""
        return False

    def chain(self, nxt: Piece) -> None:
        """Told by the step which piece follows this one, once the pieces are set up. A piece whose
        training forward can also compute the next piece's product, in the same call onto both cores
        (a Convolution + ReLU + pooling and the Affine after it), keeps it. Default: nothing."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout: np.ndarray, need_dx: bool) -> np.ndarray | None:  # pragma: no cover
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the step's repr."""
        return self.name


class Epilogue:
    """The bias add and (optional) absorbed activation after a producer's product, with the
    buffers it needs: used by the Affine and Convolution pieces."""

    def __init__(self) -> None:
        self.activation: ActivationSpec | None = None
        self.activation_name = ""
        self.kept: np.ndarray | None = None

    def absorb(self, activation: ActivationSpec, name: str) -> bool:
        if self.activation is not None:
            return False
        self.activation, self.activation_name = activation, name
        return True

    def forward(self, z: np.ndarray, b: np.ndarray, buffers: Buffers) -> np.ndarray:
        """``z`` (the product, a buffer the caller owns) → the output: ``act(z + b)``."""
        act = self.activation
        if act is None:
            kernels.get("bias_forward")(z, b, z)
            return z
        if act.keeps == "output":
            kernels.get(act.forward_op)(z, b, z)
            self.kept = z
            return z
        out = buffers.get("epilogue_out", z.shape, z.dtype)
        kernels.get(act.forward_op)(z, b, out)
        self.kept = z
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """The gradient at the product's output, computed in ``dout``'s buffer."""
        if self.activation is not None:
            kernels.get(self.activation.backward_op)(dout, self.kept, dout)
        return dout

    def describe(self) -> str:
        return f" + {self.activation_name}" if self.activation is not None else ""


class ActivationPiece(Piece):
    """An activation that no producer absorbed: its own pass (zero bias) into its own buffers."""

    def __init__(self, layer: Layer, spec: ActivationSpec) -> None:
        super().__init__(layer)
        self.spec = spec
        self.kept: np.ndarray | None = None

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        z = self.buffers.get("z", x.shape, x.dtype)
        np.copyto(z, x)
        zero = self.buffers.get("zero_bias", (x.shape[1],), x.dtype)
        zero[...] = 0
        if self.spec.keeps == "output":
            kernels.get(self.spec.forward_op)(z, zero, z)
            self.kept = z
            return z
        out = self.buffers.get("out", x.shape, x.dtype)
        kernels.get(self.spec.forward_op)(z, zero, out)
        self.kept = z
        return out

    def backward(self, dout: np.ndarray, need_dx: bool) -> np.ndarray | None:
        kernels.get(self.spec.backward_op)(dout, self.kept, dout)
        return dout


class LayerCallPiece(Piece):
    """A layer that joins through its own ``forward``/``backward`` (stateful or random layers,
    Dropout: its masks come from its own random source, in the same order as the layer path).
    Its parameters' gradients are read from the layer (``d`` + name) after ``backward``."""

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        layer = self.layer
        return layer.forward(x, train) if layer.takes_train_flg else layer.forward(x)

    def backward(self, dout: np.ndarray, need_dx: bool) -> np.ndarray | None:
        return self.layer.backward(dout)

    def grad_arrays(self) -> tuple[np.ndarray, ...]:
        return tuple(getattr(self.layer, "d" + p) for p in self.layer.param_names)


class LossPiece:
    """A loss layer's part of a fused step: the loss and its gradient at the scores at once."""

    def __init__(self, layer: Layer) -> None:
        self.layer = layer
        self.buffers = Buffers()

    def loss_and_grad(self, scores: np.ndarray, t: np.ndarray) -> tuple[np.generic, np.ndarray]:
        """``scores (N, C)``, validated teacher ``t`` → ``(loss, d loss / d scores)``."""
        raise NotImplementedError  # pragma: no cover - abstract

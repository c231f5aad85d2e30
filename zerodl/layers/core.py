"""The book's chapter 5 layers: Affine, Relu, Sigmoid, SoftmaxWithLoss (and GELU, not the book's).

Each layer validates its inputs (clear errors naming the layer) and hands the arithmetic to the
kernels of the active backend (:func:`zerodl.kernels.get`). Departures from the book, on purpose:
``backward`` never writes into ``dout``; inputs of the other float precision are converted to the
layer's parameter dtype; integer inputs are refused.
"""

from __future__ import annotations

import numpy as np

import zerodl.kernels as kernels  # noqa: PLR0402 (names the module, not the package: no edge to zerodl/__init__)
from zerodl._validate import (
    as_float_array,
    check_labels,
    check_ndim,
    check_nonempty,
    check_same_shape,
)
from zerodl.backend import get_backend
from zerodl.kernels._tasks import matmul_in_parts
from zerodl.layers.base import Layer
from zerodl.layers.fused import ActivationSpec, Epilogue, LossPiece, Piece


class Affine(Layer):
    """Fully connected layer ``out = x @ W + b``.

    Args:
        W: weights ``(D, H)``, float32 or float64; held by reference (optimizers update it in place).
        b: bias ``(H,)`` of ``W``'s dtype.

    ``forward(x)``: ``x (N, D)`` or ``(N, d1, d2, ...)`` with ``d1·d2·… = D`` (flattened per sample,
    the shape restored by ``backward``) → ``(N, H)``. ``backward(dout (N, H))`` → ``dx`` of ``x``'s
    shape, and sets ``dW (D, H)`` and ``db (H,)``.
    """

    param_names = ("W", "b")

    def __init__(self, W: np.ndarray, b: np.ndarray) -> None:
        W = as_float_array(W, "Affine", "W")
        check_ndim(W, "Affine", "W", (2,), "(D, H)")
        b = as_float_array(b, "Affine", "b", dtype=W.dtype)
        if b.shape != (W.shape[1],):
            raise ValueError(f"Affine: b must have shape ({W.shape[1]},) to match W {W.shape}, got {b.shape}")
        self.W = W
        self.b = b
        self.x: np.ndarray | None = None
        self.original_x_shape: tuple[int, ...] | None = None
        self.dW: np.ndarray | None = None
        self.db: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x (N, ...)`` → ``(N, H)``."""
        where = self._where("forward")
        x = as_float_array(x, where, "x", dtype=self.W.dtype)
        if x.ndim < 2:
            raise ValueError(
                f"{where}: x must have shape (N, {self.W.shape[0]}) (a batch), got shape {x.shape}"
                + ("; for one sample use x[np.newaxis]" if x.ndim == 1 else "")
            )
        check_nonempty(x, where)
        features = int(np.prod(x.shape[1:]))
        if features != self.W.shape[0]:
            raise ValueError(
                f"{where}: x has {features} features per sample (shape {x.shape}) but W expects "
                f"{self.W.shape[0]} (W.shape={self.W.shape})"
            )
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return kernels.get("affine_forward")(self.x, self.W, self.b)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout (N, H)`` → ``dx`` in the forward input's shape; sets ``dW``, ``db``."""
        dx, self.dW, self.db = kernels.get("affine_backward")(self._checked_dout(dout), self.x, self.W)
        return dx.reshape(self.original_x_shape)

    def backward_params(self, dout: np.ndarray) -> None:
        """Sets ``dW``, ``db`` as :meth:`backward` does, without computing ``dx``."""
        _, self.dW, self.db = kernels.get("affine_backward")(self._checked_dout(dout), self.x, self.W, False)

    def fused_piece(self) -> AffinePiece:
        """Joins a fused step as an :class:`AffinePiece` (absorbing a following activation)."""
        return AffinePiece(self)

    def _checked_dout(self, dout: np.ndarray) -> np.ndarray:
        where = self._where("backward")
        self._require_forward(self.x)
        dout = as_float_array(dout, where, "dout", dtype=self.W.dtype)
        check_same_shape(dout, (self.x.shape[0], self.W.shape[1]), where, "dout")
        return dout


_PRODUCT_PROPAGATES: dict[np.dtype, bool] = {}


def product_propagates_nonfinite(dtype: np.dtype) -> bool:
    """Whether ``np.dot`` (NumPy's BLAS) turns every NaN/±inf of ``x`` into non-finite entries of its
    sample's row of ``x @ W`` even where ``W`` is 0, as IEEE arithmetic does; checked once per dtype.

    A BLAS that skips zero terms (old reference-BLAS ``gemm`` did) would let a NaN through a zero
    row of ``W``: then a fused step scans its input instead of screening the product
    (:attr:`zerodl.layers.fused.Piece.can_screen_product`).
    """
    dtype = np.dtype(dtype)
    known = _PRODUCT_PROPAGATES.get(dtype)
    if known is None:
        ok = True
        for n, d, h in ((4, 3, 2), (64, 300, 40)):  # a small product and a blocked one
            x = np.ones((n, d), dtype=dtype)
            x[1, 0], x[2, d // 2], x[3, d - 1] = np.nan, np.inf, -np.inf
            with np.errstate(invalid="ignore"):  # inf * 0 is the point
                z = np.dot(x, np.zeros((d, h), dtype=dtype))
            ok = ok and bool(np.isnan(z[1:4]).all() and (z[0] == 0).all() and (z[4:] == 0).all())
        known = _PRODUCT_PROPAGATES[dtype] = ok
    return known


class AffinePiece(Piece):
    """Affine's part of a fused step: ``np.dot(x, W)`` into a reused buffer, then one compiled
    epilogue (bias, and the absorbed activation if any); backward writes ``dx``, ``dW``, ``db``
    into reused buffers (``dx`` skipped for the first layer). As a step's first piece it can
    screen the batch for NaN/inf through the product (:attr:`Piece.can_screen_product`)."""

    can_screen_product = True

    def __init__(self, layer: Affine) -> None:
        super().__init__(layer)
        self.epilogue = Epilogue()
        self.x: np.ndarray | None = None
        self.x_shape: tuple[int, ...] = ()
        self.dW = np.empty_like(layer.W)
        self.db = np.empty_like(layer.b)
        #: Set by a step whose BLAS runs on one thread (convolutions): see :meth:`_parts`.
        self.product_parts = 1
        #: SGD's learning rate when this piece applies the update of ``W`` itself
        #: (:meth:`take_sgd_update`), else ``None``; the gradient at the product's output kept for it.
        self.sgd_lr: float | None = None
        self._sgd_dout: np.ndarray | None = None
        #: ``(x, z)``: the product ``z`` of the coming forward's input ``x``, computed by the piece
        #: before (:meth:`product_target`), used once.
        self._ready: tuple[np.ndarray, np.ndarray] | None = None
        #: Set by the piece before when it runs this piece's backward products in its own backward
        #: call (:meth:`pending_backward`).
        self.defer_backward = False
        self._pending: tuple | None = None

    #: The piece before may compute this piece's product (:meth:`product_target`).
    takes_product = True

    def product_target(self, n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """``(W, z, parts)`` for the piece before, which computes ``z = x @ W`` in ``parts`` fixed row
        blocks (as :meth:`forward` would) for a batch of ``n``; hand it back with :meth:`take_product`."""
        W = self.layer.W
        return W, self.buffers.get("z", (n, W.shape[1]), W.dtype), self._parts()

    def take_product(self, x: np.ndarray, z: np.ndarray) -> None:
        """The product of :meth:`product_target`, for the forward whose input is ``x`` (that very array)."""
        self._ready = (x, z)

    def pending_backward(self, d: np.ndarray) -> tuple | None:
        """With :attr:`defer_backward`, the backward products this piece left for the piece before,
        when ``d`` is the ``dx`` it returned: ``(dz, W, dx, dW or None, db, parts)``, the arguments of
        ``affine_backward_into`` (``dx`` still to be written); taken once. Else ``None``."""
        pending, self._pending = self._pending, None
        if pending is None or pending[0] is not d:
            return None
        return pending[1]

    def out_shape(self, in_shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        D, H = self.layer.W.shape
        if len(in_shape) < 2:
            raise ValueError(f"{where}: x must be a batch of shape (N, {D}), got shape {in_shape}")
        features = int(np.prod(in_shape[1:]))
        if features != D:
            raise ValueError(
                f"{where}: x has {features} features per sample (shape {in_shape}) but the "
                f"{self.name} layer expects {D}"
            )
        return (in_shape[0], H)

    def absorb(self, activation: ActivationSpec, name: str) -> bool:
        return self.epilogue.absorb(activation, name)

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        W = self.layer.W
        n = x.shape[0]
        self.x_shape = x.shape
        self.x = x.reshape(n, W.shape[0])
        ready, self._ready = self._ready, None
        if ready is not None and ready[0] is x:
            z = ready[1]  # the piece before computed it (take_product)
        else:
            z = self.buffers.get("z", (n, W.shape[1]), W.dtype)
            matmul_in_parts(self.x, W, z, self._parts())
        if train and self.screen_product:
            self.product_nonfinite = kernels.get("count_nonfinite")(z)
        return self.epilogue.forward(z, self.layer.b, self.buffers)

    def backward(self, dout: np.ndarray, need_dx: bool) -> np.ndarray | None:
        dout = self.epilogue.backward(dout)
        W = self.layer.W
        dx = self.buffers.get("dx", self.x.shape, W.dtype) if need_dx else None
        # With SGD, dW's product waits for apply_sgd_update, which folds W's update into it.
        fold = self.sgd_lr is not None
        self._sgd_dout = dout if fold else None
        products = (dout, W, dx, None if fold else self.dW, self.db, self._parts())
        if self.defer_backward and dx is not None:
            # The piece before runs these products in its own backward call (pending_backward).
            out = dx.reshape(self.x_shape)
            self._pending = (out, products)
            return out
        dout, W, dx, dW, db, parts = products
        kernels.get("affine_backward_into")(dout, self.x, W, dx, dW, db, parts)
        return None if dx is None else dx.reshape(self.x_shape)

    def take_sgd_update(self, lr: float | None) -> tuple[bool, ...]:
        # W's update rides on its gradient's product (one BLAS call, beta = 1: see the kernel);
        # b's stays with the step's update call.
        self.sgd_lr = lr
        return (lr is not None, False)

    def apply_sgd_update(self) -> None:
        # W -= lr · xᵀ @ dout from the last backward's factors (x and dout are still as they were:
        # see the piece contract in zerodl.layers.fused).
        kernels.get("affine_sgd_update")(self._sgd_dout, self.x, self.layer.W, self.dW, self.sgd_lr, self._parts())
        self._sgd_dout = None

    def _parts(self) -> int:
        # Row blocks per product on the task threads: only in steps whose BLAS runs on one thread
        # (set by the step), and only on the Numba backend (the NumPy backend keeps the book's
        # whole products, bit for bit).
        return self.product_parts if get_backend() == "numba" else 1

    def grad_arrays(self) -> tuple[np.ndarray, ...]:
        return (self.dW, self.db)

    def describe(self) -> str:
        return f"Affine{self.layer.W.shape}{self.epilogue.describe()}"


class Relu(Layer):
    """``out = max(x, 0)``; ``backward`` passes ``dout`` where ``x > 0`` (any shape)."""

    activation_name = "relu"
    fused_activation = ActivationSpec("relu_bias_forward", "relu_backward_into", keeps="output")

    def __init__(self) -> None:
        self.mask: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Any shape → same shape and dtype."""
        x = as_float_array(x, self._where("forward"), "x")
        out, self.mask = kernels.get("relu_forward")(x)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout`` of the forward shape → ``dx``; ``dout`` itself is left untouched."""
        where = self._where("backward")
        self._require_forward(self.mask)
        dout = as_float_array(dout, where, "dout")
        check_same_shape(dout, self.mask.shape, where, "dout")
        return kernels.get("relu_backward")(dout, self.mask)


class Sigmoid(Layer):
    """``out = 1 / (1 + exp(-x))``; ``dx = dout (1 - out) out`` (any shape)."""

    activation_name = "sigmoid"
    weight_init = "xavier"
    fused_activation = ActivationSpec("sigmoid_bias_forward", "sigmoid_backward_into", keeps="output")

    def __init__(self) -> None:
        self.out: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Any shape → same shape and dtype."""
        x = as_float_array(x, self._where("forward"), "x")
        self.out = kernels.get("sigmoid_forward")(x)
        return self.out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout`` of the forward shape → ``dx``."""
        where = self._where("backward")
        self._require_forward(self.out)
        dout = as_float_array(dout, where, "dout", dtype=self.out.dtype)
        check_same_shape(dout, self.out.shape, where, "dout")
        return kernels.get("sigmoid_backward")(dout, self.out)


class GELU(Layer):
    """GELU, tanh form: ``out = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x³)))`` (any shape).

    Not in the book (a modern activation; Hendrycks & Gimpel 2016). Its derivative needs the
    *input*, so it keeps ``x`` for ``backward`` (and its fused piece keeps the pre-activation).
    """

    activation_name = "gelu"
    fused_activation = ActivationSpec("gelu_bias_forward", "gelu_backward_into", keeps="input")

    def __init__(self) -> None:
        self.x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Any shape → same shape and dtype."""
        self.x = as_float_array(x, self._where("forward"), "x")
        return kernels.get("gelu_forward")(self.x)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout`` of the forward shape → ``dx``."""
        where = self._where("backward")
        self._require_forward(self.x)
        dout = as_float_array(dout, where, "dout", dtype=self.x.dtype)
        check_same_shape(dout, self.x.shape, where, "dout")
        return kernels.get("gelu_backward")(dout, self.x)


class SoftmaxLossPiece(LossPiece):
    """SoftmaxWithLoss in a fused step: one kernel call, the gradient into a reused buffer."""

    def loss_and_grad(self, scores: np.ndarray, t: np.ndarray) -> tuple[np.generic, np.ndarray]:
        dscores = self.buffers.get("dscores", scores.shape, scores.dtype)
        loss = kernels.get("softmax_loss_grad")(scores, t, dscores)
        return loss, dscores


class SoftmaxWithLoss(Layer):
    """Softmax then mean cross-entropy, the book's last layer.

    ``forward(x (N, C), t)`` → scalar loss (of ``x``'s dtype); ``t`` is integer labels ``(N,)`` or
    one-hot rows ``(N, C)``. ``backward(dout=1)`` → ``dx (N, C) = (y - t) / N * dout``. Keeps
    ``loss``, ``y`` (probabilities) and ``t`` as attributes, as the book does.
    """

    def __init__(self) -> None:
        self.loss: np.generic | None = None
        self.y: np.ndarray | None = None
        self.t: np.ndarray | None = None

    def forward(self, x: np.ndarray, t: np.ndarray) -> np.generic:
        """Scores ``x (N, C)`` and teacher ``t`` → mean cross-entropy loss."""
        where = self._where("forward")
        x = as_float_array(x, where, "x")
        check_ndim(x, where, "x", (2,), "(N, C) (a batch of class scores)")
        check_nonempty(x, where)
        self.t = check_labels(t, x.shape[0], x.shape[1], where, x.dtype)
        self.y, self.loss = kernels.get("softmax_loss_forward")(x, self.t)
        return self.loss

    def fused_piece(self) -> SoftmaxLossPiece:
        """Joins a fused step as its loss (:class:`SoftmaxLossPiece`)."""
        return SoftmaxLossPiece(self)

    def backward(self, dout: float = 1) -> np.ndarray:
        """→ ``dx (N, C)``, the gradient of the loss times ``dout``."""
        self._require_forward(self.y)
        if not np.isscalar(dout) and np.ndim(dout) != 0:
            raise ValueError(f"{self._where('backward')}: dout must be a scalar, got shape {np.shape(dout)}")
        return kernels.get("softmax_loss_backward")(self.y, self.t, float(dout))

"""The book's chapter 5 layers: Affine, Relu, Sigmoid, SoftmaxWithLoss.

Each layer validates its inputs (clear errors naming the layer) and hands the arithmetic to the
kernels of the active backend (:func:`zerodl.kernels.get`). Departures from the book, on purpose:
``backward`` never writes into ``dout``; inputs of the other float precision are converted to the
layer's parameter dtype; integer inputs are refused.
"""

from __future__ import annotations

import numpy as np

from zerodl import kernels
from zerodl._validate import (
    as_float_array,
    check_labels,
    check_ndim,
    check_nonempty,
    check_same_shape,
)
from zerodl.layers.base import Layer


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

    def _checked_dout(self, dout: np.ndarray) -> np.ndarray:
        where = self._where("backward")
        self._require_forward(self.x)
        dout = as_float_array(dout, where, "dout", dtype=self.W.dtype)
        check_same_shape(dout, (self.x.shape[0], self.W.shape[1]), where, "dout")
        return dout


class Relu(Layer):
    """``out = max(x, 0)``; ``backward`` passes ``dout`` where ``x > 0`` (any shape)."""

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

    def backward(self, dout: float = 1) -> np.ndarray:
        """→ ``dx (N, C)``, the gradient of the loss times ``dout``."""
        self._require_forward(self.y)
        if not np.isscalar(dout) and np.ndim(dout) != 0:
            raise ValueError(f"{self._where('backward')}: dout must be a scalar, got shape {np.shape(dout)}")
        return kernels.get("softmax_loss_backward")(self.y, self.t, float(dout))

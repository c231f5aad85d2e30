"""The book's chapter 6 regularisation layer: Dropout.

Masks: without ``seed=`` they are the book's ``np.random.rand(*x.shape) > dropout_ratio`` on NumPy's
global state (``np.random.seed`` reproduces the book's masks); with ``seed=`` (int or Generator) they
come from the layer's own :class:`numpy.random.Generator`, independent of the global state. Either
way the numbers are drawn here, in Python, so both backends see the same masks.

Departure from the book, on purpose: ``backward`` never writes into ``dout``.
"""

from __future__ import annotations

import numbers

import numpy as np

import zerodl.kernels as kernels  # noqa: PLR0402 (names the module, not the package: no edge to zerodl/__init__)
from zerodl._random import SeedLike, make_rng, uniform
from zerodl._validate import as_float_array, check_same_shape
from zerodl.layers.base import Layer
from zerodl.layers.fused import LayerCallPiece


class Dropout(Layer):
    """Randomly zero activations during training (the book's ``Dropout``).

    Args:
        dropout_ratio: probability of dropping each activation, in ``[0, 1]``.
        seed: int, :class:`numpy.random.Generator` (used as is, shared) or ``None`` (default):
            NumPy's global random state, drawn with the book's ``np.random.rand(*x.shape)``.
            :attr:`rng` is the Generator, or ``None`` for the global state.

    ``forward(x, train_flg=True)`` (any shape, float32/float64, dtype kept):

    * training: draws ``u ~ U[0, 1)`` of ``x``'s shape (float64, so the masks do not depend on the
      dtype; ``np.random.rand(*x.shape)`` without a seed), keeps ``mask = u > dropout_ratio`` and
      returns ``x * mask`` — **not** rescaled by ``1 / (1 - ratio)``, exactly as the book;
    * inference (``train_flg=False``): returns ``x * (1 - dropout_ratio)``.

    ``backward(dout)`` → ``dout * mask`` (the mask of the last training forward).

    Deterministic masks (for gradient checks, or to replay a mask in a reference computation):
    :meth:`freeze_mask` makes training forwards reuse one mask until :meth:`unfreeze_mask`.
    """

    takes_train_flg = True

    def __init__(self, dropout_ratio: float = 0.5, seed: SeedLike = None) -> None:
        if (
            isinstance(dropout_ratio, bool)
            or not isinstance(dropout_ratio, numbers.Real)
            or not 0.0 <= float(dropout_ratio) <= 1.0
        ):
            raise ValueError(f"Dropout: dropout_ratio must be a number in [0, 1], got {dropout_ratio!r}")
        # A Python float, so ``x * (1 - ratio)`` keeps float32 inputs float32 (NEP 50 weak scalar).
        self.dropout_ratio = float(dropout_ratio)
        self.rng: np.random.Generator | None = make_rng(seed, "Dropout")
        self.mask: np.ndarray | None = None
        self.frozen_mask: np.ndarray | None = None

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        """``x`` (any shape) → same shape and dtype; see the class docstring for the two modes."""
        where = self._where("forward")
        x = as_float_array(x, where, "x")
        if not train_flg:
            return kernels.get("dropout_predict")(x, 1.0 - self.dropout_ratio)
        if self.frozen_mask is not None:
            check_same_shape(self.frozen_mask, x.shape, where, "frozen mask (x's shape changed?)")
            self.mask = self.frozen_mask
            return kernels.get("dropout_forward")(x, self.mask)
        u = uniform(self.rng, x.shape)
        out, self.mask = kernels.get("dropout_mask_forward")(x, u, self.dropout_ratio)
        return out

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout`` of the forward shape → ``dx = dout * mask``; ``dout`` is not modified."""
        where = self._where("backward")
        self._require_forward(self.mask)
        dout = as_float_array(dout, where, "dout")
        check_same_shape(dout, self.mask.shape, where, "dout")
        return kernels.get("dropout_backward")(dout, self.mask)

    def freeze_mask(self, mask: np.ndarray | None = None) -> np.ndarray:
        """Reuse one mask for every training forward until :meth:`unfreeze_mask`; returns it.

        ``mask``: a bool array of the input's shape; default the mask of the last training forward.
        A network's loss then becomes a deterministic function of its parameters, which is what a
        numerical gradient check needs.
        """
        if mask is None:
            if self.mask is None:
                raise RuntimeError("Dropout.freeze_mask: no mask given and no training forward yet")
            mask = self.mask
        mask = np.asarray(mask)
        if mask.dtype != np.bool_:
            raise TypeError(f"Dropout.freeze_mask: mask must be a bool array, got dtype {mask.dtype}")
        self.frozen_mask = np.ascontiguousarray(mask)
        return self.frozen_mask

    def unfreeze_mask(self) -> None:
        """Go back to drawing a fresh mask on every training forward."""
        self.frozen_mask = None

    def fused_piece(self) -> LayerCallPiece:
        """Joins a fused step through its own ``forward``/``backward``, so its masks come from the
        same random source in the same order as on the layer path."""
        return LayerCallPiece(self)

    def _describe(self) -> str:
        return f"dropout_ratio={self.dropout_ratio}"

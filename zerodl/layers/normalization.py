"""The book's chapter 6 BatchNormalization layer.

Departures from the book, on purpose: the running statistics the layer creates lazily are zeros of
the *input's* dtype (the book's are always float64), they are updated **in place** (so a network's
``buffers()`` and a checkpoint keep pointing at the live arrays), inputs are validated with errors
naming the layer, and ``backward`` after an inference-mode forward is an error instead of silently
reusing a stale training cache.
"""

from __future__ import annotations

import numbers

import numpy as np

import zerodl.kernels as kernels  # noqa: PLR0402 (names the module, not the package: no edge to zerodl/__init__)
from zerodl._validate import as_float_array, check_nonempty, check_same_shape
from zerodl.layers.base import Layer
from zerodl.layers.fused import Piece


class BatchNormalization(Layer):
    """Normalise each activation over the batch, then scale by ``gamma`` and shift by ``beta``.

    Args:
        gamma: scale ``(D,)``, float32 or float64 (its dtype is the layer's dtype); held by
            reference, as optimizers update it in place.
        beta: shift ``(D,)``.
        momentum: weight of the old value in the running averages
            (``running = momentum * running + (1 - momentum) * batch_stat``), in ``[0, 1]``.
        running_mean, running_var: ``(D,)`` statistics used at inference. ``None`` (the default, as
            in the book) creates zeros on the first forward. The layer owns these arrays and
            **updates them in place** on every training forward; arrays given here in the layer's
            dtype are used (and written) as they are.

    ``forward(x, train_flg=True)``: ``x (N, D)`` or ``(N, C, H, W)`` with ``C·H·W = D`` (flattened
    per sample, as the book does: one statistic per activation, not per channel) → same shape.
    Training mode uses the batch mean and biased variance and updates the running statistics;
    inference (``train_flg=False``) uses the running statistics. ``backward(dout)`` → ``dx`` of the
    input's shape, and sets ``dgamma`` and ``dbeta`` ``(D,)``.

    ``buffer_names`` lists the non-trainable state a checkpoint must keep (``running_mean``,
    ``running_var``), collected by :meth:`zerodl.Sequential.buffers`.
    """

    param_names = ("gamma", "beta")
    buffer_names = ("running_mean", "running_var")
    takes_train_flg = True

    def __init__(
        self,
        gamma: np.ndarray,
        beta: np.ndarray,
        momentum: float = 0.9,
        running_mean: np.ndarray | None = None,
        running_var: np.ndarray | None = None,
    ) -> None:
        gamma = as_float_array(gamma, "BatchNormalization", "gamma")
        if gamma.ndim != 1 or gamma.size == 0:
            raise ValueError(f"BatchNormalization: gamma must have shape (D,) with D >= 1, got {gamma.shape}")
        d = gamma.shape[0]
        beta = as_float_array(beta, "BatchNormalization", "beta", dtype=gamma.dtype)
        if beta.shape != (d,):
            raise ValueError(f"BatchNormalization: beta must have shape ({d},) to match gamma, got {beta.shape}")
        if (
            isinstance(momentum, bool)
            or not isinstance(momentum, numbers.Real)
            or not 0.0 <= float(momentum) <= 1.0
        ):
            raise ValueError(f"BatchNormalization: momentum must be a number in [0, 1], got {momentum!r}")
        self.gamma = gamma
        self.beta = beta
        # A Python float, so float32 statistics stay float32 (NEP 50 weak scalar), as in the kernels.
        self.momentum = float(momentum)
        self.running_mean = self._check_running(running_mean, "running_mean")
        self.running_var = self._check_running(running_var, "running_var")
        if (self.running_mean is None) != (self.running_var is None):
            raise ValueError("BatchNormalization: give both running_mean and running_var, or neither")
        self.input_shape: tuple[int, ...] | None = None
        self.batch_size: int | None = None
        self.xc: np.ndarray | None = None
        self.xn: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.dgamma: np.ndarray | None = None
        self.dbeta: np.ndarray | None = None

    def _check_running(self, arr: np.ndarray | None, name: str) -> np.ndarray | None:
        if arr is None:
            return None
        arr = as_float_array(arr, "BatchNormalization", name, dtype=self.gamma.dtype)
        if arr.shape != self.gamma.shape:
            raise ValueError(
                f"BatchNormalization: {name} must have shape {self.gamma.shape} to match gamma, got {arr.shape}"
            )
        return arr

    def _flatten(self, x: np.ndarray, where: str, name: str) -> np.ndarray:
        if x.ndim not in (2, 4):
            raise ValueError(
                f"{where}: {name} must have shape (N, D) or (N, C, H, W), got shape {x.shape} ({x.ndim}-d)"
            )
        check_nonempty(x, where, name)
        x2 = x.reshape(x.shape[0], -1)
        d = self.gamma.shape[0]
        if x2.shape[1] != d:
            flat = f", flattened to {x2.shape}" if x.ndim == 4 else ""
            raise ValueError(
                f"{where}: {name} has {x2.shape[1]} features per sample (shape {x.shape}{flat}) "
                f"but gamma has {d}"
            )
        return x2

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        """``x (N, D)`` or ``(N, C, H, W)`` → same shape and the layer's dtype."""
        where = self._where("forward")
        x = as_float_array(x, where, "x", dtype=self.gamma.dtype)
        x2 = self._flatten(x, where, "x")
        if self.running_mean is None:
            # Lazily, as the book, but in the layer's dtype so float32 nets stay float32.
            self.running_mean = np.zeros(self.gamma.shape, dtype=self.gamma.dtype)
            self.running_var = np.zeros(self.gamma.shape, dtype=self.gamma.dtype)
        self.input_shape = x.shape
        if train_flg:
            out, self.xc, self.xn, self.std = kernels.get("batchnorm_forward_train")(
                x2, self.gamma, self.beta, self.running_mean, self.running_var, self.momentum
            )
            self.batch_size = x2.shape[0]
        else:
            out = kernels.get("batchnorm_forward_test")(
                x2, self.gamma, self.beta, self.running_mean, self.running_var
            )
            # The training cache no longer belongs to the last forward: backward must not use it.
            self.xc = self.xn = self.std = None
            self.batch_size = None
        return out.reshape(self.input_shape)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dout`` of the forward shape → ``dx``; sets ``dgamma``, ``dbeta`` ``(D,)``."""
        where = self._where("backward")
        if self.xc is None:
            raise RuntimeError(f"{where} needs a training-mode forward (train_flg=True) first")
        dout = as_float_array(dout, where, "dout", dtype=self.gamma.dtype)
        check_same_shape(dout, self.input_shape, where, "dout")
        dx, self.dgamma, self.dbeta = kernels.get("batchnorm_backward")(
            dout.reshape(dout.shape[0], -1), self.gamma, self.xc, self.xn, self.std
        )
        return dx.reshape(self.input_shape)

    def fused_piece(self) -> BatchNormPiece:
        """Joins a fused step as a :class:`BatchNormPiece`."""
        return BatchNormPiece(self)

    def _describe(self) -> str:
        return f"{self.gamma.shape[0]}, momentum={self.momentum}"


class BatchNormPiece(Piece):
    """BatchNormalization's part of a fused step: its kernels without per-call validation; the
    running statistics are updated in place exactly as the layer's training forward does."""

    def __init__(self, layer: BatchNormalization) -> None:
        super().__init__(layer)
        self.shape: tuple[int, ...] = ()
        self.cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self.dgamma: np.ndarray | None = None
        self.dbeta: np.ndarray | None = None

    def out_shape(self, in_shape: tuple[int, ...], where: str) -> tuple[int, ...]:
        d = self.layer.gamma.shape[0]
        if len(in_shape) not in (2, 4) or int(np.prod(in_shape[1:])) != d:
            raise ValueError(
                f"{where}: BatchNormalization expects (N, {d}) or (N, C, H, W) with C·H·W = {d}, "
                f"got shape {in_shape}"
            )
        return in_shape

    def forward(self, x: np.ndarray, train: bool) -> np.ndarray:
        layer = self.layer
        if layer.running_mean is None:  # lazily, as the layer does
            layer.running_mean = np.zeros(layer.gamma.shape, dtype=layer.gamma.dtype)
            layer.running_var = np.zeros(layer.gamma.shape, dtype=layer.gamma.dtype)
        self.shape = x.shape
        x2 = x.reshape(x.shape[0], -1)
        if train:
            out, xc, xn, std = kernels.get("batchnorm_forward_train")(
                x2, layer.gamma, layer.beta, layer.running_mean, layer.running_var, layer.momentum
            )
            self.cache = (xc, xn, std)
        else:
            out = kernels.get("batchnorm_forward_test")(
                x2, layer.gamma, layer.beta, layer.running_mean, layer.running_var
            )
        return out.reshape(self.shape)

    def backward(self, dout: np.ndarray, need_dx: bool) -> np.ndarray | None:
        xc, xn, std = self.cache
        dx, self.dgamma, self.dbeta = kernels.get("batchnorm_backward")(
            dout.reshape(dout.shape[0], -1), self.layer.gamma, xc, xn, std
        )
        return dx.reshape(self.shape)

    def grad_arrays(self) -> tuple[np.ndarray, ...]:
        return (self.dgamma, self.dbeta)

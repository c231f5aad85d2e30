"""The book's chapter 4 ``TwoLayerNet``: Affine → sigmoid → Affine → softmax, before backprop layers.

The book has two networks named ``TwoLayerNet``: chapter 4's (``ch04/two_layer_net.py``, sigmoid,
trained with the gradient written out by hand and checked with ``numerical_gradient``) and chapter
5's (``ch05/two_layer_net.py``, ReLU, built from layers), which is :class:`zerodl.TwoLayerNet`.
This module is the home of chapter 4's::

    from two_layer_net import TwoLayerNet           # the book, in ch04/
    from zerodl.networks import TwoLayerNetCh4 as TwoLayerNet

It computes with plain NumPy and :mod:`zerodl.functions` (``sigmoid``, ``sigmoid_grad``,
``softmax``, ``cross_entropy_error``), the book's formulas in the book's order, so it gives the
book's numbers bit for bit on either backend (there is no kernel to switch).

Departures from the book, on purpose: ``dtype=`` and ``seed=`` as the other networks (without
``seed`` the weights are ``weight_init_std * np.random.randn(...)`` on NumPy's global state, the
book's calls); teacher data may be integer labels ``(N,)`` as well as one-hot rows (the book's
``gradient`` and ``accuracy`` need one-hot; labels are turned into one-hot rows first, which gives
the same numbers); inputs are validated with clear errors; ``params[key] = new`` copies into the
existing array (as for every zerodl network).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from zerodl._validate import as_float_array, check_finite_batch, check_labels, check_nonempty
from zerodl.functions import cross_entropy_error, sigmoid, sigmoid_grad, softmax
from zerodl.gradient import numerical_gradient as _numerical_gradient
from zerodl.networks._init import SeedLike, two_layer_weights
from zerodl.networks.sequential import ParamDict

__all__ = ["TwoLayerNetCh4"]


class TwoLayerNetCh4:
    """Chapter 4's two-layer net: ``y = softmax(sigmoid(x W1 + b1) W2 + b2)``.

    Args:
        input_size, hidden_size, output_size: layer widths (``W1 (input, hidden)``,
            ``W2 (hidden, output)``, ``b1 (hidden,)``, ``b2 (output,)``).
        weight_init_std: standard deviation of the Gaussian weights (biases start at 0).
        dtype: ``float64`` (the book's, default) or ``float32``.
        seed: int or :class:`numpy.random.Generator` (zerodl's own generator); ``None`` (default):
            ``W1`` then ``W2`` from ``np.random.randn`` on NumPy's global state, as the book.

    Methods (the book's): :meth:`predict`, :meth:`loss`, :meth:`accuracy`,
    :meth:`numerical_gradient` and :meth:`gradient` (the hand-written backward pass with
    ``sigmoid_grad``); :attr:`params` holds ``W1, b1, W2, b2``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        weight_init_std: float = 0.01,
        *,
        dtype: Any = np.float64,
        seed: SeedLike = None,
    ) -> None:
        if isinstance(weight_init_std, bool) or not isinstance(weight_init_std, numbers.Real):
            raise TypeError(f"TwoLayerNetCh4: weight_init_std must be a number, got {weight_init_std!r}")
        # The book's order: W1, b1, W2, b2 (only the weights draw random numbers).
        sizes, dt, W1, b1, W2, b2 = two_layer_weights(
            "TwoLayerNetCh4", input_size, hidden_size, output_size, weight_init_std, dtype, seed)
        self.params = ParamDict(W1=W1, b1=b1, W2=W2, b2=b2)
        self.input_size, self.hidden_size, self.output_size = sizes
        self.config = {
            "input_size": sizes[0], "hidden_size": sizes[1], "output_size": sizes[2],
            "weight_init_std": weight_init_std, "dtype": dt.name,
        }

    @property
    def dtype(self) -> np.dtype:
        """The dtype of the parameters (and of every computation)."""
        return self.params["W1"].dtype

    # -- checks at the edge ---------------------------------------------------------------------
    def _input(self, x: Any, where: str) -> np.ndarray:
        x = as_float_array(x, where, "x", dtype=self.dtype)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(
                f"{where}: x must have shape (N, {self.input_size}) or ({self.input_size},), got {x.shape}"
            )
        check_nonempty(x, where)
        return x

    def _batch(self, x: Any, t: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
        """``x (N, D)`` and ``t`` as one-hot rows ``(N, C)`` of the network's dtype."""
        x = self._input(x, where)
        t = np.asarray(t)
        if x.ndim == 1:  # one sample, as the book's cross_entropy_error reshapes it
            x = x.reshape(1, -1)
            t = t.reshape(1, -1) if t.size == self.output_size else t.reshape(-1)
        t = check_labels(t, x.shape[0], self.output_size, where, self.dtype)
        if t.ndim == 1:
            onehot = np.zeros((x.shape[0], self.output_size), dtype=self.dtype)
            onehot[np.arange(x.shape[0]), t] = 1
            t = onehot
        return x, t

    # -- the book's methods ---------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities: ``x (N, D)`` → ``(N, C)`` (or ``(D,)`` → ``(C,)``)."""
        x = self._input(x, "TwoLayerNetCh4.predict")
        return self._predict(x)

    def _predict(self, x: np.ndarray) -> np.ndarray:
        W1, W2 = self.params["W1"], self.params["W2"]
        b1, b2 = self.params["b1"], self.params["b2"]
        a1 = np.dot(x, W1) + b1
        z1 = sigmoid(a1)
        a2 = np.dot(z1, W2) + b2
        return softmax(a2)

    def loss(self, x: np.ndarray, t: np.ndarray) -> Any:
        """Mean cross-entropy of :meth:`predict` against ``t`` (one-hot ``(N, C)`` or labels ``(N,)``)."""
        x, t = self._batch(x, t, "TwoLayerNetCh4.loss")
        return cross_entropy_error(self._predict(x), t)

    def accuracy(self, x: np.ndarray, t: np.ndarray) -> Any:
        """Fraction of samples whose most probable class is the label (a NumPy float, as the book's)."""
        x, t = self._batch(x, t, "TwoLayerNetCh4.accuracy")
        y = np.argmax(self._predict(x), axis=1)
        return np.sum(y == np.argmax(t, axis=1)) / float(x.shape[0])

    def numerical_gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """Central differences of :meth:`loss` for ``W1, b1, W2, b2`` (the book's; slow: two losses
        per parameter element)."""
        x, t = self._batch(x, t, "TwoLayerNetCh4.numerical_gradient")

        def loss_w(_: np.ndarray) -> Any:
            return cross_entropy_error(self._predict(x), t)

        return {key: _numerical_gradient(loss_w, self.params[key]) for key in ("W1", "b1", "W2", "b2")}

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        """The book's hand-written backward pass: ``dy = (y - t) / N``, ``da1 = sigmoid_grad(a1) · dz1``.

        ``x (N, D)``, ``t`` one-hot ``(N, C)`` or labels ``(N,)`` → ``{W1, b1, W2, b2}`` gradients.
        A batch ``x`` holding NaN or ±inf is refused (:class:`~zerodl._validate.NonFiniteInputError`,
        a ValueError naming the samples); :meth:`loss` and :meth:`predict` let NaN through.
        """
        x, t = self._batch(x, t, "TwoLayerNetCh4.gradient")
        check_finite_batch(x, "TwoLayerNetCh4.gradient")
        W1, W2 = self.params["W1"], self.params["W2"]
        b1, b2 = self.params["b1"], self.params["b2"]
        batch_num = x.shape[0]
        a1 = np.dot(x, W1) + b1
        z1 = sigmoid(a1)
        a2 = np.dot(z1, W2) + b2
        y = softmax(a2)
        dy = (y - t) / batch_num
        grads = {"W2": np.dot(z1.T, dy), "b2": np.sum(dy, axis=0)}
        dz1 = np.dot(dy, W2.T)
        da1 = sigmoid_grad(a1) * dz1
        grads["W1"] = np.dot(x.T, da1)
        grads["b1"] = np.sum(da1, axis=0)
        return {key: grads[key] for key in ("W1", "b1", "W2", "b2")}

    def __repr__(self) -> str:
        return (f"TwoLayerNetCh4(input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"output_size={self.output_size}, dtype={self.dtype.name})")

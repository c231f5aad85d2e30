"""The book's multi-layer perceptrons: ``TwoLayerNet`` (ch. 5) and ``MultiLayerNet`` (ch. 6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zerodl.layers import Affine, Relu, Sigmoid  # noqa: F401  (the book's names, re-exported)
from zerodl.layers.base import ACTIVATIONS as LAYER_ACTIVATIONS
from zerodl.layers.base import Layer
from zerodl.networks._init import (
    SeedLike,
    check_dtype,
    check_size,
    gaussian,
    init_scale,
    make_rng,
    two_layer_weights,
)
from zerodl.networks.sequential import Sequential

#: Activation layers by name: every layer class that sets ``activation_name`` (relu, sigmoid, gelu).
ACTIVATIONS: dict[str, type[Layer]] = LAYER_ACTIVATIONS




class TwoLayerNet(Sequential):
    """Affine → ReLU → Affine → SoftmaxWithLoss, the book's chapter 5 network.

    Args:
        input_size, hidden_size, output_size: layer widths (``W1 (input, hidden)``,
            ``W2 (hidden, output)``).
        weight_init_std: standard deviation of the Gaussian weights (biases start at 0).
        dtype: ``float64`` (the book's, default) or ``float32``.
        seed: int or :class:`numpy.random.Generator`; the same seed gives the same weights,
            independent of ``np.random.seed``. ``None`` (default): ``W1`` then ``W2`` are
            ``weight_init_std * np.random.randn(...)`` on NumPy's global state, the book's calls,
            so ``np.random.seed(0)`` gives the book's weights bit for bit (float32: the same draws,
            cast).
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
        sizes, dt, W1, b1, W2, b2 = two_layer_weights(
            "TwoLayerNet", input_size, hidden_size, output_size, weight_init_std, dtype, seed)
        layers = {
            "Affine1": Affine(W1, b1),
            "Relu1": Relu(),
            "Affine2": Affine(W2, b2),
        }
        super().__init__(layers)
        self.config = {
            "input_size": sizes[0], "hidden_size": sizes[1], "output_size": sizes[2],
            "weight_init_std": weight_init_std, "dtype": dt.name,
        }


class MultiLayerNet(Sequential):
    """Fully connected net: (Affine → activation) × len(hidden_size_list) → Affine → SoftmaxWithLoss.

    Args:
        input_size: features per sample (784 for MNIST).
        hidden_size_list: widths of the hidden layers, e.g. ``[100, 100, 100]``.
        output_size: number of classes.
        activation: ``'relu'`` or ``'sigmoid'``.
        weight_init_std: ``'relu'``/``'he'`` (√(2/n)), ``'sigmoid'``/``'xavier'`` (√(1/n)) or a number.
        weight_decay_lambda: L2 weight decay λ, in the loss and gradients as the book computes it.
        dtype, seed: as for :class:`TwoLayerNet`.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: float | str = "relu",
        weight_decay_lambda: float = 0,
        *,
        dtype: Any = np.float64,
        seed: SeedLike = None,
    ) -> None:
        hidden = [check_size("hidden_size_list entry", h) for h in hidden_size_list]
        sizes = [check_size("input_size", input_size), *hidden, check_size("output_size", output_size)]
        act = ACTIVATIONS.get(str(activation).lower())
        if act is None:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        dt = check_dtype(dtype)
        rng = make_rng(seed, "MultiLayerNet")
        layers: dict[str, Layer] = {}
        for idx in range(1, len(sizes)):
            scale = init_scale(weight_init_std, sizes[idx - 1])
            W = gaussian(rng, (sizes[idx - 1], sizes[idx]), scale, dt)
            layers[f"Affine{idx}"] = Affine(W, np.zeros(sizes[idx], dtype=dt))
            if idx < len(sizes) - 1:
                layers[f"Activation_function{idx}"] = act()
        super().__init__(layers, weight_decay_lambda=weight_decay_lambda)
        self.input_size, self.hidden_size_list, self.output_size = sizes[0], hidden, sizes[-1]
        self.hidden_layer_num = len(hidden)
        self.config = {
            "input_size": sizes[0], "hidden_size_list": hidden, "output_size": sizes[-1],
            "activation": str(activation).lower(), "weight_init_std": weight_init_std,
            "weight_decay_lambda": float(weight_decay_lambda), "dtype": dt.name,
        }

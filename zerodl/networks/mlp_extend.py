"""The book's ``MultiLayerNetExtend`` (chapter 6): MultiLayerNet + Dropout + BatchNormalization."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from zerodl.layers import Affine, BatchNormalization, Dropout
from zerodl.layers.base import Layer
from zerodl.networks._init import SeedLike, check_dtype, check_size, gaussian, init_scale, make_rng
from zerodl.networks.mlp import ACTIVATIONS
from zerodl.networks.sequential import Sequential


def _resolve_dropout_ratio(dropout_ration: Any, dropout_ratio: Any) -> float:
    """The book spells the argument ``dropout_ration``; accept the corrected spelling as well."""
    ratio = dropout_ration
    if dropout_ratio is not None:
        # 0.5 is the book's default, so an unchanged ``dropout_ration`` never conflicts.
        if dropout_ration != 0.5 and dropout_ration != dropout_ratio:
            raise ValueError(
                f"MultiLayerNetExtend: dropout_ration={dropout_ration!r} and dropout_ratio={dropout_ratio!r} "
                "disagree; give only one of them"
            )
        ratio = dropout_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"MultiLayerNetExtend: dropout ratio must be a number in [0, 1], got {ratio!r}")
    return float(ratio)


class MultiLayerNetExtend(Sequential):
    """Fully connected net with optional batch normalization, dropout and weight decay.

    Per hidden layer ``k`` (in the book's order): ``Affinek`` → ``BatchNormk`` (if
    ``use_batchnorm``) → ``Activation_functionk`` → ``Dropoutk`` (if ``use_dropout``); then the
    output ``Affine`` and ``SoftmaxWithLoss``.

    Args:
        input_size: features per sample (784 for MNIST, 64 for the 8×8 digits).
        hidden_size_list: widths of the hidden layers, e.g. ``[100, 100, 100]``.
        output_size: number of classes.
        activation: ``'relu'`` or ``'sigmoid'``.
        weight_init_std: ``'relu'``/``'he'`` (√(2/n)), ``'sigmoid'``/``'xavier'`` (√(1/n)) or a number.
        weight_decay_lambda: L2 weight decay λ (``0.5 λ ΣW²`` in the loss, ``λW`` in the gradient).
        use_dropout: insert a :class:`~zerodl.layers.Dropout` after every hidden activation.
        dropout_ration: drop probability (the book's spelling). ``dropout_ratio`` (keyword) is the
            same thing spelled correctly; giving both with different values (other than the book's
            default 0.5 for ``dropout_ration``) is a ValueError.
        use_batchnorm: insert a :class:`~zerodl.layers.BatchNormalization` after every hidden Affine;
            its parameters are ``gamma1``, ``beta1``, … (ones and zeros) in :attr:`params`.
        dtype: ``float64`` (the book's, default) or ``float32``.
        seed: int or :class:`numpy.random.Generator`. The same seed gives the same weights (the
            same as :class:`MultiLayerNet` with the same seed) and the same dropout masks; all
            Dropout layers draw from one generator, in forward order. ``None`` (default): weights
            from ``np.random.randn`` and masks from ``np.random.rand`` on NumPy's global state, the
            book's calls in the book's order (``np.random.seed`` reproduces the book's numbers).

    Running statistics: :meth:`buffers` returns the live ``{'running_mean1': ..., 'running_var1':
    ..., ...}`` arrays of the BatchNorm layers (created as zeros here, so they exist from the
    start). A checkpoint must save ``net.buffers()`` beside ``net.params`` and restore them with
    :meth:`load_buffers`; otherwise inference after loading uses zero means and variances.

    Gradient checks with dropout: the loss must be a deterministic function of the parameters, so
    freeze the masks first, e.g. ``net.predict(x, train_flg=True); net.freeze_dropout()`` then
    ``gradient_check(net, x, t)``; ``net.unfreeze_dropout()`` afterwards.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size_list: Sequence[int],
        output_size: int,
        activation: str = "relu",
        weight_init_std: float | str = "relu",
        weight_decay_lambda: float = 0,
        use_dropout: bool = False,
        dropout_ration: float = 0.5,
        use_batchnorm: bool = False,
        *,
        dtype: Any = np.float64,
        seed: SeedLike = None,
        dropout_ratio: float | None = None,
    ) -> None:
        hidden = [check_size("hidden_size_list entry", h) for h in hidden_size_list]
        sizes = [check_size("input_size", input_size), *hidden, check_size("output_size", output_size)]
        act = ACTIVATIONS.get(str(activation).lower())
        if act is None:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        ratio = _resolve_dropout_ratio(dropout_ration, dropout_ratio)
        dt = check_dtype(dtype)
        rng = make_rng(seed, "MultiLayerNetExtend")
        # All weights first, in the book's order, so the same seed gives MultiLayerNet's weights.
        weights = [
            gaussian(rng, (sizes[i - 1], sizes[i]), init_scale(weight_init_std, sizes[i - 1]), dt)
            for i in range(1, len(sizes))
        ]
        layers: dict[str, Layer] = {}
        for idx in range(1, len(sizes)):
            layers[f"Affine{idx}"] = Affine(weights[idx - 1], np.zeros(sizes[idx], dtype=dt))
            if idx == len(sizes) - 1:
                break
            if use_batchnorm:
                width = sizes[idx]
                layers[f"BatchNorm{idx}"] = BatchNormalization(
                    np.ones(width, dtype=dt), np.zeros(width, dtype=dt),
                    running_mean=np.zeros(width, dtype=dt), running_var=np.zeros(width, dtype=dt),
                )
            layers[f"Activation_function{idx}"] = act()
            if use_dropout:
                layers[f"Dropout{idx}"] = Dropout(ratio, seed=rng)
        super().__init__(layers, weight_decay_lambda=weight_decay_lambda)
        self.input_size, self.hidden_size_list, self.output_size = sizes[0], hidden, sizes[-1]
        self.hidden_layer_num = len(hidden)
        self.use_dropout = bool(use_dropout)
        self.use_batchnorm = bool(use_batchnorm)
        self.dropout_ratio = ratio
        #: Constructor arguments that rebuild this architecture: ``MultiLayerNetExtend(**net.config)``.
        self.config = {
            "input_size": sizes[0], "hidden_size_list": hidden, "output_size": sizes[-1],
            "activation": str(activation).lower(), "weight_init_std": weight_init_std,
            "weight_decay_lambda": float(weight_decay_lambda), "use_dropout": self.use_dropout,
            "dropout_ration": ratio, "use_batchnorm": self.use_batchnorm, "dtype": dt.name,
        }

"""The book's convolutional networks: ``SimpleConvNet`` (ch. 7) and ``DeepConvNet`` (ch. 8).

Both are :class:`~zerodl.networks.Sequential` stacks, so they share its ``predict``, ``loss``,
``accuracy`` (evaluated 100 samples at a time, as the book's ConvNets do), ``gradient``,
``numerical_gradient``, saving and loading. Parameters carry the book's names: ``W1``/``b1`` for the
first convolution and so on in layer order.

Departures from the book, on purpose:

* no mutable default arguments: ``conv_param=None`` means the book's default dict;
* ``dtype=`` (float64 default, float32); ``seed=`` (int or Generator) gives weights and Dropout
  masks of zerodl's own generators, independent of ``np.random.seed``. Without ``seed=`` the
  weights and masks come from NumPy's global state with the book's calls, in the book's order, so
  ``np.random.seed(0)`` gives the book's numbers;
* sizes are computed from the actual shapes (the book assumes square inputs in ``SimpleConvNet`` and
  hard-codes ``64*4*4`` and the ``pre_node_nums`` in ``DeepConvNet``); with the default arguments the
  shapes and initial scales are exactly the book's;
* a layer stack that does not tile its input raises a ``ValueError`` at construction, naming the
  layer (the book floors silently);
* the book's ``accuracy`` drops the last partial batch; zerodl's counts every sample;
* ``DeepConvNet.loss`` uses ``train_flg=False`` unless told otherwise (the Sequential contract);
  ``gradient`` runs in training mode, as the book's does.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from zerodl.layers import Affine, Convolution, Dropout, Pooling, Relu
from zerodl.layers.base import Layer
from zerodl.networks._init import SeedLike, check_dtype, gaussian, init_scale, make_rng
from zerodl.networks.sequential import Sequential

_CONV_KEYS = ("filter_num", "filter_size", "pad", "stride")

#: The book's default convolution of ``SimpleConvNet``.
SIMPLE_CONV_PARAM: dict[str, int] = {"filter_num": 30, "filter_size": 5, "pad": 0, "stride": 1}

#: The book's six convolutions of ``DeepConvNet`` (the fourth is padded by 2).
DEEP_CONV_PARAMS: tuple[dict[str, int], ...] = (
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 16, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 32, "filter_size": 3, "pad": 2, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
    {"filter_num": 64, "filter_size": 3, "pad": 1, "stride": 1},
)


def _positive(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def _input_dim(where: str, input_dim: Sequence[int]) -> tuple[int, int, int]:
    dims = tuple(input_dim) if isinstance(input_dim, (tuple, list)) else None
    if dims is None or len(dims) != 3:
        raise ValueError(f"{where}: input_dim must be (C, H, W), e.g. (1, 28, 28), got {input_dim!r}")
    return tuple(_positive(f"{where}: input_dim entry", d) for d in dims)  # type: ignore[return-value]


def _conv_param(where: str, name: str, param: Mapping[str, Any] | None, default: Mapping[str, int]) -> dict[str, int]:
    if param is None:
        return dict(default)
    if not isinstance(param, Mapping):
        raise TypeError(f"{where}: {name} must be a dict with keys {', '.join(_CONV_KEYS)}, got {type(param).__name__}")
    unknown = sorted(set(param) - set(_CONV_KEYS))
    if unknown:
        raise ValueError(f"{where}: {name} has unknown keys {unknown}; expected {', '.join(_CONV_KEYS)}")
    merged = {**default, **param}
    return {
        "filter_num": _positive(f"{where}: {name}['filter_num']", merged["filter_num"]),
        "filter_size": _positive(f"{where}: {name}['filter_size']", merged["filter_size"]),
        "pad": _positive(f"{where}: {name}['pad']", merged["pad"], minimum=0),
        "stride": _positive(f"{where}: {name}['stride']", merged["stride"]),
    }


def _child_seed(rng: np.random.Generator | None) -> int | None:
    # Dropout layers get generators of their own, seeded from the network's stream, so a seeded
    # network replays the same masks without sharing one generator between layers. Without a seed
    # (rng None) they draw from NumPy's global state at forward time, as the book's Dropout does,
    # and nothing is drawn here (the book draws only the weights in __init__).
    return None if rng is None else int(rng.integers(0, 2**63 - 1))


class SimpleConvNet(Sequential):
    """conv → ReLU → pool(2×2, stride 2) → affine → ReLU → affine → softmax (the book's ch. 7 net).

    Args:
        input_dim: ``(C, H, W)`` of one input image (MNIST: ``(1, 28, 28)``).
        conv_param: ``{'filter_num', 'filter_size', 'pad', 'stride'}``; ``None`` (or missing keys)
            → the book's ``{'filter_num': 30, 'filter_size': 5, 'pad': 0, 'stride': 1}``.
        hidden_size: width of the hidden affine layer.
        output_size: number of classes.
        weight_init_std: Gaussian scale of every weight (a number, or ``'he'``/``'relu'``,
            ``'xavier'``/``'sigmoid'`` for fan-in scaling); biases start at 0.
        dtype: ``float64`` (default, the book's) or ``float32``.
        seed: int or :class:`numpy.random.Generator`; the same seed gives the same weights.
            ``None`` (default): ``weight_init_std * np.random.randn(...)`` for ``W1``, ``W2``,
            ``W3`` in that order, as the book (``np.random.seed`` reproduces its weights).

    Parameters: ``W1 (FN, C, FS, FS)``, ``b1 (FN,)``, ``W2 (FN·PH·PW, hidden)``, ``b2``,
    ``W3 (hidden, output)``, ``b3``. Input: ``x (N, C, H, W)``.
    """

    accuracy_batch_size = 100

    def __init__(
        self,
        input_dim: Sequence[int] = (1, 28, 28),
        conv_param: Mapping[str, Any] | None = None,
        hidden_size: int = 100,
        output_size: int = 10,
        weight_init_std: float | str = 0.01,
        *,
        dtype: Any = np.float64,
        seed: SeedLike = None,
    ) -> None:
        where = "SimpleConvNet"
        dims = _input_dim(where, input_dim)
        cp = _conv_param(where, "conv_param", conv_param, SIMPLE_CONV_PARAM)
        hidden = _positive(f"{where}: hidden_size", hidden_size)
        output = _positive(f"{where}: output_size", output_size)
        dt = check_dtype(dtype)
        rng = make_rng(seed, "SimpleConvNet")
        fn, fs = cp["filter_num"], cp["filter_size"]

        W1 = gaussian(rng, (fn, dims[0], fs, fs), init_scale(weight_init_std, dims[0] * fs * fs), dt)
        conv = Convolution(W1, np.zeros(fn, dtype=dt), cp["stride"], cp["pad"])
        pool = Pooling(pool_h=2, pool_w=2, stride=2)
        shape = pool.output_shape(conv.output_shape(dims))
        flat = int(np.prod(shape))
        W2 = gaussian(rng, (flat, hidden), init_scale(weight_init_std, flat), dt)
        W3 = gaussian(rng, (hidden, output), init_scale(weight_init_std, hidden), dt)
        layers: OrderedDict[str, Layer] = OrderedDict(
            Conv1=conv,
            Relu1=Relu(),
            Pool1=pool,
            Affine1=Affine(W2, np.zeros(hidden, dtype=dt)),
            Relu2=Relu(),
            Affine2=Affine(W3, np.zeros(output, dtype=dt)),
        )
        super().__init__(layers)
        self.input_dim = dims
        self.config: dict[str, Any] = {
            "input_dim": list(dims), "conv_param": cp, "hidden_size": hidden, "output_size": output,
            "weight_init_std": weight_init_std, "dtype": dt.name,
        }
        json.dumps(self.config)  # fail here, not when saving, if a kwarg is not JSON-able


class DeepConvNet(Sequential):
    """The book's ch. 8 network (over 99 % on MNIST).

    ``conv-relu-conv-relu-pool`` × 3 → affine(hidden) → ReLU → Dropout(0.5) → affine(output) →
    Dropout(0.5) → softmax. Six 3×3 convolutions with 16, 16, 32, 32, 64, 64 filters, stride 1,
    padding 1 except the fourth (padding 2, which makes the affine input ``64·4·4`` for MNIST); max
    pools 2×2 with stride 2. He initialisation: ``sqrt(2 / fan_in)`` with ``fan_in = C·FH·FW`` for
    each convolution and the flattened size / ``hidden_size`` for the affines (the book's
    ``pre_node_nums``).

    Args:
        input_dim: ``(C, H, W)``; the default ``(1, 28, 28)`` is MNIST.
        conv_param_1 … conv_param_6: dicts like the book's (``None`` → the book's default for that
            position; missing keys are filled from it).
        hidden_size, output_size: widths of the two affine layers.
        dtype, seed: as for :class:`SimpleConvNet`; ``seed`` also seeds the Dropout masks. Without
            ``seed`` the eight weights come from ``np.random.randn`` in the book's order and the
            Dropout masks from ``np.random.rand`` at each training forward, as the book's.

    Parameters ``W1``…``W6``/``b1``…``b6`` (convolutions), ``W7``/``b7``, ``W8``/``b8`` (affines).
    """

    accuracy_batch_size = 100
    #: As the book's ``DeepConvNet.loss``: its Dropout layers run in training mode (masks drawn).
    loss_train_flg = True

    def __init__(
        self,
        input_dim: Sequence[int] = (1, 28, 28),
        conv_param_1: Mapping[str, Any] | None = None,
        conv_param_2: Mapping[str, Any] | None = None,
        conv_param_3: Mapping[str, Any] | None = None,
        conv_param_4: Mapping[str, Any] | None = None,
        conv_param_5: Mapping[str, Any] | None = None,
        conv_param_6: Mapping[str, Any] | None = None,
        hidden_size: int = 50,
        output_size: int = 10,
        *,
        dtype: Any = np.float64,
        seed: SeedLike = None,
    ) -> None:
        where = "DeepConvNet"
        dims = _input_dim(where, input_dim)
        given = (conv_param_1, conv_param_2, conv_param_3, conv_param_4, conv_param_5, conv_param_6)
        cps = [
            _conv_param(where, f"conv_param_{i + 1}", p, DEEP_CONV_PARAMS[i]) for i, p in enumerate(given)
        ]
        hidden = _positive(f"{where}: hidden_size", hidden_size)
        output = _positive(f"{where}: output_size", output_size)
        dt = check_dtype(dtype)
        rng = make_rng(seed, "DeepConvNet")

        layers: OrderedDict[str, Layer] = OrderedDict()
        shape: tuple[int, ...] = dims
        for i, cp in enumerate(cps, start=1):
            fn, fs, channels = cp["filter_num"], cp["filter_size"], shape[0]
            W = gaussian(rng, (fn, channels, fs, fs), init_scale("he", channels * fs * fs), dt)
            conv = Convolution(W, np.zeros(fn, dtype=dt), cp["stride"], cp["pad"])
            shape = conv.output_shape(shape)  # type: ignore[arg-type]
            layers[f"Conv{i}"] = conv
            layers[f"Relu{i}"] = Relu()
            if i % 2 == 0:
                pool = Pooling(pool_h=2, pool_w=2, stride=2)
                shape = pool.output_shape(shape)  # type: ignore[arg-type]
                layers[f"Pool{i // 2}"] = pool
        flat = int(np.prod(shape))
        W7 = gaussian(rng, (flat, hidden), init_scale("he", flat), dt)
        W8 = gaussian(rng, (hidden, output), init_scale("he", hidden), dt)
        layers["Affine1"] = Affine(W7, np.zeros(hidden, dtype=dt))
        layers["Relu7"] = Relu()
        layers["Dropout1"] = Dropout(0.5, seed=_child_seed(rng))
        layers["Affine2"] = Affine(W8, np.zeros(output, dtype=dt))
        layers["Dropout2"] = Dropout(0.5, seed=_child_seed(rng))
        super().__init__(layers)
        self.input_dim = dims
        self.config: dict[str, Any] = {
            "input_dim": list(dims),
            **{f"conv_param_{i + 1}": cp for i, cp in enumerate(cps)},
            "hidden_size": hidden, "output_size": output, "dtype": dt.name,
        }
        json.dumps(self.config)

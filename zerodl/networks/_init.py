"""Weight initialisation shared by the networks: seeds, dtypes and the book's scale choices."""

from __future__ import annotations

import numpy as np

from zerodl._random import SeedLike, make_rng, normal
from zerodl.layers.base import ACTIVATIONS

# One seeded-generator helper for the whole package (layers use it too): see zerodl._random.
__all__ = ["SeedLike", "check_dtype", "gaussian", "init_scale", "make_rng"]


def check_dtype(dtype: object) -> np.dtype:
    """``float32`` or ``float64`` (any spelling NumPy understands), else a clear TypeError."""
    try:
        dt = np.dtype(dtype)  # type: ignore[call-overload]
    except TypeError as exc:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def init_scale(weight_init_std: float | str, fan_in: int) -> float:
    """The book's choices: ``'relu'``/``'he'`` → √(2/fan_in), ``'sigmoid'``/``'xavier'`` → √(1/fan_in),
    a number → itself; another activation's name → the scale its layer declares (``weight_init``)."""
    key = str(weight_init_std).lower()
    activation = ACTIVATIONS.get(key)
    if activation is not None:
        key = activation.weight_init
    if key in ("relu", "he"):
        return float(np.sqrt(2.0 / fan_in))
    if key in ("sigmoid", "xavier"):
        return float(np.sqrt(1.0 / fan_in))
    if isinstance(weight_init_std, str):
        names = ", ".join(repr(n) for n in ("he", "xavier", *ACTIVATIONS))
        raise ValueError(f"weight_init_std must be {names} or a number, got {weight_init_std!r}")
    return float(weight_init_std)


def gaussian(
    rng: np.random.Generator | None, shape: tuple[int, ...], scale: float, dtype: np.dtype
) -> np.ndarray:
    """``scale * N(0, 1)`` of ``shape``, drawn in float64 and then cast to ``dtype`` (same seed, same
    weights in both dtypes).

    ``rng=None`` draws ``scale * np.random.randn(*shape)`` from NumPy's global state, the book's
    very expression, so ``np.random.seed(0)`` gives the book's weights bit for bit.
    """
    return (scale * normal(rng, shape)).astype(dtype)


def check_size(name: str, value: object) -> int:
    """A layer width: a positive integer (bools refused), else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def two_layer_weights(owner: str, input_size: int, hidden_size: int, output_size: int,
                      weight_init_std: float, dtype: object, seed: SeedLike):
    """The book's two-layer parameters, drawn in its order (``W1``, then ``W2``; biases zero).

    Returns ``(sizes, dtype, W1 (input, hidden), b1 (hidden,), W2 (hidden, output), b2 (output,))``;
    shared by chapter 4's and chapter 5's ``TwoLayerNet``.
    """
    sizes = [check_size(n, v) for n, v in
             (("input_size", input_size), ("hidden_size", hidden_size), ("output_size", output_size))]
    dt = check_dtype(dtype)
    rng = make_rng(seed, owner)
    W1 = gaussian(rng, (sizes[0], sizes[1]), weight_init_std, dt)
    W2 = gaussian(rng, (sizes[1], sizes[2]), weight_init_std, dt)
    return sizes, dt, W1, np.zeros(sizes[1], dtype=dt), W2, np.zeros(sizes[2], dtype=dt)

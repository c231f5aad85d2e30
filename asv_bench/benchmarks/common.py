"""Shared by every benchmark: parameters, seeded inputs of realistic shapes, the JIT warm-up.

Data are seeded and these definitions are append-only (change a shape and a benchmark's history
stops meaning anything): add new shapes under new names instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

BACKENDS = ["numpy", "numba"]
DTYPES = ["float32", "float64"]
SEED = 20241123

#: Named shapes used across the suite.
MNIST_BATCH = 100  # the book's mini-batch
MLP_LAYER = (100, 784, 50)  # TwoLayerNet's first Affine: x (N, D) @ W (D, H)
WIDE_LAYER = (256, 1000, 1000)  # a hidden layer of the 784-1000-1000-10 MLP
MLP_HIDDEN = (100, 100)  # MultiLayerNet's hidden activations
CONV_ACTIVATION = (100, 30, 24, 24)  # SimpleConvNet's convolution output, batch 100
SCORES = (100, 10)  # class scores of an MNIST batch
PARAM = (784, 100)  # MultiLayerNet's first weight matrix (optimizer updates)


def rng(offset: int = 0) -> np.random.Generator:
    """The suite's generator: same numbers on every run and every machine."""
    return np.random.default_rng(SEED + offset)


def normal(shape: tuple[int, ...], dtype: str, offset: int = 0, scale: float = 1.0) -> np.ndarray:
    """Standard-normal data of ``shape`` in ``dtype`` (drawn in float64, then cast)."""
    return (scale * rng(offset).standard_normal(shape)).astype(dtype)


def mnist_like(n: int, dtype: str, classes: int = 10, offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``x (n, 784)`` in ``[0, 1)`` like normalised MNIST pixels, and integer labels ``(n,)``."""
    g = rng(offset)
    return g.random((n, 784)).astype(dtype), g.integers(0, classes, n)


def warm(fn: Callable[..., Any], *args: Any, calls: int = 2) -> None:
    """Call ``fn`` so numba compiles (or loads from its cache) before anything is timed."""
    for _ in range(calls):
        fn(*args)

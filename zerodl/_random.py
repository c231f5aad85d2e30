"""Where zerodl's random numbers come from: the one seeded-generator helper.

Two sources, chosen by the ``seed=`` a network or a :class:`~zerodl.layers.Dropout` is given:

* ``seed=None`` (the default): NumPy's **global** random state, with the very calls the book makes
  (``np.random.randn(*shape)`` for weights, ``np.random.rand(*shape)`` for dropout masks), in the
  book's order. A book script that starts with ``np.random.seed(0)`` therefore gets the book's
  weights and masks bit for bit.
* ``seed=`` an int or a :class:`numpy.random.Generator`: a generator of zerodl's own (an int seeds a
  fresh ``default_rng``; a Generator is used as is, shared), independent of ``np.random.seed``.

:func:`make_rng` turns a ``seed=`` argument into one of the two (``None`` stands for the global
state); :func:`normal` and :func:`uniform` draw from either. The draws are always float64, so a float32
network gets the same numbers, cast.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SeedLike", "make_rng", "normal", "uniform"]

#: What ``seed=`` accepts everywhere: an int (>= 0), a Generator, or ``None`` (NumPy's global state).
SeedLike = int | np.random.Generator | None


def make_rng(seed: SeedLike, where: str = "seed") -> np.random.Generator | None:
    """The source of random numbers for ``seed``: a Generator, or ``None`` for NumPy's global state.

    ``seed`` is ``None`` (→ ``None``: draw with ``np.random.*`` as the book does), an int ``>= 0``
    (→ ``np.random.default_rng(seed)``) or a Generator (returned as is, so it is shared). Anything
    else — a bool included, which would otherwise pass for the int 0 or 1 — raises ``TypeError``
    naming ``where``; a negative int raises ``ValueError``.
    """
    if seed is None or isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(
            f"{where}: seed must be an int, a numpy Generator or None, got {type(seed).__name__} {seed!r}"
        )
    if seed < 0:
        raise ValueError(f"{where}: seed must be >= 0, got {seed}")
    return np.random.default_rng(int(seed))


def normal(rng: np.random.Generator | None, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float64 numbers of ``shape``: ``np.random.randn(*shape)`` when ``rng`` is
    ``None`` (the book's call, on the global state), else ``rng.standard_normal(shape)``."""
    if rng is None:
        return np.asarray(np.random.randn(*shape), dtype=np.float64)
    return rng.standard_normal(shape)


def uniform(rng: np.random.Generator | None, shape: tuple[int, ...]) -> np.ndarray:
    """Uniform float64 numbers in ``[0, 1)`` of ``shape``: ``np.random.rand(*shape)`` when ``rng`` is
    ``None`` (the book's call, on the global state), else ``rng.random(shape)``."""
    if rng is None:
        return np.asarray(np.random.rand(*shape), dtype=np.float64)
    return rng.random(shape)

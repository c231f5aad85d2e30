"""Numerical differentiation and the chapter 5 gradient check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

#: The book's step for central differences.
H = 1e-4


def numerical_gradient(f: Callable[[np.ndarray], Any], x: np.ndarray, h: float = H) -> np.ndarray:
    """Central-difference gradient of scalar ``f`` at ``x`` (any shape), as the book computes it.

    ``x`` is perturbed in place one element at a time and restored exactly afterwards (also when
    ``f`` raises), so ``f`` may close over an array that *is* ``x`` (a network parameter).
    Returns an array of ``x``'s shape and dtype.

    Raises:
        TypeError: ``x`` is not a float array, or its dtype is too coarse for the step ``h`` (float16
            with the book's ``h = 1e-4``: ``1 + h`` rounds back to ``1``, so every difference is 0 and
            the "gradient" would be silently all zeros); integers cannot be perturbed by ``h`` at all.
        ValueError: ``h`` is not a positive finite number, or ``x`` is read-only (it is perturbed in place).
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"numerical_gradient: x must be a float array, got {type(x).__name__}")
    if x.dtype.kind != "f":
        raise TypeError(f"numerical_gradient: x must be a float array (float64 as the book), got dtype "
                        f"{x.dtype}; an integer array cannot be perturbed by h={h!r}")
    if isinstance(h, bool) or not isinstance(h, (int, float, np.floating)) or not (0 < h < np.inf):
        raise ValueError(f"numerical_gradient: h must be a positive finite number, got {h!r}")
    one = x.dtype.type(1)
    if one + x.dtype.type(h) == one:
        raise TypeError(f"numerical_gradient: dtype {x.dtype} is too coarse for the step h={h!r} "
                        f"(1 + h rounds to 1, so the gradient would come out as zeros); use float64")
    if not x.flags.writeable:
        raise ValueError("numerical_gradient: x is read-only; it is perturbed in place (pass x.copy())")
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        idx = it.multi_index
        tmp_val = x[idx]
        try:
            x[idx] = float(tmp_val) + h
            fxh1 = f(x)
            x[idx] = tmp_val - h
            fxh2 = f(x)
            grad[idx] = (fxh1 - fxh2) / (2 * h)
        finally:
            x[idx] = tmp_val
        it.iternext()
    return grad


def gradient_check(network: Any, x: np.ndarray, t: np.ndarray) -> dict[str, float]:
    """Compare backprop with numerical gradients, parameter by parameter.

    Returns ``{name: max |backprop - numerical|}`` for every entry of ``network.params``. Use small
    inputs (a few samples, float64): the numerical gradient costs two losses per parameter element.
    """
    grad_numerical = network.numerical_gradient(x, t)
    grad_backprop = network.gradient(x, t)
    return {
        key: float(np.max(np.abs(grad_backprop[key] - grad_numerical[key])))
        for key in grad_numerical
    }

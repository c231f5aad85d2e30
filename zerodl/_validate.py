"""Checks at the public boundary, so kernels only ever see clean arrays.

Every message names *where* (``"Affine.forward"``), *what* (``x``), what was expected and what
came. Kernels themselves do not validate: a wrong array reaching a compiled kernel would surface as a
Numba typing traceback, which is exactly what these checks exist to prevent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_float_array(x: Any, where: str, name: str = "x", dtype: np.dtype | None = None) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32/float64 array, or raise a clear TypeError.

    ``dtype`` (optional) is the compute dtype of the layer: a floating input of the other precision
    is converted to it (documented behaviour, like the book's float32 images meeting float64 weights).
    Integer, boolean, complex and object inputs are refused rather than silently converted.
    """
    if not isinstance(x, np.ndarray):
        try:
            x = np.asarray(x)
        except Exception as exc:  # ragged lists and the like
            raise TypeError(f"{where}: {name} must be an array of floats, got {type(x).__name__}") from exc
    if x.dtype not in FLOAT_DTYPES:
        if x.dtype.kind == "f":
            target = dtype or np.dtype(np.float64)
            return np.ascontiguousarray(x, dtype=target)
        hint = " (convert with x.astype(np.float32) / 255 for images)" if x.dtype.kind in "iub" else ""
        raise TypeError(
            f"{where}: {name} must be a float32 or float64 array, got dtype {x.dtype}{hint}"
        )
    if dtype is not None and x.dtype != dtype:
        x = x.astype(dtype)
    return np.ascontiguousarray(x)


def check_ndim(x: np.ndarray, where: str, name: str, ndims: tuple[int, ...], layout: str) -> None:
    """Raise ValueError unless ``x.ndim`` is one of ``ndims``; ``layout`` describes the shape."""
    if x.ndim not in ndims:
        raise ValueError(f"{where}: {name} must have shape {layout}, got shape {x.shape} ({x.ndim}-d)")


def check_nonempty(x: np.ndarray, where: str, name: str = "x") -> None:
    """Raise ValueError on an empty batch (``N == 0``) or zero-sized sample."""
    if x.size == 0:
        raise ValueError(f"{where}: {name} is empty (shape {x.shape}); expected at least one sample")


def check_labels(t: Any, n_samples: int, n_classes: int, where: str, dtype: np.dtype) -> np.ndarray:
    """Validate teacher data for an ``(N, C)`` score matrix; return it in kernel form.

    Accepts integer labels ``(N,)`` in ``[0, C)`` (returned as ``intp``) or one-hot rows ``(N, C)``
    of zeros and a single one (returned in the scores' ``dtype``), the two forms the book accepts.
    Integer labels as a column ``(N, 1)`` (the book's ``ch07/gradient_check.py`` passes ``(1, 1)``)
    are read as ``(N,)``; with ``C == 1`` that shape is one-hot and checked as such.
    """
    t = np.asarray(t)
    if t.dtype == object or t.dtype.kind not in "iubf":
        raise TypeError(f"{where}: t must be integer labels or one-hot rows, got dtype {t.dtype}")
    if t.ndim == 2 and t.shape == (n_samples, 1) and n_classes != 1:
        # A column of labels. The book indexes with it as it is, which is right for N == 1 and
        # broadcasts into an (N, N) block for N > 1; zerodl reads it as the label vector it is.
        t = t.reshape(n_samples)
    if t.ndim == 2 and t.shape == (n_samples, n_classes):
        if not np.all((t == 0) | (t == 1)) or not np.all(t.sum(axis=1) == 1):
            bad = int(np.flatnonzero(~(((t == 0) | (t == 1)).all(axis=1) & (t.sum(axis=1) == 1)))[0])
            raise ValueError(
                f"{where}: one-hot t must hold exactly one 1 per row and 0 elsewhere; "
                f"row {bad} is {t[bad].tolist()}"
            )
        return np.ascontiguousarray(t, dtype=dtype)
    if t.ndim == 1 and t.shape[0] == n_samples:
        if t.dtype.kind == "f":
            raise TypeError(
                f"{where}: label vector t must be integers, got dtype {t.dtype} "
                "(use t.astype(int), or pass one-hot rows of shape (N, C))"
            )
        if t.dtype.kind == "b":
            raise TypeError(f"{where}: label vector t must be integers, got dtype bool")
        if n_samples and (t.min() < 0 or t.max() >= n_classes):
            bad = int(t.min()) if t.min() < 0 else int(t.max())
            raise ValueError(
                f"{where}: label {bad} is out of range for {n_classes} classes (expected 0..{n_classes - 1})"
            )
        return np.ascontiguousarray(t, dtype=np.intp)
    raise ValueError(
        f"{where}: t must be labels of shape ({n_samples},) or one-hot rows of shape "
        f"({n_samples}, {n_classes}) to match x; got shape {t.shape}"
    )


def check_same_shape(a: np.ndarray, expected: tuple[int, ...], where: str, name: str) -> None:
    """Raise ValueError unless ``a.shape == expected`` (e.g. ``dout`` against the forward output)."""
    if a.shape != tuple(expected):
        raise ValueError(f"{where}: {name} must have shape {tuple(expected)}, got {a.shape}")

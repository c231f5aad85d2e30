"""Checks at the public boundary, so kernels only ever see clean arrays.

Every message names *where* (``"Affine.forward"``), *what* (``x``), what was expected and what
came. Kernels themselves do not validate: a wrong array reaching a compiled kernel would surface as a
Numba typing traceback, which is exactly what these checks exist to prevent.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import zerodl.kernels as kernels  # noqa: PLR0402 (names the module, not the package: no edge to zerodl/__init__)

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


def check_class_labels(t: Any, n_samples: int, n_classes: int, where: str) -> np.ndarray:
    """Teacher data for :meth:`Sequential.accuracy`, checked exactly as the loss checks it.

    Accepts what :func:`check_labels` accepts (integer labels ``(N,)`` in ``[0, C)``, one-hot rows
    ``(N, C)``) and returns class indices ``(N,)`` (``intp``). Without this, a label out of range
    (``10`` for ten classes, ``-1``) never equals an arg-max and accuracy silently reports 0.

    Raises:
        ValueError: ``t`` has another number of samples than ``x`` (``"x has N samples but t has M"``),
            a label out of range, a malformed one-hot row, a wrong shape.
        TypeError: float label vectors, strings, objects.
    """
    arr = np.asarray(t)
    if arr.ndim >= 1 and arr.shape[0] != n_samples:
        raise ValueError(f"{where}: x has {n_samples} samples but t has {arr.shape[0]}")
    checked = check_labels(arr, n_samples, n_classes, where, np.dtype(np.float64))
    if checked.ndim == 2 and checked.shape[1] == n_classes and n_classes != 1:
        return np.argmax(checked, axis=1).astype(np.intp)
    return np.ascontiguousarray(checked.reshape(n_samples), dtype=np.intp)


def check_distinct_layers(layers: Any, where: str = "Sequential", last_layer: Any = None) -> None:
    """Refuse a network holding one layer object at two places.

    A layer keeps the cache of its last forward pass (``x``, the mask, ...) and its gradients
    (``dW``, ``db``) in attributes: used twice, the second forward overwrites what the first
    backward needs and the second backward overwrites the first one's ``dW``, so backprop gives
    silently wrong gradients. Use two layer objects (sharing weights needs its own layer).

    Args:
        layers: the layers, as ``{name: layer}`` or a sequence.
        where: names the caller in the message.
        last_layer: optional loss layer, which must not be one of ``layers`` either.

    Raises:
        ValueError: naming both places of the repeated layer.
    """
    items = list(layers.items()) if hasattr(layers, "items") else [
        (f"layer {i}", layer) for i, layer in enumerate(layers)]
    if last_layer is not None:
        items.append(("last_layer", last_layer))
    seen: dict[int, str] = {}
    for name, layer in items:
        first = seen.get(id(layer))
        if first is not None:
            raise ValueError(
                f"{where}: {name} is the same {type(layer).__name__} object as {first}; a layer keeps "
                "its forward cache and gradients, so one object used twice gives wrong gradients "
                "(create a separate layer for each place)"
            )
        seen[id(layer)] = name


def check_param_array(where: str, name: str, param: Any) -> None:
    """A parameter an optimizer (or a fused step) updates in place: refused here, before any kernel.

    Both backends must accept and refuse the same inputs, and a compiled kernel must never see an
    array it cannot type (a Numba ``TypingError`` such as "Cannot modify readonly array"). The
    parameter must be a float32 or float64 ``numpy.ndarray`` (float16 has no compiled arithmetic
    and loses the updates; complex parameters are not trained by the book's optimizers), writeable
    and C-contiguous.

    Raises:
        TypeError: not an ndarray, or another dtype (the message names ``where`` and ``name``).
        ValueError: read-only or non-contiguous.
    """
    if not isinstance(param, np.ndarray):
        raise TypeError(f"{where}: parameter {name!r} must be a numpy array, got {type(param).__name__}")
    if param.dtype not in FLOAT_DTYPES:
        hint = " (float16 has no compiled arithmetic and rounds small updates away: use float32)" \
            if param.dtype == np.float16 else ""
        raise TypeError(f"{where}: parameter {name!r} must be a float32 or float64 array, got dtype "
                        f"{param.dtype}{hint}")
    if not param.flags.writeable:
        raise ValueError(f"{where}: parameter {name!r} is read-only; it is updated in place "
                         "(pass a writeable array, e.g. param.copy())")
    if not param.flags.c_contiguous:
        raise ValueError(f"{where}: parameter {name!r} must be C-contiguous (np.ascontiguousarray), "
                         f"got strides {param.strides}")


def check_grad_array(where: str, name: str, grad: Any, param: np.ndarray) -> np.ndarray:
    """A gradient for ``param``: returned C-contiguous in the parameter's dtype, or refused.

    Real numbers only: a complex gradient is refused (the NumPy kernels refuse it while a compiled
    loop would silently drop its imaginary part); so are booleans, strings and objects. Integer and
    other float dtypes are converted to the parameter's dtype, the same way in both backends.

    Raises:
        TypeError: a complex, boolean or non-numeric gradient.
        ValueError: a shape other than the parameter's.
    """
    arr = np.asarray(grad)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{where}: gradient for {name!r} must hold real numbers, got dtype {arr.dtype}")
    if arr.shape != param.shape:
        raise ValueError(f"{where}: gradient for {name!r} has shape {arr.shape}, parameter has {param.shape}")
    return np.require(arr, dtype=param.dtype, requirements="C")  # keeps a 0-d gradient 0-d


class NonFiniteInputError(ValueError):
    """A batch handed to a training method (``train_step``, ``gradient``) holds NaN or ±inf.

    Raised before anything is changed: parameters, optimizer state and ``iter``, batch-norm running
    statistics and Dropout's random streams are as they were before the call.

    Attributes:
        where: the method that refused the batch (``"TwoLayerNet.train_step"``).
        name: the argument (``"x"``).
        samples: indices (along axis 0) of the samples holding non-finite values, ascending.
        found: per such sample, what it holds: ``{"nan": k, "+inf": k, "-inf": k}`` (non-zero counts).
    """

    def __init__(self, message: str, *, where: str, name: str, samples: list[int],
                 found: dict[int, dict[str, int]]) -> None:
        super().__init__(message)
        self.where = where
        self.name = name
        self.samples = samples
        self.found = found


#: Samples listed by name in a :class:`NonFiniteInputError` message (all are in ``.samples``).
NONFINITE_LISTED = 5


def check_finite_batch(x: Any, where: str, name: str = "x") -> None:
    """Refuse a batch holding NaN or ±inf with a :class:`NonFiniteInputError`.

    ``x``: ``(N, ...)`` samples along axis 0 (a 1-d ``x`` is read as one sample). One compiled pass
    (kernel ``count_nonfinite``) on the happy path; the bad samples are located only when it finds
    something. Integer and boolean arrays cannot hold NaN and pass; what is not a numeric array is
    left to the layers' own checks (they raise the TypeError).
    """
    arr = x if isinstance(x, np.ndarray) else _as_array_or_none(x)
    if arr is None or arr.dtype.kind != "f":
        return
    if arr.dtype not in FLOAT_DTYPES:  # float16, longdouble: rare, converted once for the scan
        arr = arr.astype(np.float64)
    if kernels.get("count_nonfinite")(arr) == 0:
        return
    raise _nonfinite_error(arr, where, name)


def _as_array_or_none(x: Any) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except (TypeError, ValueError, OverflowError):  # ragged lists and the like: the layers raise the clear TypeError
        return None


def _nonfinite_error(arr: np.ndarray, where: str, name: str) -> NonFiniteInputError:
    rows = arr.reshape(1, -1) if arr.ndim < 2 else arr.reshape(arr.shape[0], -1)
    bad_rows = np.flatnonzero(~np.isfinite(rows).all(axis=1))
    found: dict[int, dict[str, int]] = {}
    for i in bad_rows:
        row = rows[i]
        counts = {"nan": int(np.count_nonzero(np.isnan(row))),
                  "+inf": int(np.count_nonzero(row == np.inf)),
                  "-inf": int(np.count_nonzero(row == -np.inf))}
        found[int(i)] = {k: v for k, v in counts.items() if v}
    samples = sorted(found)

    def describe(i: int) -> str:
        what = ", ".join(f"{v} {'NaN' if k == 'nan' else k}" for k, v in found[i].items())
        return f"{name}[{i}] ({what})" if arr.ndim >= 2 else f"{name} ({what})"

    listed = ", ".join(describe(i) for i in samples[:NONFINITE_LISTED])
    more = f" and {len(samples) - NONFINITE_LISTED} more" if len(samples) > NONFINITE_LISTED else ""
    count = f"{len(samples)} of {rows.shape[0]} samples" if arr.ndim >= 2 else "the sample"
    message = (f"{where}: {name} holds NaN or inf in {count}: {listed}{more}; the batch was refused before "
               "anything was updated (clean or drop these samples)")
    return NonFiniteInputError(message, where=where, name=name, samples=samples, found=found)

"""Pictures for the convolutional networks: first-layer filters (ch. 7) and misclassified images (ch. 8).

Both functions draw with matplotlib's object API on an Agg canvas (no pyplot, no global figure
state, no display needed), render the PNG into memory and then write it with
:func:`zerodl._fileio.atomic_write`, so an interrupted run never leaves a truncated picture behind.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zerodl._fileio import atomic_write

__all__ = ["plot_filters", "plot_misclassified"]


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: str | os.PathLike[str]) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    with atomic_write(path, "wb") as f:
        f.write(buffer.getvalue())
    return Path(path)


def _filters_array(W: object, name: str) -> np.ndarray:
    W = np.asarray(W)
    if W.ndim != 4 or W.size == 0 or W.dtype.kind not in "fiu":
        raise ValueError(
            f"plot_filters: {name} must be real filters of shape (FN, C, FH, FW), "
            f"got shape {W.shape} and dtype {W.dtype}"
        )
    return W.astype(np.float64)


def plot_filters(
    W: np.ndarray | Sequence[np.ndarray],
    path: str | os.PathLike[str],
    title: str | None = None,
    labels: Sequence[str] = ("before training", "after training"),
    ncols: int = 8,
) -> Path:
    """Draw first-layer filters as a grid of grayscale images (the book's ch. 7 ``filter_show``).

    Args:
        W: filters ``(FN, C, FH, FW)`` (e.g. ``net.params['W1']``), or a pair ``(W_before,
            W_after)`` of the same shape, drawn side by side as two panels named by ``labels``.
        path: the PNG file to write (parent directories are created).
        title: figure title.
        ncols: filters per row in each panel (the book uses 8).

    As in the book, each filter shows its first input channel, scaled to its own min..max, dark
    for large values (``gray_r``). Returns the path written.
    """
    if isinstance(W, (tuple, list)) and len(W) == 2 and all(np.ndim(w) == 4 for w in W):
        panels = [_filters_array(W[0], "W[0]"), _filters_array(W[1], "W[1]")]
        if panels[0].shape != panels[1].shape:
            raise ValueError(
                f"plot_filters: the two filter sets must have one shape, got {panels[0].shape} and {panels[1].shape}"
            )
    else:
        panels = [_filters_array(W, "W")]
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"plot_filters: ncols must be a positive integer, got {ncols!r}")
    fn = panels[0].shape[0]
    cols = min(ncols, fn)
    rows = math.ceil(fn / cols)
    fig = _figure(width=max(3.0, 0.8 * cols) * len(panels), height=0.8 * rows + (0.8 if title else 0.4) + 0.3)
    subfigs = fig.subfigures(1, len(panels)) if len(panels) > 1 else [fig]
    for i, (sub, filters) in enumerate(zip(subfigs, panels)):
        if len(panels) > 1:
            sub.suptitle(labels[i] if i < len(labels) else f"W[{i}]", fontsize=10)
        axes = sub.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if k < fn:
                ax.imshow(filters[k, 0], cmap="gray_r", interpolation="nearest")
            else:
                ax.axis("off")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _labels(a: object, n: int, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2 and a.shape[0] == n:
        return np.argmax(a, axis=1)
    if a.ndim == 1 and a.shape[0] == n:
        return a.astype(np.intp)
    raise ValueError(f"plot_misclassified: {name} must be labels ({n},) or scores/one-hot ({n}, C), got shape {a.shape}")


def _as_images(x: np.ndarray) -> np.ndarray:
    if x.ndim == 4:
        return x[:, 0] if x.shape[1] == 1 else np.moveaxis(x, 1, -1)
    if x.ndim == 3:
        return x
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side == x.shape[1]:
            return x.reshape(-1, side, side)
    raise ValueError(
        f"plot_misclassified: x must be images (N, C, H, W), (N, H, W) or square flat rows (N, H·W), got shape {x.shape}"
    )


def plot_misclassified(
    x: np.ndarray,
    t: np.ndarray,
    y_pred: np.ndarray,
    path: str | os.PathLike[str],
    max_images: int = 20,
    ncols: int = 10,
    title: str | None = None,
) -> int:
    """Draw the misclassified images as a grid, each titled with predicted and true label (ch. 8).

    Args:
        x: images ``(N, C, H, W)`` (C = 1 or 3), ``(N, H, W)`` or flat square rows ``(N, H·W)``.
        t: true labels ``(N,)`` or one-hot ``(N, classes)``.
        y_pred: predicted labels ``(N,)`` or scores ``(N, classes)`` (arg-max taken), e.g.
            ``net.predict(x)``.
        path: the PNG file to write.
        max_images: draw at most this many (the first ones in order).

    Returns the number of misclassified samples (all of them, not only those drawn). With none,
    the PNG says so.
    """
    x = np.asarray(x)
    n = x.shape[0] if x.ndim else 0
    images = _as_images(x)
    true = _labels(t, n, "t")
    pred = _labels(y_pred, n, "y_pred")
    if isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1:
        raise ValueError(f"plot_misclassified: max_images must be a positive integer, got {max_images!r}")
    wrong = np.flatnonzero(pred != true)
    shown = wrong[:max_images]
    cols = max(1, min(ncols, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig = _figure(width=max(3.0, 1.1 * cols), height=1.3 * rows + 0.6)
    heading = title or f"misclassified: {len(wrong)} of {n} (showing {len(shown)})"
    fig.suptitle(heading, fontsize=10)
    if len(shown) == 0:
        ax = fig.add_subplot(1, 1, 1)
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    else:
        axes = fig.subplots(rows, cols, squeeze=False)
        for k, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if k >= len(shown):
                ax.axis("off")
                continue
            i = shown[k]
            ax.imshow(images[i], cmap="gray_r" if images[i].ndim == 2 else None, interpolation="nearest")
            ax.set_title(f"pred {pred[i]} / true {true[i]}", fontsize=7, color="red")
    fig.tight_layout()
    _save(fig, path)
    return len(wrong)

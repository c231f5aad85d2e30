"""Learning curves and confusion matrices as PNG files (matplotlib, Agg, no pyplot).

matplotlib is imported inside the functions so that ``import zerodl`` and the CLI start fast. The
figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly, never through
``pyplot``: no global figure state, no GUI backend, safe in threads and on headless machines. Each
PNG is rendered into memory first and then written with :func:`zerodl._fileio.atomic_write`, so an
existing plot is only ever replaced by a complete one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zerodl._fileio import atomic_write
from zerodl.util import smooth_curve  # the book's (Kaiser window); re-exported here for old imports

PathLike = str | os.PathLike[str]


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save_png(fig: Any, path: PathLike) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    path = Path(path)
    with atomic_write(path, "wb") as f:
        f.write(buf.getbuffer())
    return path


def plot_learning_curves(
    train_loss_list: Sequence[float],
    train_acc_list: Sequence[float],
    test_acc_list: Sequence[float],
    path: PathLike,
    *,
    iter_per_epoch: float | None = None,
    epoch_iterations: Sequence[int] | None = None,
    title: str | None = None,
) -> Path:
    """Write a two-panel PNG: training loss (per iteration, with a smoothed line) and train/test
    accuracy per epoch.

    Args:
        train_loss_list, train_acc_list, test_acc_list: the Trainer's lists (or the book's).
        path: PNG file to write (atomically).
        iter_per_epoch: when given, the loss axis is in epochs instead of iterations.
        epoch_iterations: the iteration (1-based count of updates) at which each accuracy was
            measured; by default they are plotted at epochs 1, 2, ... .
        title: figure title.

    Returns:
        The path written.
    """
    loss = np.asarray(train_loss_list, dtype=np.float64)
    train_acc = np.asarray(train_acc_list, dtype=np.float64)
    test_acc = np.asarray(test_acc_list, dtype=np.float64)
    if train_acc.shape != test_acc.shape:
        raise ValueError(
            f"plot_learning_curves: {train_acc.size} train accuracies but {test_acc.size} test accuracies"
        )
    fig = _new_figure(10, 4)
    ax_loss, ax_acc = fig.subplots(1, 2)

    scale = float(iter_per_epoch) if iter_per_epoch else 1.0
    steps = np.arange(1, loss.size + 1) / scale
    if loss.size:
        ax_loss.plot(steps, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="per iteration")
        ax_loss.plot(steps, smooth_curve(loss), color="tab:blue",
                     linewidth=1.8, label="smoothed")
        ax_loss.legend(loc="upper right")
    ax_loss.set_xlabel("epoch" if iter_per_epoch else "iteration")
    ax_loss.set_ylabel("training loss")
    ax_loss.set_title("loss")
    ax_loss.grid(True, alpha=0.3)

    if epoch_iterations is not None:
        if len(epoch_iterations) != train_acc.size:
            raise ValueError("plot_learning_curves: epoch_iterations must have one entry per accuracy")
        x_acc = np.asarray(epoch_iterations, dtype=np.float64) / scale
    else:
        x_acc = np.arange(1, train_acc.size + 1, dtype=np.float64)
    if train_acc.size:
        ax_acc.plot(x_acc, train_acc, marker="o", markersize=3, label="train")
        ax_acc.plot(x_acc, test_acc, marker="s", markersize=3, linestyle="--", label="test")
        ax_acc.legend(loc="lower right")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0.0, 1.0)
    ax_acc.set_title("accuracy")
    ax_acc.grid(True, alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save_png(fig, path)


def plot_trainer(trainer: Any, path: PathLike, title: str | None = None) -> Path:
    """:func:`plot_learning_curves` from a :class:`~zerodl.trainer.Trainer` after (or during) training.

    The loss axis is in epochs and each accuracy is placed at the iteration it was measured.
    """
    history = getattr(trainer, "history", None) or []
    iterations = [h["iteration"] for h in history] if len(history) == len(trainer.train_acc_list) else None
    return plot_learning_curves(
        trainer.train_loss_list, trainer.train_acc_list, trainer.test_acc_list, path,
        iter_per_epoch=trainer.iter_per_epoch, epoch_iterations=iterations, title=title,
    )


def plot_confusion_matrix(
    cm: np.ndarray | Sequence[Sequence[int]],
    path: PathLike,
    *,
    class_names: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Write a confusion matrix (rows: true class, columns: predicted) as a PNG heat map with counts.

    Returns:
        The path written.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] == 0:
        raise ValueError(f"plot_confusion_matrix: cm must be a square (C, C) matrix, got shape {cm.shape}")
    n = cm.shape[0]
    names = [str(c) for c in (class_names if class_names is not None else range(n))]
    if len(names) != n:
        raise ValueError(f"plot_confusion_matrix: {len(names)} class names for {n} classes")
    size = max(4.0, 0.5 * n + 2)
    fig = _new_figure(size + 1, size)
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(n), labels=names)
    ax.set_yticks(range(n), labels=names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = cm.max() / 2 if cm.size and cm.max() > 0 else 0
    if n <= 30:  # counts are unreadable beyond that
        for i in range(n):
            for j in range(n):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if cm[i, j] > threshold else "black")
    ax.set_title(title or "confusion matrix")
    return _save_png(fig, path)


__all__ = ["plot_confusion_matrix", "plot_learning_curves", "plot_trainer", "smooth_curve"]

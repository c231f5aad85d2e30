"""Batch normalization vs none (the book's §6.3, ``ch06/batch_norm_test.py``).

For several weight scales (the book: 16 values from 1 down to 1e-4), two
``MultiLayerNetExtend(input, [100]*5, 10)`` nets with the same initial weights, one with
``use_batchnorm=True``, trained with SGD(lr=0.01), batch 100, on 1000 training samples for 20
epochs, the same batches for both; training (and test) accuracy per epoch.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from zerodl.experiments._common import (
    ExperimentResult,
    Progress,
    backend_context,
    format_table,
    load_data,
    new_figure,
    save_figure,
    train,
)
from zerodl.networks import MultiLayerNetExtend
from zerodl.optimizer import SGD


def run(
    out: str | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    backend: str | None = None,
    dataset: str = "digits",
    data_dir: str | None = None,
    scales: list[float] | None = None,
    epochs: int | None = None,
    train_size: int = 1000,
    progress: bool = True,
) -> ExperimentResult:
    """Accuracy curves with and without batch norm for each weight scale."""
    start = time.perf_counter()
    if scales is None:
        scales = [float(s) for s in (np.logspace(0, -4, 3) if quick else np.logspace(0, -4, 16))]
    epochs = epochs or (3 if quick else 20)
    hidden = [20, 20] if quick else [100] * 5
    with backend_context(backend):
        data = load_data(dataset, seed, data_dir)
        x, t = data.x_train[:train_size], data.t_train[:train_size]
        bar = Progress("batchnorm", len(scales), progress)
        results: dict[float, dict[str, Any]] = {}
        for k, scale in enumerate(scales):
            runs = {}
            for use_bn in (True, False):
                net = MultiLayerNetExtend(data.input_size, hidden, 10, weight_init_std=scale,
                                          use_batchnorm=use_bn, seed=np.random.default_rng([seed, k]))
                runs["bn" if use_bn else "plain"] = train(
                    net, SGD(lr=0.01), x, t, batch_size=100, epochs=epochs,
                    rng=np.random.default_rng([seed, k, 3]), x_test=data.x_test, t_test=data.t_test,
                    record_loss=False,
                )
            results[scale] = runs
            bar.step(f"w={scale:.3g}: train acc with BN {runs['bn'].train_acc[-1]:.3f}, "
                     f"without {runs['plain'].train_acc[-1]:.3f}")

    rows = [[s, r["bn"].train_acc[-1], r["plain"].train_acc[-1], r["bn"].test_acc[-1], r["plain"].test_acc[-1]]
            for s, r in results.items()]
    table = format_table(
        ["weight scale", "train acc (BN)", "train acc (no BN)", "test acc (BN)", "test acc (no BN)"],
        rows,
        title=f"Batch normalization: {data.name}, {len(x)} training samples, MultiLayerNetExtend("
              f"{data.input_size}, {hidden}, 10), SGD lr 0.01, batch 100, {epochs} epochs",
    )
    figure = save_figure(_plot(results), out) if out else None
    data_out = {s: {k: {"train_acc": h.train_acc, "test_acc": h.test_acc} for k, h in r.items()}
                for s, r in results.items()}
    return ExperimentResult("batchnorm", table, figure, data_out, time.perf_counter() - start)


def _plot(results: dict[float, dict[str, Any]]) -> Any:
    from matplotlib.ticker import MaxNLocator

    n = len(results)
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = new_figure(3.2 * cols, 2.6 * rows)
    for i, (scale, runs) in enumerate(results.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        epochs = np.arange(len(runs["bn"].train_acc))
        ax.plot(epochs, runs["bn"].train_acc, label="Batch Normalization", markevery=2)
        ax.plot(epochs, runs["plain"].train_acc, linestyle="--", label="Normal (without BatchNorm)",
                markevery=2)
        ax.set_title(f"W: {scale:.3g}", fontsize=9)
        ax.set_ylim(0, 1.0)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if i % cols:
            ax.set_yticks([])
        else:
            ax.set_ylabel("train accuracy", fontsize=8)
        if i >= n - cols:
            ax.set_xlabel("epochs", fontsize=8)
        if i == n - 1:
            ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig

"""Overfitting and its cures (the book's §6.4, ``ch06/overfit_weight_decay.py`` and
``ch06/overfit_dropout.py``).

A deep net (``MultiLayerNetExtend(input, [100]*6, 10)``) on only 300 training samples, SGD(lr=0.01),
batch 100, 300 epochs (the book's dropout run), four ways: plain, weight decay (λ = 0.1, the book's), dropout (ratio 0.2,
the book's), and both. Same initial weights and the same batches for all four; train vs test
accuracy per epoch. The gap between the two curves is the overfitting.
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
    train_size: int = 300,
    epochs: int | None = None,
    weight_decay_lambda: float = 0.1,
    dropout_ratio: float = 0.2,
    progress: bool = True,
) -> ExperimentResult:
    """Train the four configurations on the same small subset; return accuracy curves."""
    start = time.perf_counter()
    epochs = epochs or (5 if quick else 300)
    hidden = [20, 20] if quick else [100] * 6
    configs = {
        "no regularisation": (0.0, False),
        f"weight decay λ={weight_decay_lambda:g}": (weight_decay_lambda, False),
        f"dropout {dropout_ratio:g}": (0.0, True),
        "weight decay + dropout": (weight_decay_lambda, True),
    }
    with backend_context(backend):
        data = load_data(dataset, seed, data_dir)
        x, t = data.x_train[:train_size], data.t_train[:train_size]
        bar = Progress("overfit", len(configs), progress)
        results = {}
        for name, (lam, use_dropout) in configs.items():
            net = MultiLayerNetExtend(data.input_size, hidden, 10, weight_decay_lambda=lam,
                                      use_dropout=use_dropout, dropout_ratio=dropout_ratio, seed=seed)
            results[name] = train(net, SGD(lr=0.01), x, t, batch_size=100, epochs=epochs,
                                  rng=np.random.default_rng([seed, 4]), x_test=data.x_test,
                                  t_test=data.t_test, record_loss=False)
            h = results[name]
            bar.step(f"{name}: train {h.train_acc[-1]:.3f}, test {h.test_acc[-1]:.3f}")
    rows = [[name, h.train_acc[-1], h.test_acc[-1], h.train_acc[-1] - h.test_acc[-1], max(h.test_acc)]
            for name, h in results.items()]
    table = format_table(
        ["configuration", "train acc", "test acc", "gap", "best test acc"],
        rows,
        title=f"Overfitting: {data.name}, {len(x)} training samples, MultiLayerNetExtend({data.input_size}, "
              f"{hidden}, 10), SGD lr 0.01, batch 100, {epochs} epochs",
    )
    figure = save_figure(_plot(results, len(x)), out) if out else None
    return ExperimentResult("overfit", table, figure,
                            {k: {"train_acc": h.train_acc, "test_acc": h.test_acc} for k, h in results.items()},
                            time.perf_counter() - start)


def _plot(results: dict[str, Any], n_train: int) -> Any:
    fig = new_figure(11, 7.5)
    for i, (name, h) in enumerate(results.items()):
        ax = fig.add_subplot(2, 2, i + 1)
        epochs = np.arange(len(h.train_acc))
        ax.plot(epochs, h.train_acc, marker="o", markevery=max(len(epochs) // 10, 1), label="train")
        ax.plot(epochs, h.test_acc, marker="s", markevery=max(len(epochs) // 10, 1), label="test")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{name}: gap {h.train_acc[-1] - h.test_acc[-1]:.3f}", fontsize=10)
        ax.set_xlabel("epochs")
        ax.set_ylabel("accuracy")
        ax.legend(loc="lower right")
    fig.suptitle(f"Overfitting on {n_train} training samples and its cures")
    fig.tight_layout()
    return fig

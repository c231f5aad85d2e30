"""Weight initialisation (the book's §6.2): std 0.01 vs Xavier vs He.

Part 1 follows ``ch06/weight_init_activation_histogram.py``: 1000 random inputs of 100 features
through five Affine(100→100, no bias) + activation layers; a histogram of each layer's
activations per initialisation. Part 2 follows ``ch06/weight_init_compare.py``:
``MultiLayerNet(input, [100]*4, 10)`` with the three initialisations, SGD(lr=0.01), batch 128,
the same batches for all three; loss curves.
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
    smooth_curve,
    train,
)
from zerodl.layers import Affine, Relu, Sigmoid
from zerodl.networks import MultiLayerNet
from zerodl.networks._init import init_scale
from zerodl.optimizer import SGD

#: label → ``weight_init_std`` as MultiLayerNet understands it.
INITS = {"std=0.01": 0.01, "Xavier": "xavier", "He": "he"}


def activations(init: float | str, activation: str = "relu", *, layers: int = 5, nodes: int = 100,
                samples: int = 1000, seed: int = 0) -> list[np.ndarray]:
    """The outputs of each of ``layers`` Affine + activation layers for Gaussian inputs."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((samples, nodes))
    act = {"relu": Relu, "sigmoid": Sigmoid}[activation]
    outs = []
    for _ in range(layers):
        W = init_scale(init, nodes) * rng.standard_normal((nodes, nodes))
        x = act().forward(Affine(W, np.zeros(nodes)).forward(x))
        outs.append(x)
    return outs


def run(
    out: str | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    backend: str | None = None,
    dataset: str = "digits",
    data_dir: str | None = None,
    activation: str = "relu",
    iterations: int | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Histograms and loss curves; ``iterations`` defaults to the book's 2000 (60 with ``quick``)."""
    if activation not in ("relu", "sigmoid"):
        raise ValueError(f"activation must be 'relu' or 'sigmoid', got {activation!r}")
    start = time.perf_counter()
    iterations = iterations or (60 if quick else 2000)
    with backend_context(backend):
        hists = {label: activations(init, activation, samples=200 if quick else 1000, seed=seed)
                 for label, init in INITS.items()}
        data = load_data(dataset, seed, data_dir)
        hidden = [20, 20] if quick else [100, 100, 100, 100]
        nets = {label: MultiLayerNet(data.input_size, hidden, 10, activation=activation,
                                     weight_init_std=init, seed=seed)
                for label, init in INITS.items()}
        # Every initialisation draws its batches from a generator seeded alike: the same batches.
        bar = Progress("init", len(INITS), progress)
        losses: dict[str, list[float]] = {}
        for label, net in nets.items():
            losses[label] = train(net, SGD(lr=0.01), data.x_train, data.t_train, batch_size=128,
                                  iterations=iterations, rng=np.random.default_rng([seed, 2])).loss
            bar.step(f"{label}: loss {smooth_curve(losses[label])[-1]:.3f}")
        test_acc = {label: net.accuracy(data.x_test, data.t_test) for label, net in nets.items()}

    rows = []
    for label, outs in hists.items():
        tail = losses[label][-max(len(losses[label]) // 10, 1):]
        rows.append([label, *[float(np.std(a)) for a in outs], float(np.mean(tail)), test_acc[label]])
    table = format_table(
        ["init", *[f"std act L{k}" for k in range(1, 6)], f"{data.name}: loss (last 10%)", "test acc"],
        rows,
        title=f"Weight init with {activation}: activation spread per layer (1000 × 100 Gaussian inputs) | "
              f"{data.name}: MultiLayerNet({data.input_size}, {hidden}, 10), SGD lr 0.01, {iterations} iterations",
    )
    figure = save_figure(_plot(hists, losses, activation, data.name), out) if out else None
    return ExperimentResult("init", table, figure, {"activations_std": {r[0]: r[1:6] for r in rows},
                                                    "losses": losses, "test_acc": test_acc},
                            time.perf_counter() - start)


def _plot(hists: dict[str, list[np.ndarray]], losses: dict[str, list[float]], activation: str,
          dataset: str) -> Any:
    fig = new_figure(13, 9)
    grid = fig.add_gridspec(4, 5)
    for r, (label, outs) in enumerate(hists.items()):
        for k, a in enumerate(outs):
            ax = fig.add_subplot(grid[r, k])
            ax.hist(a.ravel(), 30, range=(0, 1))
            ax.set_title(f"{label}: layer {k + 1}", fontsize=8)
            ax.tick_params(labelsize=6)
            if k:
                ax.set_yticks([])
    ax = fig.add_subplot(grid[3, :])
    for label, values in losses.items():
        curve = smooth_curve(values)
        ax.plot(np.arange(len(curve)), curve, label=label)
    ax.set_xlabel("iterations")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_ylim(0, 2.5)
    ax.set_title(f"{dataset}: MultiLayerNet with {activation}, SGD lr 0.01")
    ax.legend()
    fig.suptitle(f"Activation histograms ({activation}) and loss curves per weight initialisation")
    fig.tight_layout()
    return fig

"""Optimizer comparison (the book's §6.1): the six update rules on f(x, y) = x²/20 + y² and on digits.

Part 1 follows ``ch06/optimizer_compare_naive.py``: 30 steps from (-7, 2) with the book's learning
rates (SGD 0.95, Momentum 0.1, AdaGrad 1.5, Adam 0.3), plus Nesterov (0.1, like Momentum) and
RMSprop (0.15), which the book's figure leaves out. Part 2 follows ``ch06/optimizer_compare_mnist.py``:
``MultiLayerNet(input, [100]*4, 10)``, batch 128, every optimizer with its default hyper-parameters,
the same batches for all six; the loss curve is the training loss of each batch (smoothed).
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
from zerodl.networks import MultiLayerNet
from zerodl.optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

NAMES = ("SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam")
CLASSES = {"SGD": SGD, "Momentum": Momentum, "Nesterov": Nesterov, "AdaGrad": AdaGrad,
           "RMSprop": RMSprop, "Adam": Adam}
#: Learning rates on f(x, y); the four the book shows are the book's.
TOY_LR = {"SGD": 0.95, "Momentum": 0.1, "Nesterov": 0.1, "AdaGrad": 1.5, "RMSprop": 0.15, "Adam": 0.3}
TOY_START = (-7.0, 2.0)


def f(x: Any, y: Any) -> Any:
    """The book's anisotropic bowl ``x²/20 + y²``."""
    return x**2 / 20.0 + y**2


def df(x: Any, y: Any) -> tuple[Any, Any]:
    """Its gradient ``(x/10, 2y)``."""
    return x / 10.0, 2.0 * y


def trajectory(name: str, steps: int = 30) -> np.ndarray:
    """Positions ``(steps, 2)`` visited by optimizer ``name`` from :data:`TOY_START` (before each step)."""
    params = {"x": np.array([TOY_START[0]]), "y": np.array([TOY_START[1]])}
    opt = CLASSES[name](lr=TOY_LR[name])
    path = np.empty((steps, 2))
    for i in range(steps):
        path[i] = params["x"][0], params["y"][0]
        gx, gy = df(params["x"], params["y"])
        opt.update(params, {"x": gx, "y": gy})
    return path


def run(
    out: str | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    backend: str | None = None,
    dataset: str = "digits",
    data_dir: str | None = None,
    iterations: int | None = None,
    progress: bool = True,
) -> ExperimentResult:
    """Run both parts, print nothing, return the table, the figure path and the curves.

    ``iterations``: training steps on real digits per optimizer (default 2000 as the book, 60 with
    ``quick``).
    """
    start = time.perf_counter()
    iterations = iterations or (60 if quick else 2000)
    toy_steps = 30
    with backend_context(backend):
        paths = {name: trajectory(name, toy_steps) for name in NAMES}
        data = load_data(dataset, seed, data_dir)
        hidden = [20, 20] if quick else [100, 100, 100, 100]
        # The same seed gives every optimizer the same initial weights; all see the same batches.
        nets = {name: MultiLayerNet(data.input_size, hidden, 10, seed=seed) for name in NAMES}
        opts = {name: CLASSES[name]() for name in NAMES}
        # Every optimizer draws its batches from a generator seeded alike: the same batches for all.
        bar = Progress("optimizers", len(NAMES), progress)
        losses: dict[str, list[float]] = {}
        for name in NAMES:
            losses[name] = train(nets[name], opts[name], data.x_train, data.t_train, batch_size=128,
                                 iterations=iterations, rng=np.random.default_rng([seed, 1])).loss
            bar.step(f"{name}: loss {smooth_curve(losses[name])[-1]:.3f}")
        test_acc = {name: nets[name].accuracy(data.x_test, data.t_test) for name in NAMES}

    rows = []
    for name in NAMES:
        end = paths[name][-1]
        tail = losses[name][-max(len(losses[name]) // 10, 1):]
        rows.append([name, TOY_LR[name], f"({end[0]:+.3f}, {end[1]:+.3f})", float(f(*end)),
                     float(np.mean(tail)), test_acc[name]])
    table = format_table(
        ["optimizer", "toy lr", f"f(x,y): position after {toy_steps} steps", "f there",
         f"{data.name}: loss (last 10%)", "test acc"],
        rows,
        title=f"Optimizers: x²/20 + y² from {TOY_START} | {data.name}, {iterations} iterations, batch 128, "
              f"MultiLayerNet({data.input_size}, {hidden}, 10), default hyper-parameters",
    )
    figure = None
    if out:
        figure = save_figure(_plot(paths, losses, data.name), out)
    return ExperimentResult("optimizers", table, figure,
                            {"paths": paths, "losses": losses, "test_acc": test_acc},
                            time.perf_counter() - start)


def _plot(paths: dict[str, np.ndarray], losses: dict[str, list[float]], dataset: str) -> Any:
    fig = new_figure(13, 8.5)
    grid = fig.add_gridspec(3, 4)
    xs, ys = np.arange(-10, 10, 0.05), np.arange(-5, 5, 0.05)
    X, Y = np.meshgrid(xs, ys)
    Z = f(X, Y)
    Z[Z > 7] = 0  # the book's trick for a clean set of contour lines
    for k, name in enumerate(NAMES):
        ax = fig.add_subplot(grid[k // 3, k % 3])
        ax.contour(X, Y, Z, levels=12, linewidths=0.6)
        ax.plot(paths[name][:, 0], paths[name][:, 1], "o-", color="red", markersize=3, linewidth=1)
        ax.plot(0, 0, "+", color="black")
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_title(f"{name} (lr={TOY_LR[name]})", fontsize=10)
        ax.tick_params(labelsize=7)
    ax = fig.add_subplot(grid[:2, 3])
    ax.axis("off")
    ax.text(0, 0.6, "f(x, y) = x²/20 + y²\n30 steps from (-7, 2)", fontsize=11)
    ax = fig.add_subplot(grid[2, :])
    markers = dict(zip(NAMES, "oxvsd^"))
    for name in NAMES:
        curve = smooth_curve(losses[name])
        ax.plot(np.arange(len(curve)), curve, marker=markers[name], markevery=max(len(curve) // 20, 1),
                markersize=4, label=name)
    ax.set_xlabel("iterations")
    ax.set_ylabel("training loss (smoothed)")
    ax.set_ylim(0, min(2.5, max(1.0, float(max(np.max(smooth_curve(v)) for v in losses.values())))))
    ax.set_title(f"{dataset}: MultiLayerNet, batch 128")
    ax.legend(ncol=6, fontsize=8)
    fig.tight_layout()
    return fig

"""What the chapter 6 experiments share: data, a seeded training loop, tables, progress, figures."""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zerodl._fileio import atomic_write
from zerodl.backend import use_backend
from zerodl.callbacks import Callback
from zerodl.util import smooth_curve  # noqa: F401  (the book's; the experiments import it from here)

#: Datasets the experiments can run on offline.
DATASETS = ("digits", "mnist")


@dataclass
class Data:
    """Training and held-out data as float64 arrays with integer labels."""

    x_train: np.ndarray
    t_train: np.ndarray
    x_test: np.ndarray
    t_test: np.ndarray
    name: str
    description: str

    @property
    def input_size(self) -> int:
        return int(self.x_train.shape[1])


def load_data(dataset: str = "digits", seed: int = 0, data_dir: str | os.PathLike[str] | None = None) -> Data:
    """Flattened, normalised images (float64, as the book trains) and integer labels.

    ``"digits"``: scikit-learn's 8×8 digits split 75/25 (always available). ``"mnist"``: MNIST from
    ``data_dir`` (or zerodl's default data directory) without downloading; when only the t10k file is
    present this is a stratified split of the real MNIST test set (``zerodl.datasets.load_mnist``).
    """
    import warnings

    from zerodl import datasets

    if dataset == "digits":
        split = datasets.load_digits(normalize=True, flatten=True, one_hot_label=False, seed=seed)
    elif dataset == "mnist":
        with warnings.catch_warnings():
            # Falling back to the t10k split is the expected offline case; the description says so.
            warnings.simplefilter("ignore", datasets.DatasetFallbackWarning)
            split = datasets.load_mnist(normalize=True, flatten=True, one_hot_label=False,
                                        data_dir=data_dir, download=False, seed=seed)
    else:
        raise ValueError(f"unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    (x_train, t_train), (x_test, t_test) = split
    return Data(
        x_train.astype(np.float64), t_train.astype(np.intp),
        x_test.astype(np.float64), t_test.astype(np.intp),
        name=dataset, description=split.description,
    )


# ----------------------------------------------------------------------------- training
@dataclass
class History:
    """What :func:`train` records: loss per iteration, accuracies per epoch boundary."""

    loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train(
    net: Any,
    optimizer: Any,
    x_train: np.ndarray,
    t_train: np.ndarray,
    *,
    batch_size: int,
    rng: np.random.Generator,
    iterations: int | None = None,
    epochs: float | None = None,
    x_test: np.ndarray | None = None,
    t_test: np.ndarray | None = None,
    record_loss: bool = True,
    step_callback: Callable[[int, float], None] | None = None,
) -> History:
    """Mini-batch training, the book's loop: batches drawn with replacement from ``rng``.

    Runs ``iterations`` steps, or ``epochs`` × ``max(N / batch_size, 1)`` steps. ``loss`` is the
    training-mode loss of each batch (before the update, the one the gradient came from, so no
    extra forward pass is needed). When ``x_test`` is given, train and test accuracies are measured
    at the start of every epoch (iteration ``ceil(k · iter_per_epoch)``) and once at the end.

    The loop is :class:`zerodl.loop.TrainingLoop` (the Trainer's), configured as these experiments
    train: ``gradient`` + ``update`` (the book's two calls), no NaN guard (a diverging
    configuration is a result to report, accuracy at chance), no signal handling (Ctrl-C ends the
    experiment). ``step_callback(i, loss)`` is called after each step.
    """
    from zerodl.loop import TrainingLoop

    if (iterations is None) == (epochs is None):
        raise ValueError("train: give iterations or epochs")
    callbacks = [] if step_callback is None else [_StepCallback(step_callback)]
    loop = TrainingLoop(
        net, optimizer, x_train, t_train, x_test, t_test, batch_size=batch_size, epochs=epochs,
        iterations=iterations, seed=rng, step="gradient",
        record_loss="before_update" if record_loss or step_callback is not None else None,
        evaluate="before_step" if x_test is not None else None, callbacks=callbacks, check_finite=False,
    )
    start = time.perf_counter()
    # A diverging configuration (too large a weight scale or learning rate) overflows to inf/NaN:
    # that is a result to report (accuracy at chance), not a warning per matrix product.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        loop.train()
    hist = History(loss=loop.train_loss_list if record_loss else [], train_acc=loop.train_acc_list,
                   test_acc=loop.test_acc_list)
    hist.seconds = time.perf_counter() - start
    return hist


class _StepCallback(Callback):
    """Adapts ``f(i, loss)`` to the loop: called after every step with the recorded loss."""

    def __init__(self, fn: Callable[[int, float], None]) -> None:
        self.fn = fn

    def on_step_end(self, loop: Any, iteration: int, loss: float) -> None:
        self.fn(iteration, loss)


# ----------------------------------------------------------------------------- output
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> str:
    """A plain fixed-width text table (numbers formatted compactly)."""

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            v = float(v)
            if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
                return f"{v:.3e}"
            return f"{v:.4f}"
        return str(v)

    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [title] if title else []
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells)
    return "\n".join(lines)


class Progress:
    """One line per finished step on stderr (``enabled=False`` prints nothing)."""

    def __init__(self, name: str, total: int, enabled: bool = True) -> None:
        self.name, self.total, self.enabled, self.done = name, total, enabled, 0
        self.start = time.perf_counter()

    def step(self, message: str) -> None:
        self.done += 1
        if self.enabled:
            elapsed = time.perf_counter() - self.start
            print(f"[{self.name} {self.done}/{self.total} {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)


def save_figure(fig: Any, path: str | os.PathLike[str]) -> str:
    """Render ``fig`` to PNG in memory, then write it atomically to ``path``; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())
    return os.fspath(path)


def new_figure(width: float, height: float) -> Any:
    """A matplotlib Figure on the Agg canvas, without pyplot's global state (thread/process safe)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


@contextmanager
def backend_context(backend: str | None, threads: int | None = 1) -> Iterator[None]:
    """``use_backend(backend)`` (when given) and at most ``threads`` BLAS threads (``None``: no limit).

    One BLAS thread is the default on purpose: these nets multiply small matrices, and a second
    OpenBLAS thread busy-waiting against any other busy process on a 2-core machine made a step
    40× slower in our measurements (2.3 ms vs 107 ms for MultiLayerNet(64, [100]*4, 10), batch 128).
    """
    from threadpoolctl import threadpool_limits

    with use_backend(backend) if backend else nullcontext(), (
        threadpool_limits(limits=threads) if threads else nullcontext()
    ):
        yield


@dataclass
class ExperimentResult:
    """What every experiment returns: the printed table, the PNG path, the raw numbers."""

    name: str
    table: str
    figure: str | None
    data: Mapping[str, Any]
    seconds: float

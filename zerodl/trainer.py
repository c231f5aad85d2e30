"""The book's ``Trainer`` (``common/trainer.py``), seedable and watchable.

``from common.trainer import Trainer`` becomes ``from zerodl.trainer import Trainer``; the
constructor takes the book's arguments in the book's order and fills the same lists
(``train_loss_list``, ``train_acc_list``, ``test_acc_list``) with the same meaning:

* ``iter_per_epoch = max(train_size / mini_batch_size, 1)``, ``max_iter = int(epochs * iter_per_epoch)``;
* each step draws ``mini_batch_size`` indices *with replacement* (as ``np.random.choice`` does),
  computes the gradients, updates the parameters and **then** records ``network.loss`` on the same
  batch (the loss after the update, in inference mode), one entry per iteration;
* at each epoch boundary, *after* that iteration's update (iteration 0 is the first boundary, so the
  first accuracies are measured after one update), train and test accuracy are measured on the
  whole sets, or on their first ``evaluate_sample_num_per_epoch`` samples, and appended;
* after the last iteration the test accuracy on the whole test set is measured
  (:attr:`Trainer.final_test_acc`).

Where zerodl departs from the book, on purpose:

* ``seed``: batches are drawn from a :class:`numpy.random.Generator` (the book uses the global
  ``np.random``); the same seed and the same initial network give identical lists.
* Epoch boundaries when ``train_size`` is not a multiple of ``mini_batch_size``: the book tests
  ``current_iter % iter_per_epoch == 0`` with a fractional ``iter_per_epoch`` (1347 / 100 = 13.47),
  which is true only at iteration 0, so it evaluates once and never again. zerodl evaluates at
  iteration ``ceil(k * iter_per_epoch)`` for ``k = 0, 1, ...``, which is the book's iteration
  whenever ``iter_per_epoch`` is a whole number (MNIST: 60000 / 100).
* ``optimizer_param=None`` means the book's default ``{'lr': 0.01}`` (a dict default would be a
  shared mutable argument); ``optimizer`` may also be an :class:`~zerodl.optimizer.Optimizer`.
* Output: instead of one ``train loss:`` line per iteration, ``verbose=True`` shows a tqdm progress
  bar (live loss and samples/s) and one table row per epoch; ``verbose=False`` prints nothing.
* Callbacks (:class:`Callback`, :class:`EarlyStopping`) can stop the training, and Ctrl-C
  (SIGINT) stops it cleanly between two steps, keeping the parameters trained so far
  (:attr:`Trainer.interrupted`); the lists then hold what was recorded until the stop.
* Losses and accuracies are stored as Python floats.

If the network has a fused ``train_step(x_batch, t_batch, optimizer) -> loss`` method
(:meth:`zerodl.networks.Sequential.train_step`) it performs the update instead of ``gradient`` +
``optimizer.update``. That method returns the loss of its own forward pass, *before* the update, in
training mode; the book records the loss *after* the update, in inference mode. By default
(``record_loss="after_update"``) the Trainer therefore still calls ``network.loss`` after the step,
so ``train_loss_list`` holds the book's numbers. ``record_loss="before_update"`` records the fused
step's loss instead and saves that extra forward pass (faster; the curve is then shifted by one
update and, with Dropout, measured in training mode).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from zerodl.checkpoint import NonFiniteGuard, check_training_data, checkpoint_options
from zerodl.optimizer import OPTIMIZERS, Optimizer, get_optimizer

#: The book's ``Trainer`` default: ``optimizer_param={'lr': 0.01}``, whatever the optimizer.
BOOK_OPTIMIZER_PARAM: Mapping[str, float] = {"lr": 0.01}


# -- callbacks ----------------------------------------------------------------------------------
class Callback:
    """Hooks into :meth:`Trainer.train`. Subclass and override what you need.

    ``on_epoch_end`` is called after each epoch evaluation with ``logs`` holding ``epoch``,
    ``iteration``, ``loss`` (mean recorded loss since the previous evaluation), ``train_acc``,
    ``test_acc``, ``elapsed`` (seconds since the start) and ``samples_per_sec``; returning ``True``
    stops the training after this step (the final test accuracy is still measured).
    """

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once before the first step."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        """Called after each epoch's evaluation; return ``True`` to stop."""
        return None

    def on_train_end(self, trainer: Trainer) -> None:
        """Called once after the last step (also after an early stop or Ctrl-C)."""


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: a key of the epoch logs: ``"test_acc"`` (default), ``"train_acc"`` or ``"loss"``.
        patience: epochs without improvement tolerated before stopping (>= 1).
        min_delta: the smallest change that counts as an improvement (>= 0).
        mode: ``"max"``, ``"min"`` or ``"auto"`` (``min`` for losses, ``max`` otherwise).
        restore_best: at the end, copy the parameters (and buffers) of the best epoch back into the
            network, in place.

    After training, :attr:`best`, :attr:`best_epoch` and :attr:`stopped_epoch` (``None`` if it
    never stopped the training) say what happened.
    """

    def __init__(
        self,
        monitor: str = "test_acc",
        patience: int = 5,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best: bool = False,
    ) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"EarlyStopping: patience must be a positive integer, got {patience!r}")
        if not (isinstance(min_delta, (int, float)) and min_delta >= 0):
            raise ValueError(f"EarlyStopping: min_delta must be a number >= 0, got {min_delta!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping: mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.monitor = monitor
        self.patience = patience
        self.min_delta = float(min_delta)
        self.mode = ("min" if "loss" in monitor else "max") if mode == "auto" else mode
        self.restore_best = restore_best
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.wait = 0
        self._best_arrays: dict[str, np.ndarray] | None = None

    def on_train_begin(self, trainer: Trainer) -> None:
        self.best, self.best_epoch, self.stopped_epoch, self.wait = None, None, None, 0
        self._best_arrays = None

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Mapping[str, Any]) -> bool:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not in the epoch logs {sorted(logs)}")
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_arrays = _snapshot(trainer.network)
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best and self._best_arrays is not None:
            _restore(trainer.network, self._best_arrays)


def _snapshot(network: Any) -> dict[str, np.ndarray]:
    arrays = {"param/" + k: np.array(v, copy=True) for k, v in network.params.items()}
    buffers = getattr(network, "buffers", None)
    if callable(buffers):
        arrays.update({"buffer/" + k: np.array(v, copy=True) for k, v in buffers().items()})
    return arrays


def _restore(network: Any, arrays: Mapping[str, np.ndarray]) -> None:
    for key, target in network.params.items():
        np.copyto(target, arrays["param/" + key])
    buffers = getattr(network, "buffers", None)
    if callable(buffers):
        for key, target in buffers().items():
            if "buffer/" + key in arrays:
                np.copyto(target, arrays["buffer/" + key])


class _LambdaCallback(Callback):
    """Wraps a plain function ``f(trainer, epoch, logs) -> bool | None`` as an epoch-end callback."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        return self.fn(trainer, epoch, logs)


# -- the trainer --------------------------------------------------------------------------------
def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Trainer: {name} must be a positive integer, got {value!r}")
    return int(value)


class Trainer:
    """Train ``network`` with mini-batches, as the book's ``common/trainer.py`` does.

    Args:
        network: a zerodl network (``params``, ``gradient``, ``loss``, ``accuracy``).
        x_train, t_train: training inputs ``(N, ...)`` and labels ``(N,)`` or one-hot ``(N, C)``.
        x_test, t_test: test inputs and labels.
        epochs: number of epochs (``max_iter = int(epochs * iter_per_epoch)``).
        mini_batch_size: samples per step.
        optimizer: a name from :data:`zerodl.optimizer.OPTIMIZERS`, case-insensitive (``'SGD'``,
            ``'Momentum'``, ``'Nesterov'``, ``'AdaGrad'``, ``'RMSprop'``, ``'Adam'``), or an
            :class:`~zerodl.optimizer.Optimizer` instance.
        optimizer_param: keyword arguments of the optimizer; ``None`` → ``{'lr': 0.01}`` (book).
        evaluate_sample_num_per_epoch: evaluate each epoch on the first this-many samples of the
            train and test sets (``None``: all of them).
        verbose: progress bar and a table row per epoch (to stderr / stdout).
        seed: int, :class:`numpy.random.Generator` or ``None``; drives the batch choice.
        callbacks: :class:`Callback` objects or functions ``f(trainer, epoch, logs) -> bool``.
        progress: show the tqdm bar (default: ``verbose``).
        file: where the epoch table goes (default ``sys.stdout``).
        record_loss: ``"after_update"`` (the book: ``network.loss`` on the batch after the update,
            inference mode) or ``"before_update"`` (the loss the fused step computed anyway; saves
            one forward pass per step when the network has ``train_step``).
        checkpoint_path: write the whole training state there (atomically, see
            :mod:`zerodl.checkpoint`) every ``checkpoint_every`` iterations (default: at every epoch
            evaluation) and when :meth:`train` ends; :meth:`resume` reads it back.
        checkpoint_every: iterations between checkpoints.

    Robustness: ``x_train`` / ``x_test`` are checked once for NaN/inf here; a NaN/inf loss during
    training raises :class:`zerodl.checkpoint.NonFiniteError` naming the step and the culprit, the
    network keeping the parameters from before that step.

    State (what a checkpoint needs): :attr:`current_iter`, :attr:`current_epoch`, :attr:`rng`,
    :attr:`optimizer` (its ``state_dict``), the network's params/buffers and the three lists.
    """

    def __init__(
        self,
        network: Any,
        x_train: np.ndarray,
        t_train: np.ndarray,
        x_test: np.ndarray,
        t_test: np.ndarray,
        epochs: int = 20,
        mini_batch_size: int = 100,
        optimizer: str | Optimizer = "SGD",
        optimizer_param: Mapping[str, Any] | None = None,
        evaluate_sample_num_per_epoch: int | None = None,
        verbose: bool = True,
        *,
        seed: int | np.random.Generator | None = None,
        callbacks: Iterable[Callback | Callable[..., Any]] | None = None,
        progress: bool | None = None,
        file: Any = None,
        record_loss: str = "after_update",
        checkpoint_path: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
    ) -> None:
        self.network = network
        self.verbose = bool(verbose)
        self.progress = self.verbose if progress is None else bool(progress)
        self.file = file
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        for name, x, t in (("train", x_train, t_train), ("test", x_test, t_test)):
            nx, nt = np.shape(x)[0] if np.ndim(x) else 0, np.shape(t)[0] if np.ndim(t) else 0
            if nx == 0:
                raise ValueError(f"Trainer: x_{name} is empty (shape {np.shape(x)})")
            if nx != nt:
                raise ValueError(f"Trainer: x_{name} has {nx} samples but t_{name} has {nt}")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float, np.number)) or not epochs > 0:
            raise ValueError(f"Trainer: epochs must be a positive number, got {epochs!r}")
        self.epochs = epochs
        self.batch_size = _positive_int("mini_batch_size", mini_batch_size)
        if evaluate_sample_num_per_epoch is not None:
            evaluate_sample_num_per_epoch = _positive_int(
                "evaluate_sample_num_per_epoch", evaluate_sample_num_per_epoch)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch

        self.optimizer = self._make_optimizer(optimizer, optimizer_param)

        if isinstance(seed, np.random.Generator):
            self.rng = seed
        elif seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
            self.rng = np.random.default_rng(seed)
        else:
            raise TypeError(f"Trainer: seed must be an int, a numpy Generator or None, got {type(seed).__name__}")

        self.callbacks: list[Callback] = []
        for cb in callbacks or ():
            if isinstance(cb, Callback):
                self.callbacks.append(cb)
            elif callable(cb):
                self.callbacks.append(_LambdaCallback(cb))
            else:
                raise TypeError(f"Trainer: callbacks must be Callback objects or functions, got {type(cb).__name__}")

        self.train_size = int(np.shape(x_train)[0])
        self.iter_per_epoch = max(self.train_size / self.batch_size, 1)
        self.max_iter = int(epochs * self.iter_per_epoch)
        self.current_iter = 0
        self.current_epoch = 0

        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        #: One dict of logs per evaluated epoch (what the callbacks received).
        self.history: list[dict[str, Any]] = []
        self.final_test_acc: float | None = None
        self.interrupted = False
        self.stop_training = False
        #: Seconds spent in training steps only (no evaluation), and samples seen in them.
        self.train_time = 0.0
        self.samples_seen = 0
        if record_loss not in ("after_update", "before_update"):
            raise ValueError(f"Trainer: record_loss must be 'after_update' or 'before_update', got {record_loss!r}")
        self.record_loss = record_loss
        self._fused = getattr(network, "train_step", None)
        self._bar: Any = None
        self._sigint = False
        self._start = 0.0
        self._epoch_loss_start = 0
        # Robustness (zerodl.checkpoint): inputs checked for NaN/inf once here, not per step;
        # periodic atomic checkpoints; a NaN/inf loss stops training with the last good state.
        self.checkpoint_path, self.checkpoint_every = checkpoint_options(checkpoint_path, checkpoint_every)
        check_training_data(self)
        self._guard = NonFiniteGuard()

    # -- construction helpers ------------------------------------------------------------------
    @staticmethod
    def _make_optimizer(optimizer: str | Optimizer, optimizer_param: Mapping[str, Any] | None) -> Optimizer:
        if isinstance(optimizer, Optimizer):
            if optimizer_param is not None:
                raise ValueError("Trainer: optimizer_param must be None when optimizer is an Optimizer instance")
            return optimizer
        if not isinstance(optimizer, str) or optimizer.lower() not in OPTIMIZERS:
            names = ", ".join(c.__name__ for c in OPTIMIZERS.values())
            raise ValueError(f"Trainer: unknown optimizer {optimizer!r}; expected one of {names} or an Optimizer")
        params = dict(BOOK_OPTIMIZER_PARAM if optimizer_param is None else optimizer_param)
        try:
            return get_optimizer(optimizer, **params)
        except TypeError as exc:
            raise ValueError(f"Trainer: bad optimizer_param {params} for {optimizer}: {exc}") from exc

    def resume(self, path: str | os.PathLike[str] | None = None) -> bool:
        """Restore network, optimizer, generators and progress from ``path`` (default
        :attr:`checkpoint_path`); ``train()`` then continues bit for bit. Returns ``False`` (and
        changes nothing) when the file does not exist yet."""
        from zerodl.checkpoint import load_checkpoint

        path = path if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("Trainer.resume: no path given and no checkpoint_path set")
        if not os.path.exists(path):
            return False
        load_checkpoint(self, path)
        return True

    # -- epoch boundaries ----------------------------------------------------------------------
    def is_epoch_boundary(self, iteration: int) -> bool:
        """True when ``iteration`` is the first iteration at or past ``k * iter_per_epoch``.

        Exact integer arithmetic (no float modulo): the boundary ``k`` is at
        ``ceil(k * train_size / batch_size)``, or every iteration when ``train_size <= batch_size``.
        """
        if self.train_size <= self.batch_size:
            return True
        n, b = self.train_size, self.batch_size
        # ceil(k n / b) == i  <=>  (i - 1) b < k n <= i b; the only candidate is k = floor(i b / n).
        return (iteration * b // n) * n > (iteration - 1) * b

    # -- one step ------------------------------------------------------------------------------
    def _train_step(self, x_batch: np.ndarray, t_batch: np.ndarray) -> float:
        """Update the network on one batch; return the loss to record (see ``record_loss``)."""
        if self._fused is not None:
            loss = self._fused(x_batch, t_batch, self.optimizer)
            if self.record_loss == "before_update":
                return float(loss)
        else:
            grads = self.network.gradient(x_batch, t_batch)
            self.optimizer.update(self.network.params, grads)
        # The book records the loss after the update, in inference mode (train_flg=False).
        return float(self.network.loss(x_batch, t_batch))

    def train_step(self) -> None:
        """One iteration: draw a batch, update, record the loss; evaluate at an epoch boundary."""
        self._guard.before_step(self)
        batch_mask = self.rng.integers(0, self.train_size, size=self.batch_size)
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]
        started = time.perf_counter()
        loss = self._train_step(x_batch, t_batch)
        self._guard.after_step(self, loss, batch_mask)  # raises NonFiniteError on NaN/inf
        self.train_time += time.perf_counter() - started
        self.samples_seen += self.batch_size
        self.train_loss_list.append(loss)
        if self._bar is not None:
            self._bar.update(1)
            if self.train_time > 0:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False,
                                      **{"samples/s": f"{self.samples_seen / self.train_time:,.0f}"})
        iteration = self.current_iter
        # Count the step before evaluating: a callback that raises (or a second Ctrl-C during the
        # evaluation) then leaves current_iter consistent with the update already made.
        self.current_iter += 1
        if self.is_epoch_boundary(iteration):
            self._end_epoch()
        self._guard.end_step(self)  # periodic checkpoint

    def _evaluation_sets(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.evaluate_sample_num_per_epoch
        if n is None:
            return self.x_train, self.t_train, self.x_test, self.t_test
        return self.x_train[:n], self.t_train[:n], self.x_test[:n], self.t_test[:n]

    def _end_epoch(self) -> None:
        x_tr, t_tr, x_te, t_te = self._evaluation_sets()
        train_acc = float(self.network.accuracy(x_tr, t_tr))
        test_acc = float(self.network.accuracy(x_te, t_te))
        self.current_epoch += 1
        self.train_acc_list.append(train_acc)
        self.test_acc_list.append(test_acc)
        recent = self.train_loss_list[self._epoch_loss_start:]
        self._epoch_loss_start = len(self.train_loss_list)
        logs = {
            "epoch": self.current_epoch,
            "iteration": self.current_iter,
            "loss": float(np.mean(recent)) if recent else float("nan"),
            "train_acc": train_acc,
            "test_acc": test_acc,
            "elapsed": time.perf_counter() - self._start,
            "samples_per_sec": self.samples_seen / self.train_time if self.train_time > 0 else float("nan"),
        }
        self.history.append(logs)
        if self.verbose:
            self._write(self._row(logs))
        for cb in self.callbacks:
            if cb.on_epoch_end(self, self.current_epoch, logs):
                self.stop_training = True

    # -- output --------------------------------------------------------------------------------
    @property
    def total_epochs(self) -> int:
        """How many epoch evaluations a full run makes (the length of the accuracy lists)."""
        if self.max_iter < 1:
            return 0
        if self.train_size <= self.batch_size:
            return self.max_iter
        # Boundaries ceil(k n / b) < max_iter  <=>  k <= (max_iter - 1) b / n.
        return (self.max_iter - 1) * self.batch_size // self.train_size + 1

    #: Seconds between progress-bar refreshes (the bar is cleared at the end; the table stays).
    progress_interval: float = 0.2

    HEADER = f"{'epoch':>7} {'iter':>8} {'loss':>9} {'train acc':>10} {'test acc':>9} {'time':>8}"

    def _row(self, logs: Mapping[str, Any]) -> str:
        width = len(str(self.total_epochs))
        epoch = f"{logs['epoch']}/{self.total_epochs}".rjust(2 * width + 1)
        return (f"{epoch:>7} {logs['iteration']:>8} {logs['loss']:>9.4f} {logs['train_acc']:>10.4f} "
                f"{logs['test_acc']:>9.4f} {logs['elapsed']:>7.1f}s")

    def _write(self, line: str) -> None:
        out = self.file if self.file is not None else sys.stdout
        if self._bar is not None:
            self._bar.write(line, file=out)
        else:
            print(line, file=out, flush=True)

    def _open_bar(self) -> None:
        if not self.progress:
            return
        from tqdm.auto import tqdm  # lazy: keeps `import zerodl` fast

        self._bar = tqdm(total=self.max_iter, initial=self.current_iter, unit="step",
                         dynamic_ncols=True, mininterval=self.progress_interval, leave=False)

    # -- Ctrl-C --------------------------------------------------------------------------------
    def _install_sigint(self) -> Any:
        """In the main thread, make the first Ctrl-C a request to stop after the current step.

        A step interrupted halfway would leave some parameters updated and others not; deferring the
        stop to the step boundary keeps the network consistent. A second Ctrl-C interrupts at once.
        """
        if threading.current_thread() is not threading.main_thread():
            return None
        previous = signal.getsignal(signal.SIGINT)
        if previous is not signal.default_int_handler:
            return None  # someone else handles SIGINT (a notebook kernel, a test harness): leave it

        def handler(signum: int, frame: Any) -> None:
            if self._sigint:
                raise KeyboardInterrupt
            self._sigint = True

        signal.signal(signal.SIGINT, handler)
        return previous

    # -- the loop ------------------------------------------------------------------------------
    def train(self) -> Trainer:
        """Run ``max_iter - current_iter`` steps (callbacks and Ctrl-C may stop earlier), then
        measure the final test accuracy (not after Ctrl-C). Returns the trainer."""
        self.stop_training = False
        self.interrupted = False
        self._sigint = False
        self._start = time.perf_counter()
        previous = self._install_sigint()
        try:
            for cb in self.callbacks:
                cb.on_train_begin(self)
            if self.verbose:
                self._write(self.HEADER)
            self._open_bar()
            while self.current_iter < self.max_iter and not self.stop_training:
                self.train_step()
                if self._sigint:
                    raise KeyboardInterrupt
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        self._guard.finish(self)  # final checkpoint (before EarlyStopping may restore the best params)
        for cb in self.callbacks:
            cb.on_train_end(self)
        if self.interrupted:
            if self.verbose:
                self._write(f"interrupted at iteration {self.current_iter}/{self.max_iter} "
                            f"(epoch {self.current_epoch}); parameters trained so far are kept")
            return self
        self.final_test_acc = float(self.network.accuracy(self.x_test, self.t_test))
        if self.verbose:
            self._write(f"final test accuracy: {self.final_test_acc:.4f} "
                        f"({self.samples_per_sec:,.0f} samples/s)")
        return self

    @property
    def samples_per_sec(self) -> float:
        """Training throughput so far: samples per second of training steps (evaluation excluded)."""
        return self.samples_seen / self.train_time if self.train_time > 0 else float("nan")


# -- evaluation helpers ------------------------------------------------------------------------
def predict_labels(network: Any, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Arg-max class of ``network.predict(x)`` (inference mode), ``batch_size`` samples at a time."""
    batch_size = _positive_int("batch_size", batch_size)
    out = np.empty(np.shape(x)[0], dtype=np.intp)
    for start in range(0, out.shape[0], batch_size):
        y = network.predict(x[start:start + batch_size], train_flg=False)
        out[start:start + batch_size] = np.argmax(y, axis=1)
    return out


def confusion_matrix(t_true: Sequence[int] | np.ndarray, t_pred: Sequence[int] | np.ndarray,
                     num_classes: int | None = None) -> np.ndarray:
    """``(C, C)`` counts: row = true class, column = predicted class. ``t_true`` may be one-hot."""
    t_true = np.asarray(t_true)
    if t_true.ndim == 2:
        t_true = np.argmax(t_true, axis=1)
    t_pred = np.asarray(t_pred)
    if t_true.shape != t_pred.shape:
        raise ValueError(f"confusion_matrix: {t_true.shape[0]} true labels but {t_pred.shape[0]} predictions")
    t_true, t_pred = t_true.astype(np.intp), t_pred.astype(np.intp)
    if num_classes is None:
        num_classes = int(max(t_true.max(initial=-1), t_pred.max(initial=-1))) + 1
    if t_true.size and (min(t_true.min(), t_pred.min()) < 0
                        or max(t_true.max(), t_pred.max()) >= num_classes):
        raise ValueError(f"confusion_matrix: labels must be in 0..{num_classes - 1}")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t_true, t_pred), 1)
    return cm


__all__ = [
    "BOOK_OPTIMIZER_PARAM",
    "Callback",
    "EarlyStopping",
    "Trainer",
    "confusion_matrix",
    "predict_labels",
]

"""The one training loop of zerodl.

:class:`TrainingLoop` draws mini-batches, updates the network, records losses and accuracies,
calls the callbacks, guards against NaN/inf, writes checkpoints and honours stop signals. The
book's :class:`~zerodl.trainer.Trainer` is a :class:`TrainingLoop` built from the book's
arguments; the chapter 6 experiments (:func:`zerodl.experiments._common.train`) and the
hyper-parameter search run their trainings through it too. What differs between them is
configuration, not code:

* ``seed``: an int or :class:`numpy.random.Generator` draws the batch indices from that generator
  (``integers(0, N, size=B)``, which is what ``Generator.choice(N, B)`` draws too); ``None`` draws
  them from NumPy's global random state with the book's call, ``np.random.choice(N, B)``.
* ``step``: ``"auto"`` uses the network's fused ``train_step(x, t, optimizer) -> loss before the
  update`` when it has one, else ``gradient`` + ``optimizer.update``; ``"gradient"`` always takes
  the book's two calls.
* ``record_loss``: ``"after_update"`` records ``network.loss`` on the batch after the update
  (inference mode, the book's Trainer); ``"before_update"`` the loss of the step's own forward pass
  (training mode, free); ``None`` records nothing.
* ``evaluate``: ``"after_step"`` measures train/test accuracy after the step of each epoch boundary
  (the book's Trainer: iteration ``ceil(k * iter_per_epoch)``, so the first measurement follows
  the first update) and the final test accuracy at the end; ``"before_step"`` measures before the
  first step of each epoch and once more after the last step (initial and final accuracies in the
  lists); ``None`` measures nothing.
* ``report``: ``"book"`` prints the book's lines on stdout (``train loss:`` per step, ``=== epoch:``
  per evaluation, the final accuracy banner); ``"table"`` a progress bar on stderr and one table row
  per evaluation; ``None`` nothing.

Stop signals: see :class:`StopSignals`. The loop stops between two steps when one arrives, writes
its final checkpoint with further signals held (so no write is cut short) and sets
:attr:`TrainingLoop.interrupted` and :attr:`TrainingLoop.stop_signal`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # typing.Self is Python 3.11+; the package supports 3.10
    from typing import Self

import numpy as np

from zerodl._validate import NonFiniteInputError
from zerodl.callbacks import Callback, LambdaCallback
from zerodl.checkpoint import (
    CheckpointError,
    NonFiniteGuard,
    check_training_data,
    checkpoint_options,
)

#: The stop signals this platform has: Ctrl-C, ``kill``/``timeout``/schedulers, a closed terminal.
STOP_SIGNALS: tuple[int, ...] = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _is_default_handler(signum: int, handler: Any) -> bool:
    if signum == signal.SIGINT:
        return handler is signal.default_int_handler
    return handler == signal.SIG_DFL


class StopSignals:
    """A context manager that turns stop signals into a request the training loop honours between
    two steps, then restores the previous handlers.

    The first signal sets :attr:`signum`; the loop finishes its step and stops. A second signal
    while the steps run (inside :meth:`interruptible`) interrupts at once (``KeyboardInterrupt``;
    the step may be torn, so no final checkpoint is written from it). Anywhere else (the final
    checkpoint, the final evaluation, the model write) and inside :meth:`hold`, further signals are
    only counted, so no write is cut short.

    Args:
        signals: signal numbers (default: SIGINT, SIGTERM and SIGHUP where the platform has them).
        only_default: take a signal only while its handler is the default one (Python's
            ``KeyboardInterrupt`` for SIGINT, ``SIG_DFL`` for the others), leaving handlers a program
            installed alone.

    Handlers can be installed from the main thread only; elsewhere this does nothing. Entering it
    again while it is active (the CLI holds it around training *and* saving, the loop enters it
    too) is allowed: only the outermost ``with`` installs and restores.

    >>> with StopSignals() as stop:       # doctest: +SKIP
    ...     trainer = Trainer(..., handle_signals=stop)
    ...     trainer.train()
    ...     with stop.hold():
    ...         save_network(trainer.network, "model.npz")
    >>> exit_code = stop.exit_code or 0   # doctest: +SKIP
    """

    def __init__(self, signals: Iterable[int] = STOP_SIGNALS, *, only_default: bool = False) -> None:
        self.signals = tuple(signals)
        self.only_default = only_default
        #: The first stop signal received (``None`` until one arrives).
        self.signum: int | None = None
        #: How many stop signals arrived in all.
        self.count = 0
        self._previous: dict[int, Any] = {}
        self._depth = 0
        self._holding = 0
        self._interruptible = 0

    @property
    def requested(self) -> bool:
        """True once a stop signal has arrived."""
        return self.signum is not None

    @property
    def name(self) -> str | None:
        """``"SIGTERM"`` and the like, or ``None``."""
        return None if self.signum is None else signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int | None:
        """``128 + signum``, the shell's convention for a process ended by a signal (130 for Ctrl-C)."""
        return None if self.signum is None else 128 + int(self.signum)

    @property
    def installed(self) -> tuple[int, ...]:
        """The signals whose handler this object has installed (empty outside ``with``)."""
        return tuple(self._previous)

    def _handler(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum
            return
        if self._interruptible and not self._holding:
            raise KeyboardInterrupt

    def __enter__(self) -> Self:
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                previous = signal.getsignal(signum)
                if self.only_default and not _is_default_handler(signum, previous):
                    continue  # a notebook kernel, a test harness or the program handles it: leave it
                signal.signal(signum, self._handler)
                self._previous[signum] = previous
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0:
            for signum, previous in self._previous.items():
                signal.signal(signum, previous)
            self._previous = {}

    def reset(self) -> None:
        """Forget the signals received (a new run starts)."""
        self.signum, self.count = None, 0

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """While inside (and not in :meth:`hold`), a second stop signal raises ``KeyboardInterrupt``."""
        self._interruptible += 1
        try:
            yield
        finally:
            self._interruptible -= 1

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """While inside, further stop signals are counted but interrupt nothing."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1


class _NoSignals:
    """The loop's stand-in when it handles no signals (KeyboardInterrupt propagates)."""

    signum = None
    requested = False

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def hold(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def interruptible(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def reset(self) -> None:
        return None


def _positive_int(owner: str, name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _choice(owner: str, name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices:
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def data_fingerprint(*arrays: Any) -> str:
    """A BLAKE2b digest of the arrays' shapes, dtypes and bytes (what "the same data" means for a
    resume). Hashed in row blocks, so a non-contiguous array is never copied whole."""
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.asarray(a)
        h.update(f"{a.dtype.str}{a.shape};".encode())
        if a.ndim == 0:
            h.update(np.ascontiguousarray(a).tobytes())
            continue
        rows = max(1, (1 << 24) // max(a[0].nbytes, 1))
        for start in range(0, a.shape[0], rows):
            h.update(memoryview(np.ascontiguousarray(a[start:start + rows])).cast("B"))
    return h.hexdigest()


class TrainingLoop:
    """Mini-batch training of ``network`` with ``optimizer`` (see the module doc for the options).

    Args:
        network: ``params``, ``gradient(x, t)``, ``loss(x, t)``, ``accuracy(x, t)``; optionally a
            fused ``train_step(x, t, optimizer)``, ``buffers()``, ``last_layer``.
        optimizer: an object with ``update(params, grads)`` (a :class:`zerodl.optimizer.Optimizer`
            for checkpoints).
        x_train, t_train: ``(N, ...)`` inputs and ``(N,)`` or ``(N, C)`` labels.
        x_test, t_test: evaluation set (required unless ``evaluate=None``).
        batch_size: samples per step; ``epochs`` (``max_iter = int(epochs * iter_per_epoch)``,
            ``iter_per_epoch = max(N / batch_size, 1)``) or ``iterations``.
        seed, step, record_loss, evaluate, report: see the module doc.
        evaluate_sample_num_per_epoch: evaluate each epoch on the first this-many samples.
        callbacks: :class:`~zerodl.callbacks.Callback` objects or ``f(loop, epoch, logs) -> bool``.
        check_finite: check the inputs for NaN/inf once, and stop at a NaN/inf loss with the last
            good state (:class:`zerodl.checkpoint.NonFiniteGuard`); off for experiments whose
            divergence is a result.
        checkpoint_path, checkpoint_every: see :mod:`zerodl.checkpoint`; ``overwrite_checkpoint``
            lets :meth:`train` replace a file that is not this run's own checkpoint (otherwise a
            :class:`~zerodl.checkpoint.CheckpointError` before the first step).
        run_config: JSON-able settings that identify the run (stored in checkpoints; a resume with
            different values is refused).
        signals: a :class:`StopSignals` to honour (entered around :meth:`train`), or ``None``: no
            handler is installed and a ``KeyboardInterrupt`` propagates out of :meth:`train`.
        own_signals: ``signals`` belongs to this loop: each :meth:`train` starts with no signal
            received (``False``: the caller's object, whose requests persist, as ``zerodl train``
            needs across training and saving).
        progress, file: progress bar on/off (``report="table"``); where lines go (stdout).
    """

    def __init__(
        self,
        network: Any,
        optimizer: Any,
        x_train: np.ndarray,
        t_train: np.ndarray,
        x_test: np.ndarray | None = None,
        t_test: np.ndarray | None = None,
        *,
        batch_size: int,
        epochs: float | None = None,
        iterations: int | None = None,
        seed: int | np.random.Generator | None = None,
        step: str = "auto",
        record_loss: str | None = "after_update",
        evaluate: str | None = "after_step",
        evaluate_sample_num_per_epoch: int | None = None,
        callbacks: Iterable[Callback | Callable[..., Any]] | None = None,
        check_finite: bool = True,
        checkpoint_path: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        overwrite_checkpoint: bool = False,
        run_config: Mapping[str, Any] | None = None,
        signals: StopSignals | None = None,
        own_signals: bool = False,
        report: str | None = None,
        progress: bool | None = None,
        file: Any = None,
        owner: str = "TrainingLoop",
    ) -> None:
        self._owner = owner
        self.network = network
        self.optimizer = optimizer
        self.x_train, self.t_train = x_train, t_train
        self.x_test, self.t_test = x_test, t_test
        self.evaluate = _choice(owner, "evaluate", evaluate, ("after_step", "before_step", None))
        pairs = [("train", x_train, t_train)]
        if evaluate is not None or x_test is not None:
            if x_test is None or t_test is None:
                raise ValueError(f"{owner}: evaluate={evaluate!r} needs x_test and t_test")
            pairs.append(("test", x_test, t_test))
        for name, x, t in pairs:
            nx, nt = np.shape(x)[0] if np.ndim(x) else 0, np.shape(t)[0] if np.ndim(t) else 0
            if nx == 0:
                raise ValueError(f"{owner}: x_{name} is empty (shape {np.shape(x)})")
            if nx != nt:
                raise ValueError(f"{owner}: x_{name} has {nx} samples but t_{name} has {nt}")
        self.batch_size = _positive_int(owner, "mini_batch_size", batch_size)
        self.train_size = int(np.shape(x_train)[0])
        self.iter_per_epoch = max(self.train_size / self.batch_size, 1)
        if (epochs is None) == (iterations is None):
            raise ValueError(f"{owner}: give exactly one of epochs and iterations")
        if iterations is not None:
            if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
                raise ValueError(f"{owner}: iterations must be an integer >= 0, got {iterations!r}")
            self.max_iter = int(iterations)
            self.epochs: float = self.max_iter / self.iter_per_epoch
        else:
            if isinstance(epochs, bool) or not isinstance(epochs, (int, float, np.number)) or not epochs > 0:
                raise ValueError(f"{owner}: epochs must be a positive number, got {epochs!r}")
            self.epochs = epochs
            self.max_iter = int(epochs * self.iter_per_epoch)
        if evaluate_sample_num_per_epoch is not None:
            evaluate_sample_num_per_epoch = _positive_int(
                owner, "evaluate_sample_num_per_epoch", evaluate_sample_num_per_epoch)
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch

        #: The batch generator, or ``None``: batches from NumPy's global state (``np.random.choice``).
        self.rng: np.random.Generator | None
        self.seed: int | None = None
        if isinstance(seed, np.random.Generator):
            self.rng = seed
        elif seed is None:
            self.rng = None
        elif isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
            if seed < 0:
                raise ValueError(f"{owner}: seed must be a non-negative integer, got {seed!r}")
            self.seed = int(seed)
            self.rng = np.random.default_rng(self.seed)
        else:
            raise TypeError(f"{owner}: seed must be an int, a numpy Generator or None, got {type(seed).__name__}")

        self.step = _choice(owner, "step", step, ("auto", "gradient"))
        self._fused = getattr(network, "train_step", None) if step == "auto" else None
        self.record_loss = _choice(owner, "record_loss", record_loss, ("after_update", "before_update", None))
        self.report = _choice(owner, "report", report, ("book", "table", None))
        self.verbose = report is not None
        self.progress = (report == "table") if progress is None else bool(progress)
        self.file = file

        self.callbacks: list[Callback] = []
        for cb in callbacks or ():
            if isinstance(cb, Callback):
                self.callbacks.append(cb)
            elif callable(cb):
                self.callbacks.append(LambdaCallback(cb))
            else:
                raise TypeError(f"{owner}: callbacks must be Callback objects or functions, got {type(cb).__name__}")

        # Only callbacks that override on_step_end are called per step (it is a hot path).
        self._step_callbacks = [cb for cb in self.callbacks
                                if type(cb).on_step_end is not Callback.on_step_end]
        self.current_iter = 0
        self.current_epoch = 0
        self.train_loss_list: list[float] = []
        self.train_acc_list: list[float] = []
        self.test_acc_list: list[float] = []
        #: One dict of logs per evaluation (what the callbacks received).
        self.history: list[dict[str, Any]] = []
        self.final_test_acc: float | None = None
        self.interrupted = False
        #: The stop signal that ended the last :meth:`train` (``None``: none did).
        self.stop_signal: int | None = None
        #: Set by a callback to end the run after the current step (reset when ``train()`` starts;
        #: :class:`~zerodl.callbacks.EarlyStopping` sets it again if it already ended this run).
        self.stop_training = False
        #: Seconds spent in training steps only (no evaluation), and samples seen in them.
        self.train_time = 0.0
        self.samples_seen = 0
        self.signals = signals
        self._own_signals = bool(own_signals)
        self._bar: Any = None
        self._start = 0.0
        self._epoch_loss_start = 0
        self._fingerprint: str | None = None
        self.run_config = dict(run_config) if run_config is not None else None
        self.overwrite_checkpoint = bool(overwrite_checkpoint)
        self._owns_checkpoint = False
        self._checkpoint_lock: Any = None  # a zerodl._runlock.RunLock while train()/resume() own the file
        self.check_finite = bool(check_finite)
        self.checkpoint_path, self.checkpoint_every = checkpoint_options(checkpoint_path, checkpoint_every)
        if self.check_finite:
            check_training_data(self)  # once here, not per step
        self._guard = NonFiniteGuard(check_finite=self.check_finite)

    # -- batches ------------------------------------------------------------------------------
    def draw_batch(self) -> np.ndarray:
        """The next ``(batch_size,)`` sample indices, drawn with replacement."""
        if self.rng is None:
            return np.random.choice(self.train_size, self.batch_size)  # the book's call, global state
        return self.rng.integers(0, self.train_size, size=self.batch_size)

    def data_fingerprint(self) -> str:
        """Digest of the four data arrays (computed once, when a checkpoint first needs it)."""
        if self._fingerprint is None:
            arrays = [self.x_train, self.t_train]
            if self.x_test is not None:
                arrays += [self.x_test, self.t_test]
            self._fingerprint = data_fingerprint(*arrays)
        return self._fingerprint

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

    @property
    def total_epochs(self) -> int:
        """How many epoch evaluations a full run makes (the length of the accuracy lists)."""
        if self.evaluate is None:
            return 0
        if self.max_iter < 1:
            boundaries = 0
        elif self.train_size <= self.batch_size:
            boundaries = self.max_iter
        else:
            # Boundaries ceil(k n / b) < max_iter  <=>  k <= (max_iter - 1) b / n.
            boundaries = (self.max_iter - 1) * self.batch_size // self.train_size + 1
        return boundaries + (self.evaluate == "before_step")

    # -- one step ------------------------------------------------------------------------------
    def _train_step(self, x_batch: np.ndarray, t_batch: np.ndarray) -> Any:
        """Update the network on one batch; return the loss to record (see ``record_loss``)."""
        try:
            return self._update_on(x_batch, t_batch)
        except NonFiniteInputError:
            if not self.check_finite:
                raise
            # The network refused the batch before changing anything: a non-finite loss for the
            # guard, which names the step and the x_train samples (also when it replays this step).
            return float("nan")

    def _update_on(self, x_batch: np.ndarray, t_batch: np.ndarray) -> Any:
        if self._fused is not None:
            loss = self._fused(x_batch, t_batch, self.optimizer)
            if self.record_loss != "after_update":
                return loss
            # The book records network.loss after the update; the fused plan computes its value
            # without the layers' caches (Sequential.loss_value: same masks and statistics).
            loss_value = getattr(self.network, "loss_value", None)
            if loss_value is not None:
                return loss_value(x_batch, t_batch)
            return self.network.loss(x_batch, t_batch)
        grads = self.network.gradient(x_batch, t_batch)
        if self.record_loss == "after_update":
            self.optimizer.update(self.network.params, grads)
            return self.network.loss(x_batch, t_batch)
        if self.record_loss is None and not self.check_finite:
            self.optimizer.update(self.network.params, grads)
            return 0.0  # nothing reads it: no loss computed at all
        last = getattr(self.network, "last_layer", None)
        if last is None or getattr(last, "loss", None) is None:
            # A network without a loss layer: the loss of the batch after the update instead.
            self.optimizer.update(self.network.params, grads)
            return self.network.loss(x_batch, t_batch)
        # The forward pass of gradient() left its loss in the loss layer: read it before the
        # update (no second forward pass), weight decay included as Sequential.loss does.
        decay = getattr(self.network, "weight_decay", None)
        loss = float(last.loss) + (float(decay()) if callable(decay) else 0.0)
        self.optimizer.update(self.network.params, grads)
        return loss

    def train_step(self) -> None:
        """One iteration: draw a batch, update, record the loss; evaluate at an epoch boundary."""
        iteration = self.current_iter
        if self.evaluate == "before_step" and self.is_epoch_boundary(iteration):
            self._end_epoch()
        self._guard.before_step(self)
        batch_mask = self.draw_batch()
        x_batch = self.x_train[batch_mask]
        t_batch = self.t_train[batch_mask]
        started = time.perf_counter()
        raw = self._train_step(x_batch, t_batch)
        loss = float(raw)
        self._guard.after_step(self, loss, batch_mask)  # raises NonFiniteError on NaN/inf
        self.train_time += time.perf_counter() - started
        self.samples_seen += self.batch_size
        if self.record_loss is not None:
            self.train_loss_list.append(loss)
        self._report_step(raw, loss)
        for cb in self._step_callbacks:
            cb.on_step_end(self, iteration, loss)
        # Count the step before evaluating: a callback that raises (or a second Ctrl-C during the
        # evaluation) then leaves current_iter consistent with the update already made.
        self.current_iter += 1
        if self.evaluate == "after_step" and self.is_epoch_boundary(iteration):
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
            "samples_per_sec": self.samples_per_sec,
        }
        self.history.append(logs)
        self._report_epoch(logs)
        for cb in self.callbacks:
            if cb.on_epoch_end(self, self.current_epoch, logs):
                self.stop_training = True

    # -- output --------------------------------------------------------------------------------
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
            print(line, file=out, flush=self.report != "book")

    def _open_bar(self) -> None:
        if not self.progress:
            return
        from tqdm.auto import tqdm  # lazy: keeps `import zerodl` fast

        self._bar = tqdm(total=self.max_iter, initial=self.current_iter, unit="step",
                         dynamic_ncols=True, mininterval=self.progress_interval, leave=False)

    def _report_begin(self) -> None:
        if self.report == "table":
            self._write(self.HEADER)
        self._open_bar()

    def _report_step(self, raw: Any, loss: float) -> None:
        if self.report == "book":
            # The book prints str() of what network.loss returned (an np.float64 as a float).
            self._write("train loss:" + str(raw))
        if self._bar is not None:
            self._bar.update(1)
            if self.train_time > 0:
                self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False,
                                      **{"samples/s": f"{self.samples_seen / self.train_time:,.0f}"})

    def _report_epoch(self, logs: Mapping[str, Any]) -> None:
        if self.report == "book":
            self._write(f"=== epoch:{logs['epoch']}, train acc:{logs['train_acc']}, test acc:{logs['test_acc']} ===")
        elif self.report == "table":
            self._write(self._row(logs))

    def _report_end(self) -> None:
        if self.report == "book":
            self._write("=============== Final Test Accuracy ===============")
            self._write(f"test acc:{self.final_test_acc}")
        elif self.report == "table":
            self._write(f"final test accuracy: {self.final_test_acc:.4f} ({self.samples_per_sec:,.0f} samples/s)")

    def _report_interrupted(self) -> None:
        if self.report is not None:
            how = f" by {signal.Signals(self.stop_signal).name}" if self.stop_signal is not None else ""
            self._write(f"interrupted{how} at iteration {self.current_iter}/{self.max_iter} "
                        f"(epoch {self.current_epoch}); parameters trained so far are kept")

    # -- checkpoints ---------------------------------------------------------------------------
    def _check_checkpoint_owner(self) -> None:
        """Refuse, before any work, to replace a file that is not this run's own checkpoint."""
        path = self.checkpoint_path
        if path is None or self._owns_checkpoint or self.overwrite_checkpoint:
            return
        if os.path.lexists(path):
            raise CheckpointError(
                f"{path} already exists and is not this run's checkpoint: resume it (resume()) to "
                "continue that run, or pass overwrite_checkpoint=True to start over and replace it")
        self._owns_checkpoint = True

    def _hold_checkpoint(self) -> None:
        """Lock :attr:`checkpoint_path` for this run (``<checkpoint>.lock``, see :mod:`zerodl._runlock`).

        Held from :meth:`train` (or :meth:`~zerodl.trainer.Trainer.resume`) until :meth:`train`
        returns or raises. Another run on the same file — another process, or another loop in this
        one — raises :class:`zerodl._runlock.OutputInUseError` before any step. A lock that the
        caller already holds for this run (``zerodl train`` locks its outputs up front) is used as is.
        """
        if self.checkpoint_path is None or (self._checkpoint_lock is not None and self._checkpoint_lock.held):
            return
        from zerodl._runlock import RunLock

        self._checkpoint_lock = RunLock([self.checkpoint_path], command=f"{type(self).__name__}.train "
                                        f"(checkpoint {self.checkpoint_path})")

    def _release_checkpoint(self) -> None:
        lock, self._checkpoint_lock = self._checkpoint_lock, None
        if lock is not None:
            lock.release()

    def _claim_checkpoint(self, path: str | os.PathLike[str]) -> None:
        if self.checkpoint_path is not None and Path(path) == self.checkpoint_path:
            self._owns_checkpoint = True

    # -- the loop ------------------------------------------------------------------------------
    def train(self) -> Self:
        """Run ``max_iter - current_iter`` steps (a callback or a stop signal may stop earlier),
        write the final checkpoint, then measure the final test accuracy (not after a stop
        signal). Returns ``self``.

        The checkpoint file is locked for the whole call (see :meth:`_hold_checkpoint`): a second
        run on the same ``checkpoint_path`` is refused with
        :class:`zerodl._runlock.OutputInUseError` before its first step."""
        self._hold_checkpoint()
        try:
            return self._train_holding_checkpoint()
        finally:
            self._release_checkpoint()

    def _train_holding_checkpoint(self) -> Self:
        self._check_checkpoint_owner()
        self.stop_training = False
        self.interrupted = False
        self.stop_signal = None
        self.final_test_acc = None
        self._start = time.perf_counter()
        stop = self.signals if self.signals is not None else _NoSignals()
        if self._own_signals:
            stop.reset()
        with stop:
            try:
                for cb in self.callbacks:
                    cb.on_train_begin(self)
                self._report_begin()
                with stop.interruptible():
                    while self.current_iter < self.max_iter and not self.stop_training:
                        if stop.requested:
                            break
                        self.train_step()
            except KeyboardInterrupt:
                if self.signals is None:
                    raise
                self.interrupted = True
            finally:
                if self._bar is not None:
                    self._bar.close()
                    self._bar = None
            if stop.requested:
                self.interrupted = True
                self.stop_signal = stop.signum
            with stop.hold():  # a second signal must not cut the final checkpoint short
                self._guard.finish(self)  # (before EarlyStopping may restore the best params)
        for cb in self.callbacks:
            cb.on_train_end(self)
        if self.interrupted:
            self._report_interrupted()
            return self
        if self.evaluate == "before_step" and self.current_iter >= self.max_iter \
                and len(self.test_acc_list) < self.total_epochs:
            self._end_epoch()  # the measurement after the last step
            if self.evaluate_sample_num_per_epoch is None:
                self.final_test_acc = self.test_acc_list[-1]
        if self.evaluate is not None:
            if self.final_test_acc is None or self.evaluate == "after_step":
                self.final_test_acc = float(self.network.accuracy(self.x_test, self.t_test))
            self._report_end()
        return self

    @property
    def samples_per_sec(self) -> float:
        """Training throughput so far: samples per second of training steps (evaluation excluded)."""
        return self.samples_seen / self.train_time if self.train_time > 0 else float("nan")


__all__ = ["STOP_SIGNALS", "StopSignals", "TrainingLoop", "data_fingerprint"]

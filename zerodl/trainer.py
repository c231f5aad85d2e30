"""The book's ``Trainer`` (``common/trainer.py``), seedable and watchable.

``from common.trainer import Trainer`` becomes ``from zerodl.trainer import Trainer``; the
constructor takes the book's arguments in the book's order and fills the same lists
(``train_loss_list``, ``train_acc_list``, ``test_acc_list``) with the same meaning:

* ``iter_per_epoch = max(train_size / mini_batch_size, 1)``, ``max_iter = int(epochs * iter_per_epoch)``;
* each step draws ``mini_batch_size`` indices *with replacement* (``np.random.choice(train_size,
  batch_size)``), computes the gradients, updates the parameters and **then** records
  ``network.loss`` on the same batch (the loss after the update, in inference mode), one entry per
  iteration;
* at each epoch boundary, *after* that iteration's update (iteration 0 is the first boundary, so the
  first accuracies are measured after one update), train and test accuracy are measured on the
  whole sets, or on their first ``evaluate_sample_num_per_epoch`` samples, and appended;
* after the last iteration the test accuracy on the whole test set is measured
  (:attr:`Trainer.final_test_acc`);
* ``verbose=True`` prints what the book prints, on stdout: ``train loss:<loss>`` after each step,
  ``=== epoch:<n>, train acc:<a>, test acc:<b> ===`` after each evaluation, and the
  ``=============== Final Test Accuracy ===============`` banner with ``test acc:<x>``.

With no ``seed=`` the batches come from NumPy's global random state with the book's very call, so a
book script that starts with ``np.random.seed(0)`` gets the book's batches. The loop itself is
:class:`zerodl.loop.TrainingLoop`, the one the experiments and the search use too.

Where zerodl departs from the book, on purpose:

* ``seed``: an int or a :class:`numpy.random.Generator` draws the batches from that generator
  instead (``integers(0, N, size=B)``); the same seed and the same initial network give identical
  lists, whatever else the program draws from ``np.random``.
* Epoch boundaries when ``train_size`` is not a multiple of ``mini_batch_size``: the book tests
  ``current_iter % iter_per_epoch == 0`` with a fractional ``iter_per_epoch`` (1347 / 100 = 13.47),
  which is true only at iteration 0, so it evaluates once and never again. zerodl evaluates at
  iteration ``ceil(k * iter_per_epoch)`` for ``k = 0, 1, ...``, which is the book's iteration
  whenever ``iter_per_epoch`` is a whole number (MNIST: 60000 / 100).
* ``optimizer_param=None`` means the book's default ``{'lr': 0.01}`` (a dict default would be a
  shared mutable argument); ``optimizer`` may also be an :class:`~zerodl.optimizer.Optimizer`.
* ``report="table"`` (what ``zerodl train`` shows) replaces the book's lines by a tqdm progress
  bar (live loss and samples/s, on stderr) and one table row per epoch; ``verbose=False`` prints
  nothing.
* Callbacks (:class:`Callback`, :class:`EarlyStopping`) can stop the training; checkpoints
  (``checkpoint_path``) save and :meth:`Trainer.resume` restores the whole state, callbacks
  included; a NaN/inf loss stops with the last good parameters
  (:class:`zerodl.checkpoint.NonFiniteError`).
* Stop signals: Ctrl-C (SIGINT) stops the training cleanly between two steps, keeping the
  parameters trained so far (:attr:`Trainer.interrupted`), when Python's own Ctrl-C handler is in
  place (it would raise ``KeyboardInterrupt`` anyway; a program or notebook with its own handler
  keeps it). ``handle_signals=True`` does the same for SIGTERM and SIGHUP (``kill``, ``timeout``,
  batch schedulers, a closed terminal) while :meth:`train` runs; it is off by default because a
  library should not change what those signals do to a program that did not ask.
  :attr:`Trainer.stop_signal` says which signal stopped it; the final checkpoint is written with
  further signals held, so no file is left half-written.
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
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zerodl.callbacks import Callback, EarlyStopping
from zerodl.callbacks import LambdaCallback as _LambdaCallback  # noqa: F401  (old private name)
from zerodl.loop import StopSignals, TrainingLoop
from zerodl.optimizer import OPTIMIZERS, Optimizer, get_optimizer

#: The book's ``Trainer`` default: ``optimizer_param={'lr': 0.01}``, whatever the optimizer.
BOOK_OPTIMIZER_PARAM: Mapping[str, float] = {"lr": 0.01}


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"Trainer: {name} must be a positive integer, got {value!r}")
    return int(value)


class Trainer(TrainingLoop):
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
        verbose: print the training's progress (``report``'s lines); ``False`` prints nothing.
        seed: ``None`` (the book: batches from NumPy's global random state), an int or a
            :class:`numpy.random.Generator` (batches from that generator).
        callbacks: :class:`Callback` objects or functions ``f(trainer, epoch, logs) -> bool``.
        report: what ``verbose`` prints: ``"book"`` (default: the book's ``train loss:`` /
            ``=== epoch:`` lines and final banner, on stdout) or ``"table"`` (a progress bar on
            stderr, a table row per epoch and a final line).
        progress: show the tqdm bar (default: with ``report="table"``).
        file: where the lines go (default ``sys.stdout``).
        record_loss: ``"after_update"`` (the book: ``network.loss`` on the batch after the update,
            inference mode) or ``"before_update"`` (the loss the fused step computed anyway; saves
            one forward pass per step when the network has ``train_step``).
        checkpoint_path: write the whole training state there (atomically, see
            :mod:`zerodl.checkpoint`) every ``checkpoint_every`` iterations (default: at every epoch
            evaluation) and when :meth:`train` ends; :meth:`resume` reads it back. An existing file
            that this Trainer did not resume from is not replaced: :meth:`train` raises
            :class:`~zerodl.checkpoint.CheckpointError` before the first step unless
            ``overwrite_checkpoint=True``.
        checkpoint_every: iterations between checkpoints.
        overwrite_checkpoint: start over, replacing an existing checkpoint file.
        run_config: JSON-able settings that identify this run (e.g. the command line); stored in
            the checkpoint, and a resume with other values is refused.
        handle_signals: ``False`` (default): only Ctrl-C, and only while Python's default handler
            is in place; ``True``: SIGINT, SIGTERM and SIGHUP stop the training cleanly while
            :meth:`train` runs (handlers restored after); or a :class:`~zerodl.loop.StopSignals`
            you hold yourself (e.g. around training *and* saving, as ``zerodl train`` does).

    Robustness: ``x_train`` / ``x_test`` are checked once for NaN/inf here; a NaN/inf loss during
    training raises :class:`zerodl.checkpoint.NonFiniteError` naming the step and the culprit, the
    network keeping the parameters from before that step.

    State (what a checkpoint holds): :attr:`current_iter`, :attr:`current_epoch`, the batch
    generator's state (:attr:`rng`, or NumPy's global state when ``rng`` is ``None``),
    :attr:`optimizer` (its ``state_dict``), the network's params/buffers, the three lists and the
    callbacks' :meth:`~Callback.state_dict`.
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
        report: str = "book",
        progress: bool | None = None,
        file: Any = None,
        record_loss: str = "after_update",
        checkpoint_path: str | os.PathLike[str] | None = None,
        checkpoint_every: int | None = None,
        overwrite_checkpoint: bool = False,
        run_config: Mapping[str, Any] | None = None,
        handle_signals: bool | StopSignals = False,
    ) -> None:
        if report not in ("book", "table"):
            raise ValueError(f"Trainer: report must be 'book' or 'table', got {report!r}")
        if record_loss not in ("after_update", "before_update"):
            raise ValueError(f"Trainer: record_loss must be 'after_update' or 'before_update', got {record_loss!r}")
        if isinstance(handle_signals, StopSignals):
            signals = handle_signals
        elif handle_signals is True:
            signals = StopSignals()
        elif handle_signals is False:
            # Python already turns Ctrl-C into KeyboardInterrupt: deferring it to the end of the
            # step takes nothing from the program (a handler of its own is left alone).
            signals = StopSignals((signal.SIGINT,), only_default=True)
        else:
            raise TypeError(f"Trainer: handle_signals must be True, False or a StopSignals, got {handle_signals!r}")
        if isinstance(epochs, bool) or not isinstance(epochs, (int, float, np.number)) or not epochs > 0:
            raise ValueError(f"Trainer: epochs must be a positive number, got {epochs!r}")
        super().__init__(
            network, self._make_optimizer(optimizer, optimizer_param), x_train, t_train, x_test, t_test,
            batch_size=_positive_int("mini_batch_size", mini_batch_size), epochs=epochs, seed=seed,
            record_loss=record_loss, evaluate="after_step",
            evaluate_sample_num_per_epoch=evaluate_sample_num_per_epoch, callbacks=callbacks,
            checkpoint_path=checkpoint_path, checkpoint_every=checkpoint_every,
            overwrite_checkpoint=overwrite_checkpoint, run_config=run_config, signals=signals,
            own_signals=not isinstance(handle_signals, StopSignals),
            report=report if verbose else None, progress=bool(verbose) and (report == "table")
            if progress is None else progress, file=file, owner="Trainer",
        )
        self.verbose = bool(verbose)

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

    def resume(self, path: str | os.PathLike[str] | None = None, *, hyperparams: str = "same") -> bool:
        """Restore network, optimizer, generators, callbacks and progress from ``path`` (default
        :attr:`checkpoint_path`); ``train()`` then continues bit for bit. Returns ``False`` (and
        changes nothing) when the file does not exist yet.

        A checkpoint of another run is refused (:class:`~zerodl.checkpoint.CheckpointError`,
        nothing changed): see :func:`zerodl.checkpoint.load_checkpoint`. ``hyperparams``:
        ``"same"`` (default) refuses optimizer hyper-parameters other than this Trainer's;
        ``"checkpoint"`` takes the checkpoint's; ``"trainer"`` keeps this Trainer's (e.g. a new
        learning rate for the rest of the run).
        """
        from zerodl.checkpoint import load_checkpoint

        path = path if path is not None else self.checkpoint_path
        if path is None:
            raise ValueError("Trainer.resume: no path given and no checkpoint_path set")
        if self.checkpoint_path is not None and Path(path) == self.checkpoint_path:
            # Locked from here to the end of train(): no other run writes it in between.
            self._hold_checkpoint()
        try:
            if not os.path.exists(path):
                self._claim_checkpoint(path)
                return False
            load_checkpoint(self, path, hyperparams=hyperparams)
        except BaseException:
            self._release_checkpoint()
            raise
        self._claim_checkpoint(path)
        return True


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
    "StopSignals",
    "Trainer",
    "confusion_matrix",
    "predict_labels",
]

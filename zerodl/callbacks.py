"""Callbacks of the training loop (:class:`zerodl.loop.TrainingLoop`, hence :class:`~zerodl.trainer.Trainer`).

A callback that keeps state across epochs (:class:`EarlyStopping`'s best value and patience count)
returns it from :meth:`Callback.state_dict`; checkpoints store it and :meth:`Callback.load_state_dict`
puts it back, validated like a constructor argument, so a resumed run decides exactly as the
uninterrupted one would.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from zerodl._npz import network_arrays


class Callback:
    """Hooks into the training loop. Subclass and override what you need.

    ``on_epoch_end`` is called after each epoch evaluation with ``logs`` holding ``epoch``,
    ``iteration``, ``loss`` (mean recorded loss since the previous evaluation), ``train_acc``,
    ``test_acc``, ``elapsed`` (seconds since the start) and ``samples_per_sec``; returning ``True``
    stops the training after this step (the final test accuracy is still measured).
    """

    def on_train_begin(self, trainer: Any) -> None:
        """Called at the start of each ``train()`` (also when it continues a run)."""

    def on_epoch_end(self, trainer: Any, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        """Called after each epoch's evaluation; return ``True`` to stop."""
        return None

    def on_step_end(self, trainer: Any, iteration: int, loss: float) -> None:
        """Called after each step with its iteration (0-based) and the loss recorded for it."""

    def on_train_end(self, trainer: Any) -> None:
        """Called once after the last step (also after an early stop or a stop signal)."""

    def state_dict(self) -> dict[str, Any] | None:
        """The state a resumed run needs, or ``None`` for a stateless callback (the default).

        Values are JSON-able (numbers, strings, lists, ``None``) or dicts of float arrays.
        """
        return None

    def load_state_dict(self, state: Mapping[str, Any], trainer: Any) -> None:
        """Restore :meth:`state_dict`'s result; raise ``ValueError`` for a value the constructor
        would refuse (nothing is changed then)."""
        if state is not None:
            raise ValueError(f"{type(self).__name__} keeps no state, got {type(state).__name__}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
    never stopped the training) say what happened. Its state starts afresh when a run starts at
    iteration 0, and is kept when ``train()`` continues a run (or a run resumed from a checkpoint).
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

    def on_train_begin(self, trainer: Any) -> None:
        if trainer is None or getattr(trainer, "current_iter", 0) == 0:
            self.best, self.best_epoch, self.stopped_epoch, self.wait = None, None, None, 0
            self._best_arrays = None
        elif self.stopped_epoch is not None:
            # This run was already ended by this callback (a resumed, or continued, run): it stays
            # ended, as the uninterrupted run did.
            trainer.stop_training = True

    def _improved(self, value: float) -> bool:
        if self.best is None:
            return True
        if self.mode == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def on_epoch_end(self, trainer: Any, epoch: int, logs: Mapping[str, Any]) -> bool:
        if self.monitor not in logs:
            raise KeyError(f"EarlyStopping: monitor {self.monitor!r} is not in the epoch logs {sorted(logs)}")
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._best_arrays = network_arrays(trainer.network, copy=True)
            return False
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            return True
        return False

    def on_train_end(self, trainer: Any) -> None:
        if self.restore_best and self._best_arrays is not None:
            _restore(trainer.network, self._best_arrays)

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best, "best_epoch": self.best_epoch,
                "stopped_epoch": self.stopped_epoch, "wait": self.wait,
                "best_arrays": None if self._best_arrays is None else dict(self._best_arrays)}

    def load_state_dict(self, state: Mapping[str, Any], trainer: Any) -> None:
        where = "EarlyStopping state"
        if not isinstance(state, Mapping):  # ValueError: the contract of load_state_dict (a bad file)
            raise ValueError(f"{where} must be an object, got {type(state).__name__}")  # noqa: TRY004
        if state.get("monitor") != self.monitor or state.get("mode") != self.mode:
            raise ValueError(f"{where} monitors {state.get('monitor')!r} ({state.get('mode')}), this "
                             f"EarlyStopping monitors {self.monitor!r} ({self.mode})")
        best = state.get("best")
        if best is not None and not (_is_number(best) and math.isfinite(best)):
            raise ValueError(f"{where}: best must be a finite number or null, got {best!r}")
        epochs = getattr(trainer, "current_epoch", None)
        for key in ("best_epoch", "stopped_epoch"):
            value = state.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1
                                      or (epochs is not None and value > epochs)):
                raise ValueError(f"{where}: {key} must be null or an epoch in 1..{epochs}, got {value!r}")
        if (best is None) != (state.get("best_epoch") is None):
            raise ValueError(f"{where}: best and best_epoch must both be set or both be null")
        wait = state.get("wait")
        if not isinstance(wait, int) or isinstance(wait, bool) or not 0 <= wait <= self.patience:
            raise ValueError(f"{where}: wait must be an integer in 0..{self.patience} (patience), got {wait!r}")
        arrays = state.get("best_arrays")
        if arrays is not None:
            if not self.restore_best:
                raise ValueError(f"{where} holds best parameters but restore_best is False")
            expected = network_arrays(trainer.network, copy=False)
            if set(arrays) != set(expected):
                raise ValueError(f"{where}: best parameters {sorted(arrays)} are not the network's {sorted(expected)}")
            for key, value in arrays.items():
                if not isinstance(value, np.ndarray) or value.shape != expected[key].shape \
                        or value.dtype != expected[key].dtype:
                    raise ValueError(f"{where}: best {key} is not a {expected[key].dtype} array of shape "
                                     f"{expected[key].shape}")
            arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}
        elif self.restore_best and best is not None:
            raise ValueError(f"{where}: restore_best is True but no best parameters were saved")
        self.best = None if best is None else float(best)
        self.best_epoch, self.stopped_epoch = state.get("best_epoch"), state.get("stopped_epoch")
        self.wait = wait
        self._best_arrays = arrays


def _restore(network: Any, arrays: Mapping[str, np.ndarray]) -> None:
    for key, target in network.params.items():
        np.copyto(target, arrays["param/" + key])
    buffers = getattr(network, "buffers", None)
    if callable(buffers):
        for key, target in buffers().items():
            if "buffer/" + key in arrays:
                np.copyto(target, arrays["buffer/" + key])


class LambdaCallback(Callback):
    """Wraps a plain function ``f(trainer, epoch, logs) -> bool | None`` as an epoch-end callback."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: Any, epoch: int, logs: Mapping[str, Any]) -> bool | None:
        return self.fn(trainer, epoch, logs)


__all__ = ["Callback", "EarlyStopping", "LambdaCallback"]

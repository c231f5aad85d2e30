"""The book's six optimizers: ``update(params, grads)`` writes into ``params`` in place.

The update loops are kernels (:mod:`zerodl.kernels.optim`) of the active backend. State
(velocities, accumulators, Adam's moments and step count) is created lazily on the first update,
as in the book, one array per parameter name, and can be saved with :meth:`Optimizer.state_dict`
and restored with :meth:`Optimizer.load_state_dict` so a training resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from zerodl import kernels

#: The book's epsilon in AdaGrad, RMSprop and Adam.
EPS = 1e-7


def _fraction(owner: str, name: str, value: Any) -> float:
    """A decay / momentum coefficient: a finite number in [0, 1) (1 or NaN would never forget)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < 1:
        raise ValueError(f"{owner}: {name} must be a number in [0, 1), got {value!r}")
    return float(value)


class Optimizer:
    """Base class. Subclasses name their state arrays in ``state_names`` and implement ``_step``."""

    state_names: tuple[str, ...] = ()

    def __init__(self, lr: float) -> None:
        if not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"{type(self).__name__}: lr must be a positive finite number, got {lr!r}")
        self.lr = float(lr)
        self.iter = 0
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.state_names}

    # -- the book's API ---------------------------------------------------------------------
    def update(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """Apply one step to every array in ``params`` using ``grads[name]``; ``params`` change in place."""
        where = f"{type(self).__name__}.update"
        for key, param in params.items():
            if key not in grads:
                raise KeyError(f"{where}: no gradient for parameter {key!r}; grads has {sorted(grads)}")
            grad = grads[key]
            if np.shape(grad) != param.shape:
                raise ValueError(
                    f"{where}: gradient for {key!r} has shape {np.shape(grad)}, parameter has {param.shape}"
                )
            if not param.flags.c_contiguous or param.dtype.kind != "f":
                raise ValueError(f"{where}: parameter {key!r} must be a C-contiguous float array")
        self.iter += 1
        for key, param in params.items():
            state = [self._state_array(name, key, param) for name in self.state_names]
            self._step(param, np.asarray(grads[key]), *state)

    def _step(self, param: np.ndarray, grad: np.ndarray, *state: np.ndarray) -> None:  # pragma: no cover
        raise NotImplementedError

    def _state_array(self, name: str, key: str, param: np.ndarray) -> np.ndarray:
        table = self.state[name]
        arr = table.get(key)
        if arr is None or arr.shape != param.shape or arr.dtype != param.dtype:
            arr = table[key] = np.zeros_like(param)
        return arr

    # -- saving and restoring -----------------------------------------------------------------
    def hyperparams(self) -> dict[str, float]:
        """The constructor arguments, e.g. ``{"lr": 0.01, "momentum": 0.9}``."""
        return {"lr": self.lr}

    def state_dict(self) -> dict[str, Any]:
        """A copy of everything needed to resume: hyper-parameters, step count, state arrays."""
        return {
            "class": type(self).__name__,
            "hyperparams": self.hyperparams(),
            "iter": self.iter,
            "state": {name: {k: v.copy() for k, v in table.items()} for name, table in self.state.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (arrays are copied in)."""
        if state.get("class") != type(self).__name__:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state is for {state.get('class')!r}")
        for key, value in state.get("hyperparams", {}).items():
            setattr(self, key, float(value))
        self.iter = int(state["iter"])
        missing = set(self.state_names) - set(state["state"])
        if missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state lacks {sorted(missing)}")
        self.state = {
            name: {k: np.array(v, copy=True) for k, v in state["state"][name].items()}
            for name in self.state_names
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent: ``W -= lr * dW``."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    def _step(self, param: np.ndarray, grad: np.ndarray) -> None:
        kernels.get("sgd_update")(param, grad, self.lr)


class Momentum(Optimizer):
    """``v = momentum v - lr dW``; ``W += v``."""

    state_names = ("v",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = _fraction(type(self).__name__, "momentum", momentum)

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.lr, "momentum": self.momentum}

    def _step(self, param: np.ndarray, grad: np.ndarray, v: np.ndarray) -> None:
        kernels.get("momentum_update")(param, grad, v, self.lr, self.momentum)


class Nesterov(Momentum):
    """Nesterov's accelerated gradient, the book repository's corrected form."""

    def _step(self, param: np.ndarray, grad: np.ndarray, v: np.ndarray) -> None:
        kernels.get("nesterov_update")(param, grad, v, self.lr, self.momentum)


class AdaGrad(Optimizer):
    """``h += dW²``; ``W -= lr dW / (sqrt(h) + 1e-7)``."""

    state_names = ("h",)

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    def _step(self, param: np.ndarray, grad: np.ndarray, h: np.ndarray) -> None:
        kernels.get("adagrad_update")(param, grad, h, self.lr, EPS)


class RMSprop(Optimizer):
    """``h = decay h + (1 - decay) dW²``; ``W -= lr dW / (sqrt(h) + 1e-7)``."""

    state_names = ("h",)

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        super().__init__(lr)
        self.decay_rate = _fraction(type(self).__name__, "decay_rate", decay_rate)

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.lr, "decay_rate": self.decay_rate}

    def _step(self, param: np.ndarray, grad: np.ndarray, h: np.ndarray) -> None:
        kernels.get("rmsprop_update")(param, grad, h, self.lr, self.decay_rate, EPS)


class Adam(Optimizer):
    """Adam with the book's bias-corrected rate ``lr_t = lr sqrt(1 - β2^t) / (1 - β1^t)``."""

    state_names = ("m", "v")

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        super().__init__(lr)
        self.beta1 = _fraction("Adam", "beta1", beta1)
        self.beta2 = _fraction("Adam", "beta2", beta2)

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2}

    def _step(self, param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray) -> None:
        lr_t = self.lr * math.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        kernels.get("adam_update")(param, grad, m, v, lr_t, self.beta1, self.beta2, EPS)


#: Name → class, for the Trainer and the CLI (``optimizer="adam"`` is case-insensitive).
OPTIMIZERS: dict[str, type[Optimizer]] = {
    cls.__name__.lower(): cls for cls in (SGD, Momentum, Nesterov, AdaGrad, RMSprop, Adam)
}


def get_optimizer(name: str, **params: Any) -> Optimizer:
    """Build an optimizer from its (case-insensitive) name, e.g. ``get_optimizer("Adam", lr=1e-3)``."""
    cls = OPTIMIZERS.get(str(name).lower())
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(c.__name__ for c in OPTIMIZERS.values())}")
    return cls(**params)

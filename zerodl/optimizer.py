"""The book's six optimizers: ``update(params, grads)`` writes into ``params`` in place.

The update loops are kernels (:mod:`zerodl.kernels.optim`) of the active backend. State
(velocities, accumulators, Adam's moments and step count) is created lazily on the first update,
as in the book, one array per parameter name, and can be saved with :meth:`Optimizer.state_dict`
and restored with :meth:`Optimizer.load_state_dict` so a training resumes exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np

import zerodl.kernels as kernels  # noqa: PLR0402 (names the module, not the package: no edge to zerodl/__init__)
from zerodl._validate import check_grad_array, check_param_array

#: The book's epsilon in AdaGrad, RMSprop and Adam.
EPS = 1e-7


def _fraction(owner: str, name: str, value: Any) -> float:
    """A decay / momentum coefficient: a finite number in [0, 1) (1 or NaN would never forget)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or not 0 <= value < 1:
        raise ValueError(f"{owner}: {name} must be a number in [0, 1), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class UpdateRule:
    """How an optimizer's next update is computed, for callers that run it themselves.

    ``op``: the kernel op (:mod:`zerodl.kernels.optim`) called as
    ``kernels.get(op)(params, grads, *states, *scalars)`` over sequences of arrays; ``state_names``:
    the optimizer's state tables, in the kernel's argument order (their arrays come from
    :meth:`Optimizer.state_arrays`); ``scalars``: the hyper-parameters of this step (Adam's
    bias-corrected rate already applied), as Python floats.
    """

    op: str
    state_names: tuple[str, ...]
    scalars: tuple[float, ...]


class Optimizer:
    """Base class. A built-in optimizer names its kernel op in ``update_op``, its state tables in
    ``state_names``, and its per-step hyper-parameters in :meth:`scalars`.

    Subclasses that change the maths override ``_step(param, grad, *state)`` (called once per
    parameter, with ``iter`` already counting this step); such an optimizer has no
    :meth:`update_rule`, and fused steps hand it their gradients through :meth:`update`.
    """

    state_names: tuple[str, ...] = ()
    #: The kernel op of the update (``None``: the subclass implements ``_step`` itself).
    update_op: str | None = None

    def __init__(self, lr: float) -> None:
        if isinstance(lr, bool) or not (isinstance(lr, (int, float, np.floating)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"{type(self).__name__}: lr must be a positive finite number, got {lr!r}")
        self.lr = float(lr)
        self.iter = 0
        self.state: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.state_names}

    # -- what one step computes ---------------------------------------------------------------
    def scalars(self, iteration: int) -> tuple[float, ...]:
        """The hyper-parameters the kernel takes at step ``iteration`` (1 for the first update)."""
        return (self.lr,)

    def update_rule(self) -> UpdateRule | None:
        """The description of the next update (step ``iter + 1``), or ``None`` when a subclass
        redefines the maths (``_step`` or ``update`` overridden) and only :meth:`update` knows it."""
        cls = type(self)
        if self.update_op is None or cls._step is not Optimizer._step or cls.update is not Optimizer.update:
            return None
        return UpdateRule(self.update_op, self.state_names, self.scalars(self.iter + 1))

    def state_arrays(self, key: str, param: np.ndarray) -> tuple[np.ndarray, ...]:
        """The state arrays of parameter ``key`` in :attr:`state_names` order, created (zeros like
        ``param``) on first use, as the book creates them on the first update."""
        return tuple(self._state_array(name, key, param) for name in self.state_names)

    # -- the book's API ---------------------------------------------------------------------
    def update(self, params: MutableMapping[str, Any], grads: Mapping[str, Any]) -> None:
        """Apply one step to every entry of ``params`` using ``grads[name]``.

        Arrays change in place; a plain number (the book's ``optimizer_compare_naive.py`` optimises
        ``{'x': -7.0, 'y': 2.0}``) is replaced by its updated value, as ``params[key] -= ...`` does.
        Everything is checked before anything changes.
        """
        where = f"{type(self).__name__}.update"
        if not isinstance(params, Mapping) or not isinstance(grads, Mapping):
            raise TypeError(f"{where}: params and grads must be dicts of arrays, got "
                            f"{type(params).__name__} and {type(grads).__name__}")
        keys = list(params)
        arrays: list[np.ndarray] = []
        scalar_keys: list[str] = []
        for key in keys:
            value = params[key]
            if isinstance(value, np.ndarray):
                check_param_array(where, key, value)
                arrays.append(value)
            else:
                arrays.append(_scalar_param(where, key, value))
                scalar_keys.append(key)
        grad_arrays = [_checked_grad(where, key, grads, param) for key, param in zip(keys, arrays)]
        self.iter += 1
        if type(self)._step is Optimizer._step and self.update_op is not None:
            # One kernel call for all parameters (what a fused step does too).
            # One kernel call per dtype (a call takes arrays of one dtype): normally one call.
            update, scalars = kernels.get(self.update_op), self.scalars(self.iter)
            for dtype in dict.fromkeys(a.dtype for a in arrays):
                idx = [i for i, a in enumerate(arrays) if a.dtype == dtype]
                states = [self.state_arrays(keys[i], arrays[i]) for i in idx]
                per_name = [[s[k] for s in states] for k in range(len(self.state_names))]
                update([arrays[i] for i in idx], [grad_arrays[i] for i in idx], *per_name, *scalars)
        else:
            for key, param, grad in zip(keys, arrays, grad_arrays):
                self._step(param, grad, *self.state_arrays(key, param))
        for key in scalar_keys:
            value = arrays[keys.index(key)][()]
            # The type the book's `params[key] -= ...` leaves: a NumPy scalar once NumPy took part (a
            # NumPy scalar parameter or gradient, or the optimizer's 0-d state arrays), a Python float
            # only for plain SGD on plain numbers.
            plain = not self.state_names and not isinstance(params[key], np.generic) \
                and not isinstance(grads[key], (np.generic, np.ndarray))
            params[key] = value.item() if plain else value

    def _step(self, param: np.ndarray, grad: np.ndarray, *state: np.ndarray) -> None:
        """One parameter's update with the built-in kernel (``iter`` counts this step already)."""
        if self.update_op is None:  # pragma: no cover - a subclass without a kernel must override
            raise NotImplementedError(f"{type(self).__name__} defines neither update_op nor _step")
        kernels.get(self.update_op)(param, grad, *state, *self.scalars(self.iter))

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
        """Restore what :meth:`state_dict` returned (arrays are copied in).

        Every value is validated as the constructor validates it (a tampered negative learning rate
        is refused) before anything changes.
        """
        where = f"{type(self).__name__}.load_state_dict"
        if state.get("class") != type(self).__name__:
            raise ValueError(f"{where}: state is for {state.get('class')!r}")
        hyper = dict(state.get("hyperparams", {}))
        unknown = set(hyper) - set(self.hyperparams())
        if unknown:
            raise ValueError(f"{where}: unknown hyper-parameters {sorted(unknown)}")
        try:
            type(self)(**{**self.hyperparams(), **hyper})  # the constructor's checks
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: {exc}") from None
        it = state.get("iter")
        if isinstance(it, bool) or not isinstance(it, (int, np.integer)) or it < 0:
            raise ValueError(f"{where}: iter must be a non-negative integer, got {it!r}")
        missing = set(self.state_names) - set(state.get("state", {}))
        if missing:
            raise ValueError(f"{where}: state lacks {sorted(missing)}")
        for key, value in hyper.items():
            setattr(self, key, float(value))
        self.iter = int(it)
        self.state = {
            name: {k: np.array(v, copy=True) for k, v in state["state"][name].items()}
            for name in self.state_names
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparams().items())
        return f"{type(self).__name__}({args})"


def _scalar_param(where: str, key: str, value: Any) -> np.ndarray:
    # The book's toy problems optimise plain numbers; a 0-d array of their precision is updated
    # and the new value written back into the dict.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"{where}: parameter {key!r} must be a NumPy array or a real number, got {type(value).__name__}"
        )
    dtype = value.dtype if isinstance(value, np.floating) and value.dtype in (np.float32, np.float64) else np.float64
    return np.array(value, dtype=dtype)


def _checked_grad(where: str, key: str, grads: Mapping[str, Any], param: np.ndarray) -> np.ndarray:
    if key not in grads:
        raise KeyError(f"{where}: no gradient for parameter {key!r}; grads has {sorted(grads)}")
    return check_grad_array(where, key, grads[key], param)


class SGD(Optimizer):
    """Stochastic gradient descent: ``W -= lr * dW``."""

    update_op = "sgd_update"

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)


class Momentum(Optimizer):
    """``v = momentum v - lr dW``; ``W += v``."""

    state_names = ("v",)
    update_op = "momentum_update"

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        super().__init__(lr)
        self.momentum = _fraction(type(self).__name__, "momentum", momentum)

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.lr, "momentum": self.momentum}

    def scalars(self, iteration: int) -> tuple[float, ...]:
        return (self.lr, self.momentum)


class Nesterov(Momentum):
    """Nesterov's accelerated gradient as the book repository has it now (its 2021 fix):
    ``W += momentum² v``; ``W -= (1 + momentum) lr dW``; then ``v = momentum v - lr dW``."""

    update_op = "nesterov_update"


class AdaGrad(Optimizer):
    """``h += dW²``; ``W -= lr dW / (sqrt(h) + 1e-7)``."""

    state_names = ("h",)
    update_op = "adagrad_update"

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    def scalars(self, iteration: int) -> tuple[float, ...]:
        return (self.lr, EPS)


class RMSprop(Optimizer):
    """``h = decay h + (1 - decay) dW²``; ``W -= lr dW / (sqrt(h) + 1e-7)``."""

    state_names = ("h",)
    update_op = "rmsprop_update"

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99) -> None:
        super().__init__(lr)
        self.decay_rate = _fraction(type(self).__name__, "decay_rate", decay_rate)

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.lr, "decay_rate": self.decay_rate}

    def scalars(self, iteration: int) -> tuple[float, ...]:
        return (self.lr, self.decay_rate, EPS)


class Adam(Optimizer):
    """Adam with the book's bias-corrected rate ``lr_t = lr sqrt(1 - β2^t) / (1 - β1^t)``."""

    state_names = ("m", "v")
    update_op = "adam_update"

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        super().__init__(lr)
        self.beta1 = _fraction("Adam", "beta1", beta1)
        self.beta2 = _fraction("Adam", "beta2", beta2)

    def hyperparams(self) -> dict[str, float]:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2}

    def scalars(self, iteration: int) -> tuple[float, ...]:
        lr_t = self.lr * math.sqrt(1.0 - self.beta2**iteration) / (1.0 - self.beta1**iteration)
        return (lr_t, self.beta1, self.beta2, EPS)


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

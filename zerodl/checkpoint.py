"""Checkpoints of a training run, and the guard that stops a training whose loss turns NaN/inf.

Checkpoint format
-----------------
One ``.npz`` archive, written atomically (:func:`zerodl._fileio.atomic_write`: a crash or SIGKILL
mid-save leaves the previous checkpoint intact, never a half-written file) and read back with
``allow_pickle=False`` after every entry's header has been checked against the bytes really stored
(:func:`zerodl.io.scan_npz`):

* ``param/<name>``, ``buffer/<name>`` — the network's parameters and batch-norm running statistics;
* ``optimizer/<state>/<name>`` — the optimizer's state arrays (momentum ``v``, AdaGrad ``h``, Adam's
  ``m`` and ``v``);
* ``callback/<i>/...`` — arrays of the callbacks' state (EarlyStopping's best parameters);
* ``__checkpoint__`` — JSON: format and version, the network's class and config, the optimizer's
  class, hyper-parameters and step count, the bit-generator states of the Trainer's batch generator
  (or of NumPy's global state, ``rng.batches``) and of every layer that owns a generator (Dropout),
  the Trainer's progress (iteration, epoch, sample count, seed, the loss/accuracy lists and the
  per-epoch history), the callbacks' state, the run's settings (``run``) and a fingerprint of
  the data (``data``). Format 1 (without the last four) is still read.

The prefixes, the metadata entry and the version check are shared with model files
(:mod:`zerodl._npz`).

Python floats are written by ``json`` with ``repr`` precision, so the lists round-trip exactly, and
a resumed run continues bit for bit where the interrupted one stopped.

Non-finite guard
----------------
Checking every batch for NaN would cost a real share of a fast step; :class:`NonFiniteGuard` costs
one ``math.isfinite`` of the recorded loss per step plus an in-memory snapshot of the training state
every :attr:`NonFiniteGuard.snapshot_every` steps. When the loss comes out NaN or inf it restores
the snapshot and *replays* the steps since (training is deterministic), checking loss, parameters
and buffers after each one, until it finds the first step that went wrong. The network, optimizer
and generators are left as they were **before** that step (the last good state) and
:class:`NonFiniteError` names the step and the culprit: the input samples, the parameters whose
gradient is non-finite, or the parameters the optimizer's update made non-finite.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from zerodl._fileio import remove_stale_temporaries
from zerodl._npz import (
    BUFFER_PREFIX,
    OPTIMIZER_PREFIX,
    PARAM_PREFIX,
    check_format,
    network_arrays,
    network_buffers,
    read_meta_entry,
    strip_prefix,
    write_npz,
    zerodl_version,
)
from zerodl.io import ModelFormatError, copy_into, read_npz_arrays

FORMAT_NAME = "zerodl-checkpoint"
#: Bump on any change an older reader would misread; readers refuse newer versions.
#: 2: callback state, the batch source (generator or np.random's global state), the seed, the
#: data fingerprint and the run's settings.
FORMAT_VERSION = 2
META_KEY = "__checkpoint__"
CALLBACK_PREFIX = "callback/"
#: Network config entries that only shape the initial weights (restored anyway): may differ.
INIT_ONLY_CONFIG = frozenset({"weight_init_std", "seed"})

PathLike = str | os.PathLike[str]


class CheckpointError(ModelFormatError):
    """A checkpoint that cannot be read, or that does not belong to this training run."""


class NonFiniteError(FloatingPointError):
    """The loss of a training step came out NaN or inf.

    Attributes:
        iteration: the step that produced non-finite values (the network holds the parameters
            from before it; ``trainer.current_iter == iteration``).
        epoch: epochs completed before that step.
        culprits: what was found non-finite: ``"x_train[i]"`` samples, ``"grad:W1"`` gradients,
            ``"update:W1"`` parameters made non-finite by the optimizer, or ``"loss"``.
        loss: the non-finite loss that was recorded.
    """

    def __init__(self, message: str, *, iteration: int, epoch: int, culprits: list[str], loss: float) -> None:
        super().__init__(message)
        self.iteration = iteration
        self.epoch = epoch
        self.culprits = culprits
        self.loss = loss


# -- options and data checks ---------------------------------------------------------------------
def checkpoint_options(path: PathLike | None, every: Any) -> tuple[Path | None, int | None]:
    """Validate the Trainer's ``checkpoint_path`` / ``checkpoint_every`` arguments.

    ``every=None`` means: at every epoch evaluation and at the end of :meth:`Trainer.train`.
    """
    if path is None:
        if every is not None:
            raise ValueError("Trainer: checkpoint_every was given without checkpoint_path")
        return None, None
    if not isinstance(path, (str, os.PathLike)) or str(os.fspath(path)) == "":
        raise TypeError(f"Trainer: checkpoint_path must be a file path, got {path!r}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"Trainer: checkpoint_path {path} is a directory; expected a file name")
    if every is not None and (isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1):
        raise ValueError(f"Trainer: checkpoint_every must be a positive integer (iterations), got {every!r}")
    return path, None if every is None else int(every)


#: Rows checked at a time by :func:`check_finite_data` (bounds the temporary boolean array).
FINITE_CHUNK_BYTES = 1 << 24


def check_finite_data(x: Any, where: str, name: str) -> None:
    """Raise ValueError naming the first sample of ``x`` holding NaN or inf (floating data only).

    Done once per dataset (at Trainer construction), in chunks, so the per-step path carries no
    check at all.
    """
    x = np.asarray(x)
    if x.dtype.kind not in "fc" or x.size == 0:
        return
    row_bytes = max(x[0].nbytes, 1)
    step = max(1, FINITE_CHUNK_BYTES // row_bytes)
    for start in range(0, x.shape[0], step):
        block = x[start:start + step]
        ok = np.isfinite(block)
        if not ok.all():
            rows = ~ok.reshape(block.shape[0], -1).all(axis=1)
            first = start + int(np.flatnonzero(rows)[0])
            total = int(np.count_nonzero((~np.isfinite(x.reshape(x.shape[0], -1))).any(axis=1)))
            raise ValueError(
                f"{where}: {name}[{first}] contains NaN or inf ({total} of {x.shape[0]} samples are "
                "not finite); clean or drop those samples before training"
            )


def _output_size(network: Any) -> int | None:
    """Classes the network scores: the last weight matrix's columns (``None`` if it has none)."""
    params = getattr(network, "params", None) or {}
    weights = [v for k, v in params.items() if k.startswith("W") and np.ndim(v) == 2]
    return int(weights[-1].shape[1]) if weights else None


def check_training_data(trainer: Any) -> None:
    """Check the Trainer's four arrays once, before the first step: finite inputs, and labels in
    range / valid one-hot rows for the network's number of classes.

    The layers check each batch's labels too, but the epoch evaluation (arg-max comparisons) would
    silently count an out-of-range label as a miss, and a bad sample may not be drawn for a while.
    """
    from zerodl._validate import check_labels

    for name in ("x_train", "x_test"):
        check_finite_data(getattr(trainer, name), "Trainer", name)
    classes = _output_size(trainer.network)
    if classes is None:
        return
    for name in ("t_train", "t_test"):
        t = np.asarray(getattr(trainer, name))
        check_labels(t, t.shape[0] if t.ndim else 0, classes, f"Trainer: {name}", np.dtype(np.float64))


# -- capturing and restoring the state ------------------------------------------------------------
def _to_json(value: Any) -> Any:
    """Bit-generator states are dicts of ints, except MT19937's key array: make them JSON-able."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str}
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def _from_json(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__ndarray__", "dtype"}:
            # Generator keys are small integer arrays: any other dtype (a giant string type, say)
            # is refused before NumPy allocates anything for it.
            dtype = np.dtype(value["dtype"]) if isinstance(value["dtype"], str) else None
            if dtype is None or dtype.kind not in "iu" or dtype.itemsize > 8 \
                    or not isinstance(value["__ndarray__"], list) or len(value["__ndarray__"]) > 1 << 16:
                raise ValueError(f"a generator state array must be a list of at most 65536 integers of an "
                                 f"integer dtype, got dtype {value['dtype']!r}")
            return np.array(value["__ndarray__"], dtype=dtype)
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


def _layer_generators(network: Any) -> dict[str, np.random.Generator]:
    """Layers that own a generator (Dropout), by layer name."""
    layers = getattr(network, "layers", {}) or {}
    return {name: layer.rng for name, layer in layers.items()
            if isinstance(getattr(layer, "rng", None), np.random.Generator)}


def _buffers(network: Any) -> dict[str, np.ndarray]:
    return network_buffers(network)


def _split_arrays(value: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Callback state: move ndarray leaves into ``arrays`` (key ``prefix`` + path), JSON for the rest."""
    if isinstance(value, np.ndarray):
        arrays[prefix] = np.array(value, copy=True)
        return {"__array__": prefix}
    if isinstance(value, Mapping):
        return {str(k): _split_arrays(v, f"{prefix}/{k}", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split_arrays(v, f"{prefix}/{i}", arrays) for i, v in enumerate(value)]
    return _to_json(value)


def _join_arrays(value: Any, arrays: Mapping[str, np.ndarray], where: str) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            key = value["__array__"]
            if not isinstance(key, str) or not key.startswith(CALLBACK_PREFIX) or key not in arrays:
                raise _fail(where, f"callback state refers to a missing array {key!r}")
            return arrays[key]
        return {k: _join_arrays(v, arrays, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_join_arrays(v, arrays, where) for v in value]
    return value


def _stateful_callbacks(trainer: Any) -> list[Any]:
    return [cb for cb in getattr(trainer, "callbacks", []) if cb.state_dict() is not None]


def _batch_state(trainer: Any) -> tuple[str, Any]:
    """Where the batches come from and that generator's state (JSON-able)."""
    if getattr(trainer, "rng", None) is None:
        return "numpy-global", _to_json(np.random.get_state(legacy=False))
    return "generator", _to_json(trainer.rng.bit_generator.state)


_PROGRESS_FIELDS = ("current_iter", "current_epoch", "samples_seen", "train_time")
_LIST_FIELDS = ("train_loss_list", "train_acc_list", "test_acc_list")


def capture_state(trainer: Any, *, progress: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Copy everything a resume needs: ``(metadata, arrays)``; nothing shares memory with the trainer.

    ``progress=False`` leaves out the lists and history (the in-memory snapshots of the guard keep
    only their lengths).
    """
    net = trainer.network
    opt = trainer.optimizer
    arrays = network_arrays(net, copy=True)
    buffers = _buffers(net)
    opt_state = opt.state_dict()  # arrays already copied
    for state_name, table in opt_state["state"].items():
        for name, value in table.items():
            arrays[f"{OPTIMIZER_PREFIX}{state_name}/{name}"] = value
    state: dict[str, Any] = {
        "current_iter": int(trainer.current_iter),
        "current_epoch": int(trainer.current_epoch),
        "samples_seen": int(trainer.samples_seen),
        "train_time": float(trainer.train_time),
        "epoch_loss_start": int(trainer._epoch_loss_start),
        "train_size": int(trainer.train_size),
        "batch_size": int(trainer.batch_size),
        "max_iter": int(trainer.max_iter),
        "epochs": float(trainer.epochs),
        "record_loss": trainer.record_loss,
        "seed": getattr(trainer, "seed", None),
    }
    callbacks = []
    if progress:
        for name in _LIST_FIELDS:
            state[name] = [float(v) for v in getattr(trainer, name)]
        state["history"] = [dict(h) for h in trainer.history]
        for i, cb in enumerate(_stateful_callbacks(trainer)):
            callbacks.append({"class": type(cb).__name__,
                              "state": _split_arrays(cb.state_dict(), f"{CALLBACK_PREFIX}{i}", arrays)})
    else:
        state["lengths"] = {name: len(getattr(trainer, name)) for name in (*_LIST_FIELDS, "history")}
    batches, batch_state = _batch_state(trainer)
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "zerodl_version": _version(),
        "network": {"class": type(net).__name__, "config": getattr(net, "config", None),
                    "params": list(net.params), "buffers": list(buffers)},
        "optimizer": {"class": opt_state["class"], "hyperparams": opt_state["hyperparams"],
                      "iter": int(opt_state["iter"]),
                      "state": {s: list(table) for s, table in opt_state["state"].items()}},
        "rng": {"batches": batches, "trainer": batch_state,
                "layers": {name: _to_json(g.bit_generator.state) for name, g in _layer_generators(net).items()}},
        "trainer": state,
        "callbacks": callbacks,
        "run": getattr(trainer, "run_config", None),
    }
    return meta, arrays


def _version() -> str:
    return zerodl_version()


def _fail(where: str, message: str) -> CheckpointError:
    return CheckpointError(f"{where}: {message}")


def _validate_meta(meta: Any, arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Structure and types of a checkpoint's metadata (a hostile file gets a clear error)."""
    version = check_format(meta, FORMAT_NAME, FORMAT_VERSION, where, CheckpointError)
    for key in ("network", "optimizer", "rng", "trainer"):
        if not isinstance(meta.get(key), dict):
            raise _fail(where, f"metadata entry {key!r} is missing or not an object")
    state = meta["trainer"]
    for key in ("current_iter", "current_epoch", "samples_seen", "epoch_loss_start", "train_size", "batch_size"):
        value = state.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _fail(where, f"trainer.{key} must be an integer >= 0, got {value!r}")
    for key in _LIST_FIELDS:
        value = state.get(key)
        if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise _fail(where, f"trainer.{key} must be a list of numbers")
    if len(state["train_loss_list"]) != state["current_iter"]:
        raise _fail(where, f"{len(state['train_loss_list'])} recorded losses for {state['current_iter']} iterations")
    if not len(state["train_acc_list"]) == len(state["test_acc_list"]) == state["current_epoch"]:
        raise _fail(where, f"accuracy lists of {len(state['train_acc_list'])} and {len(state['test_acc_list'])} "
                           f"entries for {state['current_epoch']} epochs")
    train_time = state.get("train_time")
    if not isinstance(train_time, (int, float)) or isinstance(train_time, bool) or not train_time >= 0:
        raise _fail(where, f"trainer.train_time must be a number >= 0, got {train_time!r}")
    if not isinstance(state.get("history"), list) or not all(isinstance(h, dict) for h in state["history"]):
        raise _fail(where, "trainer.history must be a list of objects")
    for i, entry in enumerate(state["history"]):
        bad = sorted(k for k, v in entry.items() if not isinstance(v, (int, float)) or isinstance(v, bool))
        if bad:
            raise _fail(where, f"trainer.history[{i}] holds non-numbers for {bad}")
    opt = meta["optimizer"]
    if not isinstance(opt.get("class"), str) or not isinstance(opt.get("hyperparams"), dict) \
            or not isinstance(opt.get("iter"), int) or opt["iter"] < 0 or not isinstance(opt.get("state"), dict):
        raise _fail(where, "optimizer metadata must hold class, hyperparams, iter (>= 0) and state")
    for key, value in opt["hyperparams"].items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise _fail(where, f"optimizer hyper-parameter {key!r} must be a finite number, got {value!r}")
    rng = meta["rng"]
    if not isinstance(rng.get("trainer"), dict) or not isinstance(rng.get("layers"), dict):
        raise _fail(where, "rng metadata must hold the trainer's and the layers' generator states")
    if version >= 2:
        if rng.get("batches") not in ("generator", "numpy-global"):
            raise _fail(where, f"rng.batches must be 'generator' or 'numpy-global', got {rng.get('batches')!r}")
        seed = state.get("seed")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise _fail(where, f"trainer.seed must be null or an integer >= 0, got {seed!r}")
        callbacks = meta.get("callbacks")
        if not isinstance(callbacks, list) or not all(
                isinstance(c, dict) and isinstance(c.get("class"), str) and "state" in c for c in callbacks):
            raise _fail(where, "callbacks must be a list of {class, state} objects")
        if meta.get("run") is not None and not isinstance(meta["run"], dict):
            raise _fail(where, f"run must be an object or null, got {type(meta['run']).__name__}")
        if "data" in meta and not isinstance(meta["data"], str):
            raise _fail(where, "data must be the training data's fingerprint (a string)")
    for name, value in arrays.items():
        if value.dtype.kind != "f":
            raise _fail(where, f"array {name!r} has dtype {value.dtype}, expected floats")


def _set_generator(gen: np.random.Generator | np.random.BitGenerator, state: Any, what: str, where: str) -> None:
    """Set a generator's state; ``gen`` may be a fresh bit generator, to check a state without harm."""
    bit_generator = gen if isinstance(gen, np.random.BitGenerator) else gen.bit_generator
    try:
        bit_generator.state = _from_json(state)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise _fail(where, f"cannot restore the generator of {what} ({type(bit_generator).__name__}) "
                           f"from the saved state: {exc}") from None


HYPERPARAM_MODES = ("same", "checkpoint", "trainer")


def _check_identity(trainer: Any, meta: Mapping[str, Any], where: str) -> None:
    """What a resume cannot honour: another network, data, batch source, seed or run settings."""
    net = trainer.network
    saved_net, state, rng = meta["network"], meta["trainer"], meta["rng"]
    if saved_net.get("class") != type(net).__name__:
        raise _fail(where, f"holds a {saved_net.get('class')}, the Trainer trains a {type(net).__name__}")
    config, saved_config = getattr(net, "config", None), saved_net.get("config")
    if isinstance(config, Mapping) and isinstance(saved_config, Mapping):
        keys = (set(config) | set(saved_config)) - INIT_ONLY_CONFIG
        differ = sorted(k for k in keys if _to_json(config.get(k)) != saved_config.get(k))
        if differ:
            shown = "; ".join(f"{k}: {saved_config.get(k)!r} in the checkpoint, {_to_json(config.get(k))!r} here"
                              for k in differ)
            raise _fail(where, f"was written for another {type(net).__name__} ({shown}); a resume "
                               "continues the same network")
    if (state["train_size"], state["batch_size"]) != (trainer.train_size, trainer.batch_size):
        raise _fail(where, f"was written for {state['train_size']} training samples in batches of "
                           f"{state['batch_size']}; this Trainer has {trainer.train_size} in batches of "
                           f"{trainer.batch_size} (same data and --batch-size are needed to resume)")
    if state.get("record_loss", trainer.record_loss) != trainer.record_loss:
        raise _fail(where, f"was written with record_loss={state.get('record_loss')!r}, "
                           f"the Trainer uses {trainer.record_loss!r}")
    batches = rng.get("batches", "generator")
    mine = "numpy-global" if getattr(trainer, "rng", None) is None else "generator"
    if batches != mine:
        describe = {"generator": "a seeded generator (seed=...)", "numpy-global": "np.random's global state (seed=None)"}
        raise _fail(where, f"was written by a run drawing its batches from {describe[batches]}; this Trainer "
                           f"draws them from {describe[mine]}")
    seed, saved_seed = getattr(trainer, "seed", None), state.get("seed")
    if seed is not None and saved_seed is not None and seed != saved_seed:
        raise _fail(where, f"was written by a run with seed {saved_seed}; this Trainer has seed {seed} "
                           "(a resumed run continues the checkpoint's batches: use the same seed)")
    run, saved_run = getattr(trainer, "run_config", None), meta.get("run")
    if isinstance(run, Mapping) and isinstance(saved_run, Mapping):
        keys = set(run) | set(saved_run)
        differ = sorted(k for k in keys if _to_json(run.get(k)) != saved_run.get(k))
        if differ:
            shown = "; ".join(f"{k}: {saved_run.get(k)!r} in the checkpoint, {_to_json(run.get(k))!r} here"
                              for k in differ)
            raise _fail(where, f"was written by a run with other settings ({shown})")


def _check_hyperparams(opt: Any, saved_opt: Mapping[str, Any], mode: str, where: str) -> dict[str, float]:
    """The hyper-parameters to load: validated as the optimizer's constructor would."""
    saved = dict(saved_opt["hyperparams"])
    current = dict(opt.hyperparams())
    if set(saved) != set(current):
        # load_state_dict sets each of them as an attribute: only the optimizer's own names pass.
        raise _fail(where, f"optimizer hyper-parameters {sorted(saved)} are not "
                           f"{type(opt).__name__}'s {sorted(current)}")
    try:
        type(opt)(**saved)  # a tampered value (lr -1) is refused as the constructor refuses it
    except (TypeError, ValueError) as exc:
        raise _fail(where, f"optimizer hyper-parameters {saved} are refused: {exc}") from None
    if mode == "same":
        differ = sorted(k for k in saved if float(saved[k]) != float(current[k]))
        if differ:
            shown = ", ".join(f"{k} {saved[k]!r} in the checkpoint, {current[k]!r} here" for k in differ)
            raise _fail(where, f"optimizer hyper-parameters differ ({shown}); resume with the same ones, or "
                               "choose hyperparams='checkpoint' or 'trainer'")
    return current if mode == "trainer" else saved


def _callback_states(trainer: Any, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                     where: str) -> list[tuple[Any, Any]]:
    stateful = _stateful_callbacks(trainer)
    saved = meta.get("callbacks")
    if saved is None:  # format 1: no callback state was written
        if stateful:
            raise _fail(where, f"holds no callback state (format 1), but the Trainer's "
                               f"{', '.join(type(c).__name__ for c in stateful)} needs it to continue exactly")
        return []
    names, mine = [c["class"] for c in saved], [type(c).__name__ for c in stateful]
    if names != mine:
        raise _fail(where, f"holds state for callbacks {names}, the Trainer has stateful callbacks {mine}")
    return [(cb, _join_arrays(entry["state"], arrays, where)) for cb, entry in zip(stateful, saved)]


def restore_state(trainer: Any, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                  where: str = "<checkpoint>", *, hyperparams: str = "checkpoint") -> None:
    """Put a :func:`capture_state` result back into ``trainer`` (network, optimizer, generators,
    progress, callbacks). Everything is checked before anything is written.

    ``hyperparams``: ``"checkpoint"`` loads the saved optimizer hyper-parameters, ``"trainer"``
    keeps the Trainer's, ``"same"`` refuses a checkpoint whose hyper-parameters differ.
    """
    if hyperparams not in HYPERPARAM_MODES:
        raise ValueError(f"restore_state: hyperparams must be one of {HYPERPARAM_MODES}, got {hyperparams!r}")
    net = trainer.network
    opt = trainer.optimizer
    saved_opt, state = meta["optimizer"], meta["trainer"]
    _check_identity(trainer, meta, where)
    if saved_opt["class"] != type(opt).__name__:
        raise _fail(where, f"holds {saved_opt['class']} state, the Trainer uses {type(opt).__name__}")
    use_hyperparams = _check_hyperparams(opt, saved_opt, hyperparams, where)
    params = strip_prefix(arrays, PARAM_PREFIX)
    buffers = strip_prefix(arrays, BUFFER_PREFIX)
    opt_arrays: dict[str, dict[str, np.ndarray]] = {name: {} for name in opt.state_names}
    for key, value in strip_prefix(arrays, OPTIMIZER_PREFIX).items():
        state_name, _, name = key.partition("/")
        if state_name not in opt_arrays:
            raise _fail(where, f"optimizer state {state_name!r} is not one of {type(opt).__name__}'s "
                               f"({', '.join(opt.state_names) or 'none'})")
        if name not in net.params:
            raise _fail(where, f"optimizer state for unknown parameter {name!r}")
        if value.shape != net.params[name].shape:
            raise _fail(where, f"optimizer state {state_name}/{name} has shape {value.shape}, "
                               f"the parameter has {net.params[name].shape}")
        opt_arrays[state_name][name] = value.astype(net.params[name].dtype, copy=True)
    generators = _layer_generators(net)
    saved_layers = meta["rng"]["layers"]
    if set(saved_layers) != set(generators):
        raise _fail(where, f"holds generator states for layers {sorted(saved_layers)}, the network's "
                           f"layers with generators are {sorted(generators)}")
    # Generator states tried on fresh bit generators of the same kinds first: nothing is written
    # unless everything fits.
    batch_state = meta["rng"]["trainer"]
    if trainer.rng is None:
        _set_global_state(np.random.RandomState(), batch_state, where)
    else:
        _set_generator(type(trainer.rng.bit_generator)(), batch_state, "the Trainer's batches", where)
    for name, gen in generators.items():
        _set_generator(type(gen.bit_generator)(), saved_layers[name], f"layer {name}", where)
    progress = "lengths" not in state  # a checkpoint; an in-memory snapshot leaves the progress to the guard
    callbacks = _callback_states(trainer, meta, arrays, where) if progress else []
    if progress and state["epoch_loss_start"] > state["current_iter"]:
        raise _fail(where, f"trainer.epoch_loss_start {state['epoch_loss_start']} is past "
                           f"current_iter {state['current_iter']}")
    before = [(cb, cb.state_dict()) for cb, _ in callbacks]
    # Callbacks validate against the run as the checkpoint has it (its epoch count), not as it is now.
    view = SimpleNamespace(network=net, current_iter=state["current_iter"], current_epoch=state["current_epoch"])
    try:
        for cb, cb_state in callbacks:
            cb.load_state_dict(cb_state, view)
    except (TypeError, ValueError, KeyError) as exc:
        for cb, old in before:
            cb.load_state_dict(old, trainer)
        raise _fail(where, f"callback state refused: {exc}") from None
    # Names, shapes and dtypes (strict: a resume must continue bit for bit) checked, then copied.
    try:
        copy_into(net, params, buffers, path=where, strict_dtype=True)
    except (KeyError, ValueError) as exc:
        for cb, old in before:
            cb.load_state_dict(old, trainer)
        raise CheckpointError(str(exc)) from None
    opt.load_state_dict({"class": saved_opt["class"], "hyperparams": use_hyperparams,
                         "iter": saved_opt["iter"], "state": opt_arrays})
    if trainer.rng is None:
        _set_global_state(np.random, batch_state, where)
    else:
        _set_generator(trainer.rng, batch_state, "the Trainer's batches", where)
    for name, gen in generators.items():
        _set_generator(gen, saved_layers[name], f"layer {name}", where)
    if progress:
        for key in _PROGRESS_FIELDS:
            setattr(trainer, key, state[key])
        trainer._epoch_loss_start = state["epoch_loss_start"]
        for name in _LIST_FIELDS:
            setattr(trainer, name, [float(v) for v in state[name]])
        trainer.history = [dict(h) for h in state["history"]]
    guard = getattr(trainer, "_guard", None)
    if guard is not None:
        guard.reset()


def _set_global_state(target: Any, state: Any, where: str) -> None:
    """Set a legacy RandomState's (or ``np.random``'s global) MT19937 state from its saved dict."""
    try:
        value = _from_json(state)
        if not isinstance(value, dict) or value.get("bit_generator") != "MT19937":
            raise ValueError(f"expected an MT19937 state, got {type(value).__name__}")
        target.set_state(value)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise _fail(where, f"cannot restore np.random's global state (the Trainer's batches) from the "
                           f"saved state: {exc}") from None


# -- files ----------------------------------------------------------------------------------------
def save_checkpoint(trainer: Any, path: PathLike) -> Path:
    """Write ``trainer``'s complete training state to ``path`` atomically; returns the path.

    Temporary files that earlier writes of ``path`` left behind (a process killed mid-write) are
    removed first (:func:`zerodl._fileio.remove_stale_temporaries`).
    """
    path = Path(path)
    meta, arrays = capture_state(trainer)
    fingerprint = getattr(trainer, "data_fingerprint", None)
    if callable(fingerprint):
        meta["data"] = fingerprint()
    remove_stale_temporaries(path)
    try:
        return write_npz(path, arrays, META_KEY, meta)
    except (TypeError, ValueError) as exc:  # a JSON-unable run_config or callback state
        raise CheckpointError(f"{path}: cannot write the checkpoint: {exc}") from None


def read_checkpoint(path: PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and validate a checkpoint file: ``(metadata, arrays)``. Never unpickles.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError (a ValueError): unreadable, truncated, corrupt or foreign file.
    """
    path = Path(path)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        # One regular-file descriptor (a FIFO or device is refused, never blocks), every entry's
        # header checked against the file before anything is allocated, no pickle.
        files = read_npz_arrays(path, "checkpoint file")
    except CheckpointError:
        raise
    except ModelFormatError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    if META_KEY not in files:
        raise CheckpointError(f"{path}: not a zerodl checkpoint (no {META_KEY!r} entry)")
    meta = read_meta_entry(files, META_KEY, str(path), CheckpointError)
    _validate_meta(meta, files, str(path))
    return meta, files


def load_checkpoint(trainer: Any, path: PathLike, *, hyperparams: str = "same") -> dict[str, Any]:
    """Restore ``trainer`` (network, optimizer, generators, progress, callbacks) from a checkpoint.

    Refused (:class:`CheckpointError`, nothing changed) when the checkpoint belongs to another
    run: another network class or architecture, other training data (a fingerprint of the four
    arrays), batch size, batch source or seed, other stateful callbacks, other ``run_config``.
    ``hyperparams`` (see :func:`restore_state`): by default the optimizer's hyper-parameters must
    be the checkpoint's. Every restored value is validated as a constructor would. Returns the
    metadata.
    """
    meta, arrays = read_checkpoint(path)
    saved = meta.get("data")
    fingerprint = getattr(trainer, "data_fingerprint", None)
    if saved is not None and callable(fingerprint) and saved != fingerprint():
        raise CheckpointError(f"{path}: was written for other training or test data (same sizes, other "
                              "values); a resume continues on the same data")
    restore_state(trainer, meta, arrays, str(path), hyperparams=hyperparams)
    return meta


# -- the non-finite guard ---------------------------------------------------------------------------
class NonFiniteGuard:
    """Watches a Trainer's steps: periodic checkpoints and the NaN/inf stop (see the module doc).

    The Trainer calls :meth:`before_step`, :meth:`after_step` (with the recorded loss) and
    :meth:`end_step` around each step, and :meth:`finish` when :meth:`Trainer.train` ends.
    """

    #: Steps between in-memory snapshots; a NaN replays at most this many steps.
    snapshot_every: int = 100

    def __init__(self, snapshot_every: int | None = None, *, check_finite: bool = True) -> None:
        if snapshot_every is not None:
            self.snapshot_every = int(snapshot_every)
        #: False: only the checkpoint schedule (no snapshots, no NaN/inf stop).
        self.check_finite = bool(check_finite)
        self._snapshot: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None
        self._saved_epoch: int | None = None
        #: True between the start and the end of a step: a state caught then may be torn.
        self.in_step = False

    def reset(self) -> None:
        """Forget the snapshot (the trainer's state was replaced, e.g. by a checkpoint)."""
        self._snapshot = None
        self.in_step = False

    def before_step(self, trainer: Any) -> None:
        self.in_step = True
        if not self.check_finite:
            return
        snap = self._snapshot
        if snap is None or not 0 <= trainer.current_iter - snap[0]["trainer"]["current_iter"] < self.snapshot_every:
            self._snapshot = capture_state(trainer, progress=False)

    def after_step(self, trainer: Any, loss: float, batch_mask: np.ndarray) -> None:
        if self.check_finite and not math.isfinite(loss):
            self._stop(trainer, loss)

    def end_step(self, trainer: Any) -> None:
        self.in_step = False
        path = trainer.checkpoint_path
        if path is None:
            return
        every = trainer.checkpoint_every
        if every is None:
            due = trainer.current_epoch != self._saved_epoch
        else:
            due = trainer.current_iter % every == 0
        if due:
            save_checkpoint(trainer, path)
            self._saved_epoch = trainer.current_epoch
            owned = getattr(trainer, "_claim_checkpoint", None)
            if owned is not None:
                owned(path)

    def finish(self, trainer: Any) -> None:
        """End of ``train()``: write the final checkpoint unless a step was torn by a second Ctrl-C."""
        torn = self.in_step
        self.reset()
        if trainer.checkpoint_path is not None and not torn:
            save_checkpoint(trainer, trainer.checkpoint_path)

    # -- diagnosis ---------------------------------------------------------------------------------
    def _stop(self, trainer: Any, loss: float) -> None:
        detected = trainer.current_iter
        snap_meta, snap_arrays = self._snapshot  # type: ignore[misc]
        start = snap_meta["trainer"]["current_iter"]
        restore_state(trainer, snap_meta, snap_arrays)  # also resets this guard
        culprits: list[str] = []
        details = ""
        failed = None
        for it in range(start, detected + 1):
            before = capture_state(trainer, progress=False)
            batch_mask = trainer.draw_batch()
            x_batch, t_batch = trainer.x_train[batch_mask], trainer.t_train[batch_mask]
            with np.errstate(all="ignore"):
                step_loss = trainer._train_step(x_batch, t_batch)
            bad_params = [n for n, p in trainer.network.params.items() if not np.isfinite(p).all()]
            bad_buffers = [n for n, b in _buffers(trainer.network).items() if not np.isfinite(b).all()]
            if math.isfinite(step_loss) and not bad_params and not bad_buffers:
                continue
            with np.errstate(all="ignore"):
                largest = max((float(np.abs(p).max()), n) for n, p in trainer.network.params.items())
            restore_state(trainer, *before)
            culprits, details = _explain(trainer, step_loss, bad_params + bad_buffers, largest, batch_mask,
                                         x_batch, t_batch)
            restore_state(trainer, *before)  # the diagnosis ran a training forward (Dropout, BN)
            failed, loss = it, step_loss
            break
        if failed is None:
            # Not reproduced (the data or the network was changed behind the Trainer's back):
            # the snapshot is still a good state.
            restore_state(trainer, snap_meta, snap_arrays)
            failed, culprits = start, ["loss"]
            details = (f"the loss was {loss} at iteration {detected} but replaying from iteration {start} "
                       "did not reproduce it (were the data or the network modified during training?)")
        _rewind_progress(trainer, failed)
        self.reset()
        opt = trainer.optimizer
        raise NonFiniteError(
            f"Trainer: the loss became {loss} at iteration {failed} (epoch {trainer.current_epoch + 1}): "
            f"{details}. Training stopped; the network keeps the parameters from before iteration "
            f"{failed}, the last good ones (optimizer {opt!r}).",
            iteration=failed, epoch=trainer.current_epoch, culprits=culprits, loss=loss,
        )


def _describe_bad(name: str, a: np.ndarray) -> str:
    bad = ~np.isfinite(a)
    kinds = "/".join(k for k, m in (("nan", np.isnan(a)), ("inf", np.isinf(a))) if m.any())
    return f"{name} ({int(bad.sum())} of {a.size} values {kinds})"


def _explain(trainer: Any, loss: float, bad_after: list[str], largest: tuple[float, str], batch_mask: np.ndarray,
             x_batch: np.ndarray, t_batch: np.ndarray) -> tuple[list[str], str]:
    """Find the culprit of a non-finite step, the network being in its state before the step."""
    x = np.asarray(x_batch)
    if x.dtype.kind == "f":
        rows = ~np.isfinite(x.reshape(x.shape[0], -1)).all(axis=1)
        if rows.any():
            samples = sorted({int(i) for i in np.asarray(batch_mask)[rows]})
            shown = ", ".join(f"x_train[{i}]" for i in samples[:5]) + (" ..." if len(samples) > 5 else "")
            return [f"x_train[{i}]" for i in samples], f"input samples {shown} contain NaN or inf"
    net = trainer.network
    with np.errstate(all="ignore"):
        try:
            grads = net.gradient(x_batch, t_batch)
        except Exception as exc:
            grads = {}
            grad_error = f" (computing the gradients failed: {exc})"
        else:
            grad_error = ""
    bad_grads = [n for n, g in grads.items() if not np.isfinite(g).all()]
    if bad_grads:
        listed = ", ".join(_describe_bad(n, np.asarray(grads[n])) for n in bad_grads)
        huge: list[str] = []
        if x.dtype.kind == "f":  # finite but extreme inputs overflow the forward pass
            row_max = np.abs(x.reshape(x.shape[0], -1)).max(axis=1)
            huge = [f"x_train[{i}]" for i in sorted({int(i) for i in np.asarray(batch_mask)[row_max > 1e30]})]
        if huge:
            return (huge + [f"grad:{n}" for n in bad_grads],
                    (f"the gradient of {listed} is not finite: input samples {', '.join(huge[:5])} hold values "
                    f"up to {float(row_max.max()):.3g}, which overflow the forward pass (scale the inputs)"))
        return ([f"grad:{n}" for n in bad_grads],
                (f"the gradient of {listed} is not finite; the training diverged (lower the learning "
                f"rate, use weight decay or batch normalisation)"))
    if bad_after:
        return ([f"update:{n}" for n in bad_after],
                (f"the gradients were finite{grad_error} but the {type(trainer.optimizer).__name__} update made "
                f"{', '.join(bad_after)} non-finite (learning rate {getattr(trainer.optimizer, 'lr', '?')} too large?)"))
    if largest[0] > 1e30:  # finite but absurd: the forward pass after the update overflowed
        return ([f"update:{largest[1]}"],
                (f"the gradients were finite{grad_error} but the {type(trainer.optimizer).__name__} update left "
                f"parameters so large that the forward pass overflows (largest |{largest[1]}| = {largest[0]:.3g}; "
                f"learning rate {getattr(trainer.optimizer, 'lr', '?')} too large?)"))
    return ["loss"], f"parameters and gradients are finite but the loss is {loss}{grad_error}"


def _rewind_progress(trainer: Any, iteration: int) -> None:
    """Make the Trainer's counters and lists say ``iteration`` steps were done."""
    trainer.current_iter = iteration
    trainer.samples_seen = iteration * trainer.batch_size
    del trainer.train_loss_list[iteration:]
    epochs = sum(1 for i in range(iteration) if trainer.is_epoch_boundary(i))
    trainer.current_epoch = epochs
    for name in ("train_acc_list", "test_acc_list", "history"):
        del getattr(trainer, name)[epochs:]
    trainer._epoch_loss_start = min(trainer._epoch_loss_start, iteration)


__all__ = [
    "CheckpointError", "NonFiniteError", "NonFiniteGuard", "capture_state", "check_finite_data",
    "check_training_data", "checkpoint_options", "load_checkpoint", "read_checkpoint", "restore_state",
    "save_checkpoint",
]

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
* ``__checkpoint__`` — JSON: format and version, the network's class and config, the optimizer's
  class, hyper-parameters and step count, the bit-generator states of the Trainer's batch generator
  and of every layer that owns a generator (Dropout), and the Trainer's progress (iteration, epoch,
  sample count, the loss/accuracy lists and the per-epoch history).

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

import io as _io
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zerodl._fileio import atomic_write
from zerodl.io import ModelFormatError, copy_into, scan_npz

FORMAT_NAME = "zerodl-checkpoint"
#: Bump on any change an older reader would misread; readers refuse newer versions.
FORMAT_VERSION = 1
META_KEY = "__checkpoint__"

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
            return np.array(value["__ndarray__"], dtype=np.dtype(value["dtype"]))
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
    method = getattr(network, "buffers", None)
    return dict(method()) if callable(method) else {}


_PROGRESS_FIELDS = ("current_iter", "current_epoch", "samples_seen", "train_time")
_LIST_FIELDS = ("train_loss_list", "train_acc_list", "test_acc_list")


def capture_state(trainer: Any, *, progress: bool = True) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Copy everything a resume needs: ``(metadata, arrays)``; nothing shares memory with the trainer.

    ``progress=False`` leaves out the lists and history (the in-memory snapshots of the guard keep
    only their lengths).
    """
    net = trainer.network
    opt = trainer.optimizer
    arrays: dict[str, np.ndarray] = {}
    for name, value in net.params.items():
        arrays["param/" + name] = np.array(value, copy=True)
    buffers = _buffers(net)
    for name, value in buffers.items():
        arrays["buffer/" + name] = np.array(value, copy=True)
    opt_state = opt.state_dict()  # arrays already copied
    for state_name, table in opt_state["state"].items():
        for name, value in table.items():
            arrays[f"optimizer/{state_name}/{name}"] = value
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
    }
    if progress:
        for name in _LIST_FIELDS:
            state[name] = [float(v) for v in getattr(trainer, name)]
        state["history"] = [dict(h) for h in trainer.history]
    else:
        state["lengths"] = {name: len(getattr(trainer, name)) for name in (*_LIST_FIELDS, "history")}
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "zerodl_version": _version(),
        "network": {"class": type(net).__name__, "config": getattr(net, "config", None),
                    "params": list(net.params), "buffers": list(buffers)},
        "optimizer": {"class": opt_state["class"], "hyperparams": opt_state["hyperparams"],
                      "iter": int(opt_state["iter"]),
                      "state": {s: list(table) for s, table in opt_state["state"].items()}},
        "rng": {"trainer": _to_json(trainer.rng.bit_generator.state),
                "layers": {name: _to_json(g.bit_generator.state) for name, g in _layer_generators(net).items()}},
        "trainer": state,
    }
    return meta, arrays


def _version() -> str:
    import zerodl

    return getattr(zerodl, "__version__", "unknown")


def _fail(where: str, message: str) -> CheckpointError:
    return CheckpointError(f"{where}: {message}")


def _validate_meta(meta: Any, arrays: Mapping[str, np.ndarray], where: str) -> None:
    """Structure and types of a checkpoint's metadata (a hostile file gets a clear error)."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise _fail(where, f"not a {FORMAT_NAME!r} file (metadata format {getattr(meta, 'get', lambda k: None)('format')!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION or version < 1:
        raise _fail(where, f"format version {version!r} is not one this zerodl reads (1..{FORMAT_VERSION}); "
                           f"written by zerodl {meta.get('zerodl_version')!r}")
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


def restore_state(trainer: Any, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray],
                  where: str = "<checkpoint>") -> None:
    """Put a :func:`capture_state` result back into ``trainer`` (network, optimizer, generators,
    progress). Everything is checked before anything is written."""
    net = trainer.network
    opt = trainer.optimizer
    saved_net, saved_opt, state = meta["network"], meta["optimizer"], meta["trainer"]
    if saved_net.get("class") != type(net).__name__:
        raise _fail(where, f"holds a {saved_net.get('class')}, the Trainer trains a {type(net).__name__}")
    if saved_opt["class"] != type(opt).__name__:
        raise _fail(where, f"holds {saved_opt['class']} state, the Trainer uses {type(opt).__name__}")
    if set(saved_opt["hyperparams"]) != set(opt.hyperparams()):
        # load_state_dict sets each of them as an attribute: only the optimizer's own names pass.
        raise _fail(where, f"optimizer hyper-parameters {sorted(saved_opt['hyperparams'])} are not "
                           f"{type(opt).__name__}'s {sorted(opt.hyperparams())}")
    if (state["train_size"], state["batch_size"]) != (trainer.train_size, trainer.batch_size):
        raise _fail(where, f"was written for {state['train_size']} training samples in batches of "
                           f"{state['batch_size']}; this Trainer has {trainer.train_size} in batches of "
                           f"{trainer.batch_size} (same data and --batch-size are needed to resume)")
    if state.get("record_loss", trainer.record_loss) != trainer.record_loss:
        raise _fail(where, f"was written with record_loss={state.get('record_loss')!r}, "
                           f"the Trainer uses {trainer.record_loss!r}")
    params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    buffers = {k[len("buffer/"):]: v for k, v in arrays.items() if k.startswith("buffer/")}
    opt_arrays: dict[str, dict[str, np.ndarray]] = {name: {} for name in opt.state_names}
    for key, value in arrays.items():
        if key.startswith("optimizer/"):
            _, state_name, name = key.split("/", 2)
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
    _set_generator(type(trainer.rng.bit_generator)(), meta["rng"]["trainer"], "the Trainer's batches", where)
    for name, gen in generators.items():
        _set_generator(type(gen.bit_generator)(), saved_layers[name], f"layer {name}", where)
    # Names, shapes and dtypes (strict: a resume must continue bit for bit) checked, then copied.
    try:
        copy_into(net, params, buffers, path=where, strict_dtype=True)
    except (KeyError, ValueError) as exc:
        raise CheckpointError(str(exc)) from None
    opt.load_state_dict({"class": saved_opt["class"], "hyperparams": saved_opt["hyperparams"],
                         "iter": saved_opt["iter"], "state": opt_arrays})
    _set_generator(trainer.rng, meta["rng"]["trainer"], "the Trainer's batches", where)
    for name, gen in generators.items():
        _set_generator(gen, saved_layers[name], f"layer {name}", where)
    if "lengths" not in state:  # a checkpoint; an in-memory snapshot leaves the progress to the guard
        for key in _PROGRESS_FIELDS:
            setattr(trainer, key, state[key])
        trainer._epoch_loss_start = state["epoch_loss_start"]
        for name in _LIST_FIELDS:
            setattr(trainer, name, [float(v) for v in state[name]])
        trainer.history = [dict(h) for h in state["history"]]
    guard = getattr(trainer, "_guard", None)
    if guard is not None:
        guard.reset()


# -- files ----------------------------------------------------------------------------------------
def save_checkpoint(trainer: Any, path: PathLike) -> Path:
    """Write ``trainer``'s complete training state to ``path`` atomically; returns the path."""
    path = Path(path)
    meta, arrays = capture_state(trainer)
    if META_KEY in arrays:  # pragma: no cover - parameter names never contain the key
        raise CheckpointError(f"{path}: a parameter is named {META_KEY!r}")
    arrays[META_KEY] = np.array(json.dumps(meta))
    buf = _io.BytesIO()  # rendered in memory: a failure while serialising never touches the file
    np.savez(buf, **arrays)
    with atomic_write(path, "wb") as f:
        f.write(buf.getbuffer())
    return path


def read_checkpoint(path: PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read and validate a checkpoint file: ``(metadata, arrays)``. Never unpickles.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError (a ValueError): unreadable, truncated, corrupt or foreign file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    try:
        scan_npz(path)
    except CheckpointError:
        raise
    except ModelFormatError as exc:
        raise CheckpointError(f"checkpoint {exc}") from None
    try:
        with np.load(path, allow_pickle=False) as data:
            files = {key: data[key] for key in data.files}
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint archive ({type(exc).__name__}: {exc})") from None
    if META_KEY not in files:
        raise CheckpointError(f"{path}: not a zerodl checkpoint (no {META_KEY!r} entry)")
    raw = files.pop(META_KEY)
    if raw.dtype.kind != "U" or raw.shape != ():
        raise CheckpointError(f"{path}: corrupt checkpoint metadata (dtype {raw.dtype}, shape {raw.shape})")
    try:
        meta = json.loads(str(raw[()]))
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({exc})") from None
    _validate_meta(meta, files, str(path))
    return meta, files


def load_checkpoint(trainer: Any, path: PathLike) -> dict[str, Any]:
    """Restore ``trainer`` (network, optimizer, generators, progress) from a checkpoint file.

    The Trainer must train the same kind of network with the same optimizer class, on a training
    set of the same size in batches of the same size; the checkpoint's optimizer hyper-parameters
    replace the Trainer's. Nothing is changed if anything does not fit. Returns the metadata.
    """
    meta, arrays = read_checkpoint(path)
    restore_state(trainer, meta, arrays, str(path))
    return meta


# -- the non-finite guard ---------------------------------------------------------------------------
class NonFiniteGuard:
    """Watches a Trainer's steps: periodic checkpoints and the NaN/inf stop (see the module doc).

    The Trainer calls :meth:`before_step`, :meth:`after_step` (with the recorded loss) and
    :meth:`end_step` around each step, and :meth:`finish` when :meth:`Trainer.train` ends.
    """

    #: Steps between in-memory snapshots; a NaN replays at most this many steps.
    snapshot_every: int = 100

    def __init__(self, snapshot_every: int | None = None) -> None:
        if snapshot_every is not None:
            self.snapshot_every = int(snapshot_every)
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
        snap = self._snapshot
        if snap is None or not 0 <= trainer.current_iter - snap[0]["trainer"]["current_iter"] < self.snapshot_every:
            self._snapshot = capture_state(trainer, progress=False)

    def after_step(self, trainer: Any, loss: float, batch_mask: np.ndarray) -> None:
        if not math.isfinite(loss):
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
            batch_mask = trainer.rng.integers(0, trainer.train_size, size=trainer.batch_size)
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

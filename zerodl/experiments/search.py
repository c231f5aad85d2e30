"""Hyperparameter random search (the book's §6.5, ``ch06/hyperparameter_optimization.py``), serial,
in worker processes, or on a Dask cluster — with the same results.

The book's protocol: 500 training samples, 20% of them carved off as the validation set (the test
set is never loaded into a trial), learning rate ``10^U(-6, -2)`` and weight decay ``10^U(-8, -4)``
drawn log-uniformly, ``MultiLayerNet(input, [100]*6, 10)`` trained with SGD, batch 100, 50 epochs,
trials ranked by their final validation accuracy.

Reproducibility: every trial's hyper-parameters and seed are drawn up front in the parent from
``seed``; a trial builds its network and batch generator from its own seed and runs with one BLAS
thread, so its result does not depend on where or in which order it runs. The serial run, a pool of
worker processes and a Dask cluster return identical trials, hence the same best trial.

Failures: an exception inside a trial is caught where it happens and the trial is reported as
failed with its parameters and traceback; a worker process that dies (``os._exit``, a segfault,
the OOM killer) breaks a ``ProcessPoolExecutor``: the pool is rebuilt and the trials that were in
flight are re-run one at a time in a fresh single-worker pool to find the one that kills its worker,
which is then reported as crashed. On Dask, a task whose worker keeps dying ends in ``KilledWorker``,
reported the same way. On a local Dask cluster a task is not re-run by the scheduler
(``allowed-failures`` 0): the search itself retries a trial whose worker died once, then reports
it as crashed. The search always continues with the other trials.

Results file and resume: with ``results_path`` every finished trial is recorded in a JSON file,
rewritten atomically as each trial finishes, so a search stopped by Ctrl-C, SIGTERM or a crash keeps
every finished trial. ``resume=True`` continues such a file: its trials are not run again, and the
same search (trials drawn from the same seed, same data, epochs, network, batch size and backend)
is required — a resume with other options is refused naming the option. A stop signal ends the
search between trials with :class:`SearchInterrupted` (the file holds what finished).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zerodl._fileio import atomic_write, read_regular_file
from zerodl.experiments._common import (
    ExperimentResult,
    Progress,
    backend_context,
    format_table,
    load_data,
    new_figure,
    save_figure,
    train,
)

EXECUTORS = ("serial", "process", "dask")

#: The book's search space: exponents of 10.
LR_RANGE = (-6.0, -2.0)
WEIGHT_DECAY_RANGE = (-8.0, -4.0)

TrialFn = Callable[[Mapping[str, Any], Mapping[str, np.ndarray]], Mapping[str, Any]]


@dataclass
class Trial:
    """One trial: its index, hyper-parameters, seed and outcome."""

    index: int
    params: dict[str, float]
    seed: int
    status: str = "pending"  # "ok", "failed" (exception in the trial) or "crashed" (worker died)
    val_acc: float = float("nan")
    val_acc_list: list[float] = field(default_factory=list)
    train_acc_list: list[float] = field(default_factory=list)
    error: str = ""
    seconds: float = 0.0
    attempts: int = 0  # times it was started (2: its worker died once and it was run again)
    resumed: bool = False  # its result comes from the results file of an earlier run

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        p = ", ".join(f"{k} {v:.3e}" for k, v in self.params.items())
        if self.ok:
            return f"trial {self.index}: val acc {self.val_acc:.4f} | {p}"
        return f"trial {self.index} {self.status.upper()} | {p} | {self.error.splitlines()[-1] if self.error else ''}"


@dataclass
class SearchResult:
    """All trials (in index order) and the ranking of the successful ones."""

    trials: list[Trial]
    executor: str
    workers: int
    seconds: float
    results_path: str | None = None
    #: Trials actually run by this call (the others came from the results file, see ``resume``).
    executed: int = 0

    @property
    def ranked(self) -> list[Trial]:
        """Successful trials, best final validation accuracy first (ties: lower index first)."""
        good = [t for t in self.trials if t.ok]
        return sorted(good, key=lambda t: (-t.val_acc, t.index))

    @property
    def best(self) -> Trial | None:
        ranked = self.ranked
        return ranked[0] if ranked else None

    @property
    def failed(self) -> list[Trial]:
        return [t for t in self.trials if not t.ok]


# ----------------------------------------------------------------------------- the trial
def train_trial(spec: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """The book's ``__train(lr, weight_decay)``: returns ``val_acc_list`` and ``train_acc_list``.

    ``spec``: ``params`` (``lr``, ``weight_decay``), ``seed``, ``epochs``, ``hidden``,
    ``batch_size``, ``backend``. ``data``: ``x_train``, ``t_train``, ``x_val``, ``t_val``.
    """
    from zerodl.networks import MultiLayerNet
    from zerodl.optimizer import SGD

    params = spec["params"]
    seeds = np.random.SeedSequence(spec["seed"]).spawn(2)
    with backend_context(spec.get("backend"), threads=1):
        net = MultiLayerNet(data["x_train"].shape[1], list(spec["hidden"]), 10,
                            weight_decay_lambda=params["weight_decay"], seed=np.random.default_rng(seeds[0]))
        hist = train(net, SGD(lr=params["lr"]), data["x_train"], data["t_train"],
                     batch_size=spec["batch_size"], epochs=spec["epochs"], rng=np.random.default_rng(seeds[1]),
                     x_test=data["x_val"], t_test=data["t_val"], record_loss=False)
    return {"val_acc_list": hist.test_acc, "train_acc_list": hist.train_acc}


def execute_trial(trial_fn: TrialFn, spec: Mapping[str, Any], data: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Run one trial wherever it is (parent, worker process, Dask worker); never raises.

    Returns ``{"index", "status", "val_acc_list", "train_acc_list", "error", "seconds"}``.
    """
    start = time.perf_counter()
    try:
        out = trial_fn(spec, data)
        val = [float(v) for v in out["val_acc_list"]]
        return {"index": spec["index"], "status": "ok", "val_acc_list": val,
                "train_acc_list": [float(v) for v in out.get("train_acc_list", [])], "error": "",
                "seconds": time.perf_counter() - start}
    except Exception:  # noqa: BLE001 - any error of a trial is its result: reported, the search goes on
        return {"index": spec["index"], "status": "failed", "val_acc_list": [], "train_acc_list": [],
                "error": traceback.format_exc(), "seconds": time.perf_counter() - start}


def _worker_init() -> None:
    # One BLAS thread per worker: two workers on two cores must not each start two threads.
    # threadpoolctl only limits libraries already loaded, so load NumPy's BLAS first (each trial
    # also runs under its own limit, see train_trial).
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)


# ----------------------------------------------------------------------------- executors
def _apply(trial: Trial, out: Mapping[str, Any]) -> None:
    trial.attempts = int(out.get("attempts", 1))
    trial.status = out["status"]
    trial.val_acc_list = list(out["val_acc_list"])
    trial.train_acc_list = list(out["train_acc_list"])
    trial.error = out["error"]
    trial.seconds = float(out["seconds"])
    final = trial.val_acc_list[-1] if trial.val_acc_list else float("nan")
    trial.val_acc = final if math.isfinite(final) else float("nan")


def _run_serial(specs, data, trial_fn, on_done):
    for spec in specs:
        on_done(spec["index"], execute_trial(trial_fn, spec, data))


def _process_pool(workers: int) -> ProcessPoolExecutor:
    # "spawn"-family contexts: forking a parent that holds BLAS/numba thread pools is unsafe.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                               initializer=_worker_init)


def _run_process(specs, data, trial_fn, on_done, workers):
    by_index = {s["index"]: s for s in specs}
    pending = [s["index"] for s in specs]
    suspects: list[int] = []
    while pending or suspects:
        # Trials that were in flight when a worker died: one at a time, alone in a pool, so the
        # one that kills its worker is identified and the others still run.
        for index in suspects:
            pool = _process_pool(1)
            try:
                out = dict(pool.submit(execute_trial, trial_fn, by_index[index], data).result(), attempts=2)
            except BrokenProcessPool as exc:
                out = {"index": index, "status": "crashed", "val_acc_list": [], "train_acc_list": [],
                       "seconds": 0.0, "attempts": 2,
                       "error": f"worker process died while running this trial ({exc})"}
            except BaseException:
                _stop_pool(pool)
                raise
            pool.shutdown(wait=True)
            on_done(index, out)
        suspects = []
        if not pending:
            break
        pool = _process_pool(workers)
        try:
            futures: dict[Future, int] = {}
            queue = list(pending)
            # Keep at most 2 tasks per worker queued, so that a broken pool has few trials in flight.
            while queue or futures:
                while queue and len(futures) < 2 * workers:
                    index = queue.pop(0)
                    futures[pool.submit(execute_trial, trial_fn, by_index[index], data)] = index
                done, _ = wait(futures, return_when=FIRST_COMPLETED)
                broken = False
                for fut in done:
                    index = futures.pop(fut)
                    try:
                        on_done(index, fut.result())
                        pending.remove(index)
                    except BrokenProcessPool:
                        broken = True
                if broken:
                    # Every unfinished trial that had been handed to the pool may be the culprit.
                    suspects = [i for i in pending if i not in queue]
                    pending = list(queue)
                    break
        except BaseException:  # a stop signal: do not wait for the trials in flight
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True, cancel_futures=True)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """End a pool now: queued trials cancelled, running workers terminated (their results are lost)."""
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        with contextlib.suppress(Exception):
            process.terminate()
    for process in processes:
        with contextlib.suppress(Exception):
            process.join()


#: Times a trial is started at most when its worker process dies under it (Dask executor).
DASK_ATTEMPTS = 2


def _run_dask(specs, data, trial_fn, on_done, workers, scheduler):
    try:
        import dask
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError("executor 'dask' needs dask.distributed: pip install 'zerodl[distributed]'") from exc
    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        # The scheduler does not re-run a task whose worker died (allowed-failures 0): the search
        # retries it itself, once, and knows how often each trial was started. One task per worker
        # thread at a time (worker-saturation 1.0): a dying worker takes no queued trial with it.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0,
                              "distributed.scheduler.worker-saturation": 1.0}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                   dashboard_address=None, silence_logs=40)
        client = Client(cluster)
    try:
        by_index = {spec["index"]: spec for spec in specs}
        futures: dict[Any, tuple[int, int]] = {}
        shared: dict[str, Any] = {"data": None}

        def submit(index: int, attempt: int) -> Any:
            if shared["data"] is None:  # at the start, and after a worker died (its copy is lost)
                shared["data"] = client.scatter([dict(data)], broadcast=True, hash=False)[0]  # a fresh key
            fut = client.submit(execute_trial, trial_fn, by_index[index], shared["data"], pure=False)
            futures[fut] = (index, attempt)
            return fut

        # No more trials handed out than there are worker threads, so that a worker that dies
        # takes only the trial it was running with it. A trial whose worker died (and any other
        # that died with it) runs again alone, once the others in flight are done: the one that
        # kills its worker is then told apart from the ones that were merely beside it.
        threads = sum(int(w.get("nthreads", 1)) for w in client.scheduler_info().get("workers", {}).values())
        capacity = max(1, threads or workers)
        waiting = [(spec["index"], 1) for spec in specs]
        suspects: list[tuple[int, int]] = []
        running = as_completed([submit(*waiting.pop(0)) for _ in range(min(capacity, len(waiting)))])
        for fut in running:
            index, attempt = futures.pop(fut)
            try:
                out: dict[str, Any] | None = dict(fut.result(), attempts=attempt)
            except Exception as exc:  # noqa: BLE001 - KilledWorker, a lost connection: the worker, not the trial
                out = None
                shared["data"] = None
                if attempt < DASK_ATTEMPTS:
                    suspects.append((index, attempt + 1))
                else:
                    out = {"index": index, "status": "crashed", "val_acc_list": [], "train_acc_list": [],
                           "seconds": 0.0, "attempts": attempt,
                           "error": f"worker died while running this trial, {attempt} times "
                                    f"({type(exc).__name__}: {exc})"}
            if suspects:
                if not futures:
                    running.add(submit(*suspects.pop(0)))
            else:
                while waiting and len(futures) < capacity:
                    running.add(submit(*waiting.pop(0)))
            if out is None:
                continue
            on_done(index, out)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# ----------------------------------------------------------------------------- results file
RESULTS_FORMAT = "zerodl-search-results"
RESULTS_VERSION = 1
#: A results file larger than this is refused before it is read (a 100-trial file is ~100 kB).
MAX_RESULTS_BYTES = 64 << 20


class SearchInterrupted(BaseException):
    """A stop signal (Ctrl-C, SIGTERM, SIGHUP) ended the search between trials.

    A :class:`BaseException`, as :class:`KeyboardInterrupt`, so that no trial catches it.
    Attributes: ``signum``, ``finished`` (trials in the results file), ``total``, ``results_path``.
    """

    def __init__(self, signum: int, finished: int = 0, total: int = 0, results_path: str | None = None) -> None:
        super().__init__(signum)
        self.signum, self.finished, self.total, self.results_path = signum, finished, total, results_path

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def __str__(self) -> str:
        kept = (f"the {self.finished} finished are in {self.results_path} (continue with --resume)"
                if self.results_path else "no results file")
        return f"interrupted by {self.name} after {self.finished} of {self.total} trials; {kept}"


class SearchResultsError(ValueError):
    """A results file that cannot be resumed: damaged, foreign, or written by another search."""


def data_digest(data: Mapping[str, np.ndarray]) -> str:
    """SHA-256 of the search's four arrays (dtype, shape and bytes), to recognise the same data."""
    h = hashlib.sha256()
    for key in ("x_train", "t_train", "x_val", "t_val"):
        a = np.ascontiguousarray(data[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


#: Keys of a results file's ``options`` → the option of ``zerodl experiment search`` that sets them.
OPTION_NAMES = {"seed": "--seed", "trials": "--trials", "dataset": "--dataset", "quick": "--quick",
                "train_size": "train_size", "validation_rate": "validation_rate", "epochs": "epochs (--quick)",
                "hidden": "hidden", "batch_size": "batch_size", "backend": "--backend",
                "data": "the data (--dataset / --data-dir)", "trial_specs": "the trials"}


def _trial_record(trial: Trial) -> dict[str, Any]:
    return {"index": trial.index, "params": trial.params, "seed": trial.seed, "status": trial.status,
            "val_acc_list": trial.val_acc_list, "train_acc_list": trial.train_acc_list, "error": trial.error,
            "seconds": trial.seconds, "attempts": trial.attempts}


def _specs_digest(trials: Sequence[Trial]) -> str:
    text = json.dumps([[t.index, t.params, t.seed] for t in trials], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


class _ResultsFile:
    """The search's results file: read on resume, rewritten atomically after every finished trial."""

    def __init__(self, path: str | os.PathLike[str], options: dict[str, Any], total: int) -> None:
        self.path = os.fspath(path)
        self.options = options
        self.total = total
        self.records: dict[int, dict[str, Any]] = {}

    def _fail(self, what: str) -> SearchResultsError:
        return SearchResultsError(f"{self.path}: {what}")

    def read(self) -> dict[str, Any]:
        try:
            size = os.stat(self.path).st_size
        except OSError as exc:
            raise self._fail(exc.strerror or str(exc)) from None
        if size > MAX_RESULTS_BYTES:
            raise self._fail(f"{size:,} bytes, more than a search results file holds")
        try:
            doc = json.loads(read_regular_file(self.path, "search results file").decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._fail(f"not a zerodl search results file ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != RESULTS_FORMAT:
            raise self._fail("not a zerodl search results file")
        if doc.get("version") != RESULTS_VERSION:
            raise self._fail(f"results file version {doc.get('version')!r}, this zerodl reads {RESULTS_VERSION}")
        if not isinstance(doc.get("options"), dict) or not isinstance(doc.get("trials"), list):
            raise self._fail("damaged results file (no options or trials)")
        return doc

    def unfinished(self) -> tuple[int, int] | None:
        """``(finished, total)`` if the file holds a search that did not finish, else ``None``."""
        try:
            doc = self.read()
        except SearchResultsError:
            return None
        total = doc["options"].get("total")
        done = len(doc["trials"])
        return (done, total) if isinstance(total, int) and done < total else None

    def resume(self, trials: dict[int, Trial]) -> list[int]:
        """Load finished trials into ``trials``; refuse a file of another search. Returns their indices."""
        doc = self.read()
        saved = doc["options"]
        for key, mine in self.options.items():
            if key == "total" or key not in saved or saved[key] == mine:
                continue
            option = OPTION_NAMES.get(key, key)
            if key in ("data", "trial_specs"):
                raise self._fail(f"written by a search on other {option.removeprefix('the ')}; --resume continues "
                                 "the same search (repeat its options, or start over without --resume)")
            raise self._fail(f"written with {option} {saved[key]!r}, this search has {option} {mine!r}; "
                             "--resume continues the same search (repeat its options, or start over "
                             "without --resume)")
        done = []
        for rec in doc["trials"]:
            trial = self._check_record(rec, trials)
            trial.status, trial.error = rec["status"], rec["error"]
            trial.val_acc_list = [float(v) for v in rec["val_acc_list"]]
            trial.train_acc_list = [float(v) for v in rec["train_acc_list"]]
            trial.seconds, trial.attempts, trial.resumed = float(rec["seconds"]), int(rec["attempts"]), True
            final = trial.val_acc_list[-1] if trial.val_acc_list else float("nan")
            trial.val_acc = final if math.isfinite(final) else float("nan")
            self.records[trial.index] = rec
            done.append(trial.index)
        return done

    def _check_record(self, rec: Any, trials: dict[int, Trial]) -> Trial:
        if not isinstance(rec, dict):
            raise self._fail("damaged results file (a trial is not an object)")
        index = rec.get("index")
        trial = trials.get(index) if isinstance(index, int) and not isinstance(index, bool) else None
        if trial is None:
            raise self._fail(f"trial {index!r} is not one of this search's trials")
        if index in self.records:
            raise self._fail(f"trial {index} is recorded twice")
        if rec.get("params") != trial.params or rec.get("seed") != trial.seed:
            raise self._fail(f"trial {index} has other hyper-parameters or seed than this search draws")
        if rec.get("status") not in ("ok", "failed", "crashed"):
            raise self._fail(f"trial {index}: status {rec.get('status')!r}")
        for key in ("val_acc_list", "train_acc_list"):
            values = rec.get(key)
            if not isinstance(values, list) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise self._fail(f"trial {index}: {key} is not a list of numbers")
        if not isinstance(rec.get("error"), str) or not isinstance(rec.get("seconds"), (int, float)) \
                or not isinstance(rec.get("attempts"), int) or rec["attempts"] < 0:
            raise self._fail(f"trial {index}: damaged record")
        return trial

    def record(self, trial: Trial) -> None:
        self.records[trial.index] = _trial_record(trial)
        self.write()

    def write(self) -> None:
        doc = {"format": RESULTS_FORMAT, "version": RESULTS_VERSION, "options": self.options,
               "trials": [self.records[i] for i in sorted(self.records)]}
        text = json.dumps(doc, indent=1)
        with atomic_write(self.path, "w") as f:
            f.write(text + "\n")


@contextlib.contextmanager
def _stop_signals_raise() -> Any:
    """While the search runs: SIGTERM / SIGHUP raise :class:`SearchInterrupted` (Ctrl-C raises
    KeyboardInterrupt as usual). Only in the main thread (elsewhere signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise SearchInterrupted(signum)

    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# ----------------------------------------------------------------------------- the search
def make_trials(n_trials: int, seed: int, lr_range: Sequence[float] = LR_RANGE,
                weight_decay_range: Sequence[float] = WEIGHT_DECAY_RANGE) -> list[Trial]:
    """Draw ``n_trials`` log-uniform (lr, weight decay) pairs and per-trial seeds from ``seed``."""
    rng = np.random.default_rng(seed)
    trials = []
    for i in range(n_trials):
        weight_decay = 10 ** rng.uniform(*weight_decay_range)
        lr = 10 ** rng.uniform(*lr_range)
        trial_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        trials.append(Trial(i, {"lr": float(lr), "weight_decay": float(weight_decay)}, trial_seed))
    return trials


def validation_split(x: np.ndarray, t: np.ndarray, validation_rate: float, seed: int
                     ) -> dict[str, np.ndarray]:
    """Shuffle the *training* data and carve off ``validation_rate`` of it, as the book does."""
    if not 0 < validation_rate < 1:
        raise ValueError(f"validation_rate must be in (0, 1), got {validation_rate}")
    perm = np.random.default_rng([seed, 5]).permutation(x.shape[0])
    n_val = int(x.shape[0] * validation_rate)
    if n_val == 0 or n_val == x.shape[0]:
        raise ValueError(f"validation_rate {validation_rate} leaves an empty split of {x.shape[0]} samples")
    x, t = x[perm], t[perm]
    return {"x_train": np.ascontiguousarray(x[n_val:]), "t_train": t[n_val:],
            "x_val": np.ascontiguousarray(x[:n_val]), "t_val": t[:n_val]}


def search(
    data: Mapping[str, np.ndarray],
    trials: Sequence[Trial],
    *,
    executor: str = "process",
    workers: int | None = None,
    scheduler: str | None = None,
    epochs: int = 50,
    hidden: Sequence[int] = (100, 100, 100, 100, 100, 100),
    batch_size: int = 100,
    backend: str | None = None,
    trial_fn: TrialFn = train_trial,
    progress: bool = True,
    results_path: str | os.PathLike[str] | None = None,
    resume: bool = False,
    options: Mapping[str, Any] | None = None,
) -> SearchResult:
    """Run ``trials`` on ``data`` (``x_train``, ``t_train``, ``x_val``, ``t_val``) with ``executor``.

    ``executor``: ``"serial"``, ``"process"`` (a pool of ``workers`` processes, default: the CPU
    count) or ``"dask"`` (the cluster at ``scheduler``, or a local cluster of ``workers`` processes
    with one thread each). ``trial_fn(spec, data)`` must be importable by the workers (a
    module-level function); it returns ``val_acc_list`` and ``train_acc_list``.

    ``results_path``: a JSON file rewritten atomically after every finished trial. An existing
    file of an unfinished search is not replaced unless ``resume`` continues it (its trials are
    not run again; another search's file, or one written with other ``options`` — e.g. the
    command's ``seed`` and ``trials`` — is refused with :class:`SearchResultsError`) or it is
    removed first. Stop signals end the search with :class:`SearchInterrupted` (SIGTERM, SIGHUP,
    and Ctrl-C's KeyboardInterrupt become it), the file holding every finished trial.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}: expected one of {', '.join(EXECUTORS)}")
    if scheduler and executor != "dask":
        raise ValueError("a scheduler address needs executor='dask'")
    if resume and results_path is None:
        raise ValueError("resume needs a results file (results_path / --results)")
    workers = max(1, int(workers or os.cpu_count() or 1))
    from zerodl.backend import get_backend

    backend = backend or get_backend()
    trials = [Trial(t.index, dict(t.params), t.seed) for t in trials]
    by_index = {t.index: t for t in trials}
    if len(by_index) != len(trials):
        raise ValueError("trial indices must be unique")
    # The results file is this search's until it returns (already held when the command runs it).
    from zerodl._runlock import RunLock

    lock = RunLock([results_path], command=f"zerodl search ({len(trials)} trials, results {results_path})")
    try:
        return _search_holding(data, trials, by_index, executor=executor, workers=workers, scheduler=scheduler,
                               epochs=epochs, hidden=hidden, batch_size=batch_size, backend=backend,
                               trial_fn=trial_fn, progress=progress, results_path=results_path, resume=resume,
                               options=options)
    finally:
        lock.release()


def _search_holding(data: Mapping[str, np.ndarray], trials: list[Trial], by_index: dict[int, Trial], *,
                    executor: str, workers: int, scheduler: str | None, epochs: int, hidden: Sequence[int],
                    batch_size: int, backend: str, trial_fn: TrialFn, progress: bool,
                    results_path: str | os.PathLike[str] | None, resume: bool,
                    options: Mapping[str, Any] | None) -> SearchResult:
    """:func:`search` once its results file is locked."""
    results = None
    done: list[int] = []
    if results_path is not None:
        header = {**dict(options or {}), "total": len(trials), "epochs": epochs, "hidden": list(hidden),
                  "batch_size": batch_size, "backend": backend, "data": data_digest(data),
                  "trial_specs": _specs_digest(trials)}
        results = _ResultsFile(results_path, header, len(trials))
        if resume and os.path.lexists(results.path):
            done = results.resume(by_index)
        elif not resume and os.path.lexists(results.path):
            unfinished = results.unfinished()
            if unfinished is not None:
                raise SearchResultsError(
                    f"{results.path} holds an unfinished search ({unfinished[0]} of {unfinished[1]} trials): "
                    "continue it with --resume (resume=True), or delete it to start over")
    specs = [{"index": t.index, "params": t.params, "seed": t.seed, "epochs": epochs, "hidden": list(hidden),
              "batch_size": batch_size, "backend": backend} for t in trials if t.index not in set(done)]
    bar = Progress(f"search/{executor}", len(specs), progress)
    executed = 0

    def on_done(index: int, out: Mapping[str, Any]) -> None:
        nonlocal executed
        trial = by_index[index]
        _apply(trial, out)
        executed += 1
        if results is not None:
            results.record(trial)
        bar.step(trial.describe())

    start = time.perf_counter()
    try:
        with _stop_signals_raise():
            if results is not None:
                results.write()  # the file exists from the start: its options say what is running
            if not specs:
                pass
            elif executor == "serial":
                _run_serial(specs, data, trial_fn, on_done)
            elif executor == "process":
                _run_process(specs, data, trial_fn, on_done, workers)
            else:
                _run_dask(specs, data, trial_fn, on_done, workers, scheduler)
    except (KeyboardInterrupt, SearchInterrupted) as exc:
        signum = exc.signum if isinstance(exc, SearchInterrupted) else int(signal.SIGINT)
        finished = len(results.records) if results is not None else len(done) + executed
        raise SearchInterrupted(signum, finished, len(trials),
                                results.path if results is not None else None) from None
    return SearchResult(trials, executor, 1 if executor == "serial" else workers, time.perf_counter() - start,
                        results_path=results.path if results is not None else None, executed=executed)


def run(
    out: str | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    backend: str | None = None,
    dataset: str = "digits",
    data_dir: str | None = None,
    trials: int | None = None,
    workers: int | None = None,
    executor: str = "process",
    scheduler: str | None = None,
    train_size: int = 500,
    validation_rate: float = 0.2,
    epochs: int | None = None,
    top: int = 20,
    progress: bool = True,
    results: str | None = None,
    resume: bool = False,
    trial_fn: TrialFn = train_trial,
) -> ExperimentResult:
    """The book's random search; table of the best ``top`` trials (and every failure), PNG.

    ``results``: the JSON results file (see :func:`search`), ``resume`` continues it.
    """
    start = time.perf_counter()
    n_trials = trials or (6 if quick else 100)
    epochs = epochs or (3 if quick else 50)
    hidden = [20, 20] if quick else [100] * 6
    loaded = load_data(dataset, seed, data_dir)
    # Only the training split goes in; the test split is never seen by a trial.
    data = validation_split(loaded.x_train[:train_size], loaded.t_train[:train_size], validation_rate, seed)
    options = {"seed": seed, "trials": n_trials, "quick": quick, "dataset": dataset, "train_size": train_size,
               "validation_rate": validation_rate}
    result = search(data, make_trials(n_trials, seed), executor=executor, workers=workers,
                    scheduler=scheduler, epochs=epochs, hidden=hidden, backend=backend, progress=progress,
                    results_path=results, resume=resume, options=options, trial_fn=trial_fn)
    rows = [[rank, t.index, t.val_acc, t.train_acc_list[-1] if t.train_acc_list else float("nan"),
             t.params["lr"], t.params["weight_decay"]] for rank, t in enumerate(result.ranked[:top], 1)]
    table = format_table(
        ["best", "trial", "val acc", "train acc", "lr", "weight decay"], rows,
        title=f"Random search: {n_trials} trials on {loaded.name} ({len(data['x_train'])} train / "
              f"{len(data['x_val'])} validation samples carved from the training split), "
              f"MultiLayerNet({loaded.input_size}, {hidden}, 10), SGD, {epochs} epochs | "
              f"{result.executor}, {result.workers} worker(s), {result.seconds:.1f}s",
    )
    if result.failed:
        table += "\n\n" + format_table(
            ["failed trial", "status", "lr", "weight decay", "error"],
            [[t.index, t.status, t.params["lr"], t.params["weight_decay"],
              t.error.strip().splitlines()[-1] if t.error else ""] for t in result.failed],
        )
    resumed = sum(t.resumed for t in result.trials)
    if results:
        table += (f"\n\nresults: {results} ({len(result.trials)} trials"
                  + (f"; {resumed} from the earlier run, {result.executed} run now" if resume else "") + ")")
    figure = save_figure(_plot(result, top), out) if out else None
    return ExperimentResult("search", table, figure, {"result": result}, time.perf_counter() - start)


def _plot(result: SearchResult, top: int) -> Any:
    ranked = result.ranked[:top]
    cols = 5
    rows = max(1, math.ceil(len(ranked) / cols))
    fig = new_figure(13, 3.6 + 1.9 * rows)
    grid = fig.add_gridspec(rows + 2, cols)
    ax = fig.add_subplot(grid[:2, :])
    ok = [t for t in result.trials if t.ok]
    if ok:
        sc = ax.scatter([t.params["lr"] for t in ok], [t.params["weight_decay"] for t in ok],
                        c=[t.val_acc for t in ok], cmap="viridis", vmin=0, vmax=1, s=30)
        fig.colorbar(sc, ax=ax, label="final validation accuracy")
    if result.failed:
        ax.scatter([t.params["lr"] for t in result.failed], [t.params["weight_decay"] for t in result.failed],
                   marker="x", color="red", s=40, label="failed")
        ax.legend(loc="upper left")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("weight decay")
    ax.set_title(f"{len(result.trials)} trials ({result.executor})")
    for i, t in enumerate(ranked):
        ax = fig.add_subplot(grid[2 + i // cols, i % cols])
        x = np.arange(len(t.val_acc_list))
        ax.plot(x, t.val_acc_list)
        ax.plot(x, t.train_acc_list, "--")
        ax.set_ylim(0, 1)
        ax.set_xticks([])
        if i % cols:
            ax.set_yticks([])
        ax.set_title(f"Best-{i + 1} ({t.val_acc:.2f})\nlr {t.params['lr']:.1e}, wd {t.params['weight_decay']:.1e}",
                     fontsize=7)
    fig.tight_layout()
    return fig

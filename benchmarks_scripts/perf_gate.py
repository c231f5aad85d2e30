"""The performance regression gate, and the recording of the kept asv history.

Gate: the working tree against BASE (default: the merge base with ``main``; on main itself with a clean
``zerodl/``, the commit before HEAD) on a fixed fast subset of
the asv suite (Numba kernels, the fused training steps), both measured in the same run, interleaved::

    python benchmarks_scripts/perf_gate.py                 # vs the merge base with main; exit 1 on a regression
    python benchmarks_scripts/perf_gate.py v0.3 --factor 1.3
    python benchmarks_scripts/perf_gate.py --report-only   # CI: the same table, exit 0 (a noisy machine)
    python benchmarks_scripts/perf_gate.py --list          # the subset's benchmarks

How, and why not ``asv continuous``: that builds both commits into fresh virtualenvs (minutes of
installing numpy and numba, and a package registry). The gate instead extracts BASE's ``zerodl/``
(``git archive``) into ``.perf_gate/trees/<sha>/`` (kept for the next run, with its own numba
cache) and starts two worker processes of the current interpreter, one importing BASE's zerodl and
one the working tree's. Both discover the benchmarks with asv's own discovery (``asv_runner``) from
the working tree's ``asv_bench/benchmarks`` (one benchmark code measures both, as with
``asv continuous``), select the subset with asv's ``--bench`` regular expressions, and run each
benchmark as asv does (``setup``, the timed method, ``teardown``). For each benchmark both trees
run setup, then their samples alternate (base, head, head, base, ...; each ``--sample-time`` long),
so the two trees' samples are milliseconds apart and a burst of load hits both alike. A round
keeps each tree's best sample; a benchmark is suspect when head/base of the median over rounds AND
of the best over rounds both exceed ``--factor``; suspects are measured again in new worker
processes (new memory layout) with twice the rounds, and only a confirmed one fails the gate. A
benchmark that errors on HEAD (and not on BASE) fails the gate too; one that errors on BASE only
(a benchmark of a new API) is listed as not compared. Workers use ``--threads`` (default 1)
BLAS/numba threads.

Recording the kept history (asv's own results format, ``asv_bench/results/<machine>/``)::

    python benchmarks_scripts/perf_gate.py --record [--machine NAME] [--commit REV]

describes the machine for asv (``~/.asv-machine.json``) and runs ``asv run --python=same`` (warm samples: ``RECORD_TIMING``) on the gate's subset plus the ``track_``
speed ratios, measuring REV's own ``zerodl/`` (default HEAD; extracted as BASE is) with the working
tree's benchmark suite. Record commits of main's first-parent history (merged commits): ``asv
publish`` draws a branch's first-parent commits only. Then, from ``asv_bench/``, ``asv compare``,
``asv publish`` and ``asv preview`` work on a fresh clone.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ASV_DIR = REPO / "asv_bench"
BENCH_DIR = ASV_DIR / "benchmarks"
STATE_DIR = REPO / ".perf_gate"

#: The gate's fixed fast subset, as asv ``--bench`` regular expressions (matched with ``re.search``
#: against ``module.Class.method('param', ...)``): every kernel benchmark on the Numba backend (both
#: dtypes, every shape), and the fused training steps of TwoLayerNet, MultiLayerNet (Adam),
#: SimpleConvNet and DeepConvNet in float32 (and TwoLayerNet in the book's float64).
GATE_SUBSET: tuple[str, ...] = (
    r"^bench_(affine|relu|sigmoid|softmax_loss|optim|dropout|gelu)\.\w+\.time_\w+\('numba'",
    r"^bench_batchnorm\.BatchNormKernels\.time_\w+\('numba'",
    r"^bench_conv\.ConvKernels\.time_\w+\('numba'",
    (r"^bench_train_step\.(TwoLayerNetStep|MultiLayerNetStep|SimpleConvNetStep|DeepConvNetStep)"
     r"\.time_step\('numba', 'fused', 'float32'\)"),
    r"^bench_train_step\.TwoLayerNetStep\.time_step\('numba', 'fused', 'float64'\)",
)
#: What ``--record`` keeps: the gate's subset and the speed ratios (``track_``) whose history the
#: published page draws (``bench_speedup``: each contender in its own process, about a minute;
#: ``bench_conv.ConvSpeedup`` is left to full runs, its setups take minutes).
RECORD_SUBSET: tuple[str, ...] = (*GATE_SUBSET, r"^bench_speedup\.")

_TAG = "@@perf-gate "
KEEP_TREES = 3  # base trees kept in .perf_gate/trees (each ~1 MB plus its numba cache)


class GateError(Exception):
    """A problem the gate reports in one line (bad revision, no benchmark selected, a worker died)."""


# ----------------------------------------------------------------------------- worker side
def _discover(bench_dir: Path, patterns: list[str], lenient: bool = False) -> list[tuple[str, Any, int]]:
    """``[(name with params, asv Benchmark, param index)]`` of the ``time_`` benchmarks selected.

    ``lenient``: a benchmark module that fails to import (BASE lacks an API it uses) is left out
    (its traceback goes to stderr) instead of failing the discovery."""
    try:
        from asv_runner.discovery import disc_benchmarks
    except ImportError:
        raise GateError("asv is not installed in this Python (pip install -e '.[bench]')") from None

    regexes = [re.compile(p) for p in patterns]
    found = []
    for bench in disc_benchmarks(str(bench_dir), ignore_import_errors=lenient):
        if not bench.name.split(".")[-1].startswith("time_"):
            continue
        combos = list(itertools.product(*bench.params)) if bench.params else [None]
        for idx, combo in enumerate(combos):
            name = bench.name if combo is None else f"{bench.name}({', '.join(combo)})"
            if any(r.search(name) for r in regexes):
                found.append((name, bench, idx))
    return found


def _emit(obj: Any) -> None:
    sys.__stdout__.write(_TAG + json.dumps(obj) + "\n")
    sys.__stdout__.flush()


class _Case:
    """One benchmark at one parameter combination, run as asv runs it: setup, timed calls, teardown."""

    def __init__(self, bench: Any, idx: int | None, sample_time: float) -> None:
        self.bench, self.idx, self.sample_time = bench, idx, sample_time
        self.number = 0  # calls per sample, calibrated at the first sample
        self.cache = bench.do_setup_cache() if getattr(bench, "_setup_cache", None) else None

    def _args(self) -> tuple:
        params = tuple(self.bench._current_params)
        return params if self.cache is None else (self.cache, *params)

    def setup(self) -> bool:
        """asv's setup for this parameter combination; False when the benchmark skips itself."""
        if self.idx is not None:
            self.bench.set_param_idx(self.idx)
        if self.cache is not None:
            self.bench.set_cache(self.cache)
        return not self.bench.do_setup()

    def sample(self) -> float:
        """Seconds per call over one sample of ``number`` calls (about ``sample_time`` long)."""
        fn, args = self.bench.func, self._args()
        if not self.number:
            fn(*args)
            self.number = 1
            while True:
                start = time.perf_counter()
                for _ in range(self.number):
                    fn(*args)
                if time.perf_counter() - start >= self.sample_time or self.number >= 1 << 16:
                    break
                self.number *= 2
        start = time.perf_counter()
        for _ in range(self.number):
            fn(*args)
        return (time.perf_counter() - start) / self.number

    def teardown(self) -> None:
        self.bench.do_teardown()
        # What setup stored (arrays, networks) goes now, not when the worker ends: the next
        # setup builds it again (asv runs every benchmark in a fresh process).
        instance = getattr(self.bench.func, "__self__", None)
        if instance is not None:
            instance.__dict__.clear()


def worker_main(tree: Path, bench_dir: Path, patterns: list[str], sample_time: float,
                lenient: bool = False) -> int:
    """A tree's process: discover, then answer one request per stdin line (JSON):
    ``{"setup": name}`` -> ``{"ok": bool}`` (False: skipped), ``{"sample": name}`` -> ``{"seconds": s}``,
    ``{"teardown": name}`` -> ``{"ok": true}``; a failing benchmark answers ``{"failed": message}``.
    """
    sys.path[:0] = [str(tree), str(bench_dir.parent)]
    sys.stdout = sys.stderr  # benchmarks and libraries print; the protocol lines must stay clean
    try:
        import zerodl

        where = Path(zerodl.__file__).resolve()
        if not where.is_relative_to(tree.resolve()):
            raise GateError(f"imported zerodl from {where}, not from the tree {tree}")
        cases = {name: _Case(bench, idx if bench.params else None, sample_time)
                 for name, bench, idx in _discover(bench_dir, patterns, lenient)}
    except Exception as exc:  # noqa: BLE001 -- whatever it is, the parent reports it in one line
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit({"ready": sorted(cases), "zerodl": str(where)})
    for line in sys.stdin:
        request = json.loads(line)
        if not request:
            break
        (action, name), = request.items()
        case = cases.get(name)
        if case is None:
            _emit({"failed": "not found on this tree (its module failed to import: see the worker's stderr)"})
            continue
        try:
            if action == "setup":
                _emit({"ok": case.setup()})
            elif action == "sample":
                _emit({"seconds": case.sample()})
            else:
                case.teardown()
                _emit({"ok": True})
        except Exception as exc:  # noqa: BLE001 -- a benchmark that fails on this tree: say so, keep going
            _emit({"failed": f"{type(exc).__name__}: {exc}"})
    return 0


# ----------------------------------------------------------------------------- parent side
def _git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise GateError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout.strip()


def resolve_base(base: str | None) -> tuple[str, str]:
    """``(sha, description)`` of BASE (default: the merge base of HEAD with ``main``; on main itself with a
    clean ``zerodl/``, HEAD's first parent)."""
    if base is None:
        for main in ("main", "origin/main"):
            try:
                sha = _git("merge-base", "HEAD", main)
            except GateError:
                continue
            if sha == _git("rev-parse", "HEAD") and not _git("status", "--porcelain", "--", "zerodl"):
                # On main itself with a clean zerodl/ (CI on a merged commit): the merge base is the tree
                # being measured, so compare with the commit before it on main instead.
                try:
                    return _git("rev-parse", "--verify", "--quiet", "HEAD^1"), "HEAD^1 (HEAD is on main)"
                except GateError:
                    raise GateError("HEAD is main's first commit: nothing to compare with; name BASE") from None
            return sha, f"merge base with {main}"
        raise GateError("no branch 'main' (or 'origin/main') to take the merge base with; name BASE")
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{base}^{{commit}}"), base
    except GateError:
        raise GateError(f"BASE {base!r} is not a commit of this repository") from None


def base_tree(sha: str) -> Path:
    """BASE's ``zerodl/`` extracted into ``.perf_gate/trees/<sha>`` (reused; old trees pruned)."""
    trees = STATE_DIR / "trees"
    target = trees / sha
    if not (target / "zerodl" / "__init__.py").exists():
        trees.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "--format=tar", sha, "zerodl"], cwd=REPO,
                                 capture_output=True, check=False)
        if archive.returncode:
            raise GateError(f"git archive {sha[:10]}: {archive.stderr.decode().strip()}")
        staging = Path(tempfile.mkdtemp(prefix=f".{sha[:10]}-", dir=trees))
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            # Only regular files and folders under staging (the "data" filter, Python >= 3.10.12).
            tar.extractall(staging, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # atomic: a tree is complete or absent
    target.touch()
    for old in sorted((p for p in trees.iterdir() if p.is_dir() and p != target),
                      key=lambda p: p.stat().st_mtime)[:-(KEEP_TREES - 1) or None]:
        shutil.rmtree(old, ignore_errors=True)
    return target


class _Worker:
    def __init__(self, label: str, tree: Path, cache_dir: Path, args: argparse.Namespace, log_dir: Path) -> None:
        self.label = label
        threads = str(args.threads)
        env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), OPENBLAS_NUM_THREADS=threads,
                   OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, NUMBA_NUM_THREADS=threads,
                   PYTHONPATH=str(tree))
        self.log = log_dir / f"{label}.stderr"
        self._stderr = open(self.log, "w+")  # noqa: SIM115 -- the worker's stderr, closed in close()
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(tree), "--bench-dir",
               str(args.bench_dir), "--sample-time", str(args.sample_time)]
        for pattern in args.bench or GATE_SUBSET:
            cmd += ["--bench", pattern]
        if label == "base":
            cmd.append("--lenient")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     text=True, env=env)

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                message = json.loads(line[len(_TAG):])
                if "error" in message:
                    raise GateError(f"the {self.label} worker failed: {message['error']}")
                return message
        self._stderr.flush()
        tail = self.log.read_text()[-2000:]
        raise GateError(f"the {self.label} worker exited (code {self.proc.wait()}):\n{tail}")

    def ask(self, action: str, name: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({action: name}) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("{}\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 -- a worker that does not stop is killed
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def _rounds(workers: dict[str, _Worker], names: list[str], rounds: int, repeats: int,
            say: Any) -> dict[str, dict[str, list[Any]]]:
    """Interleaved rounds: ``{tree: {name: [per-round value]}}``; a value is the best of the round's
    samples (seconds per call), ``None`` when the benchmark skipped itself, or the error text.

    Interleaved sample by sample: for each benchmark both trees run asv's setup, then the samples
    alternate (base, head, head, base, ...), then both tear down. The two trees' samples of a
    benchmark are milliseconds apart, so a burst of load hits both alike."""
    out: dict[str, dict[str, list[Any]]] = {label: {n: [] for n in names} for label in workers}
    labels = list(workers)
    for r in range(rounds):
        say(f"round {r + 1}/{rounds}: {len(names)} benchmarks")
        for i, name in enumerate(names):
            state: dict[str, Any] = {}
            for label in labels:
                reply = workers[label].ask("setup", name)
                state[label] = reply.get("failed") or ([] if reply["ok"] else None)
            for k in range(repeats):
                for label in labels if (r + i + k) % 2 == 0 else labels[::-1]:
                    if isinstance(state[label], list):
                        reply = workers[label].ask("sample", name)
                        state[label] = reply.get("failed") or [*state[label], reply["seconds"]]
            for label in labels:
                if isinstance(state[label], list):
                    reply = workers[label].ask("teardown", name)
                    state[label] = reply.get("failed") or state[label]
                value = state[label]
                out[label][name].append(min(value) if isinstance(value, list) else value)
    return out


def _summary(values: list[Any]) -> tuple[float, float] | str | None:
    """``(median, best)`` over rounds, the error text when it failed, ``None`` when it skipped."""
    errors = [v for v in values if isinstance(v, str)]
    if errors:
        return errors[0]
    numbers = [v for v in values if v is not None]
    return (statistics.median(numbers), min(numbers)) if numbers else None


def compare(base: dict[str, list[Any]], head: dict[str, list[Any]], factor: float) -> list[dict[str, Any]]:
    """One row per benchmark: times, ratio (head / base, of the medians), and a verdict."""
    rows = []
    for name in sorted(head):
        b, h = _summary(base.get(name, [])), _summary(head[name])
        row: dict[str, Any] = {"name": name, "base": None, "head": None, "ratio": None}
        if isinstance(h, str):
            row["verdict"] = "error on head" if not isinstance(b, str) else "error on both"
            row["error"] = h
        elif isinstance(b, str):
            row["verdict"], row["error"] = "not compared (error on base)", b
        elif b is None or h is None:
            row["verdict"] = "skipped"
        else:
            row.update(base=b[0], head=h[0], ratio=h[0] / b[0], best_ratio=h[1] / b[1])
            if row["ratio"] > factor and row["best_ratio"] > factor:
                row["verdict"] = "slower"
            elif row["ratio"] < 1 / factor and row["best_ratio"] < 1 / factor:
                row["verdict"] = "faster"
            else:
                row["verdict"] = ""
        rows.append(row)
    return rows


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.4f}"


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The table: benchmark, base ms, head ms, ratio, verdict (sorted: slowest ratio first)."""
    body = [[r["name"], _ms(r["base"]), _ms(r["head"]), "-" if r["ratio"] is None else f"{r['ratio']:.2f}x",
             r["verdict"] + (f": {r['error']}" if r.get("error") else "")]
            for r in sorted(rows, key=lambda r: -(r["ratio"] or 0))]
    header = ["benchmark", "base ms", "head ms", "head/base", "verdict"]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(4)]
    lines = ["  ".join([header[0].ljust(widths[0]), *(h.rjust(w) for h, w in zip(header[1:4], widths[1:])),
                        header[4]])]
    lines.append("  ".join("-" * w for w in widths) + "  -------")
    for row in body:
        lines.append("  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:4], widths[1:])),
                                row[4]]).rstrip())
    return "\n".join(lines)


@contextlib.contextmanager
def _workers(trees: dict[str, Path], args: argparse.Namespace, log_dir: Path, say: Any,
             only: list[str] | None = None) -> Iterator[tuple[dict[str, _Worker], list[str]]]:
    """Start one worker per tree (one at a time: warm-ups must not overlap), yield them and the
    benchmark names to run (HEAD's selection, or ``only``), and stop them whatever happens."""
    workers: dict[str, _Worker] = {}
    ready: dict[str, dict[str, Any]] = {}
    try:
        for label, tree in trees.items():
            say(f"starting the {label} worker ({tree}): imports, discovery")
            workers[label] = _Worker(label, tree, tree / ".numba_cache", args, log_dir)
            ready[label] = workers[label].read()
            say(f"{label}: zerodl from {ready[label]['zerodl']}, {len(ready[label]['ready'])} benchmarks")
        names = only if only is not None else ready["head"]["ready"]
        if not names:
            raise GateError("no benchmark matches the selection: " + " | ".join(args.bench or GATE_SUBSET))
        yield {label: workers[label] for label in ("base", "head")}, names
    finally:
        for w in workers.values():
            w.close()


def run_gate(args: argparse.Namespace) -> int:
    """Measure, confirm suspects, print the table; 1 on a confirmed regression unless report-only."""
    started = time.perf_counter()
    say = (lambda msg: print(f"... {msg}", file=sys.stderr, flush=True)) if not args.quiet else (lambda msg: None)
    if args.base_tree:
        base_dir, base_desc = Path(args.base_tree).resolve(), f"tree {args.base_tree}"
    else:
        sha, why = resolve_base(args.base)
        base_desc = f"{sha[:10]} ({why})"
        say(f"extracting {sha[:10]}'s zerodl/ into {STATE_DIR / 'trees'}")
        base_dir = base_tree(sha)
    head_dir = Path(args.head_tree).resolve() if args.head_tree else REPO
    head_desc = f"tree {args.head_tree}" if args.head_tree else "the working tree"
    trees = {"base": base_dir, "head": head_dir}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="perf-gate-") as log_dir:
        with _workers(trees, args, Path(log_dir), say) as (workers, names):
            times = _rounds(workers, names, args.rounds, args.repeats, say)
        rows = compare(times["base"], times["head"], args.factor)
        suspects = [r["name"] for r in rows if r["verdict"] == "slower"]
        if suspects:
            # Confirmed by new processes (new memory layout, the other tree started first), with
            # twice the rounds: a regression of the code survives that, a process's bad luck not.
            say(f"{len(suspects)} suspect(s) slower than {args.factor}x: measuring them again in new "
                f"processes ({2 * args.rounds} rounds)")
            with _workers(dict(reversed(trees.items())), args, Path(log_dir), say, suspects) as (workers, _):
                again = _rounds(workers, suspects, 2 * args.rounds, args.repeats, say)
            by_name = {r["name"]: r for r in compare(again["base"], again["head"], args.factor)}
            for row in rows:
                if row["name"] in by_name:
                    second = by_name[row["name"]]
                    confirmed = second["verdict"] == "slower"
                    row.update(second if confirmed else {})
                    row["verdict"] = "SLOWER (confirmed)" if confirmed else "not confirmed by a rerun"
    failing = [r for r in rows if r["verdict"] in ("SLOWER (confirmed)", "error on head")]
    print(f"perf gate: {head_desc} vs BASE {base_desc}; {len(rows)} benchmarks, {args.rounds} interleaved "
          f"rounds (+{2 * args.rounds} for suspects), best of {args.repeats} samples of {args.sample_time * 1e3:.0f} ms "
          f"per round, {args.threads} thread(s); factor {args.factor}x; load average {load_before:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after; {time.perf_counter() - started:.0f} s")
    print(format_rows(rows))
    print("head/base = median over rounds of each round's best; a benchmark is slower when that and the ratio "
          "of the best over all rounds both exceed the factor, and a rerun of the suspects agrees")
    if failing:
        print(f"\n{len(failing)} regression(s) (factor {args.factor}x):")
        print(format_rows(failing))
        if args.report_only:
            print("(--report-only: exit 0)")
            return 0
        return 1
    print(f"\nno benchmark slower than {args.factor}x")
    return 0


# ----------------------------------------------------------------------------- recording
def _describe_machine(machine: str) -> None:
    """Make sure ``~/.asv-machine.json`` describes ``machine`` (os, arch, cpu, num_cpu, ram).

    ``asv machine --machine NAME --yes`` stores the name alone when NAME is not the host name; the
    kept results should say what they ran on, so missing fields take asv's own defaults (fields
    already there, e.g. written by ``asv machine``, are kept)."""
    from asv.machine import Machine, MachineCollection

    try:
        known = MachineCollection.load(machine)
    except Exception:  # noqa: BLE001 -- asv's UserError: no such machine (or no file) yet
        known = {}
    described = {**Machine.get_defaults(), **{k: v for k, v in known.items() if v}, "machine": machine}
    if described != known:
        MachineCollection.save(machine, described)


#: How ``--record`` times each benchmark: one process and one round, 0.1 s of warm-up calls, then the
#: median of 3 single calls. (``--quick``, one cold call, was used until 2026-12-03: a fresh process's
#: first call of an allocation-heavy benchmark pays the first-touch page faults of its arrays, which
#: read up to 4x slow on some days of this virtual machine for unchanged kernels.)
RECORD_TIMING = ("-a", "rounds=1", "-a", "warmup_time=0.1", "-a", "repeat=3", "-a", "number=1")


def record(args: argparse.Namespace) -> int:
    """``asv run --python=same`` of :data:`RECORD_SUBSET` into ``asv_bench/results/<machine>``, timed as
    :data:`RECORD_TIMING` says.

    The library measured is the recorded commit's own ``zerodl/`` (extracted as the gate extracts
    BASE), whatever the working tree holds; the benchmark suite is the working tree's. asv drops
    ``PYTHONPATH`` (an ``--python=same`` run would import the installed zerodl): ``ASV_PYTHONPATH``
    is the variable it passes on to the benchmark processes (and so to their own workers).
    """
    sha = _git("rev-parse", "--verify", f"{args.commit}^{{commit}}")
    machine = args.machine or socket.gethostname()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", machine):
        raise GateError(f"--machine {machine!r}: use letters, digits, '.', '_' or '-'")
    tree = base_tree(sha)
    env = dict(os.environ, ASV_PYTHONPATH=str(tree), PYTHONPATH=str(tree),
               NUMBA_CACHE_DIR=str(tree / ".numba_cache"))
    asv = [sys.executable, "-m", "asv"]
    _describe_machine(machine)
    cmd = [*asv, "run", "--python=same", *RECORD_TIMING, "--show-stderr", "--machine", machine,
           "--set-commit-hash", sha]
    for pattern in RECORD_SUBSET:
        cmd += ["--bench", pattern]
    print(f"recording {sha[:10]} ({args.commit}), zerodl from {tree}, as machine {machine!r}", file=sys.stderr)
    done = subprocess.run(cmd, cwd=ASV_DIR, env=env, check=False)
    if done.returncode == 0:
        print(f"recorded in {ASV_DIR / 'results' / machine}: commit the new file with "
              f"'git add asv_bench/results'", file=sys.stderr)
    return done.returncode


# ----------------------------------------------------------------------------- command line
def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="perf_gate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base", nargs="?", metavar="BASE", help="commit to compare with (default: merge base with main)")
    p.add_argument("--factor", type=_positive(float), default=1.15,
                   help="head/base time ratio above which a benchmark is a regression (default 1.15)")
    p.add_argument("--report-only", action="store_true", help="print the table, exit 0 even on a regression (CI)")
    p.add_argument("--rounds", type=_positive(int), default=4, help="interleaved rounds per tree (default 4)")
    p.add_argument("--repeats", type=_positive(int), default=5, help="samples per benchmark per round and tree (default 5)")
    p.add_argument("--sample-time", type=_positive(float), default=0.01, help="seconds per sample (default 0.01)")
    p.add_argument("--threads", type=_positive(int), default=1, help="BLAS/numba threads per worker (default 1)")
    p.add_argument("--bench", action="append", metavar="REGEX",
                   help="asv --bench regular expression instead of the fixed subset (repeatable)")
    p.add_argument("--list", action="store_true", help="list the selected benchmarks and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--record", action="store_true",
                   help="record HEAD's asv result (warm samples of the subset + track_ ratios) in asv_bench/results/<machine>")
    p.add_argument("--machine", help="--record: asv machine name (default: the host name)")
    p.add_argument("--commit", default="HEAD", help="--record: the commit whose zerodl/ is measured (default HEAD)")
    p.add_argument("--base-tree", help=argparse.SUPPRESS)  # a directory holding zerodl/ instead of BASE (tests)
    p.add_argument("--head-tree", help=argparse.SUPPRESS)  # instead of the working tree (tests)
    p.add_argument("--bench-dir", default=str(BENCH_DIR), help=argparse.SUPPRESS)
    p.add_argument("--worker", metavar="TREE", help=argparse.SUPPRESS)
    p.add_argument("--lenient", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(Path(args.worker), Path(args.bench_dir), args.bench or list(GATE_SUBSET),
                           args.sample_time, args.lenient)
    for pattern in args.bench or ():
        try:
            re.compile(pattern)
        except re.error as exc:
            parser.error(f"--bench {pattern!r}: not a regular expression ({exc})")
    try:
        if args.record:
            return record(args)
        if args.list:
            sys.path[:0] = [str(REPO), str(Path(args.bench_dir).parent)]
            names = [n for n, _, _ in _discover(Path(args.bench_dir), args.bench or list(GATE_SUBSET))]
            print("\n".join(names))
            print(f"{len(names)} benchmarks", file=sys.stderr)
            return 0
        return run_gate(args)
    except GateError as exc:
        print(f"perf_gate: error: {exc}", file=sys.stderr)
        return 2 if str(exc).startswith(("BASE", "no branch", "--machine")) else 1


if __name__ == "__main__":
    sys.exit(main())

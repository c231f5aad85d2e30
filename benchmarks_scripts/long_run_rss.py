"""Does a long training run stay flat in memory? The resident set (RSS) over many fused steps.

Each network runs in a process of its own (no other allocations mixed in): ``--steps`` calls of
``net.train_step(x, t, Adam)`` on batches drawn at random from a pool of samples and gathered every
step, as training does, with the RSS (``VmRSS`` of ``/proc/self/status``) and the number of Python
objects the garbage collector tracks (and the number of threads) sampled every ``--every`` steps.
The growth is measured from the sample after ``--warmup`` steps (buffers allocated, kernels compiled
or loaded, the allocator's pools filled). zerodl's task threads are all started before the first
step (:func:`start_task_threads`; ``--no-prestart`` leaves them to start lazily, as training does).

Networks: ``simple-conv`` (the book's chapter 7 SimpleConvNet, 1x28x28, 30 5x5 filters, hidden 100)
and ``mlp`` (MultiLayerNet 784-100x5-10); ``--small`` shrinks both (SimpleConvNet 1x12x12, 8 filters,
hidden 30; MLP 196-50x3-10; batch 32) for the test suite.

Writes ``PREFIX.json`` (configuration, samples, summary per network), ``PREFIX.csv`` (one row per
sample) and ``PREFIX.png`` (RSS against step; needs matplotlib; ``--no-plot`` skips it).

Usage::

    python benchmarks_scripts/long_run_rss.py                       # both networks, 20,000 steps each
    python benchmarks_scripts/long_run_rss.py --net mlp --steps 5000 --every 50 --out /tmp/rss
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

NETS = ("simple-conv", "mlp")
#: What each sample holds (the JSON's sample keys and the CSV's columns after ``net``).
COLUMNS = ("step", "rss_mb", "seconds", "py_objects", "threads")
POOL = 10_000


def rss_mb() -> float:
    """The current resident set in MiB (``VmRSS``); the peak (``ru_maxrss``) where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def build(net: str, small: bool, dtype: str) -> tuple[Any, tuple[int, ...], int, str]:
    """The network, the shape of one sample, the batch size and a title."""
    from zerodl.networks import MultiLayerNet, SimpleConvNet

    if net == "simple-conv":
        if small:
            return (SimpleConvNet((1, 12, 12), {"filter_num": 8, "filter_size": 5, "pad": 0, "stride": 1},
                                  hidden_size=30, output_size=10, dtype=dtype, seed=0), (1, 12, 12), 32,
                    f"SimpleConvNet 1x12x12, 8 5x5 filters, hidden 30, {dtype}, batch 32")
        return (SimpleConvNet(dtype=dtype, seed=0), (1, 28, 28), 100,
                f"SimpleConvNet (ch. 7) 1x28x28, 30 5x5 filters, hidden 100, {dtype}, batch 100")
    if small:
        return (MultiLayerNet(196, [50] * 3, 10, dtype=dtype, seed=0), (196,), 32,
                f"MultiLayerNet 196-50x3-10, {dtype}, batch 32")
    return (MultiLayerNet(784, [100] * 5, 10, dtype=dtype, seed=0), (784,), 100,
            f"MultiLayerNet 784-100x5-10, {dtype}, batch 100")


def start_task_threads() -> int:
    """Start zerodl's task threads now; returns how many workers there are.

    The team of worker threads (:mod:`zerodl.kernels._tasks`, used by the convolutions) is made on
    the first call that needs it, and starts all its workers at once (numba's thread limit less
    one): made late in a run, each brings its stack and its own malloc arena (≈ 1.5 MiB measured)
    and would read as growth.
    """
    from zerodl.kernels._tasks import _current_team

    return len(_current_team().threads)


def run_one(net_name: str, steps: int, every: int, warmup: int, small: bool, dtype: str, backend: str,
            tune: bool, progress: bool, prestart: bool = True) -> dict[str, Any]:
    """Train ``net_name`` for ``steps`` steps in this process; the RSS curve and its summary."""
    import zerodl
    from zerodl.optimizer import Adam

    if tune:
        zerodl.tune_malloc()
    if prestart:
        start_task_threads()
    zerodl.set_backend(backend)
    net, sample, batch, title = build(net_name, small, dtype)
    rng = np.random.default_rng(0)
    pool = rng.random((POOL, *sample)).astype(dtype)
    labels = rng.integers(0, 10, POOL)
    opt = Adam(lr=0.001)
    # The samples go into an array allocated up front: a list growing by a dict per sample would
    # itself be measured (≈ 0.04 MiB over 200 samples).
    table = np.zeros((steps // every + 3, len(COLUMNS)))
    rows = 0
    start = time.perf_counter()

    def record(step: int) -> None:
        nonlocal rows
        table[rows] = (step, rss_mb(), time.perf_counter() - start, len(gc.get_objects()),
                       threading.active_count())
        rows += 1

    record(0)
    report_every = max(every, steps // 10)
    for step in range(1, steps + 1):
        idx = rng.integers(0, POOL, batch)
        net.train_step(pool[idx], labels[idx], opt)
        if step % every == 0 or step == steps or step == warmup:
            record(step)
            if progress and (step % report_every == 0 or step == steps):
                print(f"  {net_name}: step {step:>7}/{steps}  RSS {table[rows - 1, 1]:8.1f} MiB  "
                      f"{table[rows - 1, 2]:7.1f} s", file=sys.stderr, flush=True)
    samples = [{name: (float(v) if name in ("rss_mb", "seconds") else int(v)) for name, v in zip(COLUMNS, row)}
               for row in table[:rows]]
    return {"net": net_name, "title": f"{title}, Adam, {backend}", "step_path": net.step_path, "batch": batch,
            "sample": list(sample), "samples": samples, "summary": summarize(samples, warmup)}


def summarize(samples: list[dict[str, float]], warmup: int) -> dict[str, float]:
    """RSS after the warm-up, at the end, the largest growth over the warm-up value, objects' growth."""
    after = [s for s in samples if s["step"] >= warmup]
    base = after[0]
    return {
        "warmup_steps": warmup,
        "rss_start_mb": samples[0]["rss_mb"],
        "rss_after_warmup_mb": base["rss_mb"],
        "rss_end_mb": after[-1]["rss_mb"],
        "rss_max_mb": max(s["rss_mb"] for s in after),
        "max_growth_mb": max(s["rss_mb"] for s in after) - base["rss_mb"],
        "end_growth_mb": after[-1]["rss_mb"] - base["rss_mb"],
        "py_objects_after_warmup": base["py_objects"],
        "py_objects_growth": after[-1]["py_objects"] - base["py_objects"],
        "threads_after_warmup": base.get("threads", 0),
        "threads_max": max(s.get("threads", 0) for s in after),
        "ms_per_step": 1e3 * (after[-1]["seconds"] - base["seconds"]) / max(1, after[-1]["step"] - base["step"]),
    }


def write_outputs(prefix: Path, config: dict[str, Any], runs: list[dict[str, Any]], plot: bool) -> list[Path]:
    """``prefix``.json, .csv and (``plot``) .png; returns the paths written."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    written = [prefix.with_suffix(".json"), prefix.with_suffix(".csv")]
    written[0].write_text(json.dumps({"config": config, "runs": runs}, indent=1) + "\n", encoding="utf-8")
    with open(written[1], "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["net", "step", "rss_mb", "seconds", "py_objects", "threads"])
        for run in runs:
            for s in run["samples"]:
                out.writerow([run["net"], s["step"], f"{s['rss_mb']:.3f}", f"{s['seconds']:.3f}", s["py_objects"],
                              s.get("threads", "")])
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.2 * len(runs)), squeeze=False)
        for (whole, zoom), run in zip(axes, runs):
            summary = run["summary"]
            steps = [s["step"] for s in run["samples"]]
            rss = [s["rss_mb"] for s in run["samples"]]
            whole.plot(steps, rss, lw=1.2)
            whole.axvline(summary["warmup_steps"], color="grey", ls="--", lw=0.8, label="end of warm-up")
            whole.set_title(run.get("title", run["net"]), fontsize=9)
            whole.set_xlabel("step")
            whole.set_ylabel("RSS (MiB)")
            whole.legend(loc="lower right", fontsize=8)
            after = [(s["step"], s["rss_mb"] - summary["rss_after_warmup_mb"]) for s in run["samples"]
                     if s["step"] >= summary["warmup_steps"]]
            zoom.plot([a for a, _ in after], [g for _, g in after], lw=1.2, color="C1")
            zoom.axhline(0, color="grey", lw=0.6)
            zoom.set_title(f"growth after warm-up ({summary['rss_after_warmup_mb']:.1f} MiB): max "
                           f"{summary['max_growth_mb']:+.2f}, end {summary['end_growth_mb']:+.2f} MiB", fontsize=9)
            zoom.set_xlabel("step")
            zoom.set_ylabel("MiB")
        fig.tight_layout()
        written.append(prefix.with_suffix(".png"))
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=(*NETS, "all"), default="all", help="which network (default: all)")
    parser.add_argument("--steps", type=int, default=20_000, help="training steps per network (default 20000)")
    parser.add_argument("--every", type=int, default=100, help="steps between RSS samples (default 100)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="steps before the baseline sample (default: a tenth of --steps, at most 1000)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--backend", choices=("numba", "numpy"), default="numba")
    parser.add_argument("--small", action="store_true", help="small networks and batches (the test suite's)")
    parser.add_argument("--no-tune-malloc", dest="tune", action="store_false",
                        help="leave glibc's malloc as it is (zerodl train calls zerodl.tune_malloc)")
    parser.add_argument("--out", type=Path, default=Path("long_run_rss"), help="output prefix (default long_run_rss)")
    parser.add_argument("--no-plot", dest="plot", action="store_false", help="skip the PNG")
    parser.add_argument("--no-prestart", dest="prestart", action="store_false",
                        help="let zerodl's task-thread pool start its threads lazily, as training does")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--replot", type=Path, metavar="JSON",
                        help="only redraw PREFIX.png (and rewrite the CSV) from a JSON this script wrote")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one network, JSON on stdout
    args = parser.parse_args(argv)
    if args.replot is not None:
        saved = json.loads(args.replot.read_text(encoding="utf-8"))
        for path in write_outputs(args.replot.with_suffix(""), saved["config"], saved["runs"], True):
            print(f"wrote {path}", file=sys.stderr)
        return 0
    if args.steps < 1 or args.every < 1:
        parser.error("--steps and --every must be positive")
    warmup = args.warmup if args.warmup is not None else min(1000, max(1, args.steps // 10))
    if not 0 < warmup < args.steps:
        parser.error(f"--warmup must be in 1..{args.steps - 1}, got {warmup}")
    if args.child:
        result = run_one(args.net, args.steps, args.every, warmup, args.small, args.dtype, args.backend, args.tune,
                         not args.quiet, args.prestart)
        print(json.dumps(result))
        return 0
    config = {"steps": args.steps, "every": args.every, "warmup": warmup, "dtype": args.dtype,
              "backend": args.backend, "small": args.small, "tune_malloc": args.tune,
              "prestart_task_threads": args.prestart}
    runs = []
    for net in NETS if args.net == "all" else (args.net,):
        if not args.quiet:
            print(f"{net}: {args.steps} steps, RSS every {args.every}, warm-up {warmup}", file=sys.stderr, flush=True)
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--net", net, "--steps", str(args.steps),
               "--every", str(args.every), "--warmup", str(warmup), "--dtype", args.dtype, "--backend", args.backend]
        cmd += ["--small"] * args.small + ["--no-tune-malloc"] * (not args.tune) + ["--quiet"] * args.quiet
        cmd += ["--no-prestart"] * (not args.prestart)
        done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            print(f"long_run_rss: error: the {net} run failed (exit {done.returncode})", file=sys.stderr)
            return 1
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    for path in write_outputs(args.out, config, runs, args.plot):
        print(f"wrote {path}", file=sys.stderr)
    print(f"{'net':<12} {'after warm-up':>14} {'end':>10} {'max growth':>11} {'objects +':>10} {'ms/step':>8}")
    for run in runs:
        s = run["summary"]
        print(f"{run['net']:<12} {s['rss_after_warmup_mb']:>10.1f} MiB {s['rss_end_mb']:>6.1f} MiB "
              f"{s['max_growth_mb']:>+7.2f} MiB {s['py_objects_growth']:>+10d} {s['ms_per_step']:>8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

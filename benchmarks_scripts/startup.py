"""Start-up of ``zerodl train``: seconds from launching the process to the start of its first step.

Each run is a fresh ``python -m zerodl train ...`` process (the console script's own code path,
``zerodl.cli.main``) with ``Trainer._train_step`` wrapped to report the clock at its first call;
the launch time is taken in this parent process just before the child is spawned, so interpreter
start, imports, dataset loading, network construction and kernel loading or compilation all count.

* warm: ``NUMBA_CACHE_DIR`` filled by one untimed run beforehand (kernels load from disk);
* cold: a new empty ``NUMBA_CACHE_DIR`` per run (every kernel the first step needs compiles).

Usage::

    python benchmarks_scripts/startup.py [--runs 5] [--cold-runs 3] [-- extra zerodl train args]

Prints medians; run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import os, sys, time
launched = float(os.environ["ZERODL_STARTUP_LAUNCHED"])
from zerodl import cli, trainer

original = trainer.Trainer._train_step

def first_step(self, x_batch, t_batch):
    if getattr(first_step, "seen", False):
        return original(self, x_batch, t_batch)
    first_step.seen = True
    begun = time.time() - launched
    loss = original(self, x_batch, t_batch)
    print(f"\nZERODL_FIRST_STEP {begun:.4f} {time.time() - launched:.4f}", file=sys.stderr, flush=True)
    return loss

trainer.Trainer._train_step = first_step
sys.exit(cli.main(["train"] + sys.argv[1:]))
"""

DEFAULT_ARGS = ["--epochs", "1"]


def one_run(cache_dir: str, train_args: list[str]) -> tuple[float, float]:
    """Seconds from spawn to the start and to the end of the first step of one ``zerodl train``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env["ZERODL_STARTUP_LAUNCHED"] = repr(time.time())
    proc = subprocess.run([sys.executable, "-c", CHILD, *train_args], env=env, capture_output=True,
                          text=True, check=False)
    for line in proc.stderr.splitlines():
        if line.startswith("ZERODL_FIRST_STEP "):
            begun, done = line.split()[1:3]
            return float(begun), float(done)
    raise RuntimeError(f"zerodl train did not reach its first step (exit {proc.returncode}):\n{proc.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="warm-cache runs (default 5)")
    parser.add_argument("--cold-runs", type=int, default=3, help="cold-cache runs (default 3)")
    parser.add_argument("train_args", nargs="*", help="arguments for zerodl train (after --)")
    args = parser.parse_args(argv)
    train_args = args.train_args or DEFAULT_ARGS
    with tempfile.TemporaryDirectory(prefix="zerodl-warm-") as warm:
        one_run(warm, train_args)  # fills the cache
        warm_times = [one_run(warm, train_args) for _ in range(args.runs)]
    cold_times = []
    for _ in range(args.cold_runs):
        with tempfile.TemporaryDirectory(prefix="zerodl-cold-") as cold:
            cold_times.append(one_run(cold, train_args))
    print(f"zerodl train {' '.join(train_args)}: seconds from launch to the first step (median of runs)")
    print(f"{'cache':6}  {'step begins':>11}  {'step done':>9}  runs (done)")
    for name, times in (("warm", warm_times), ("cold", cold_times)):
        begun = statistics.median(t[0] for t in times)
        done = statistics.median(t[1] for t in times)
        print(f"{name:6}  {begun:11.2f}  {done:9.2f}  {', '.join(f'{t[1]:.2f}' for t in times)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

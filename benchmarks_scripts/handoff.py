"""What a call onto both cores costs in hand-overs: zerodl's team (``kernels/_tasks.run_tasks``) against
the executor-based runner it replaced, in one process, calls alternating.

Two measurements, 2 threads:

* **calls** — ``run_tasks`` of two tasks, each one ``nogil`` compiled call of ~170 µs, after a gap in
  which the calling thread holds the GIL (compiled code without ``nogil``, as a step's Python and NumPy
  work between calls does): the call's wall time less one task's time alone;
* **steps** — SimpleConvNet / DeepConvNet float32 fused steps (Adam, random batches of 100 from 5,000
  images), each call of the step timed against its busiest thread's task time; prints the calls per step
  and the hand-over time per call and per step.

Usage: ``python benchmarks_scripts/handoff.py [--rounds 3] [--gaps 0,0.3,1]``. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

import zerodl
from zerodl.kernels import _tasks

TASK_ITERS = 100_000


def _sqrt_sum(n: int) -> float:
    s = 0.0
    for i in range(n):
        s += np.sqrt(i + 1.0)
    return s


# The same loop twice: as a task (GIL released) and as the caller's work between calls (GIL held).
_work = numba.njit(nogil=True)(_sqrt_sum)  # not cached: two dispatchers of one function
_hold_gil = numba.njit(nogil=False)(_sqrt_sum)


# ----------------------------------------------------------------- the runner zerodl used before
_executor: ThreadPoolExecutor | None = None


def executor_run_tasks(task: Callable[[int], None], n_tasks: int) -> None:
    """The hand-over through Python objects that ``run_tasks`` used until the team (a shared counter,
    a ``ThreadPoolExecutor`` and its futures), kept here as the baseline."""
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="baseline")
    threads = min(numba.get_num_threads(), n_tasks)
    counter = itertools.count()

    def worker() -> None:
        for i in counter:
            if i >= n_tasks:
                return
            task(i)

    futures = [_executor.submit(worker) for _ in range(threads - 1)]
    try:
        worker()
    finally:
        for f in futures:
            f.exception()
    for f in futures:
        f.result()


RUNNERS = {"executor (before)": executor_run_tasks, "team (now)": _tasks.run_tasks}


def _median_us(values: list[float]) -> float:
    return float(np.median(values) * 1e6)


def calls(gaps_ms: list[float], rounds: int, per_round: int = 200) -> None:
    _work(10)
    _hold_gil(10)
    t0 = time.perf_counter()
    for _ in range(20):
        _work(TASK_ITERS)
    alone = (time.perf_counter() - t0) / 20
    per_ms = TASK_ITERS / (alone * 1e3)  # _hold_gil iterations per ms (the same loop)
    print(f"one task alone: {alone * 1e6:.0f} µs")
    print(f"{'gap (GIL held)':>16s}  " + "  ".join(f"{name:>20s}" for name in RUNNERS) + "   (hand-over a call, µs)")
    for gap in gaps_ms:
        results: dict[str, list[float]] = {name: [] for name in RUNNERS}
        for _ in range(rounds):
            for name, run in RUNNERS.items():
                for _ in range(per_round):
                    if gap:
                        _hold_gil(int(gap * per_ms))
                    start = time.perf_counter()
                    run(lambda i: _work(TASK_ITERS), 2)
                    results[name].append(time.perf_counter() - start - alone)
        print(f"{gap:>13.1f} ms  " + "  ".join(f"{_median_us(v):>20.0f}" for v in results.values()))


def steps(rounds: int) -> None:
    from zerodl.kernels import _direct_c1, conv_relu_pool, convolution, pooling
    from zerodl.networks import DeepConvNet, SimpleConvNet
    from zerodl.optimizer import Adam

    modules = (_tasks, _direct_c1, conv_relu_pool, convolution, pooling)
    print(f"\n{'step (float32)':<16s} {'runner':<20s} {'step ms':>8s} {'calls':>6s} {'µs a call':>10s} {'ms a step':>10s}")
    for name, cls in (("SimpleConvNet", SimpleConvNet), ("DeepConvNet", DeepConvNet)):
        rng = np.random.default_rng(0)
        x = rng.random((5000, 1, 28, 28)).astype(np.float32)
        t = rng.integers(0, 10, 5000)
        n_steps = 150 if name == "SimpleConvNet" else 30
        rows: dict[str, list[tuple[float, float, float]]] = collections.defaultdict(list)
        for _ in range(rounds):
            for runner_name, runner in RUNNERS.items():
                log: list[tuple[float, float]] = []

                def timed_run(task: Callable[[int], None], n: int, runner=runner, log=log) -> None:
                    busy: dict[int, float] = collections.defaultdict(float)

                    def timed(i: int) -> None:
                        start = time.perf_counter()
                        task(i)
                        busy[threading.get_ident()] += time.perf_counter() - start

                    start = time.perf_counter()
                    runner(timed, n)
                    log.append((time.perf_counter() - start, max(busy.values(), default=0.0)))

                saved = [m.run_tasks for m in modules]
                for m in modules:
                    m.run_tasks = timed_run
                try:
                    net, opt = cls(dtype=np.float32, seed=0), Adam()
                    for _ in range(5):
                        idx = rng.integers(0, 5000, 100)
                        net.train_step(x[idx], t[idx], opt)
                    log.clear()
                    times = []
                    for _ in range(n_steps):
                        idx = rng.integers(0, 5000, 100)
                        start = time.perf_counter()
                        net.train_step(x[idx], t[idx], opt)
                        times.append(time.perf_counter() - start)
                finally:
                    for m, f in zip(modules, saved):
                        m.run_tasks = f
                over = np.array([w - b for w, b in log])
                rows[runner_name].append((float(np.median(times) * 1e3), len(log) / n_steps, float(np.median(over))))
        for runner_name, vals in rows.items():
            step_ms, per_step, per_call = (float(np.median([v[k] for v in vals])) for k in range(3))
            print(f"{name:<16s} {runner_name:<20s} {step_ms:>8.2f} {per_step:>6.1f} {per_call * 1e6:>10.0f} "
                  f"{per_call * per_step * 1e3:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each runner (default 3)")
    parser.add_argument("--gaps", default="0,0.3,1", help="GIL-held gaps between calls, ms (default 0,0.3,1)")
    parser.add_argument("--no-steps", action="store_true", help="only the microbenchmark")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    try:
        gaps = [float(g) for g in args.gaps.split(",")]
    except ValueError:
        parser.error(f"--gaps must be comma-separated milliseconds, got {args.gaps!r}")
    if any(g < 0 for g in gaps):
        parser.error(f"--gaps must not be negative, got {args.gaps!r}")
    zerodl.tune_malloc()
    zerodl.set_num_threads(2)
    if numba.get_num_threads() < 2:
        parser.error("needs 2 threads (this machine or NUMBA_NUM_THREADS allows 1)")
    calls(gaps, args.rounds)
    if not args.no_steps:
        steps(args.rounds)


if __name__ == "__main__":
    main()

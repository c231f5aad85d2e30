"""Two zerodl source trees side by side in one run: every kernel row and training step, medians.

    python benchmarks_scripts/before_after.py --before /path/to/old/checkout --after . [--rounds 5]

Each tree runs in a worker process of its own (``PYTHONPATH`` = the tree, its own numba cache), both
limited to the same number of threads; the parent asks them in turn for interleaved rounds and prints
the median of each case for both, with the ratio (before / after: > 1 means the new tree is faster).

* Kernel rows: every op both trees register, with the inputs each tree's own ``zerodl.bench`` builds
  (its ``KERNEL_INPUTS``; same shapes and seeds unless a builder changed), float32 and float64.
* Step rows: the public API only (``net.train_step``, ``net.accuracy``), identical in both trees; every
  step draws a random batch from a 10,000-sample pool and gathers it, as training does.

Run it on a quiet machine: nothing else may run beside it on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

TAG = "@@before-after "
POOL = 10000


def _steps():
    """``{name: factory}``; a factory builds the case (data, net, optimizer) and returns the call."""
    import numpy as np

    def mlp(sizes, opt, lr, batch, dtype):
        def build():
            from zerodl.networks import MultiLayerNet
            from zerodl.optimizer import get_optimizer

            rng = np.random.default_rng(0)
            x = rng.random((POOL, sizes[0])).astype(dtype)
            t = rng.integers(0, sizes[-1], POOL)
            net = MultiLayerNet(sizes[0], list(sizes[1:-1]), sizes[-1], dtype=dtype, seed=0)
            o = get_optimizer(opt, lr=lr)

            def step():
                idx = rng.choice(POOL, batch)
                return net.train_step(x[idx], t[idx], o)

            return step

        return build

    def conv(kind, dtype, infer=False):
        def build():
            from zerodl.networks import DeepConvNet, SimpleConvNet
            from zerodl.optimizer import Adam

            rng = np.random.default_rng(0)
            x = rng.random((POOL, 1, 28, 28)).astype(dtype)
            t = rng.integers(0, 10, POOL)
            net = (SimpleConvNet if kind == "simple" else DeepConvNet)(dtype=dtype, seed=0)
            if infer:
                return lambda: net.accuracy(x, t, batch_size=1000)
            o = Adam()

            def step():
                idx = rng.choice(POOL, 100)
                return net.train_step(x[idx], t[idx], o)

            return step

        return build

    def accuracy_mlp(dtype):
        def build():
            from zerodl.networks import TwoLayerNet

            rng = np.random.default_rng(0)
            x = rng.random((POOL, 784)).astype(np.float32)
            t = rng.integers(0, 10, POOL)
            net = TwoLayerNet(784, 50, 10, dtype=dtype, seed=0)
            return lambda: net.accuracy(x, t)

        return build

    return {
        "TwoLayerNet 784-50-10 SGD f64": mlp((784, 50, 10), "sgd", 0.1, 100, "float64"),
        "MultiLayerNet 784-100x5-10 Adam f32": mlp((784, 100, 100, 100, 100, 100, 10), "adam", 0.001, 100, "float32"),
        "MLP 784-1000-1000-10 SGD f32": mlp((784, 1000, 1000, 10), "sgd", 0.01, 256, "float32"),
        "TwoLayerNet accuracy 10,000 f64": accuracy_mlp("float64"),
        "SimpleConvNet Adam f32": conv("simple", "float32"),
        "SimpleConvNet Adam f64": conv("simple", "float64"),
        "DeepConvNet Adam f32": conv("deep", "float32"),
        "DeepConvNet Adam f64": conv("deep", "float64"),
        "DeepConvNet inference 10,000 f32": conv("deep", "float32", infer=True),
        "DeepConvNet inference 10,000 f64": conv("deep", "float64", infer=True),
    }


def _worker(threads: int, min_time: float, repeats: int, with_kernels: bool) -> int:
    import numpy as np

    import zerodl
    from zerodl import bench, kernels

    sys.stdout = sys.stderr
    zerodl.set_num_threads(threads)
    zerodl.set_backend("numba")
    if hasattr(zerodl, "tune_malloc"):
        zerodl.tune_malloc()
    cases = {}
    if with_kernels:
        for op in kernels.ops("numba"):
            build = bench.KERNEL_INPUTS.get(op)
            if build is None:
                continue
            for dt in ("float32", "float64"):
                try:
                    args, _ = build(np.random.default_rng(0), np.dtype(dt), "full")
                except Exception:  # an op whose builder changed between the trees
                    continue
                cases[f"kernel {op} {dt}"] = (lambda fn=kernels.get(op, "numba"), a=args: fn(*a))
    for name, factory in _steps().items():
        cases[name] = factory()
    numbers = {}
    for name, fn in cases.items():
        fn()
        n = 1
        while True:
            start = time.perf_counter()
            for _ in range(n):
                fn()
            if time.perf_counter() - start >= min_time:
                break
            n *= 2
        numbers[name] = n
    sys.__stdout__.write(TAG + json.dumps({"ready": sorted(cases)}) + "\n")
    sys.__stdout__.flush()
    for line in sys.stdin:
        if line.strip() != "ROUND":
            break
        times = {}
        for name, fn in cases.items():
            reps = []
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(numbers[name]):
                    fn()
                reps.append((time.perf_counter() - start) / numbers[name])
            times[name] = statistics.median(reps)
        sys.__stdout__.write(TAG + json.dumps({"times": times}) + "\n")
        sys.__stdout__.flush()
    return 0


def _read(proc: subprocess.Popen) -> dict:
    for line in proc.stdout:
        if line.startswith(TAG):
            return json.loads(line[len(TAG):])
    raise RuntimeError(f"worker exited (code {proc.wait()})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before", help="source tree holding the old zerodl/")
    p.add_argument("--after", default=str(Path(__file__).resolve().parents[1]), help="the new tree (default: this one)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--min-time", type=float, default=0.1)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--steps-only", action="store_true", help="leave the kernel rows out")
    p.add_argument("--json", help="save the medians")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args.threads, args.min_time, args.repeats, not args.steps_only)
    if not args.before:
        p.error("--before is required")
    trees = {"before": Path(args.before).resolve(), "after": Path(args.after).resolve()}
    for label, tree in trees.items():
        if not (tree / "zerodl" / "__init__.py").is_file():
            p.error(f"--{label}: {tree} holds no zerodl/ package")
    procs = {}
    for label, tree in trees.items():  # one at a time: warm-ups (numba compiles) must not overlap
        env = {**os.environ, "PYTHONPATH": str(tree), "NUMBA_CACHE_DIR": str(tree / ".numba_cache_bench")}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--threads", str(args.threads),
               "--min-time", str(args.min_time), "--repeats", str(args.repeats)]
        if args.steps_only:
            cmd.append("--steps-only")
        procs[label] = subprocess.Popen(cmd, env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        print(f"{label}: {tree}: {len(_read(procs[label])['ready'])} cases ready", file=sys.stderr)
    rounds: dict[str, dict[str, list[float]]] = {label: {} for label in trees}
    order = list(trees)
    for r in range(args.rounds):
        for label in order[r % 2:] + order[: r % 2]:
            procs[label].stdin.write("ROUND\n")
            procs[label].stdin.flush()
            for name, t in _read(procs[label])["times"].items():
                rounds[label].setdefault(name, []).append(t)
            time.sleep(0.3)
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    for proc in procs.values():
        proc.stdin.write("QUIT\n")
        proc.stdin.close()
        proc.wait()
    med = {label: {k: statistics.median(v) for k, v in cases.items()} for label, cases in rounds.items()}
    names = [n for n in med["after"] if n in med["before"]]
    print(f"{'case':48s} {'before ms':>11s} {'after ms':>11s} {'before/after':>13s}")
    for name in names:
        b, a = med["before"][name], med["after"][name]
        print(f"{name:48s} {b * 1e3:11.3f} {a * 1e3:11.3f} {b / a:12.2f}x")
    only = sorted(set(med["after"]) ^ set(med["before"]))
    if only:
        print("in one tree only: " + ", ".join(only))
    if args.json:
        Path(args.json).write_text(json.dumps(med, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

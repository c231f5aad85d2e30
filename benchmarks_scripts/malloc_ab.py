"""A/B of :func:`zerodl.tune_malloc`: training steps with glibc's default allocator vs tuned.

Each variant runs in its own fresh process (the allocator setting is process-wide and cannot be
undone), the two alternate round by round, and the medians of all rounds are printed side by side
with their ratio. Usage::

    python benchmarks_scripts/malloc_ab.py [--rounds 5] [--steps 30] [--backend numba]

Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
import zerodl

tuned, backend, steps = sys.argv[1] == "tuned", sys.argv[2], int(sys.argv[3])
if tuned:
    zerodl.tune_malloc()
zerodl.set_backend(backend)
rng = np.random.default_rng(0)
cases = {
    "SimpleConvNet b100 f64 Adam": (zerodl.SimpleConvNet(seed=0), rng.random((100, 1, 28, 28))),
    "MultiLayerNet 784-100x5-10 b100 f32 Adam": (
        zerodl.MultiLayerNet(784, [100] * 5, 10, dtype=np.float32, seed=0),
        rng.random((100, 784)).astype(np.float32)),
}
t = rng.integers(0, 10, 100)
result = {}
for name, (net, x) in cases.items():
    opt = zerodl.Adam()
    for _ in range(3):
        net.train_step(x, t, opt)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        net.train_step(x, t, opt)
        times.append(time.perf_counter() - start)
    result[name] = float(np.median(times))
print(json.dumps(result))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per case and round")
    parser.add_argument("--backend", choices=("numba", "numpy"), default="numba")
    args = parser.parse_args(argv)
    medians: dict[str, dict[str, list[float]]] = {"default": {}, "tuned": {}}
    for r in range(args.rounds):
        order = ("default", "tuned") if r % 2 == 0 else ("tuned", "default")
        for variant in order:
            out = subprocess.run([sys.executable, "-c", CHILD, variant, args.backend, str(args.steps)],
                                 capture_output=True, text=True, check=True).stdout
            for name, seconds in json.loads(out).items():
                medians[variant].setdefault(name, []).append(seconds)
    print(f"tune_malloc A/B, {args.backend} backend, {args.rounds} alternating rounds, ms per step (median)")
    print(f"{'step':42}  {'default':>8}  {'tuned':>8}  {'speedup':>7}")
    for name in medians["default"]:
        d = statistics.median(medians["default"][name]) * 1e3
        t = statistics.median(medians["tuned"][name]) * 1e3
        print(f"{name:42}  {d:8.2f}  {t:8.2f}  {d / t:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

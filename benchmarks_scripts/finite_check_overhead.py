"""What the per-batch NaN/inf refusal costs in a fused training step (project issue 19).

``net.train_step(x, t, optimizer)`` scans ``x`` once for NaN/inf before anything runs (kernel
``count_nonfinite``, see :func:`zerodl._validate.check_finite_batch`). This script times the step
with the scan and with the scan swapped for a no-op, in interleaved rounds (medians), for the
bench's rows: TwoLayerNet 784-50-10 float64 SGD, MultiLayerNet 784-100x5-10 float32 Adam and
SimpleConvNet (chapter 7) float32 Adam, batch 100 drawn at random from a pool of 10,000 samples
and gathered every step (as ``zerodl bench`` and training do). It also reports the time spent
inside the ``count_nonfinite`` kernel in the same steps (the median call times the calls per step,
over the median step: a share measured within the very steps it accounts for, far less sensitive
to the machine's load than a difference of two timings). Where the
first layer is an Affine the step screens its product ``(N, H)`` instead of scanning ``x (N, D)``
(``scans``: ``product`` or ``x``).

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks_scripts/finite_check_overhead.py [--rounds 15] [--steps 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import zerodl
from zerodl import kernels
from zerodl.networks import MultiLayerNet, SimpleConvNet, TwoLayerNet
from zerodl.networks import fused as fused_module
from zerodl.networks import sequential as sequential_module
from zerodl.optimizer import SGD, Adam

POOL = 10_000
BATCH = 100


def _rows() -> list[tuple[str, Callable[[], Any], Callable[[], Any], tuple[int, ...], str, int]]:
    """(title, network, optimizer, sample shape, dtype, divisor of --steps)."""
    return [
        ("TwoLayerNet 784-50-10 f64 SGD", lambda: TwoLayerNet(784, 50, 10, seed=0), lambda: SGD(lr=0.1),
         (784,), "float64", 1),
        ("MultiLayerNet 784-100x5-10 f32 Adam",
         lambda: MultiLayerNet(784, [100] * 5, 10, dtype="float32", seed=0), lambda: Adam(lr=0.001),
         (784,), "float32", 1),
        ("SimpleConvNet f32 Adam", lambda: SimpleConvNet(dtype="float32", seed=0), lambda: Adam(lr=0.001),
         (1, 28, 28), "float32", 10),
    ]


def measure(make_net: Callable[[], Any], make_opt: Callable[[], Any], sample: tuple[int, ...], dtype: str,
            rounds: int, steps: int, method: str = "train_step") -> dict[str, float]:
    """Median ms per step with and without the scan, and the scan's measured share of the step.

    ``method``: ``"train_step"`` (the fused step) or ``"gradient"`` (the book's
    ``optimizer.update(net.params, net.gradient(x, t))``, the bench's *numpy book* column).
    """
    rng = np.random.default_rng(0)
    pool = rng.random((POOL, *sample)).astype(dtype)
    labels = rng.integers(0, 10, POOL)
    net, opt = make_net(), make_opt()
    module = fused_module if method == "train_step" else sequential_module
    original = module.check_finite_batch

    def skip(*args: Any, **kwargs: Any) -> None:
        return None

    plan = fused_module.plan_for(net, zerodl.Sequential)
    first, by_product = plan.pieces[0], plan.screen_by_product and method == "train_step"

    def run(check: Callable[..., None]) -> float:
        # "without": neither the scan of x nor the first Affine's screen of its product.
        module.check_finite_batch = check
        plan.screen_by_product = first.screen_product = by_product and check is not skip
        try:
            start = time.perf_counter()
            for _ in range(steps):
                idx = rng.integers(0, POOL, BATCH)
                if method == "train_step":
                    net.train_step(pool[idx], labels[idx], opt)
                else:
                    opt.update(net.params, net.gradient(pool[idx], labels[idx]))
            return (time.perf_counter() - start) / steps * 1e3
        finally:
            module.check_finite_batch = original

    run(original)
    run(skip)  # warm: JIT, buffers
    with_check, without = [], []
    for r in range(rounds):  # interleaved, the order alternating, so drifts hit both alike
        pair = [(with_check, original), (without, skip)]
        for sink, fn in pair if r % 2 == 0 else pair[::-1]:
            sink.append(run(fn))
    # The time inside the count_nonfinite kernel calls (the scan of x or of the first product):
    # the median call, so that a preemption of this busy machine inside one call does not count.
    key = ("count_nonfinite", zerodl.get_backend())
    kernel, calls = kernels.REGISTRY[key], []

    def timed_kernel(a: np.ndarray) -> int:
        start = time.perf_counter_ns()
        try:
            return kernel(a)
        finally:
            calls.append(time.perf_counter_ns() - start)

    kernels.REGISTRY[key] = timed_kernel
    try:
        timed_ms = statistics.median([run(original) for _ in range(3)])
    finally:
        kernels.REGISTRY[key] = kernel
    scan_us = statistics.median(calls) / 1e3 * len(calls) / (3 * steps) if calls else 0.0
    a, b = statistics.median(with_check), statistics.median(without)
    return {"with_ms": a, "without_ms": b, "ab_overhead_pct": (a / b - 1) * 100, "scan_us": scan_us,
            "scan_share_pct": scan_us / 10 / timed_ms, "by_product": by_product}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds per variant (default 15)")
    parser.add_argument("--steps", type=int, default=200, help="MLP steps per round (conv: a tenth; default 200)")
    parser.add_argument("--backend", default="numba", choices=zerodl.BACKENDS)
    parser.add_argument("--method", default="train_step", choices=("train_step", "gradient"),
                        help="the fused train_step (default) or gradient + update (the bench's numpy book)")
    args = parser.parse_args(argv)
    zerodl.tune_malloc()
    print(f"{args.method}, backend {args.backend}, {args.rounds} interleaved rounds, medians; ms per step")
    print(f"{'step':<38} {'with check':>10} {'without':>10} {'A/B':>8} {'scans':>8} {'in-step':>9} {'share':>7}")
    with zerodl.use_backend(args.backend):
        for title, make_net, make_opt, sample, dtype, divisor in _rows():
            steps = max(5, args.steps // divisor)
            r = measure(make_net, make_opt, sample, dtype, args.rounds, steps, args.method)
            scans = "product" if r["by_product"] else "x"
            print(f"{title:<38} {r['with_ms']:>10.4f} {r['without_ms']:>10.4f} {r['ab_overhead_pct']:>+7.2f}% "
                  f"{scans:>8} {r['scan_us']:>7.2f}us {r['scan_share_pct']:>6.2f}%", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

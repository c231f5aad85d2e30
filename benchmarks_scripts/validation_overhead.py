"""What the boundary checks cost in a training step (project issue 7: "validation costs a negligible
share of a training step").

TwoLayerNet 784-50-10, batch 100, float64 (the book's chapter 5 MNIST setting, random data of MNIST's
shape), per backend:

* fused step: ``net.train_step(x, t, SGD)`` (contiguity, dtype, shape, label-range checks, then one
  kernel call) against the kernel called directly with prepared arguments;
* layer path: ``net.gradient`` + ``optimizer.update`` with the checks against the same calls with
  every function of :mod:`zerodl._validate` swapped for a pass-through (monkeypatched);
* Trainer step: ``Trainer.train_step`` with the NaN guard (one ``isfinite`` of the loss, a state
  snapshot every 100 steps) against the same step with the guard's hooks swapped for no-ops.

Usage: ``OPENBLAS_NUM_THREADS=1 python benchmarks_scripts/validation_overhead.py [--repeat 7]``.
Prints the time per step (fastest of ``--repeat`` alternating rounds of ``--number`` steps) and the
overhead in %.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import timeit
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import zerodl
from zerodl import _validate, kernels
from zerodl.kernels import train_step as ts
from zerodl.trainer import Trainer

N, D, H, C = 100, 784, 50, 10


def _pair(a: Callable[[], Any], b: Callable[[], Any], number: int, repeat: int,
          b_context: Callable[[], Any] = contextlib.nullcontext) -> tuple[float, float]:
    """Seconds per call of ``a`` and of ``b`` (run inside ``b_context``), measured in alternating
    rounds and reduced with ``min``: on a shared, loaded machine the noise only ever adds time, so
    the fastest round is the best estimate, and alternating exposes both to the same load."""
    a()  # warm up (JIT compile, buffers)
    with b_context():
        b()
    ta, tb = [], []
    for _ in range(repeat):
        ta.append(timeit.timeit(a, number=number))
        with b_context():
            tb.append(timeit.timeit(b, number=number))
    return min(ta) / number, min(tb) / number


@contextlib.contextmanager
def _checks_removed(t_ready: np.ndarray) -> Iterator[None]:
    """Swap every check of zerodl._validate, wherever it was imported, for a pass-through."""
    passthrough = {
        "as_float_array": lambda x, *a, **k: x,
        "check_ndim": lambda *a, **k: None,
        "check_nonempty": lambda *a, **k: None,
        "check_same_shape": lambda *a, **k: None,
        "check_labels": lambda t, *a, **k: t_ready,
    }
    saved = []
    originals = {name: getattr(_validate, name) for name in passthrough}
    for module in [m for name, m in sys.modules.items() if name.startswith("zerodl") and m is not None]:
        for name, fake in passthrough.items():
            if getattr(module, name, None) is originals[name]:
                saved.append((module, name, originals[name]))
                setattr(module, name, fake)
    try:
        yield
    finally:
        for module, name, original in saved:
            setattr(module, name, original)


@contextlib.contextmanager
def _timed_checks(spent: list[int]) -> Iterator[None]:
    """Wrap every check of zerodl._validate (wherever imported) and the Trainer's guard hooks so the
    nanoseconds spent inside them add up in ``spent[0]``. Measured inside the very steps it
    accounts for, the share is insensitive to the machine's load, unlike a difference of two timings."""
    import time

    from zerodl.checkpoint import NonFiniteGuard

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter_ns() - start
        return timed

    saved = []
    targets = [m for name, m in sys.modules.items() if name.startswith("zerodl") and m is not None]
    originals = {name: getattr(_validate, name) for name in
                 ("as_float_array", "check_ndim", "check_nonempty", "check_same_shape", "check_labels")}
    for module in targets:
        for name, original in originals.items():
            if getattr(module, name, None) is original:
                saved.append((module, name, original))
                setattr(module, name, wrap(original))
    for hook in ("before_step", "after_step", "end_step"):
        saved.append((NonFiniteGuard, hook, getattr(NonFiniteGuard, hook)))
        setattr(NonFiniteGuard, hook, wrap(getattr(NonFiniteGuard, hook)))
    try:
        yield
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def share_inside_checks(backend: str, steps: int) -> list[tuple[str, float]]:
    """Fraction of step time spent inside the checks (and the NaN guard), per kind of step."""
    import time

    rng = np.random.default_rng(0)
    x = rng.random((N, D))
    t = rng.integers(0, C, N)
    xs = rng.random((6000, D))
    tss = rng.integers(0, C, 6000)
    rows = []
    with zerodl.use_backend(backend):
        net = zerodl.TwoLayerNet(D, H, C, seed=0)
        opt = zerodl.SGD(lr=1e-6)
        net2 = zerodl.TwoLayerNet(D, H, C, seed=0)
        opt2 = zerodl.SGD(lr=1e-6)
        trainer = Trainer(zerodl.TwoLayerNet(D, H, C, seed=0), xs, tss, xs[:100], tss[:100], epochs=10**6,
                          mini_batch_size=N, optimizer="sgd", optimizer_param={"lr": 1e-6}, verbose=False,
                          seed=0, record_loss="before_update")
        trainer.is_epoch_boundary = lambda i: False
        for name, step in (("fused train_step", lambda: net.train_step(x, t, opt)),
                           ("gradient+update (layer by layer)", lambda: opt2.update(net2.params, net2.gradient(x, t))),
                           ("Trainer.train_step (fused + NaN guard)", trainer.train_step)):
            step()
            spent = [0]
            with _timed_checks(spent):
                start = time.perf_counter_ns()
                for _ in range(steps):
                    step()
                total = time.perf_counter_ns() - start
            rows.append((name, spent[0] / total))
    return rows


def measure(backend: str, number: int, repeat: int) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(0)
    x = rng.random((N, D))
    t = rng.integers(0, C, N)
    rows = []
    with zerodl.use_backend(backend):
        # Fused step vs the kernel with prepared arguments.
        net = zerodl.TwoLayerNet(D, H, C, seed=0)
        opt = zerodl.SGD(lr=1e-6)  # tiny steps: the weights stay in range over many repetitions
        net.train_step(x, t, opt)
        plan = ts._plan_for(net)
        labels = t.astype(np.intp)
        hyper = ts.optimizer_hyper(ts.OPT_SGD, np.dtype(np.float64), lr=1e-6)
        kernel = kernels.get("mlp_train_step")

        def direct() -> None:
            kernel(x, labels, plan.Ws, plan.bs, plan.acts, plan.bufs, ts.OPT_SGD, hyper,
                   plan.empty_state, plan.empty_state, plan.lam)

        rows.append(("fused train_step vs kernel", *_pair(lambda: net.train_step(x, t, opt), direct, number, repeat)))

        # Layer path with and without the checks.
        net2 = zerodl.TwoLayerNet(D, H, C, seed=0)
        opt2 = zerodl.SGD(lr=1e-6)

        def layer_step() -> None:
            opt2.update(net2.params, net2.gradient(x, t))

        t_ready = np.ascontiguousarray(t, dtype=np.intp)
        rows.append(("gradient+update, checks vs none",
                     *_pair(layer_step, layer_step, number, repeat, lambda: _checks_removed(t_ready))))

        # Trainer step with and without the NaN guard.
        xs = rng.random((6000, D))
        tss = rng.integers(0, C, 6000)
        trainer = Trainer(zerodl.TwoLayerNet(D, H, C, seed=0), xs, tss, xs[:100], tss[:100], epochs=10**6,
                          mini_batch_size=N, optimizer="sgd", optimizer_param={"lr": 1e-6}, verbose=False,
                          seed=0, record_loss="before_update")
        trainer.is_epoch_boundary = lambda i: False  # time steps only, not the epoch evaluations
        guard = trainer._guard

        @contextlib.contextmanager
        def guard_removed() -> Iterator[None]:
            for hook in ("before_step", "after_step", "end_step"):
                setattr(guard, hook, lambda *a, **k: None)
            try:
                yield
            finally:
                for hook in ("before_step", "after_step", "end_step"):
                    delattr(guard, hook)  # back to the class's methods

        rows.append(("Trainer.train_step, NaN guard vs none",
                     *_pair(trainer.train_step, trainer.train_step, number, repeat, guard_removed)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100, help="steps per round (default 100)")
    parser.add_argument("--repeat", type=int, default=15, help="alternating rounds; the fastest counts (default 15)")
    args = parser.parse_args(argv)
    print(f"TwoLayerNet {D}-{H}-{C}, batch {N}, float64; fastest of {args.repeat} alternating rounds "
          f"of {args.number} steps")
    print(f"{'backend':<7} {'comparison':<38} {'with':>10} {'without':>10} {'overhead':>9}")
    for backend in zerodl.BACKENDS:
        for name, with_, without in measure(backend, args.number, args.repeat):
            pct = 100.0 * (with_ - without) / without
            print(f"{backend:<7} {name:<38} {with_ * 1e6:>8.1f}us {without * 1e6:>8.1f}us {pct:>8.1f}%")
    print()
    print(f"share of step time spent inside the checks and the NaN guard ({args.repeat * args.number} steps, "
          "timed from within, load-insensitive)")
    for backend in zerodl.BACKENDS:
        for name, share in share_inside_checks(backend, args.repeat * args.number):
            print(f"{backend:<7} {name:<38} {100 * share:>8.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())

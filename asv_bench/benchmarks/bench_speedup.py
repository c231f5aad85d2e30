"""Speed ratios as ``track_`` benchmarks, so ``asv publish`` draws their history as a line.

* ``NumbaOverNumpy.track_speedup(case)``: NumPy twin time / Numba twin time (> 1: Numba faster) of
  the fused training steps of the speed table (TwoLayerNet, MultiLayerNet Adam, SimpleConvNet and
  DeepConvNet float32) and of a few kernels at their ``zerodl bench`` shapes (float32).
* ``ZerodlOverTorch.track_speedup(step)``: PyTorch eager time / zerodl's fused Numba step (> 1:
  zerodl faster) for the same steps; skipped (asv's way: ``NotImplementedError`` in ``setup``) when
  PyTorch is not installed.
* ``ZerodlOverCompilingPeers.track_speedup(step, peer)``: ``torch.compile`` / zerodl and JAX
  (``jax.jit`` of the whole step) / zerodl, measured by ``zerodl bench``'s own workers (each peer
  compiled in its warm-up, compile time never inside a step); a peer that is not installed is skipped
  (``NotImplementedError``), as is a zerodl too old to have the peers (history starts with them).

Each contender runs in a process of its own (this file, run as a script, is the worker): NumPy's
OpenBLAS, numba's and PyTorch's thread pools in one process busy-wait against each other. The steps
and kernel inputs are those of :mod:`zerodl.bench` (the same networks, optimizers and random batches
drawn from a pool), measured on one thread each so the ratio does not depend on the core count.
The workers start once and warm up, then answer interleaved rounds (the order rotates each round); a
case's time is the median over rounds of the best of a round's repeats. ``setup_cache`` measures
every case of a class once (about 30 s); each ``track_`` returns one ratio.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

#: The training steps: keys of ``zerodl.bench.step_specs("full")`` (append-only).
STEPS = ["two_layer", "mlp_adam", "simple_conv_float32", "deep_conv_float32"]
#: Kernels (float32, ``zerodl.bench.KERNEL_INPUTS`` shapes) whose twin ratio is tracked (append-only).
KERNELS = ["affine_backward", "relu_forward", "softmax_loss_forward", "adam_update", "conv_forward",
           "conv_relu_pool_forward", "max_pool_backward"]
KERNEL_DTYPE = "float32"

ROUNDS = 3
REPEATS = 3
MIN_TIME = 0.02  # seconds per repeat (calls per repeat calibrated once)
THREADS = 1
_TAG = "@@speedup "


# ----------------------------------------------------------------------------- worker side
def _worker_cases(contender: str, kernel_ops: list[str]) -> dict:
    import numpy as np

    from zerodl import bench

    specs = {s.key: s for s in bench.step_specs("full")}
    cases = {}
    if contender == "torch":
        import torch

        torch.set_num_threads(THREADS)
        for key in STEPS:
            cases[f"step/{key}"] = bench._torch_step_case(specs[key], 0)
        return cases
    import zerodl
    from zerodl import kernels
    from zerodl.allocator import tune_malloc

    tune_malloc()  # every contender with the allocator settings the zerodl command runs with
    zerodl.set_num_threads(THREADS)
    zerodl.set_backend(contender)
    for key in STEPS:
        cases[f"step/{key}"] = bench._zerodl_step_cases(specs[key], contender, 0)["fused"]
    for op in kernel_ops:
        args, _ = bench.KERNEL_INPUTS[op](np.random.default_rng(0), np.dtype(KERNEL_DTYPE), "full")
        fn = kernels.get(op, contender)
        cases[f"kernel/{op}"] = lambda fn=fn, args=args: fn(*args)
    return cases


def _emit(obj) -> None:
    sys.__stdout__.write(_TAG + json.dumps(obj) + "\n")
    sys.__stdout__.flush()


def worker_main(contender: str, kernel_ops: list[str]) -> int:
    """Build and warm every case, then answer ``ROUND`` lines on stdin with ``{case: seconds}``."""
    from zerodl.bench import _calibrate, _time_case

    sys.stdout = sys.stderr  # whatever the libraries print must not mix with the protocol lines
    try:
        cases = _worker_cases(contender, kernel_ops)
        numbers = {name: _calibrate(fn, MIN_TIME) for name, fn in cases.items()}
    except Exception as exc:
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit({"ready": sorted(cases)})
    for line in sys.stdin:
        if line.strip() != "ROUND":
            break
        _emit({"times": {name: min(_time_case(fn, numbers[name], REPEATS)) for name, fn in cases.items()}})
    return 0


# ----------------------------------------------------------------------------- parent side
def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def measure(contenders: list[str], kernel_ops: list[str], rounds: int = ROUNDS) -> dict[str, dict[str, float]]:
    """``{contender: {case: seconds per call}}``, every contender in its own worker process."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(THREADS), OMP_NUM_THREADS=str(THREADS),
               MKL_NUM_THREADS=str(THREADS))
    workers = {}

    def read(c: str) -> dict:
        for line in workers[c].stdout:
            if line.startswith(_TAG):
                message = json.loads(line[len(_TAG):])
                if "error" in message:
                    raise RuntimeError(f"the {c} speed worker failed: {message['error']}")
                return message
        raise RuntimeError(f"the {c} speed worker exited with code {workers[c].wait()}")

    times: dict[str, dict[str, list[float]]] = {c: {} for c in contenders}
    try:
        for c in contenders:  # one at a time: warm-ups should not overlap either
            workers[c] = subprocess.Popen([sys.executable, os.path.abspath(__file__), c, *kernel_ops],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            read(c)
        for r in range(rounds):
            for c in contenders[r % len(contenders):] + contenders[:r % len(contenders)]:
                workers[c].stdin.write("ROUND\n")
                workers[c].stdin.flush()
                for name, seconds in read(c)["times"].items():
                    times[c].setdefault(name, []).append(seconds)
                time.sleep(0.1)  # let the previous contender's threads go back to sleep
    finally:
        for proc in workers.values():
            try:
                proc.stdin.close()
                proc.wait(timeout=30)
            except Exception:
                proc.kill()
                proc.wait()
    return {c: {name: statistics.median(v) for name, v in cases.items()} for c, cases in times.items()}


class NumbaOverNumpy:
    """NumPy twin / Numba twin, per fused step and per kernel (> 1: Numba faster)."""

    params = [f"step/{k}" for k in STEPS] + [f"kernel/{op}" for op in KERNELS]
    param_names = ["case"]
    unit = "ratio"
    timeout = 900

    def setup_cache(self):
        return measure(["numpy", "numba"], KERNELS)

    setup_cache.timeout = 900

    def track_speedup(self, medians, case):
        return medians["numpy"][case] / medians["numba"][case]


class ZerodlOverTorch:
    """PyTorch eager / zerodl's fused Numba step, per training step (> 1: zerodl faster)."""

    params = [f"step/{k}" for k in STEPS]
    param_names = ["step"]
    unit = "ratio"
    timeout = 900

    def setup_cache(self):
        # Never None: asv does not hand a None cache to setup (which then fails instead of skipping).
        return measure(["numba", "torch"], []) if torch_available() else {}

    setup_cache.timeout = 900

    def setup(self, medians, step):
        if not medians:
            raise NotImplementedError("PyTorch is not installed: no zerodl-over-PyTorch ratio")

    def track_speedup(self, medians, step):
        return medians["torch"][step] / medians["numba"][step]


#: The compiling peers of ``zerodl bench`` (append-only).
PEERS = ["torch_compile", "jax"]


def measure_peers(rounds: int = ROUNDS) -> dict | None:
    """``{"seconds": {contender: {step: seconds}}, "missing": [...]}`` of zerodl's fused step and the
    compiling peers, one ``zerodl.bench`` run over :data:`STEPS` (each contender in its own process,
    interleaved rounds, one thread); ``{}`` when the installed zerodl's bench has no peers (never
    None: asv does not hand a None cache to ``setup``)."""
    from zerodl import bench

    if "jax" not in getattr(bench, "CONTENDERS", ()):
        return {}
    config = bench.BenchConfig(kernels=False, steps=True, rows=tuple(STEPS), contenders=("numba", *PEERS),
                               rounds=rounds, repeats=REPEATS, min_time=MIN_TIME, threads=THREADS, pause=0.1)
    results = bench.run_bench(config)
    seconds: dict[str, dict[str, float]] = {}
    for c in ("numba", *PEERS):
        case = bench.HEADLINE_CASE[c]
        found = results["medians"].get(c, {})
        seconds[c] = {k: found[f"step/{k}/{case}"] for k in STEPS if f"step/{k}/{case}" in found}
    return {"seconds": seconds, "missing": sorted(results.get("missing", {}))}


class ZerodlOverCompilingPeers:
    """``torch.compile`` and JAX step time / zerodl's fused Numba step (> 1: zerodl faster)."""

    params = ([f"step/{k}" for k in STEPS], PEERS)
    param_names = ["step", "peer"]
    unit = "ratio"
    timeout = 1800

    def setup_cache(self):
        return measure_peers()

    setup_cache.timeout = 1800

    def setup(self, measured, step, peer):
        if not measured:
            raise NotImplementedError("this zerodl's bench has no compiling peers")
        key = step.split("/", 1)[1]
        if key not in measured["seconds"].get(peer, {}) or key not in measured["seconds"]["numba"]:
            raise NotImplementedError(f"{peer} is not installed or failed on {key}")

    def track_speedup(self, measured, step, peer):
        key = step.split("/", 1)[1]
        return measured["seconds"][peer][key] / measured["seconds"]["numba"][key]


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1], sys.argv[2:]))

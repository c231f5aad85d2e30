"""One call onto both cores or two: SimpleConvNet's conv + ReLU + pool block and the Affine after it.

The fused training step runs the block's forward and the Affine's product as one op,
``conv_relu_pool_affine_forward`` (each task pools its images, then computes their rows of the
product), and the Affine's backward products with the block's backward as another,
``conv_relu_pool_affine_backward`` (the Affine's ``dx`` and ``dW`` first, the block's groups waiting
for ``dx``). This script measures each against the two ops it replaces, called in turn as the
pieces did before (``conv_relu_pool_forward`` then ``matmul_in_parts``; ``affine_backward_into``
then ``conv_relu_pool_backward``): the same bits, checked before timing.

In one process, the two ways alternating call by call, each call on a batch of 100 drawn at random
from ``--pool`` images; BLAS on one thread, as in a conv step; ``--threads`` task threads (default 2).
Prints the medians in ms and their ratio. Usage::

    python benchmarks_scripts/merged_calls.py [--calls 300] [--dtype float32 float64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import zerodl
from zerodl import kernels
from zerodl.kernels import _threads
from zerodl.kernels._tasks import matmul_in_parts


def _layers(dtype: np.dtype, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    W = (0.1 * rng.standard_normal((30, 1, 5, 5))).astype(dtype)
    b = (0.1 * rng.standard_normal(30)).astype(dtype)
    W2 = (0.01 * rng.standard_normal((4320, 100))).astype(dtype)
    return W, b, W2


def _two_forward(x, W, b, W2, z):
    pooled, arg_max, col = kernels.get("conv_relu_pool_forward", "numba")(x, W, b, 1, 0)
    matmul_in_parts(pooled.reshape(len(x), -1), W2, z, 2)
    return pooled, arg_max, col


def _one_forward(x, W, b, W2, z):
    return kernels.get("conv_relu_pool_affine_forward", "numba")(x, W, b, 1, 0, W2, z, 2)


def _two_backward(dz, W2, grads, kept, x, W):
    dx2, dW2, db2 = grads
    pooled, arg_max, col = kept
    kernels.get("affine_backward_into", "numba")(dz, pooled.reshape(len(x), -1), W2, dx2, dW2, db2, 2)
    return kernels.get("conv_relu_pool_backward", "numba")(dx2.reshape(pooled.shape), pooled, arg_max, x, W, col,
                                                           1, 0, False)


def _one_backward(dz, W2, grads, kept, x, W):
    pooled, arg_max, col = kept
    return kernels.get("conv_relu_pool_affine_backward", "numba")(dz, W2, *grads, 2, pooled, arg_max, x, W, col,
                                                                  1, 0, False)


def _same_bits(dtype, X, W, b, W2, rng) -> None:
    x = X[:100]
    z1, z2 = np.empty((100, 100), dtype), np.empty((100, 100), dtype)
    kept = _two_forward(x, W, b, W2, z1)
    for a, r in zip(_one_forward(x, W, b, W2, z2), kept):
        np.testing.assert_array_equal(a, r)
    np.testing.assert_array_equal(z1, z2)
    dz = rng.standard_normal((100, 100)).astype(dtype)
    g1 = [np.empty((100, 4320), dtype), np.empty_like(W2), np.empty(100, dtype)]
    g2 = [np.empty_like(g) for g in g1]
    for a, r in zip([*_one_backward(dz, W2, g2, kept, x, W)[1:], *g2], [*_two_backward(dz, W2, g1, kept, x, W)[1:],
                                                                        *g1]):
        np.testing.assert_array_equal(a, r)


def run(dtype: np.dtype, calls: int, pool: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    X = rng.random((pool, 1, 28, 28)).astype(dtype)
    W, b, W2 = _layers(dtype, rng)
    _same_bits(dtype, X, W, b, W2, rng)
    z = np.empty((100, 100), dtype)
    grads = [np.empty((100, 4320), dtype), np.empty_like(W2), np.empty(100, dtype)]
    dzs = [rng.standard_normal((100, 100)).astype(dtype) for _ in range(4)]
    times: dict[str, list[float]] = {k: [] for k in ("fw two", "fw one", "bw two", "bw one")}
    ways = (("two", _two_forward, _two_backward), ("one", _one_forward, _one_backward))
    for i in range(calls):
        x = X[rng.integers(0, pool, 100)]
        for way, fw, bw in (ways if i % 2 == 0 else ways[::-1]):  # alternate which goes first
            t0 = time.perf_counter()
            kept = fw(x, W, b, W2, z)
            t1 = time.perf_counter()
            bw(dzs[i % 4], W2, grads, kept, x, W)
            t2 = time.perf_counter()
            if i >= 20:  # warm-up
                times[f"fw {way}"].append(t1 - t0)
                times[f"bw {way}"].append(t2 - t1)
    return {k: float(np.median(v) * 1e3) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--pool", type=int, default=5000, help="images to draw the batches from")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    args = parser.parse_args()
    zerodl.tune_malloc()
    zerodl.set_num_threads(args.threads)
    print(f"batch 100 of {args.pool} images, {args.threads} task threads, BLAS on one; medians of "
          f"{args.calls - 20} alternating calls, ms")
    print(f"{'dtype':8s} {'pass':9s} {'two calls':>10s} {'one call':>9s} {'ratio':>6s}")
    with _threads.limited(1):
        for name in args.dtype:
            m = run(np.dtype(name), args.calls, args.pool)
            for kind, label in (("fw", "forward"), ("bw", "backward")):
                two, one = m[f"{kind} two"], m[f"{kind} one"]
                print(f"{name:8s} {label:9s} {two:10.3f} {one:9.3f} {two / one:5.2f}x")


if __name__ == "__main__":
    main()

"""asv benchmarks of the convolution family: kernels (SimpleConvNet's layer; every DeepConvNet layer,
conv, conv+ReLU, pooling), Numba-over-NumPy speed ratios (``track_``), a SimpleConvNet training step,
DeepConvNet inference over 10,000 MNIST-shaped images. Every class is parametrised by backend and
dtype; ``setup`` warms the JIT so compile time never counts.

Run: ``asv run --python=same --bench bench_conv`` (from ``asv_bench/``). For a quick side-by-side of
both backends in one process (medians, ratios, peak memory of a step) without asv::

    python asv_bench/benchmarks/bench_conv.py [--steps 15] [--inference-images 10000] [--threads 1]

The DeepConvNet inference uses the real MNIST test images when ``ZERODL_MNIST_DIR`` (or
``../shared/datasets/mnist`` beside the repository) holds ``t10k-images-idx3-ubyte.gz``, else seeded
random images of the same shape.
"""

from __future__ import annotations

import gzip
import os
import pathlib
import time

import numpy as np

import zerodl
from zerodl import kernels

BACKENDS = ["numba", "numpy"]
DTYPES = ["float64", "float32"]
SEED = 20240501  # benchmark data is seeded and never changes (append-only)


def _mnist_test_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` MNIST test images ``(n, 1, 28, 28)`` in [0, 1] and labels, else random data."""
    candidates = [os.environ.get("ZERODL_MNIST_DIR")] + [
        str(p / "shared" / "datasets" / "mnist") for p in pathlib.Path(__file__).resolve().parents
    ]
    for folder in filter(None, candidates):
        images = pathlib.Path(folder) / "t10k-images-idx3-ubyte.gz"
        labels = pathlib.Path(folder) / "t10k-labels-idx1-ubyte.gz"
        if images.exists() and labels.exists():
            with gzip.open(images, "rb") as f:
                x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
            with gzip.open(labels, "rb") as f:
                t = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.intp)
            reps = -(-n // len(x))
            return (np.tile(x, (reps, 1, 1, 1))[:n].astype(np.float64) / 255.0, np.tile(t, reps)[:n])
    rng = np.random.default_rng(SEED)
    return rng.random((n, 1, 28, 28)), rng.integers(0, 10, n)


class ConvKernels:
    """The kernels at SimpleConvNet's first-layer shapes (batch 100, 1×28×28, 30 filters 5×5)."""

    params = (BACKENDS, DTYPES)
    param_names = ("backend", "dtype")

    def setup(self, backend, dtype):
        rng = np.random.default_rng(SEED)
        self.x = rng.random((100, 1, 28, 28)).astype(dtype)
        self.W = (0.01 * rng.standard_normal((30, 1, 5, 5))).astype(dtype)
        self.b = np.zeros(30, dtype=dtype)
        self.conv_forward = kernels.get("conv_forward", backend)
        self.conv_backward = kernels.get("conv_backward", backend)
        self.im2col = kernels.get("im2col", backend)
        self.col2im = kernels.get("col2im", backend)
        self.pool_forward = kernels.get("max_pool_forward", backend)
        self.pool_backward = kernels.get("max_pool_backward", backend)
        self.out, self.cache = self.conv_forward(self.x, self.W, self.b, 1, 0)
        self.col = self.im2col(self.x, 5, 5, 1, 0)
        self.pooled, self.arg_max = self.pool_forward(self.out, 2, 2, 2, 0)
        # warm every kernel once (JIT compile or cache load)
        self.time_conv_backward(backend, dtype)
        self.time_col2im(backend, dtype)
        self.time_pool_backward(backend, dtype)

    def time_im2col(self, backend, dtype):
        self.im2col(self.x, 5, 5, 1, 0)

    def time_col2im(self, backend, dtype):
        self.col2im(self.col, self.x.shape, 5, 5, 1, 0)

    def time_conv_forward(self, backend, dtype):
        self.conv_forward(self.x, self.W, self.b, 1, 0)

    def time_conv_backward(self, backend, dtype):
        self.conv_backward(self.out, self.x, self.W, self.cache, 1, 0)

    def time_pool_forward(self, backend, dtype):
        self.pool_forward(self.out, 2, 2, 2, 0)

    def time_pool_backward(self, backend, dtype):
        self.pool_backward(self.pooled, self.arg_max, self.out.shape, 2, 2, 2, 0)


#: DeepConvNet's six 3x3 convolutions (batch 100, MNIST): (C, H, W, FN, pad), append-only.
DEEP_LAYERS = {
    "conv1": (1, 28, 28, 16, 1),
    "conv2": (16, 28, 28, 16, 1),
    "conv3": (16, 14, 14, 32, 1),
    "conv4": (32, 14, 14, 32, 2),
    "conv5": (32, 8, 8, 64, 1),
    "conv6": (64, 8, 8, 64, 1),
}


class DeepConvLayers:
    """Every kernel a DeepConvNet conv layer uses, per layer: conv (+ReLU) forward and backward, the
    2x2 pooling that follows and conv+ReLU+pool fused (on every layer's output, for one shape
    table). JIT warmed in setup."""

    params = (BACKENDS, DTYPES, list(DEEP_LAYERS))
    param_names = ("backend", "dtype", "layer")

    def setup(self, backend, dtype, layer):
        c, h, w, fn, pad = DEEP_LAYERS[layer]
        rng = np.random.default_rng(SEED)
        self.pad = pad
        self.need_dx = c > 1  # a network's first layer computes no dx
        self.x = rng.random((100, c, h, w)).astype(dtype)
        self.W = (0.1 * rng.standard_normal((fn, c, 3, 3))).astype(dtype)
        self.b = (0.1 * rng.standard_normal(fn)).astype(dtype)
        self.f = {op: kernels.get(op, backend) for op in ("conv_forward", "conv_backward", "conv_relu_forward",
                                                          "conv_relu_backward", "max_pool_forward",
                                                          "max_pool_backward", "conv_relu_pool_forward",
                                                          "conv_relu_pool_backward")}
        self.out, self.keep = self.f["conv_forward"](self.x, self.W, self.b, 1, pad)
        self.relu_out, _ = self.f["conv_relu_forward"](self.x, self.W, self.b, 1, pad)
        self.dout = rng.standard_normal(self.out.shape).astype(dtype)
        self.pooled, self.arg_max = self.f["max_pool_forward"](self.relu_out, 2, 2, 2, 0)
        self.dpooled = rng.standard_normal(self.pooled.shape).astype(dtype)
        for name in dir(self):  # warm every kernel (JIT compile or cache load)
            if name.startswith("time_"):
                getattr(self, name)(backend, dtype, layer)

    def time_conv_forward(self, backend, dtype, layer):
        self.f["conv_forward"](self.x, self.W, self.b, 1, self.pad)

    def time_conv_backward(self, backend, dtype, layer):
        self.f["conv_backward"](self.dout, self.x, self.W, self.keep, 1, self.pad, self.need_dx)

    def time_conv_relu_forward(self, backend, dtype, layer):
        self.f["conv_relu_forward"](self.x, self.W, self.b, 1, self.pad)

    def time_conv_relu_backward(self, backend, dtype, layer):
        self.f["conv_relu_backward"](self.dout, self.relu_out, self.x, self.W, self.keep, 1, self.pad, self.need_dx)

    def time_pool_forward(self, backend, dtype, layer):
        self.f["max_pool_forward"](self.relu_out, 2, 2, 2, 0)

    def time_pool_backward(self, backend, dtype, layer):
        self.f["max_pool_backward"](self.pooled, self.arg_max, self.relu_out.shape, 2, 2, 2, 0)

    def time_conv_relu_pool_forward(self, backend, dtype, layer):
        self.f["conv_relu_pool_forward"](self.x, self.W, self.b, 1, self.pad)

    def time_conv_relu_pool_backward(self, backend, dtype, layer):
        self.f["conv_relu_pool_backward"](self.dpooled, self.pooled, self.arg_max, self.x, self.W, self.keep, 1,
                                          self.pad, self.need_dx)


def _best_seconds(fn, repeats: int = 7) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class ConvSpeedup:
    """Numba-over-NumPy speed ratio of each conv kernel (NumPy time / Numba time, > 1: Numba faster),
    per DeepConvNet layer (and SimpleConvNet's ``simple``), so ``asv publish`` graphs the speedup
    across commits. Both twins timed in the same process, alternately, best of 7 calls each."""

    params = (DTYPES, [*DEEP_LAYERS, "simple"])
    param_names = ("dtype", "layer")
    unit = "ratio"
    timeout = 300

    def setup(self, dtype, layer):
        self.cases = {}
        for backend in BACKENDS:
            if layer == "simple":
                bench = ConvKernels()
                bench.setup(backend, dtype)
                pad, dout, W, x, keep = 0, bench.out, bench.W, bench.x, bench.cache
                relu_in, pooled, arg_max = bench.out, bench.pooled, bench.arg_max
                need_dx = False
            else:
                bench = DeepConvLayers()
                bench.setup(backend, dtype, layer)
                pad, dout, W, x, keep = bench.pad, bench.dout, bench.W, bench.x, bench.keep
                relu_in, pooled, arg_max = bench.relu_out, bench.pooled, bench.arg_max
                need_dx = bench.need_dx
            f = {op: kernels.get(op, backend) for op in ("conv_forward", "conv_backward", "max_pool_forward",
                                                         "max_pool_backward", "conv_relu_pool_forward",
                                                         "conv_relu_pool_backward")}
            dpooled = np.ones(pooled.shape, dtype=dtype)
            b = np.zeros(W.shape[0], dtype=dtype)
            self.cases[backend] = {
                "conv_forward": lambda f=f, x=x, W=W, b=b, pad=pad: f["conv_forward"](x, W, b, 1, pad),
                "conv_backward": lambda f=f, d=dout, x=x, W=W, k=keep, pad=pad, nd=need_dx:
                    f["conv_backward"](d, x, W, k, 1, pad, nd),
                "pool_forward": lambda f=f, y=relu_in: f["max_pool_forward"](y, 2, 2, 2, 0),
                "pool_backward": lambda f=f, p=pooled, a=arg_max, s=relu_in.shape: f["max_pool_backward"](
                    p, a, s, 2, 2, 2, 0),
                "conv_relu_pool_forward": lambda f=f, x=x, W=W, b=b, pad=pad: f["conv_relu_pool_forward"](
                    x, W, b, 1, pad),
                "conv_relu_pool_backward": lambda f=f, d=dpooled, p=pooled, a=arg_max, x=x, W=W, k=keep, pad=pad,
                nd=need_dx: f["conv_relu_pool_backward"](d, p, a, x, W, k, 1, pad, nd),
            }

    def _ratio(self, kernel: str) -> float:
        t = {b: [] for b in BACKENDS}
        for _ in range(3):  # alternate the twins, so both see the same machine load
            for b in BACKENDS:
                t[b].append(_best_seconds(self.cases[b][kernel]))
        return min(t["numpy"]) / min(t["numba"])

    def track_conv_forward(self, dtype, layer):
        return self._ratio("conv_forward")

    def track_conv_backward(self, dtype, layer):
        return self._ratio("conv_backward")

    def track_pool_forward(self, dtype, layer):
        return self._ratio("pool_forward")

    def track_pool_backward(self, dtype, layer):
        return self._ratio("pool_backward")

    def track_conv_relu_pool_forward(self, dtype, layer):
        return self._ratio("conv_relu_pool_forward")

    def track_conv_relu_pool_backward(self, dtype, layer):
        return self._ratio("conv_relu_pool_backward")


class SimpleConvNetStep:
    """One training step (gradient + Adam update), batch 100 of 1×28×28, the book's SimpleConvNet."""

    params = (BACKENDS, DTYPES)
    param_names = ("backend", "dtype")

    def setup(self, backend, dtype):
        rng = np.random.default_rng(SEED)
        self.x = rng.random((100, 1, 28, 28)).astype(dtype)
        self.t = rng.integers(0, 10, 100)
        self.backend = backend
        with zerodl.use_backend(backend):
            self.net = zerodl.SimpleConvNet(dtype=dtype, seed=SEED)
            self.opt = zerodl.Adam()
            self.step()  # warm-up: compiles (or loads) every kernel of the step

    def step(self):
        with zerodl.use_backend(self.backend):
            self.opt.update(self.net.params, self.net.gradient(self.x, self.t))

    def time_train_step(self, backend, dtype):
        self.step()

    def peakmem_train_step(self, backend, dtype):
        self.step()


class DeepConvNetInference:
    """``accuracy`` (batches of 100) of the book's DeepConvNet over 10,000 MNIST test images."""

    params = (BACKENDS, DTYPES)
    param_names = ("backend", "dtype")
    number = 1
    repeat = (1, 3, 120.0)
    timeout = 600

    def setup(self, backend, dtype):
        x, self.t = _mnist_test_images(10_000)
        self.x = x.astype(dtype)
        self.backend = backend
        with zerodl.use_backend(backend):
            self.net = zerodl.DeepConvNet(dtype=dtype, seed=SEED)
            self.net.accuracy(self.x[:100], self.t[:100])  # warm-up

    def time_accuracy_10k(self, backend, dtype):
        with zerodl.use_backend(self.backend):
            self.net.accuracy(self.x, self.t)

    def peakmem_accuracy_10k(self, backend, dtype):
        with zerodl.use_backend(self.backend):
            self.net.accuracy(self.x, self.t)


# ----------------------------------------------------------------------------- side-by-side script
def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _peak_step_mib(bench: SimpleConvNetStep) -> float:
    import tracemalloc

    tracemalloc.start()  # NumPy reports its buffers to tracemalloc
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        bench.step()
        return (tracemalloc.get_traced_memory()[1] - before) / 2**20
    finally:
        tracemalloc.stop()


def main(argv: list[str] | None = None) -> None:
    """Both backends in one run, interleaved: medians, ratios, peak memory of a step."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=15, help="timed SimpleConvNet steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median over all)")
    parser.add_argument("--inference-images", type=int, default=10_000)
    parser.add_argument("--inference-repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit BLAS and numba to this many threads (zerodl.num_threads)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        zerodl.set_num_threads(args.threads)
    from threadpoolctl import threadpool_info

    pools = ", ".join(f"{p['internal_api']}×{p['num_threads']}" for p in threadpool_info())
    print(f"numpy {np.__version__}, thread pools: {pools}, cpus {os.cpu_count()}, "
          f"load {os.getloadavg()[0]:.2f}")

    steps = {b: SimpleConvNetStep() for b in BACKENDS}
    for b in BACKENDS:
        steps[b].setup(b, args.dtype)
    times: dict[str, list[float]] = {b: [] for b in BACKENDS}
    for _ in range(args.rounds):
        for b in BACKENDS:
            times[b].append(_median_ms(steps[b].step, args.steps))
    step_ms = {b: float(np.median(v)) for b, v in times.items()}
    peak = {b: _peak_step_mib(steps[b]) for b in BACKENDS}
    print(f"SimpleConvNet step (batch 100, {args.dtype}, Adam): "
          + ", ".join(f"{b} {step_ms[b]:.1f} ms (peak +{peak[b]:.1f} MiB)" for b in BACKENDS)
          + f"; numba is {step_ms['numpy'] / step_ms['numba']:.2f}x faster")

    x, t = _mnist_test_images(args.inference_images)
    x = x.astype(args.dtype)
    inf_ms = {}
    acc = {}
    for b in BACKENDS:
        with zerodl.use_backend(b):
            net = zerodl.DeepConvNet(dtype=args.dtype, seed=SEED)
            net.accuracy(x[:100], t[:100])
            inf_ms[b] = _median_ms(lambda b=b, net=net: acc.__setitem__(b, net.accuracy(x, t)),
                                   args.inference_repeats)
    print(f"DeepConvNet inference over {len(x):,} images (batches of 100, {args.dtype}): "
          + ", ".join(f"{b} {inf_ms[b] / 1e3:.2f} s" for b in BACKENDS)
          + f"; numba is {inf_ms['numpy'] / inf_ms['numba']:.2f}x faster"
          + f" (accuracies equal: {acc['numba'] == acc['numpy']})")


if __name__ == "__main__":
    main()

"""asv benchmarks of the GELU kernels and of a GELU MLP's fused training step.

Parametrised by backend and dtype; ``setup`` warms the JIT so compile time never counts. Shapes: a
hidden layer of 100 activations on a batch of 100 and the biggest activation of the book's nets
(SimpleConvNet's 100x30x24x24). Run: ``asv run --python=same --bench bench_gelu`` (from ``asv_bench/``).
"""

from __future__ import annotations

import numpy as np

import zerodl
from zerodl import kernels
from zerodl.layers import GELU, Affine
from zerodl.optimizer import Adam

BACKENDS = ["numba", "numpy"]
DTYPES = ["float64", "float32"]
SHAPES = ["100x100", "100x30x24x24"]
SEED = 20261201  # benchmark data is seeded and never changes (append-only)


class GeluKernels:
    """forward, backward and the fused-step pieces (bias + GELU, backward into a buffer)."""

    params = (BACKENDS, DTYPES, SHAPES)
    param_names = ("backend", "dtype", "shape")

    def setup(self, backend, dtype, shape):
        dims = tuple(int(s) for s in shape.split("x"))
        rng = np.random.default_rng(SEED)
        self.x = rng.standard_normal(dims).astype(dtype)
        self.dout = rng.standard_normal(dims).astype(dtype)
        self.b = rng.standard_normal(dims[1]).astype(dtype)
        self.z = self.x.copy()
        self.out = np.empty_like(self.x)
        self.forward = kernels.get("gelu_forward", backend)
        self.backward = kernels.get("gelu_backward", backend)
        self.bias_forward = kernels.get("gelu_bias_forward", backend)
        self.backward_into = kernels.get("gelu_backward_into", backend)
        for _ in range(2):  # compile, then the cached dispatch
            self.time_forward(backend, dtype, shape)
            self.time_backward(backend, dtype, shape)
            self.time_bias_forward(backend, dtype, shape)
            self.time_backward_into(backend, dtype, shape)

    def time_forward(self, backend, dtype, shape):
        self.forward(self.x)

    def time_backward(self, backend, dtype, shape):
        self.backward(self.dout, self.x)

    def time_bias_forward(self, backend, dtype, shape):
        np.copyto(self.z, self.x)
        self.bias_forward(self.z, self.b, self.out)

    def time_backward_into(self, backend, dtype, shape):
        self.backward_into(self.dout, self.x, self.out)


class GeluTrainStep:
    """A 784-100-100-10 MLP with GELU, batch 100, Adam: the fused step keeps the pre-activations."""

    params = (BACKENDS, DTYPES)
    param_names = ("backend", "dtype")

    def setup(self, backend, dtype):
        rng = np.random.default_rng(SEED)
        sizes = (784, 100, 100, 10)
        layers = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Affine((np.sqrt(2.0 / a) * rng.standard_normal((a, b))).astype(dtype), np.zeros(b, dtype)))
            if k < len(sizes) - 2:
                layers.append(GELU())
        self.net = zerodl.Sequential(layers)
        self.data = rng.random((2000, 784)).astype(dtype)
        self.labels = rng.integers(0, 10, 2000)
        self.rng = np.random.default_rng(SEED)
        self.opt = Adam()
        self.backend = backend
        for _ in range(2):
            self.time_train_step(backend, dtype)

    def time_train_step(self, backend, dtype):
        idx = self.rng.choice(2000, 100)  # a random batch each step, as training draws them
        with zerodl.use_backend(backend):
            self.net.train_step(self.data[idx], self.labels[idx], self.opt)

"""asv benchmarks of the batch-norm kernels and a MultiLayerNetExtend training step (BN + dropout).

Parametrised by backend and dtype; ``setup`` warms the JIT so compile time never counts. Shapes are
the book's chapter 6 nets: a hidden layer of 100 activations, batch 100, and one wide layer of 1000.
Run: ``asv run --python=same --bench bench_batchnorm`` (from ``asv_bench/``).
"""

from __future__ import annotations

import numpy as np

import zerodl
from zerodl import kernels

BACKENDS = ["numba", "numpy"]
DTYPES = ["float64", "float32"]
SHAPES = ["100x100", "100x1000"]
SEED = 20240502  # benchmark data is seeded and never changes (append-only)


class BatchNormKernels:
    """forward (train / test) and backward on ``(N, D)`` activations."""

    params = (BACKENDS, DTYPES, SHAPES)
    param_names = ("backend", "dtype", "shape")

    def setup(self, backend, dtype, shape):
        n, d = (int(s) for s in shape.split("x"))
        rng = np.random.default_rng(SEED)
        self.x = rng.standard_normal((n, d)).astype(dtype)
        self.dout = rng.standard_normal((n, d)).astype(dtype)
        self.gamma = np.ones(d, dtype=dtype)
        self.beta = np.zeros(d, dtype=dtype)
        self.rm = np.zeros(d, dtype=dtype)
        self.rv = np.ones(d, dtype=dtype)
        self.train = kernels.get("batchnorm_forward_train", backend)
        self.test = kernels.get("batchnorm_forward_test", backend)
        self.backward = kernels.get("batchnorm_backward", backend)
        _, self.xc, self.xn, self.std = self.train(self.x, self.gamma, self.beta, self.rm, self.rv, 0.9)
        self.test(self.x, self.gamma, self.beta, self.rm, self.rv)
        self.backward(self.dout, self.gamma, self.xc, self.xn, self.std)

    def time_forward_train(self, backend, dtype, shape):
        self.train(self.x, self.gamma, self.beta, self.rm, self.rv, 0.9)

    def time_forward_test(self, backend, dtype, shape):
        self.test(self.x, self.gamma, self.beta, self.rm, self.rv)

    def time_backward(self, backend, dtype, shape):
        self.backward(self.dout, self.gamma, self.xc, self.xn, self.std)


class MultiLayerNetExtendStep:
    """One SGD step of the book's ``MultiLayerNetExtend(784, [100]*5, 10)`` with BN and dropout."""

    params = (BACKENDS, DTYPES)
    param_names = ("backend", "dtype")

    def setup(self, backend, dtype):
        rng = np.random.default_rng(SEED)
        self.x = rng.random((100, 784)).astype(dtype)
        self.t = rng.integers(0, 10, 100)
        self.net = zerodl.MultiLayerNetExtend(784, [100] * 5, 10, use_batchnorm=True, use_dropout=True,
                                              dropout_ratio=0.2, dtype=dtype, seed=SEED)
        self.opt = zerodl.SGD(lr=0.01)
        self.backend = backend
        self.time_step(backend, dtype)

    def time_step(self, backend, dtype):
        with zerodl.use_backend(self.backend):
            self.opt.update(self.net.params, self.net.gradient(self.x, self.t))

    def peakmem_step(self, backend, dtype):
        self.time_step(backend, dtype)

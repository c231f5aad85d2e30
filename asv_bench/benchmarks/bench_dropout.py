"""asv benchmarks of the dropout kernels (training forward with a fresh mask, backward, inference).

Parametrised by backend and dtype; ``setup`` warms the JIT. The uniform numbers are drawn in
``setup``: the layer draws them with its Generator in Python, which the kernels do not include.
Run: ``asv run --python=same --bench bench_dropout`` (from ``asv_bench/``).
"""

from __future__ import annotations

import numpy as np

from zerodl import kernels

BACKENDS = ["numba", "numpy"]
DTYPES = ["float64", "float32"]
SEED = 20240503  # benchmark data is seeded and never changes (append-only)


class DropoutKernels:
    """Batch 100 × 1000 activations, ratio 0.5."""

    params = (BACKENDS, DTYPES)
    param_names = ("backend", "dtype")

    def setup(self, backend, dtype):
        rng = np.random.default_rng(SEED)
        self.x = rng.standard_normal((100, 1000)).astype(dtype)
        self.u = rng.random((100, 1000))
        self.mask = self.u > 0.5
        self.forward = kernels.get("dropout_mask_forward", backend)
        self.backward = kernels.get("dropout_backward", backend)
        self.predict = kernels.get("dropout_predict", backend)
        self.forward(self.x, self.u, 0.5)
        self.backward(self.x, self.mask)
        self.predict(self.x, 0.5)

    def time_forward_train(self, backend, dtype):
        self.forward(self.x, self.u, 0.5)

    def time_backward(self, backend, dtype):
        self.backward(self.x, self.mask)

    def time_predict(self, backend, dtype):
        self.predict(self.x, 0.5)

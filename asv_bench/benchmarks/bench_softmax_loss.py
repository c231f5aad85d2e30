"""softmax_loss_forward / softmax_loss_backward on MNIST-sized score batches, labels and one-hot."""

import numpy as np

from zerodl import kernels

from .common import BACKENDS, DTYPES, SCORES, normal, rng, warm


class SoftmaxLoss:
    params = (BACKENDS, DTYPES, ["labels", "one_hot"])
    param_names = ["backend", "dtype", "teacher"]

    def setup(self, backend, dtype, teacher):
        n, c = SCORES
        self.forward = kernels.get("softmax_loss_forward", backend)
        self.backward = kernels.get("softmax_loss_backward", backend)
        self.x = normal(SCORES, dtype, 1, scale=3.0)
        labels = rng(2).integers(0, c, n).astype(np.intp)
        self.t = labels if teacher == "labels" else np.eye(c, dtype=dtype)[labels]
        self.y, _ = self.forward(self.x, self.t)
        warm(self.forward, self.x, self.t)
        warm(self.backward, self.y, self.t, 1.0)

    def time_forward(self, backend, dtype, teacher):
        self.forward(self.x, self.t)

    def time_backward(self, backend, dtype, teacher):
        self.backward(self.y, self.t, 1.0)

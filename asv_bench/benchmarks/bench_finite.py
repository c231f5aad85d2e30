"""count_nonfinite: the per-batch NaN/inf scan of a training step, on an MNIST batch (what is
scanned when the first layer is a convolution) and on the first Affine's product of TwoLayerNet
(what the fused MLP step screens instead)."""

from zerodl import kernels

from .common import BACKENDS, DTYPES, MNIST_BATCH, normal, warm

SHAPES = {"mnist_batch_100x1x28x28": (MNIST_BATCH, 1, 28, 28), "affine_product_100x50": (MNIST_BATCH, 50)}


class CountNonfinite:
    params = (BACKENDS, DTYPES, list(SHAPES))
    param_names = ["backend", "dtype", "shape"]

    def setup(self, backend, dtype, shape):
        self.count = kernels.get("count_nonfinite", backend)
        self.x = normal(SHAPES[shape], dtype, 1)
        warm(self.count, self.x)

    def time_count_nonfinite(self, backend, dtype, shape):
        self.count(self.x)

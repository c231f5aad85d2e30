"""affine_forward / affine_backward at the book's MLP sizes."""

from zerodl import kernels

from .common import BACKENDS, DTYPES, MLP_LAYER, WIDE_LAYER, normal, warm

SHAPES = {"mnist_784x50_b100": MLP_LAYER, "wide_1000x1000_b256": WIDE_LAYER}


class Affine:
    params = (BACKENDS, DTYPES, list(SHAPES))
    param_names = ["backend", "dtype", "shape"]

    def setup(self, backend, dtype, shape):
        n, d, h = SHAPES[shape]
        self.forward = kernels.get("affine_forward", backend)
        self.backward = kernels.get("affine_backward", backend)
        self.x = normal((n, d), dtype, 1)
        self.W = normal((d, h), dtype, 2, scale=0.01)
        self.b = normal((h,), dtype, 3)
        self.dout = normal((n, h), dtype, 4)
        warm(self.forward, self.x, self.W, self.b)
        warm(self.backward, self.dout, self.x, self.W)

    def time_forward(self, backend, dtype, shape):
        self.forward(self.x, self.W, self.b)

    def time_backward(self, backend, dtype, shape):
        self.backward(self.dout, self.x, self.W)

"""sigmoid_forward / sigmoid_backward on an MLP hidden layer and a convolution batch."""

from zerodl import kernels

from .common import BACKENDS, CONV_ACTIVATION, DTYPES, MLP_HIDDEN, normal, warm

SHAPES = {"mlp_hidden_100x100": MLP_HIDDEN, "conv_100x30x24x24": CONV_ACTIVATION}


class Sigmoid:
    params = (BACKENDS, DTYPES, list(SHAPES))
    param_names = ["backend", "dtype", "shape"]

    def setup(self, backend, dtype, shape):
        self.forward = kernels.get("sigmoid_forward", backend)
        self.backward = kernels.get("sigmoid_backward", backend)
        self.x = normal(SHAPES[shape], dtype, 1)
        self.dout = normal(SHAPES[shape], dtype, 2)
        self.out = self.forward(self.x)
        warm(self.forward, self.x)
        warm(self.backward, self.dout, self.out)

    def time_forward(self, backend, dtype, shape):
        self.forward(self.x)

    def time_backward(self, backend, dtype, shape):
        self.backward(self.dout, self.out)

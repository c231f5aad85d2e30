"""The six optimizer updates on MultiLayerNet's first weight matrix (784×100), in place."""

import numpy as np

from zerodl import kernels

from .common import BACKENDS, DTYPES, PARAM, normal, warm

#: op → (number of state arrays, hyper-parameters after them)
UPDATES = {
    "sgd_update": (0, (0.01,)),
    "momentum_update": (1, (0.01, 0.9)),
    "nesterov_update": (1, (0.01, 0.9)),
    "adagrad_update": (1, (0.01, 1e-7)),
    "rmsprop_update": (1, (0.01, 0.99, 1e-7)),
    "adam_update": (2, (0.001, 0.9, 0.999, 1e-7)),
}


class OptimizerUpdate:
    params = (BACKENDS, DTYPES, list(UPDATES))
    param_names = ["backend", "dtype", "update"]

    def setup(self, backend, dtype, update):
        n_state, hyper = UPDATES[update]
        self.fn = kernels.get(update, backend)
        param = normal(PARAM, dtype, 1, scale=0.05)
        grad = normal(PARAM, dtype, 2, scale=0.01)
        # Accumulators (AdaGrad/RMSprop h, Adam v) must be non-negative.
        states = [np.abs(normal(PARAM, dtype, 3 + i, scale=0.01)) for i in range(n_state)]
        self.args = (param, grad, *states, *hyper)
        warm(self.fn, *self.args)

    def time_update(self, backend, dtype, update):
        self.fn(*self.args)

"""zerodl: the layers and networks of "Deep Learning from Scratch", compiled with Numba.

Every hot path has two twins, a NumPy reference and a Numba kernel, chosen at call time by the
active backend (:func:`set_backend`, :func:`use_backend`, ``ZERODL_BACKEND``).
"""

from zerodl.backend import BACKENDS, get_backend, set_backend, use_backend
from zerodl.layers import (
    Affine, AddLayer, BatchNormalization, Convolution, Dropout, MulLayer, Pooling, Relu, Sigmoid,
    SoftmaxWithLoss,
)
from zerodl.networks import (
    DeepConvNet, MultiLayerNet, MultiLayerNetExtend, Sequential, SimpleConvNet, TwoLayerNet,
)
from zerodl.io import load_network, save_network
from zerodl.optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop
from zerodl.threads import get_num_threads, num_threads, set_num_threads
from zerodl.allocator import tune_malloc

from zerodl._version import __version__

__all__ = [
    "BACKENDS", "get_backend", "set_backend", "use_backend",
    "Affine", "Relu", "Sigmoid", "SoftmaxWithLoss", "MulLayer", "AddLayer",
    "Dropout", "BatchNormalization", "Convolution", "Pooling",
    "Sequential", "TwoLayerNet", "MultiLayerNet", "MultiLayerNetExtend",
    "SimpleConvNet", "DeepConvNet",
    "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam",
    "load_network", "save_network",
    "num_threads", "set_num_threads", "get_num_threads", "tune_malloc",
    "__version__",
]

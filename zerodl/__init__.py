"""zerodl: the layers and networks of "Deep Learning from Scratch", compiled with Numba.

Every hot path has two twins, a NumPy reference and a Numba kernel, chosen at call time by the
active backend (:func:`set_backend`, :func:`use_backend`, ``ZERODL_BACKEND``).
"""

# Before anything imports numba: a bad NUMBA_* variable is one clear line, not numba's traceback.
from zerodl._numba_env import check_numba_environment as _check_numba_environment

_check_numba_environment()

from zerodl._runlock import OutputInUseError
from zerodl._validate import NonFiniteInputError
from zerodl._version import __version__
from zerodl.allocator import tune_malloc
from zerodl.backend import BACKENDS, get_backend, set_backend, use_backend
from zerodl.io import load_network, save_network
from zerodl.layers import (
    AddLayer,
    Affine,
    BatchNormalization,
    Convolution,
    Dropout,
    MulLayer,
    Pooling,
    Relu,
    Sigmoid,
    SoftmaxWithLoss,
)
from zerodl.networks import (
    DeepConvNet,
    MultiLayerNet,
    MultiLayerNetExtend,
    Sequential,
    SimpleConvNet,
    TwoLayerNet,
)
from zerodl.optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop
from zerodl.threads import get_num_threads, num_threads, set_num_threads

__all__ = [
    "BACKENDS",
    "SGD",
    "AdaGrad",
    "Adam",
    "AddLayer",
    "Affine",
    "BatchNormalization",
    "Convolution",
    "DeepConvNet",
    "Dropout",
    "Momentum",
    "MulLayer",
    "MultiLayerNet",
    "MultiLayerNetExtend",
    "Nesterov",
    "NonFiniteInputError",
    "OutputInUseError",
    "Pooling",
    "RMSprop",
    "Relu",
    "Sequential",
    "Sigmoid",
    "SimpleConvNet",
    "SoftmaxWithLoss",
    "TwoLayerNet",
    "__version__",
    "get_backend",
    "get_num_threads",
    "load_network",
    "num_threads",
    "save_network",
    "set_backend",
    "set_num_threads",
    "tune_malloc",
    "use_backend",
]

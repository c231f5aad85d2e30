"""Layers with the book's protocol: ``forward(x)``, ``backward(dout)``, ``W``/``b``/``dW``/``db``.

``from common.layers import Affine`` in the book becomes ``from zerodl.layers import Affine``.
"""

from zerodl.layers.base import ACTIVATIONS, Layer
from zerodl.layers.conv import Convolution, Pooling
from zerodl.layers.core import GELU, Affine, Relu, Sigmoid, SoftmaxWithLoss
from zerodl.layers.graph import AddLayer, MulLayer
from zerodl.layers.normalization import BatchNormalization
from zerodl.layers.regularization import Dropout

__all__ = [
           "ACTIVATIONS",
           "GELU",
           "AddLayer",
           "Affine",
           "BatchNormalization",
           "Convolution",
           "Dropout",
           "Layer",
           "MulLayer",
           "Pooling",
           "Relu",
           "Sigmoid",
           "SoftmaxWithLoss",
]

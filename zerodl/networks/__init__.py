"""Networks: the general :class:`Sequential` container and the book's named networks."""

from zerodl.networks.conv import DeepConvNet, SimpleConvNet
from zerodl.networks.mlp import MultiLayerNet, TwoLayerNet
from zerodl.networks.mlp_extend import MultiLayerNetExtend
from zerodl.networks.sequential import ParamDict, Sequential
from zerodl.networks.two_layer_ch4 import TwoLayerNetCh4

__all__ = [
           "DeepConvNet",
           "MultiLayerNet",
           "MultiLayerNetExtend",
           "ParamDict",
           "Sequential",
           "SimpleConvNet",
           "TwoLayerNet",
           "TwoLayerNetCh4",
]

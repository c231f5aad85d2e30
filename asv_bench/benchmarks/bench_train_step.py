"""Whole training steps: the fused ``net.train_step`` and the layer-by-layer ``gradient`` + ``update``.

``path="fused"`` is ``net.train_step(x, t, opt)`` (one compiled call for the MLPs on the numba
backend; the generic path for SimpleConvNet); ``path="layers"`` is the book's
``opt.update(net.params, net.gradient(x, t))``. ``peakmem_step`` records the process's peak memory.
"""

import statistics
import time

import zerodl
from zerodl.networks import DeepConvNet, MultiLayerNet, SimpleConvNet, TwoLayerNet
from zerodl.optimizer import SGD, Adam

from .common import BACKENDS, DTYPES, MNIST_BATCH, mnist_like, rng, warm

PATHS = ["fused", "layers"]


class _Step:
    """Subclasses set ``params`` and ``build(dtype) -> (net, optimizer, x, t)``."""

    params = (BACKENDS, PATHS, DTYPES)
    param_names = ["backend", "path", "dtype"]
    timeout = 300

    def setup(self, backend, path, dtype):
        self._previous = zerodl.get_backend()
        zerodl.set_backend(backend)
        net, opt, x, t = self.build(dtype)
        if path == "fused":
            self.step = lambda: net.train_step(x, t, opt)
        else:
            self.step = lambda: opt.update(net.params, net.gradient(x, t))
        warm(self.step, calls=3)

    def teardown(self, backend, path, dtype):
        zerodl.set_backend(self._previous)

    def time_step(self, backend, path, dtype):
        self.step()

    def peakmem_step(self, backend, path, dtype):
        self.step()


class TwoLayerNetStep(_Step):
    """The book's chapter 5 step: TwoLayerNet 784-50-10, SGD(lr=0.1), batch 100."""

    def build(self, dtype):
        x, t = mnist_like(MNIST_BATCH, dtype)
        return TwoLayerNet(784, 50, 10, dtype=dtype, seed=0), SGD(0.1), x, t


class MultiLayerNetStep(_Step):
    """MultiLayerNet 784-100×5-10, ReLU, Adam, batch 100 (the book's chapter 6 experiments)."""

    def build(self, dtype):
        x, t = mnist_like(MNIST_BATCH, dtype)
        net = MultiLayerNet(784, [100] * 5, 10, activation="relu", dtype=dtype, seed=0)
        return net, Adam(), x, t


class WideMLPStep(_Step):
    """784-1000-1000-10, SGD(lr=0.01), batch 256, float32: bound by the matrix products."""

    params = (BACKENDS, PATHS, ["float32"])

    def build(self, dtype):
        x, t = mnist_like(256, dtype)
        net = MultiLayerNet(784, [1000, 1000], 10, dtype=dtype, seed=0)
        return net, SGD(0.01), x, t


class SimpleConvNetStep(_Step):
    """The book's chapter 7 SimpleConvNet, SGD(lr=0.1), batch 100 (the fused step: SGD updates the
    Affine weights inside their backward)."""

    def build(self, dtype):
        x = rng(7).random((MNIST_BATCH, 1, 28, 28)).astype(dtype)
        t = rng(8).integers(0, 10, MNIST_BATCH)
        return SimpleConvNet(dtype=dtype, seed=0), SGD(0.1), x, t


class DeepConvNetStep(_Step):
    """The book's chapter 8 DeepConvNet (six 3x3 convolutions, dropout), Adam, batch 100, float32."""

    params = (BACKENDS, PATHS, ["float32"])

    def build(self, dtype):
        x = rng(9).random((MNIST_BATCH, 1, 28, 28)).astype(dtype)
        t = rng(10).integers(0, 10, MNIST_BATCH)
        return DeepConvNet(dtype=dtype, seed=0), Adam(), x, t


class TwoLayerNetAccuracy:
    """The chapter 5 evaluation: ``accuracy`` of TwoLayerNet 784-50-10 (dtype) over 10,000 float32
    MNIST-like images, i.e. the ``mlp_predict`` kernel plus the arg-max comparison."""

    params = (BACKENDS, DTYPES)
    param_names = ["backend", "dtype"]
    timeout = 300

    def setup(self, backend, dtype):
        self._previous = zerodl.get_backend()
        zerodl.set_backend(backend)
        self.x, self.t = mnist_like(10000, "float32")
        self.net = TwoLayerNet(784, 50, 10, dtype=dtype, seed=0)
        warm(lambda: self.net.accuracy(self.x, self.t), calls=2)

    def teardown(self, backend, dtype):
        zerodl.set_backend(self._previous)

    def time_accuracy_10k(self, backend, dtype):
        self.net.accuracy(self.x, self.t)

    def peakmem_accuracy_10k(self, backend, dtype):
        self.net.accuracy(self.x, self.t)


class TwoThreadScaling:
    """One-thread time over two-thread time of the fused conv steps on the Numba backend, float32:
    how much of the second core a step gets (1.0: none, 2.0: all). The convolutions' groups of image
    chunks run on zerodl's task threads; when each chunk went back to Python between its BLAS products
    the threads mostly waited for each other's GIL (DeepConvNet 1.38). Batches of 100 drawn at random
    from 2,000 images; 7 interleaved rounds of 5 steps per thread count, the ratio of the medians.
    """

    params = (["DeepConvNet", "SimpleConvNet"],)
    param_names = ["net"]
    timeout = 600
    unit = "ratio"

    def setup(self, net):
        self._previous = zerodl.get_backend()
        zerodl.set_backend("numba")
        cls = DeepConvNet if net == "DeepConvNet" else SimpleConvNet
        self.net, self.opt = cls(dtype="float32", seed=0), Adam()
        self.x = rng(11).random((2000, 1, 28, 28)).astype("float32")
        self.t = rng(12).integers(0, 10, 2000)
        self.draw = rng(13)
        warm(self._step, calls=3)

    def teardown(self, net):
        zerodl.set_backend(self._previous)

    def _step(self):
        idx = self.draw.integers(0, 2000, MNIST_BATCH)
        self.net.train_step(self.x[idx], self.t[idx], self.opt)

    def _median_step(self, threads: int) -> float:
        times = []
        with zerodl.num_threads(threads):
            for _ in range(5):
                start = time.perf_counter()
                self._step()
                times.append(time.perf_counter() - start)
        return statistics.median(times)

    def track_scaling(self, net):
        one, two = [], []
        for _ in range(7):
            one.append(self._median_step(1))
            two.append(self._median_step(2))
        return statistics.median(one) / statistics.median(two)

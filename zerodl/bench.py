"""``zerodl bench``: NumPy vs Numba (vs PyTorch eager, torch.compile and JAX) for every kernel and training step, one table.

Run ``zerodl bench`` (or ``python -m zerodl.bench`` without the CLI), ``--quick`` for CI,
``--json FILE`` to keep the figures, ``--ch5`` to add the book's chapter 5 run end to end.

How it measures, and why:

* **One process per contender.** ``numpy`` (the NumPy backend: the book's layer-by-layer step, and
  the fused step's NumPy twin), ``numba`` (the compiled kernels, the layer-by-layer step and the
  fused ``train_step``) and the optional peers of the step rows: ``torch`` (the same training step
  in PyTorch eager), ``torch_compile`` (the same PyTorch model under ``torch.compile``, mode
  ``default`` unless ``--compile-mode``; the optimizer step stays eager) and ``jax`` (one
  ``jax.jit`` of batch gather, forward, ``jax.value_and_grad`` and the book's SGD/Adam in
  ``jax.numpy``; ``jax_enable_x64`` on, explicit dtypes). A peer whose package is missing is left
  out with one line (``jax: not installed — pip install 'zerodl[peers]'``). Thread pools of
  different libraries in one process (NumPy's OpenBLAS, SciPy's, PyTorch's OpenMP, XLA's) busy-wait
  against each other on a small machine, so every contender gets its own process, limited to the
  same ``--threads`` (:func:`zerodl.threads.set_num_threads`, ``torch.set_num_threads``; for XLA
  the ``NPROC`` environment variable, set before JAX starts: jax 0.10 sizes its CPU thread pool
  from it and ignores ``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false
  intra_op_parallelism_threads=1``, checked by CPU time over wall time of a 1000² product, 1.95
  either way, 1.00 with ``NPROC=1``).
* **Same nets, same batches, same optimizer.** Every contender starts from zerodl's initial
  weights for the seed, draws the same batch indices from the same pool, and reports the values
  (losses, accuracies) of its first calls (``results["first_values"]``): they agree across
  contenders up to rounding (Dropout rows excepted: each draws its own masks).
* **Compile time apart.** The compiling peers run each row's first 3 steps before anything is
  timed; those steps' time beyond 3 steady steps is the row's compile time (``results["compile"]``,
  the table's compile section), never part of a step time.
* **The allocator of the zerodl command.** Every worker calls :func:`zerodl.tune_malloc` (large
  freed blocks kept for reuse instead of being faulted in again each step), as ``zerodl train`` does.
* **Interleaved rounds, medians.** The workers start once (imports, JIT warm-up), then the parent
  asks them in turn, one at a time, for a round of measurements, rotating the order every round and
  pausing between contenders so the previous one's threads go back to sleep. Each case reports the
  median of its repeats in a round; the table shows the median over rounds. A noisy neighbour
  therefore hits every contender alike, and the machine's load average is printed with the table.
* **Every registered kernel** of :data:`zerodl.kernels.REGISTRY` for which :data:`KERNEL_INPUTS`
  knows how to build inputs at a realistic size (MNIST MLPs, a convolution batch of the book's
  chapter 7 net); ops without an input builder are listed as such, never silently dropped.
* **The BLAS bound.** For each MLP step, the matrix products it must do (forward, ``dW`` and
  ``dx`` except the first layer's) timed at the large-matrix rate the BLAS reaches on this machine
  (a 1024² product, the better of NumPy's and SciPy's OpenBLAS): how close the fused step comes to
  doing nothing but its products.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: Contenders, each measured in a process of its own. The peers ``torch`` (PyTorch eager),
#: ``torch_compile`` (``torch.compile``) and ``jax`` (``jax.jit``) are optional: a contender whose
#: package is missing is left out with one line saying how to install it.
CONTENDERS: tuple[str, ...] = ("numpy", "numba", "torch", "torch_compile", "jax")

#: ``--quick``'s contenders: no compiling peer (Inductor alone takes minutes over the step rows).
QUICK_CONTENDERS: tuple[str, ...] = ("numpy", "numba", "torch")

#: The peer contenders, in table order.
PEERS: tuple[str, ...] = ("torch", "torch_compile", "jax")

#: ``torch.compile`` modes ``BenchConfig.compile_mode`` accepts (no CUDA graphs: the bench runs on CPU).
COMPILE_MODES: tuple[str, ...] = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

#: Prefix of the protocol lines a worker writes to stdout (anything else on stdout is ignored).
_TAG = "@@zerodl-bench "

MNIST_DIR_DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "mnist"


# ----------------------------------------------------------------------------- configuration
@dataclasses.dataclass
class BenchConfig:
    """What to measure and how long.

    Attributes:
        size: ``"full"`` (realistic shapes) or ``"tiny"`` (the same cases at toy shapes, for tests).
        rounds: interleaved rounds per contender (medians over these).
        repeats: timed repeats per case within a round (the round reports their median).
        min_time: seconds one repeat should last (the number of calls per repeat is calibrated once).
        threads: threads of every BLAS / OpenMP / numba pool (default: the CPU count).
        dtypes: dtypes of the kernel rows.
        contenders: processes to run; a peer (``torch``, ``torch_compile``, ``jax``) whose package
            cannot be found is dropped with one line (``results["missing"]``).
        kernels / steps: which sections to measure.
        rows: keys of the step rows to measure (:func:`step_specs`); empty = every row.
        compile_mode: the ``torch.compile`` mode of the ``torch_compile`` contender.
        ch5: also run the book's chapter 5 training end to end (``ch5_iters`` iterations).
        ch5_data: ``"mnist"`` (the 10,000 real test images as training and test set) or ``"random"``.
        mnist_dir: where the MNIST IDX files are.
        pause: seconds between two contenders' rounds.
    """

    size: str = "full"
    rounds: int = 5
    repeats: int = 5
    min_time: float = 0.05
    threads: int = dataclasses.field(default_factory=lambda: os.cpu_count() or 1)
    dtypes: tuple[str, ...] = ("float64", "float32")
    contenders: tuple[str, ...] = CONTENDERS
    kernels: bool = True
    steps: bool = True
    ch5: bool = False
    ch5_iters: int = 10000
    ch5_data: str = "mnist"
    mnist_dir: str = str(MNIST_DIR_DEFAULT)
    pause: float = 0.3
    seed: int = 0
    rows: tuple[str, ...] = ()
    compile_mode: str = "default"

    @classmethod
    def quick(cls, **overrides: Any) -> BenchConfig:
        """A short run for CI: 2 rounds, 3 repeats, 10 ms per repeat, float64 kernels only, no
        compiling peer (:data:`QUICK_CONTENDERS`) unless ``contenders`` says otherwise."""
        base = {"rounds": 2, "repeats": 3, "min_time": 0.01, "dtypes": ("float64",), "pause": 0.05,
                "ch5_iters": 300, "contenders": QUICK_CONTENDERS}
        base.update(overrides)
        return cls(**base)

    def validate(self) -> None:
        """Raise ValueError on a setting that cannot work."""
        if self.size not in ("full", "tiny"):
            raise ValueError(f"size must be 'full' or 'tiny', got {self.size!r}")
        for name in ("rounds", "repeats", "threads", "ch5_iters"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not self.min_time > 0:
            raise ValueError(f"min_time must be > 0, got {self.min_time!r}")
        bad = [d for d in self.dtypes if d not in ("float32", "float64")]
        if bad or not self.dtypes:
            raise ValueError(f"dtypes must be float32 and/or float64, got {list(self.dtypes)}")
        unknown = [c for c in self.contenders if c not in CONTENDERS]
        if unknown or not self.contenders:
            raise ValueError(f"contenders must be among {', '.join(CONTENDERS)}, got {list(self.contenders)}")
        known = [s.key for s in step_specs(self.size)]
        bad_rows = [r for r in self.rows if r not in known]
        if bad_rows:
            raise ValueError(f"rows must be among {', '.join(known)}, got {list(bad_rows)}")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"compile_mode must be one of {', '.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.ch5_data not in ("mnist", "random"):
            raise ValueError(f"ch5_data must be 'mnist' or 'random', got {self.ch5_data!r}")


def torch_available() -> bool:
    """True when PyTorch can be imported (it stays an optional dependency)."""
    return importlib.util.find_spec("torch") is not None


# ----------------------------------------------------------------------------- kernel inputs
def _realistic(size: str, full: Any, tiny: Any) -> Any:
    return full if size == "full" else tiny


def _conv_shapes(size: str) -> dict[str, tuple[int, ...]]:
    # The book's SimpleConvNet on MNIST: 30 filters 5×5 over (1, 28, 28), batch 100.
    if size == "full":
        return {"x": (100, 1, 28, 28), "W": (30, 1, 5, 5)}
    return {"x": (4, 1, 6, 6), "W": (3, 1, 3, 3)}


def _in_affine(rng, dt, size):
    n, d, h = _realistic(size, (100, 784, 50), (4, 6, 5))
    x, W = rng.random((n, d)).astype(dt), (0.01 * rng.standard_normal((d, h))).astype(dt)
    return (x, W, np.zeros(h, dt)), f"({n},{d})@({d},{h})"


def _in_affine_backward(rng, dt, size):
    (x, W, _), shape = _in_affine(rng, dt, size)
    return (rng.standard_normal((x.shape[0], W.shape[1])).astype(dt), x, W), shape


def _act_shape(size):
    # The ReLU after SimpleConvNet's convolution: the biggest activation of the book's nets.
    return _realistic(size, (100, 30, 24, 24), (4, 3, 4, 4))


def _in_unary(rng, dt, size):
    shape = _act_shape(size)
    return (rng.standard_normal(shape).astype(dt),), str(shape)


def _in_relu_backward(rng, dt, size):
    shape = _act_shape(size)
    return (rng.standard_normal(shape).astype(dt), rng.random(shape) < 0.5), str(shape)


def _in_sigmoid_backward(rng, dt, size):
    shape = _act_shape(size)
    return (rng.standard_normal(shape).astype(dt), rng.random(shape).astype(dt)), str(shape)


def _in_softmax_forward(rng, dt, size):
    n, c = _realistic(size, (100, 10), (4, 3))
    return (rng.standard_normal((n, c)).astype(dt), rng.integers(0, c, n).astype(np.intp)), f"({n},{c})"


def _in_softmax_backward(rng, dt, size):
    (x, t), shape = _in_softmax_forward(rng, dt, size)
    y = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    return (y.astype(dt), t, 1.0), shape


def _param_shape(size):
    return _realistic(size, (784, 100), (6, 5))


def _optim_inputs(n_state):
    def build(rng, dt, size):
        shape = _param_shape(size)
        arrays = [rng.standard_normal(shape).astype(dt) for _ in range(2)]
        states = [np.abs(rng.standard_normal(shape)).astype(dt) for _ in range(n_state)]
        return (*arrays, *states), str(shape)

    return build


def _with_hyper(build, *hyper):
    def wrapped(rng, dt, size):
        args, shape = build(rng, dt, size)
        return (*args, *hyper), shape

    return wrapped


def _in_bias_act(rng, dt, size):
    # An activation's fused-step epilogue: bias + activation over a conv layer's output.
    shape = _act_shape(size)
    z = rng.standard_normal(shape).astype(dt)
    return (z, rng.standard_normal(shape[1]).astype(dt), np.empty_like(z)), str(shape)


def _in_act_backward_into(rng, dt, size):
    shape = _act_shape(size)
    kept = rng.standard_normal(shape).astype(dt)
    return (rng.standard_normal(shape).astype(dt), kept, np.empty_like(kept)), str(shape)


def _in_softmax_grad(rng, dt, size):
    (x, t), shape = _in_softmax_forward(rng, dt, size)
    return (x, t, np.empty_like(x)), shape


def _in_affine_backward_into(rng, dt, size):
    (dout, x, W), shape = _in_affine_backward(rng, dt, size)
    return (dout, x, W, np.empty_like(x), np.empty_like(W), np.empty(W.shape[1], dt)), shape


def _in_affine_sgd_update(rng, dt, size):
    (dout, x, W), shape = _in_affine_backward(rng, dt, size)
    return (dout, x, W, np.empty_like(W), 0.01), shape


def _in_conv_forward(rng, dt, size):
    s = _conv_shapes(size)
    x = rng.random(s["x"]).astype(dt)
    W = (0.01 * rng.standard_normal(s["W"])).astype(dt)
    return (x, W, np.zeros(s["W"][0], dt), 1, 0), f"x{s['x']} W{s['W']}"


def _in_conv_backward(rng, dt, size):
    from zerodl import kernels

    (x, W, b, stride, pad), shape = _in_conv_forward(rng, dt, size)
    out, _col = kernels.get("conv_forward", "numpy")(x, W, b, stride, pad)
    return (rng.standard_normal(out.shape).astype(dt), x, W, None, stride, pad), shape


def _deep_conv2_shapes(size):
    # DeepConvNet's second layer (16 -> 16 filters 3x3, pad 1, 28x28): its costliest conv + ReLU + pool.
    return _realistic(size, ((100, 16, 28, 28), (16, 16, 3, 3)), ((2, 4, 6, 6), (4, 4, 3, 3)))


def _in_conv_relu_forward(rng, dt, size):
    xs, ws = _deep_conv2_shapes(size)
    x = rng.random(xs).astype(dt)
    W = (0.1 * rng.standard_normal(ws)).astype(dt)
    return (x, W, (0.01 * rng.standard_normal(ws[0])).astype(dt), 1, 1), f"x{xs} W{ws} p1"


def _in_conv_relu_backward(rng, dt, size):
    from zerodl import kernels

    (x, W, b, stride, pad), shape = _in_conv_relu_forward(rng, dt, size)
    out, _ = kernels.get("conv_relu_forward", "numpy")(x, W, b, stride, pad)
    return (rng.standard_normal(out.shape).astype(dt), out, x, W, None, stride, pad), shape


def _in_conv_relu_pool_backward(rng, dt, size):
    from zerodl import kernels

    (x, W, b, stride, pad), shape = _in_conv_relu_forward(rng, dt, size)
    pooled, arg_max, _ = kernels.get("conv_relu_pool_forward", "numpy")(x, W, b, stride, pad)
    return (rng.standard_normal(pooled.shape).astype(dt), pooled, arg_max, x, W, None, stride, pad), shape


def _in_conv_relu_pool_affine_forward(rng, dt, size):
    # SimpleConvNet's conv + ReLU + pool block and the Affine(4320, 100) after it, in two row blocks
    # as a conv step runs them.
    s = _conv_shapes(size)
    x = rng.random(s["x"]).astype(dt)
    W = (0.1 * rng.standard_normal(s["W"])).astype(dt)
    n, fn = s["x"][0], s["W"][0]
    oh = s["x"][2] - s["W"][2] + 1
    features = fn * (oh // 2) ** 2
    W2 = (0.01 * rng.standard_normal((features, 100))).astype(dt)
    args = (x, W, (0.01 * rng.standard_normal(fn)).astype(dt), 1, 0, W2, np.empty((n, 100), dt), 2)
    return args, f"x{s['x']} W{s['W']} then ({features}, 100)"


def _in_conv_relu_pool_affine_backward(rng, dt, size):
    # The backward of the same two layers (no dx for the convolution, as a first layer).
    from zerodl import kernels

    (x, W, b, stride, pad, W2, z, parts), shape = _in_conv_relu_pool_affine_forward(rng, dt, size)
    pooled, arg_max, _ = kernels.get("conv_relu_pool_forward", "numpy")(x, W, b, stride, pad)
    n, h = z.shape
    grads = (np.empty((n, W2.shape[0]), dt), np.empty_like(W2), np.empty(h, dt))
    return (rng.standard_normal((n, h)).astype(dt), W2, *grads, parts, pooled, arg_max, x, W, None, stride, pad,
            False), shape


def _in_im2col(rng, dt, size):
    s = _conv_shapes(size)
    fh, fw = s["W"][2:]
    return (rng.random(s["x"]).astype(dt), fh, fw, 1, 0), f"x{s['x']} {fh}x{fw}"


def _in_col2im(rng, dt, size):
    from zerodl import kernels

    (x, fh, fw, stride, pad), shape = _in_im2col(rng, dt, size)
    col = kernels.get("im2col", "numpy")(x, fh, fw, stride, pad)
    return (rng.standard_normal(col.shape).astype(dt), x.shape, fh, fw, stride, pad), shape


def _pool_input_shape(size):
    return _realistic(size, (100, 30, 24, 24), (4, 3, 4, 4))


def _in_pool_forward(rng, dt, size):
    shape = _pool_input_shape(size)
    return (rng.standard_normal(shape).astype(dt), 2, 2, 2, 0), f"{shape} 2x2/2"


def _in_pool_backward(rng, dt, size):
    from zerodl import kernels

    (x, ph, pw, stride, pad), shape = _in_pool_forward(rng, dt, size)
    out, arg_max = kernels.get("max_pool_forward", "numpy")(x, ph, pw, stride, pad)
    return (rng.standard_normal(out.shape).astype(dt), arg_max, x.shape, ph, pw, stride, pad), shape


def _bn_shape(size):
    return _realistic(size, (100, 100), (4, 5))


def _in_bn_train(rng, dt, size):
    n, d = _bn_shape(size)
    x = rng.standard_normal((n, d)).astype(dt)
    ones, zeros = np.ones(d, dt), np.zeros(d, dt)
    return (x, ones, zeros, zeros.copy(), ones.copy(), 0.9), f"({n},{d})"


def _in_bn_test(rng, dt, size):
    (x, g, b, rm, rv, _), shape = _in_bn_train(rng, dt, size)
    return (x, g, b, rm, rv), shape


def _in_bn_backward(rng, dt, size):
    from zerodl import kernels

    args, shape = _in_bn_train(rng, dt, size)
    _, xc, xn, std = kernels.get("batchnorm_forward_train", "numpy")(*args)
    return (rng.standard_normal(args[0].shape).astype(dt), args[1], xc, xn, std), shape


def _in_dropout_mask(rng, dt, size):
    n, d = _bn_shape(size)
    return (rng.standard_normal((n, d)).astype(dt), rng.random((n, d)), 0.5), f"({n},{d})"


def _in_dropout_apply(rng, dt, size):
    n, d = _bn_shape(size)
    return (rng.standard_normal((n, d)).astype(dt), rng.random((n, d)) > 0.5), f"({n},{d})"


def _in_dropout_predict(rng, dt, size):
    n, d = _bn_shape(size)
    return (rng.standard_normal((n, d)).astype(dt), 0.5), f"({n},{d})"


def _in_count_nonfinite(rng, dt, size):
    # What a training step scans when its first layer is a convolution: an MNIST batch.
    shape = _realistic(size, (100, 1, 28, 28), (4, 1, 6, 6))
    return (rng.random(shape).astype(dt),), str(shape)


#: Op name → ``build(rng, dtype, size) -> (args, shape description)``. Ops registered in
#: :data:`zerodl.kernels.REGISTRY` but missing here are reported as "no input builder".
KERNEL_INPUTS: dict[str, Callable[..., tuple[tuple, str]]] = {
    "affine_forward": _in_affine,
    "affine_backward": _in_affine_backward,
    "relu_forward": _in_unary,
    "relu_backward": _in_relu_backward,
    "sigmoid_forward": _in_unary,
    "sigmoid_backward": _in_sigmoid_backward,
    "softmax_loss_forward": _in_softmax_forward,
    "softmax_loss_backward": _in_softmax_backward,
    "sgd_update": _with_hyper(_optim_inputs(0), 0.01),
    "momentum_update": _with_hyper(_optim_inputs(1), 0.01, 0.9),
    "nesterov_update": _with_hyper(_optim_inputs(1), 0.01, 0.9),
    "adagrad_update": _with_hyper(_optim_inputs(1), 0.01, 1e-7),
    "rmsprop_update": _with_hyper(_optim_inputs(1), 0.01, 0.99, 1e-7),
    "adam_update": _with_hyper(_optim_inputs(2), 0.001, 0.9, 0.999, 1e-7),
    "weight_decay_grad": _with_hyper(_optim_inputs(0), 0.01),
    "bias_forward": _in_bias_act,
    "affine_backward_into": _in_affine_backward_into,
    "affine_sgd_update": _in_affine_sgd_update,
    "relu_bias_forward": _in_bias_act,
    "relu_backward_into": _in_act_backward_into,
    "sigmoid_bias_forward": _in_bias_act,
    "sigmoid_backward_into": _in_act_backward_into,
    "gelu_forward": _in_unary,
    "gelu_backward": _in_sigmoid_backward,
    "gelu_bias_forward": _in_bias_act,
    "gelu_backward_into": _in_act_backward_into,
    "softmax_loss_grad": _in_softmax_grad,
    "conv_forward": _in_conv_forward,
    "conv_relu_forward": _in_conv_relu_forward,
    "conv_relu_backward": _in_conv_relu_backward,
    "conv_relu_pool_forward": _in_conv_relu_forward,
    "conv_relu_pool_inference": _in_conv_relu_forward,
    "conv_relu_pool_backward": _in_conv_relu_pool_backward,
    "conv_relu_pool_affine_forward": _in_conv_relu_pool_affine_forward,
    "conv_relu_pool_affine_backward": _in_conv_relu_pool_affine_backward,
    "conv_backward": _in_conv_backward,
    "im2col": _in_im2col,
    "col2im": _in_col2im,
    "max_pool_forward": _in_pool_forward,
    "max_pool_backward": _in_pool_backward,
    "batchnorm_forward_train": _in_bn_train,
    "batchnorm_forward_test": _in_bn_test,
    "batchnorm_backward": _in_bn_backward,
    "dropout_mask_forward": _in_dropout_mask,
    "dropout_forward": _in_dropout_apply,
    "dropout_backward": _in_dropout_apply,
    "dropout_predict": _in_dropout_predict,
    "count_nonfinite": _in_count_nonfinite,
}


# ----------------------------------------------------------------------------- training steps
#: Samples in the pool each step draws its batch from: larger than the caches (10,000 MNIST-shaped
#: images are 31 MB in float32), as a training run's data set is. One batch reused every step stays
#: in cache and reads 25-35 % faster than training runs.
POOL_FULL = 10000


@dataclasses.dataclass(frozen=True)
class StepSpec:
    """One training-step (or inference) row: a network, an optimizer, a batch, a dtype.

    ``kind``: ``"mlp"``, ``"simple_conv"``, ``"deep_conv"`` (train steps) or ``"deep_conv_infer"``
    (inference: the accuracy over the whole pool, ``no_grad``/eval mode for PyTorch).
    """

    key: str
    title: str
    kind: str
    sizes: tuple[int, ...]  # MLP widths (input, hidden..., output)
    activation: str
    optimizer: str
    lr: float
    batch: int
    dtype: str
    pool: int = POOL_FULL

    @property
    def inference(self) -> bool:
        return self.kind.endswith("_infer")

    def matmul_flops(self) -> float:
        """Floating-point operations of the step's matrix products: for a training step, forward,
        ``dW`` and ``dx`` except the first layer's; for inference, the forward over the pool."""
        layers = _weight_layer_flops(self)
        if self.inference:
            return float(sum(f for f in layers) * self.pool)
        return float(sum((2 if k == 0 else 3) * f for k, f in enumerate(layers)) * self.batch)


def _weight_layer_flops(spec: StepSpec) -> list[float]:
    """Forward FLOPs per sample of each weight layer (convolutions and affines), in order."""
    if spec.kind == "mlp":
        return [2.0 * d * h for d, h in zip(spec.sizes[:-1], spec.sizes[1:])]
    net = _zerodl_net(spec, 0)
    shape: tuple[int, ...] = _sample_shape(spec)
    flops = []
    for layer in net.layers.values():
        if hasattr(layer, "output_shape"):
            out = layer.output_shape(shape)
            if getattr(layer, "W", None) is not None:
                flops.append(2.0 * np.prod(out) * np.prod(layer.W.shape[1:]))
            shape = out
        elif getattr(layer, "W", None) is not None:
            flops.append(2.0 * layer.W.shape[0] * layer.W.shape[1])
            shape = (layer.W.shape[1],)
    return flops


def step_specs(size: str) -> list[StepSpec]:
    """The training steps of the table: the MLPs, then the book's chapter 7-8 conv nets."""
    if size == "tiny":
        return [
            StepSpec("two_layer", "TwoLayerNet 6-5-3 SGD", "mlp", (6, 5, 3), "relu", "sgd", 0.1, 4, "float64", 40),
            StepSpec("mlp_adam", "MultiLayerNet 6-5x2-3 Adam", "mlp", (6, 5, 5, 3), "relu", "adam", 0.001, 4,
                     "float32", 40),
            StepSpec("simple_conv", "SimpleConvNet tiny SGD", "simple_conv", (), "relu", "sgd", 0.1, 2,
                     "float64", 10),
            StepSpec("deep_conv", "DeepConvNet tiny Adam", "deep_conv", (), "relu", "adam", 0.001, 2, "float32", 10),
            StepSpec("deep_conv_infer", "DeepConvNet tiny inference", "deep_conv_infer", (), "relu", "", 0.0, 5,
                     "float64", 10),
        ]
    specs = [
        StepSpec("two_layer", "TwoLayerNet 784-50-10, SGD", "mlp", (784, 50, 10), "relu", "sgd", 0.1, 100,
                 "float64"),
        StepSpec("mlp_adam", "MultiLayerNet 784-100x5-10, Adam", "mlp", (784, 100, 100, 100, 100, 100, 10),
                 "relu", "adam", 0.001, 100, "float32"),
        StepSpec("mlp_big", "MLP 784-1000-1000-10, SGD", "mlp", (784, 1000, 1000, 10), "relu", "sgd", 0.01,
                 256, "float32"),
    ]
    for dt in ("float32", "float64"):  # Adam, as the book's chapter 7 and 8 trainings use it
        specs.append(StepSpec(f"simple_conv_{dt}", "SimpleConvNet (ch. 7), Adam", "simple_conv", (), "relu",
                              "adam", 0.001, 100, dt))
    for dt in ("float32", "float64"):
        specs.append(StepSpec(f"deep_conv_{dt}", "DeepConvNet (ch. 8), Adam", "deep_conv", (), "relu", "adam",
                              0.001, 100, dt))
    for dt in ("float32", "float64"):
        specs.append(StepSpec(f"deep_conv_infer_{dt}", "DeepConvNet inference, 10,000 images", "deep_conv_infer",
                              (), "relu", "", 0.0, 1000, dt))
    return specs


def _tiny(spec: StepSpec) -> bool:
    return spec.pool < 100


def _sample_shape(spec: StepSpec) -> tuple[int, ...]:
    if spec.kind == "mlp":
        return (spec.sizes[0],)
    if spec.kind == "simple_conv":
        return (1, 6, 6) if _tiny(spec) else (1, 28, 28)
    return (1, 12, 12) if _tiny(spec) else (1, 28, 28)


def _classes(spec: StepSpec) -> int:
    return spec.sizes[-1] if spec.kind == "mlp" else (3 if _tiny(spec) else 10)


def _zerodl_net(spec: StepSpec, seed: int):
    from zerodl.networks import DeepConvNet, MultiLayerNet, SimpleConvNet

    if spec.kind == "simple_conv":
        if _tiny(spec):
            return SimpleConvNet((1, 6, 6), {"filter_num": 2, "filter_size": 3, "pad": 0, "stride": 1},
                                 hidden_size=4, output_size=3, dtype=spec.dtype, seed=seed)
        return SimpleConvNet(dtype=spec.dtype, seed=seed)
    if spec.kind.startswith("deep_conv"):
        if _tiny(spec):
            return DeepConvNet((1, 12, 12), hidden_size=6, output_size=3, dtype=spec.dtype, seed=seed)
        return DeepConvNet(dtype=spec.dtype, seed=seed)
    return MultiLayerNet(spec.sizes[0], list(spec.sizes[1:-1]), spec.sizes[-1], activation=spec.activation,
                         weight_init_std=spec.activation, dtype=spec.dtype, seed=seed)


def _pool_data(spec: StepSpec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The samples the steps draw from: ``(x (pool, *sample), labels (pool,))`` of the row's dtype."""
    rng = np.random.default_rng(seed)
    x = rng.random((spec.pool, *_sample_shape(spec))).astype(spec.dtype)
    return x, rng.integers(0, _classes(spec), spec.pool)


def _zerodl_optimizer(spec: StepSpec):
    from zerodl.optimizer import get_optimizer

    return get_optimizer(spec.optimizer, lr=spec.lr)


def _zerodl_step_cases(spec: StepSpec, contender: str, seed: int) -> dict[str, Callable[[], Any]]:
    """``{variant: step()}``: the layer-by-layer step (``book`` on NumPy, ``layers`` on Numba) and
    the fused ``train_step`` (``fused``); every call draws a random batch from the pool and gathers it,
    as the Trainer does. Inference rows: ``fused`` = ``net.accuracy`` over the whole pool."""
    x, t = _pool_data(spec, seed)
    if spec.inference:
        net = _zerodl_net(spec, seed)
        return {"fused": lambda: net.accuracy(x, t, batch_size=spec.batch)}
    rng = np.random.default_rng(seed + 1)
    layer_net, fused_net = _zerodl_net(spec, seed), _zerodl_net(spec, seed)
    layer_opt, fused_opt = _zerodl_optimizer(spec), _zerodl_optimizer(spec)

    def layer_step():
        idx = rng.choice(spec.pool, spec.batch)
        layer_opt.update(layer_net.params, layer_net.gradient(x[idx], t[idx]))

    def fused_step():
        idx = rng.choice(spec.pool, spec.batch)
        return fused_net.train_step(x[idx], t[idx], fused_opt)

    return {("book" if contender == "numpy" else "layers"): layer_step, "fused": fused_step}


def _torch_model(spec: StepSpec) -> Any:
    """The row's network in PyTorch, layer for layer the book's."""
    from torch import nn

    classes = _classes(spec)
    tiny = _tiny(spec)
    if spec.kind == "simple_conv":
        fn, fs, hidden = (2, 3, 4) if tiny else (30, 5, 100)
        side = _sample_shape(spec)[-1]
        pooled = ((side - fs + 1) // 2) ** 2 * fn
        return nn.Sequential(nn.Conv2d(1, fn, fs), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                             nn.Linear(pooled, hidden), nn.ReLU(), nn.Linear(hidden, classes))
    if spec.kind.startswith("deep_conv"):
        hidden = 6 if tiny else 50
        side = _sample_shape(spec)[-1]
        flat = 64 * ((((side // 2) + 2) // 2) // 2) ** 2
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=2), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
            nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Dropout(0.5), nn.Linear(hidden, classes),
            nn.Dropout(0.5))
    layers: list[Any] = []
    for k, (d, h) in enumerate(zip(spec.sizes[:-1], spec.sizes[1:])):
        layers.append(nn.Linear(d, h))
        if k < len(spec.sizes) - 2:
            layers.append(nn.ReLU() if spec.activation == "relu" else nn.Sigmoid())
    return nn.Sequential(*layers)


def _torch_step_case(spec: StepSpec, seed: int, compile_mode: str | None = None) -> Callable[[], Any]:
    """The same step in PyTorch eager: a random batch gathered from the pool, ``zero_grad``, forward,
    ``cross_entropy``, ``backward``, ``step``; inference rows: the accuracy over the pool under
    ``no_grad`` in eval mode, ``spec.batch`` samples at a time. The model starts from zerodl's
    initial weights (:func:`_zerodl_initial_params`). Adam is ``torch.optim.Adam(eps=1e-7)``:
    ``p -= lr/(1-β1^t) · m / (sqrt(v)/sqrt(1-β2^t) + eps)``, the book's update but for ε, which
    the book adds to ``sqrt(v)`` unscaled (PyTorch's ε is the book's times ``sqrt(1-β2^t)``).

    ``compile_mode``: ``torch.compile`` the model in this mode (``"default"``,
    ``"max-autotune-no-cudagraphs"``, ...); None = eager. See :func:`_torch_compile_step_case`."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = _torch_model(spec).to(getattr(torch, spec.dtype))
    _load_torch_params(model, _zerodl_initial_params(spec, seed))
    x_np, t_np = _pool_data(spec, seed)
    x = torch.from_numpy(x_np)
    t = torch.from_numpy(t_np.astype(np.int64))
    if spec.inference:
        model.eval()
        run = model if compile_mode is None else torch.compile(model, mode=compile_mode)

        def infer():
            correct = 0
            with torch.no_grad():
                for start in range(0, spec.pool, spec.batch):
                    scores = run(x[start : start + spec.batch])
                    correct += int((scores.argmax(dim=1) == t[start : start + spec.batch]).sum())
            return correct / spec.pool

        return infer
    if spec.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=spec.lr, eps=1e-7)  # the book's epsilon
    else:
        opt = torch.optim.SGD(model.parameters(), lr=spec.lr)
    run = model if compile_mode is None else torch.compile(model, mode=compile_mode)
    rng = np.random.default_rng(seed + 1)

    def step():
        idx = torch.from_numpy(rng.choice(spec.pool, spec.batch))
        opt.zero_grad()
        loss = F.cross_entropy(run(x[idx]), t[idx])
        loss.backward()
        opt.step()
        return loss

    step.model = model  # type: ignore[attr-defined]  # the parameters, for the tests
    return step


# ----------------------------------------------------------------------------- the compiling peers
#: The package each peer contender imports, and how to install it (one line when it is missing).
PEER_PACKAGES: dict[str, str] = {"torch": "torch", "torch_compile": "torch", "jax": "jax"}
INSTALL_HINT = "pip install 'zerodl[peers]'"

#: Batches a compiling peer runs before its step is timed; their time, less that many steady steps,
#: is its compile time (torch.compile compiles the optimizer step again once Adam's state exists).
COMPILE_WARMUP_CALLS = 3


def peer_available(contender: str) -> bool:
    """True when the package a contender needs (:data:`PEER_PACKAGES`) can be found."""
    package = PEER_PACKAGES.get(contender)
    return package is None or importlib.util.find_spec(package) is not None


def missing_message(contender: str) -> str:
    """The one line that says a peer contender is left out, and how to install it."""
    return f"{contender}: not installed — {INSTALL_HINT}"


def _zerodl_initial_params(spec: StepSpec, seed: int) -> list[np.ndarray]:
    """The zerodl net's initial parameters ``[W1, b1, W2, b2, ...]`` (layer order, the row's dtype):
    every contender starts from these very weights (zerodl's ``(in, out)`` affine layout)."""
    net = _zerodl_net(spec, seed)
    count = sum(1 for k in net.params if k.startswith("W"))
    return [np.array(net.params[f"{p}{i}"]) for i in range(1, count + 1) for p in ("W", "b")]


def _load_torch_params(model: Any, params: Sequence[np.ndarray]) -> None:
    """Copy zerodl's ``[W1, b1, ...]`` into ``model``'s Conv2d/Linear layers, in order (an affine's
    ``W`` is ``(in, out)`` in zerodl, ``(out, in)`` in PyTorch)."""
    import torch
    from torch import nn

    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if 2 * len(layers) != len(params):
        raise ValueError(f"torch model has {len(layers)} weight layers, zerodl's net {len(params) // 2}")
    with torch.no_grad():
        for layer, W, b in zip(layers, params[0::2], params[1::2]):
            w = W.T if isinstance(layer, nn.Linear) else W
            if tuple(layer.weight.shape) != w.shape:
                raise ValueError(f"weight shape {tuple(layer.weight.shape)} in torch, {w.shape} in zerodl")
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            layer.bias.copy_(torch.from_numpy(b))


def _torch_compile_step_case(spec: StepSpec, seed: int, mode: str | None = None) -> Callable[[], Any]:
    """The PyTorch step of :func:`_torch_step_case` with ``torch.compile`` (``mode`` None = the
    default mode): the model compiled, forward and (through AOTAutograd) backward, by Inductor; the
    optimizer's ``step`` stays PyTorch's eager multi-tensor one. Compiling ``opt.step`` too, as
    PyTorch's tutorial on compiling the optimizer does, was tried: in torch 2.13 on CPU it breaks
    its graph at the profiler's ``record_function`` and made the tiny MLP step 18.7 ms instead of
    0.28 ms. Compilation happens in the first calls (:data:`COMPILE_WARMUP_CALLS`), which the worker
    times apart."""
    return _torch_step_case(spec, seed, compile_mode=mode or "default")


def _jax_plan(spec: StepSpec) -> list[tuple[str, int]]:
    """The row's network as ``(op, arg)`` steps: ``conv`` (arg: padding), ``affine``, ``relu``,
    ``sigmoid``, ``pool`` (2×2 max, stride 2), ``flatten``, ``dropout`` (ratio 0.5, the book's)."""
    if spec.kind == "simple_conv":
        return [("conv", 0), ("relu", 0), ("pool", 0), ("flatten", 0), ("affine", 0), ("relu", 0), ("affine", 0)]
    if spec.kind.startswith("deep_conv"):
        plan: list[tuple[str, int]] = []
        for pads in ((1, 1), (1, 2), (1, 1)):
            plan += [("conv", pads[0]), ("relu", 0), ("conv", pads[1]), ("relu", 0), ("pool", 0)]
        return plan + [("flatten", 0), ("affine", 0), ("relu", 0), ("dropout", 0), ("affine", 0), ("dropout", 0)]
    plan = []
    for k in range(len(spec.sizes) - 1):
        plan.append(("affine", 0))
        if k < len(spec.sizes) - 2:
            plan.append((spec.activation, 0))
    return plan


def _jax_functions(spec: StepSpec) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(forward(params, x, key, train), loss(params, x, t, key))`` in ``jax.numpy``/``lax``, the
    book's maths: NCHW convolutions, 2×2 max-pools, Dropout as the book's (a mask ``rand > 0.5`` in
    training, ``x * 0.5`` at test time), and the book's softmax cross-entropy ``-mean(log(y_t + 1e-7))``
    with the book's gradient ``(y - onehot) / N``."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    plan = _jax_plan(spec)

    def forward(params, x, key, train):
        k = 0
        for op, arg in plan:
            if op == "conv":
                W, b = params[2 * k], params[2 * k + 1]
                k += 1
                x = lax.conv_general_dilated(x, W, (1, 1), [(arg, arg), (arg, arg)],
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
                x = x + b[None, :, None, None]
            elif op == "affine":
                W, b = params[2 * k], params[2 * k + 1]
                k += 1
                x = x @ W + b
            elif op == "relu":
                x = jax.nn.relu(x)  # gradient 0 at 0, as the book's mask x > 0 (jnp.maximum's is 1/2)
            elif op == "sigmoid":
                x = jax.nn.sigmoid(x)
            elif op == "pool":
                # A scalar -inf start makes this the max monoid, which JAX differentiates.
                x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2), (1, 1, 2, 2), "VALID")
            elif op == "flatten":
                x = x.reshape(x.shape[0], -1)
            elif op == "dropout":
                if train:
                    key, sub = jax.random.split(key)
                    x = x * (jax.random.uniform(sub, x.shape, x.dtype) > 0.5)
                else:
                    x = x * jnp.asarray(0.5, x.dtype)
        return x

    def loss(params, x, t, key):
        scores = forward(params, x, key, True)
        rows = jnp.arange(t.shape[0])
        book = -jnp.mean(jnp.log(jax.nn.softmax(scores, axis=1)[rows, t] + 1e-7))
        # The book's value; the book's gradient (softmax - one-hot) / N, which ignores the 1e-7.
        plain = -jnp.mean(jax.nn.log_softmax(scores, axis=1)[rows, t])
        return plain + lax.stop_gradient(book - plain)

    return forward, loss


def _jax_optimizer(name: str, lr: float, dt: Any) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(init_state(params), update(params, grads, state) -> (params, state))``: the book's SGD or
    Adam written in ``jax.numpy`` for parameters of dtype ``dt`` (Adam: ``lr_t = lr sqrt(1 - β2^t) /
    (1 - β1^t)`` in double precision as zerodl's Python float, ``m += (1 - β1)(g - m)``,
    ``v += (1 - β2)(g² - v)``, ``p -= lr_t m / (sqrt(v) + 1e-7)``); pure functions, for ``jax.jit``."""
    import jax.numpy as jnp

    beta1, beta2 = 0.9, 0.999
    if name not in ("sgd", "adam"):
        raise ValueError(f"JAX peer: optimizer must be 'sgd' or 'adam', got {name!r}")

    def init_state(params):
        if name == "sgd":
            return ()
        return jnp.asarray(0, jnp.int32), [jnp.zeros_like(p) for p in params], [jnp.zeros_like(p) for p in params]

    def update(params, grads, state):
        if name == "sgd":
            return [p - jnp.asarray(lr, dt) * g for p, g in zip(params, grads)], state
        it, ms, vs = state
        it = it + 1
        itf = it.astype(jnp.float64)
        lr_t = (lr * jnp.sqrt(1.0 - beta2**itf) / (1.0 - beta1**itf)).astype(dt)
        ms = [m + (1 - beta1) * (g - m) for m, g in zip(ms, grads)]
        vs = [v + (1 - beta2) * (g * g - v) for v, g in zip(vs, grads)]
        params = [p - lr_t * m / (jnp.sqrt(v) + jnp.asarray(1e-7, dt)) for p, m, v in zip(params, ms, vs)]
        return params, (it, ms, vs)

    return init_state, update


def _jax_step_case(spec: StepSpec, seed: int) -> Callable[[], Any]:
    """The same step in JAX: one ``jax.jit`` of the batch gather, forward, ``jax.value_and_grad`` and
    the book's SGD/Adam update written in ``jax.numpy`` (:func:`_jax_optimizer`), the parameters and
    optimizer state donated to the update; each call returns the loss before the update
    (waited for). Inference rows: ``jit`` of the forward and the correct count, ``spec.batch``
    samples at a time. Needs ``jax_enable_x64`` for float64 rows (the JAX worker turns it on)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    dt = jnp.dtype(spec.dtype)
    x_np, t_np = _pool_data(spec, seed)
    x_pool, t_pool = jnp.asarray(x_np, dt), jnp.asarray(t_np, jnp.int64)
    params = [jnp.asarray(p, dt) for p in _zerodl_initial_params(spec, seed)]
    forward, loss_fn = _jax_functions(spec)
    if spec.inference:
        @jax.jit
        def correct(params, x_pool, t_pool, start):
            xb = lax.dynamic_slice_in_dim(x_pool, start, spec.batch)
            tb = lax.dynamic_slice_in_dim(t_pool, start, spec.batch)
            return jnp.sum(jnp.argmax(forward(params, xb, None, False), axis=1) == tb)

        def infer():
            total = sum(int(correct(params, x_pool, t_pool, start)) for start in range(0, spec.pool, spec.batch))
            return total / spec.pool

        return infer
    init_state, update = _jax_optimizer(spec.optimizer, spec.lr, dt)

    def train_step(params, state, key, x_pool, t_pool, idx):
        key, sub = jax.random.split(key)
        loss, grads = jax.value_and_grad(loss_fn)(params, x_pool[idx], t_pool[idx], sub)
        params, state = update(params, grads, state)
        return params, state, key, loss

    step_jit = jax.jit(train_step, donate_argnums=(0, 1))
    holder: dict[str, Any] = {"params": params, "key": jax.random.key(seed), "state": init_state(params)}
    rng = np.random.default_rng(seed + 1)

    def step():
        idx = jnp.asarray(rng.choice(spec.pool, spec.batch))
        holder["params"], holder["state"], holder["key"], loss = step_jit(
            holder["params"], holder["state"], holder["key"], x_pool, t_pool, idx)
        return loss.block_until_ready()

    step.holder = holder  # type: ignore[attr-defined]  # the current parameters, for the tests
    return step


#: Values (losses before each update; accuracies of inference rows) of a row's first calls that every
#: worker reports: the contenders start from the same weights and draw the same batches, so they agree.
FIRST_VALUES = 3


def _first_values(fn: Callable[[], Any], calls: int = FIRST_VALUES) -> tuple[list[float], float]:
    """``(values, seconds)`` of the first ``calls`` calls of a fresh step: what each returned (a
    loss or an accuracy, as a float) and how long they took together."""
    values = []
    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
        values.append(float(out.detach() if hasattr(out, "detach") else out))
    return values, time.perf_counter() - start


def _compile_warmup(fn: Callable[[], Any], calls: int = COMPILE_WARMUP_CALLS) -> tuple[float, list[float]]:
    """``(compile seconds, first values)``: the seconds the first ``calls`` calls of a fresh ``fn``
    took beyond ``calls`` steady calls (the median of the next three), kept out of every step time,
    and what those first calls returned (see :func:`_first_values`)."""
    values, first = _first_values(fn, calls)
    steady = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        steady.append(time.perf_counter() - t0)
    return max(first - calls * statistics.median(steady), 0.0), values


def _brief_error(exc: BaseException) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 160 else text[:157] + "..."


def _rss_increase(fn: Callable[[], Any], calls: int = 3) -> int | None:
    """Bytes by which the process's resident set grows at its peak over ``calls`` calls of ``fn``
    (Linux: the peak is reset through /proc/self/clear_refs first); ``None`` elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
        for _ in range(calls):
            fn()
        return (_status_kib("VmHWM") - before) * 1024
    except OSError:
        return None


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


# ----------------------------------------------------------------------------- the chapter 5 run
def _ch5_data(config: BenchConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """``(x float32 (N, 784) in [0, 1], one-hot t float32 (N, 10), description)``."""
    if config.ch5_data == "mnist":
        from zerodl.datasets import read_idx

        d = Path(config.mnist_dir)
        images = read_idx(d / "t10k-images-idx3-ubyte.gz")
        labels = read_idx(d / "t10k-labels-idx1-ubyte.gz")
        x = images.reshape(len(images), -1).astype(np.float32) / 255
        desc = f"MNIST t10k ({len(x)} real images) as training and test set"
    else:
        rng = np.random.default_rng(config.seed)
        n = 10000 if config.size == "full" else 50
        x = rng.random((n, 784)).astype(np.float32)
        labels = rng.integers(0, 10, n)
        desc = f"random data of MNIST's shape ({n}×784)"
    if config.size == "tiny":
        x, labels = x[:50], labels[:50]
    t = np.eye(10, dtype=np.float32)[labels]
    return x, t, desc


def _ch5_run(variant: str, x: np.ndarray, t: np.ndarray, iters: int, seed: int) -> dict[str, Any]:
    """The book's ``ch05/train_neuralnet.py`` loop: TwoLayerNet(784, 50, 10), batch 100, lr 0.1,
    train and test accuracy every epoch (here the test set is ``x`` itself).

    ``book``: ``gradient``, update, then ``loss`` after the update (the book's record);
    ``fused``: ``train_step`` (the loss recorded is the one before the update, no extra forward);
    ``fused+loss``: ``train_step`` then the book's after-update ``loss`` as well.
    """
    from zerodl.networks import TwoLayerNet
    from zerodl.optimizer import SGD

    net = TwoLayerNet(784, 50, 10, seed=seed)
    opt = SGD(0.1)
    rng = np.random.default_rng(seed)
    train_size, batch = x.shape[0], min(100, x.shape[0])
    iter_per_epoch = max(train_size // batch, 1)
    losses, train_acc, test_acc = [], [], []
    start = time.perf_counter()
    for i in range(iters):
        mask = rng.choice(train_size, batch)
        xb, tb = x[mask], t[mask]
        if variant == "book":
            opt.update(net.params, net.gradient(xb, tb))
            loss = net.loss(xb, tb)
        else:
            loss = net.train_step(xb, tb, opt)
            if variant == "fused+loss":
                loss = net.loss(xb, tb)
        losses.append(float(loss))
        if i % iter_per_epoch == 0:
            train_acc.append(net.accuracy(x, t))
            test_acc.append(net.accuracy(x, t))
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "final_loss": losses[-1], "train_acc": train_acc[-1], "test_acc": test_acc[-1],
            "epochs": len(train_acc)}


# ----------------------------------------------------------------------------- worker side
def _calibrate(fn: Callable[[], Any], min_time: float) -> int:
    """Calls per repeat so that one repeat lasts about ``min_time`` (after a warm-up call)."""
    fn()
    number = 1
    while True:
        start = time.perf_counter()
        for _ in range(number):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= min_time or number >= 1 << 20:
            return number
        number = max(number * 2, int(number * min_time / max(elapsed, 1e-9) * 1.2))


def _time_case(fn: Callable[[], Any], number: int, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return times


def _blas_size(config: BenchConfig) -> int:
    """The side of the square products that measure the large-matrix rate (:func:`_blas_cases`)."""
    return 1024 if config.size == "full" else 64


def _blas_cases(config: BenchConfig) -> dict[str, Callable[[], Any]]:
    """Large square products through NumPy's OpenBLAS: the rate of the BLAS bound (zerodl's compiled
    kernels call this very library, see :mod:`zerodl.kernels._blas`).

    NumPy's alone. SciPy's wheel bundles a second OpenBLAS with threads of its own, which keep
    spinning after each of its calls: timed in turn beside NumPy's, its ``sgemm`` halved the
    float64 product timed next (1024x1024, 2 threads: 179 GFLOP/s alone, 71 right after SciPy's
    ``sgemm``, 163 after NumPy's), so the tables read float64 rates of 87-156 GFLOP/s and GEMM
    fractions up to twice too high.
    """
    n = _blas_size(config)
    cases = {}
    rng = np.random.default_rng(config.seed)
    dts = {spec.dtype for spec in step_specs(config.size) if spec.kind == "mlp"}
    for dt in sorted(dts):
        a, b = rng.random((n, n)).astype(dt), rng.random((n, n)).astype(dt)
        c = np.empty((n, n), dt)
        cases[f"blas/numpy/{dt}"] = lambda a=a, b=b, c=c: np.matmul(a, b, out=c)
    return cases


def _worker_cases(contender: str, config: BenchConfig) -> tuple[dict[str, Callable[[], Any]], dict[str, Any]]:
    """``(cases, meta)``: the callables a worker times and what the table needs to know about them."""
    from zerodl.allocator import tune_malloc

    cases: dict[str, Callable[[], Any]] = {}
    # Every contender with the same allocator settings: what the zerodl command runs with.
    meta: dict[str, Any] = {"skipped_ops": {}, "ch5": None, "malloc_tuned": tune_malloc()}
    if contender in PEERS:
        _peer_worker_cases(contender, config, cases, meta)
        return cases, meta

    import zerodl
    from zerodl import kernels

    zerodl.set_num_threads(config.threads)
    zerodl.set_backend(contender)
    if config.kernels:
        for op in kernels.ops(contender):
            build = KERNEL_INPUTS.get(op)
            if build is None:
                meta["skipped_ops"][op] = "no input builder"
                continue
            fn = kernels.get(op, contender)
            for dt in config.dtypes:
                try:
                    args, shape = build(np.random.default_rng(config.seed), np.dtype(dt), config.size)
                except Exception as exc:  # noqa: BLE001 - an op whose signature changed: say so, keep going
                    meta["skipped_ops"][op] = f"input builder failed: {exc}"
                    break
                cases[f"kernel/{op}/{dt}"] = lambda fn=fn, args=args: fn(*args)
                meta.setdefault("shapes", {})[f"kernel/{op}/{dt}"] = shape
    if config.steps:
        for spec in selected_specs(config):
            for variant, fn in _zerodl_step_cases(spec, contender, config.seed).items():
                cases[f"step/{spec.key}/{variant}"] = fn
                if variant == "fused":
                    meta.setdefault("first_values", {})[f"step/{spec.key}/fused"] = _first_values(fn)[0]
                    meta.setdefault("rss", {})[f"step/{spec.key}/fused"] = _rss_increase(fn)
        if contender == "numba":
            cases.update(_blas_cases(config))
    return cases, meta


class PeerMissing(ImportError):
    """A peer contender's package cannot be imported in its worker (the worker says so and exits)."""


def selected_specs(config: BenchConfig) -> list[StepSpec]:
    """The step rows ``config`` asks for (``config.rows``; all when empty), in table order."""
    return [s for s in step_specs(config.size) if not config.rows or s.key in config.rows]


def _peer_worker_cases(contender: str, config: BenchConfig, cases: dict[str, Callable[[], Any]],
                       meta: dict[str, Any]) -> None:
    """Build, compile and warm a peer's step rows into ``cases``; compile times (the compiling
    peers) into ``meta["compile"]``, a row that fails to build or compile into ``meta["errors"]``
    (the other rows go on)."""
    try:
        if contender == "jax":
            # XLA sizes its CPU thread pool from NPROC (tsl's MaxParallelism), read when the CPU
            # client starts; XLA_FLAGS' --xla_cpu_multi_thread_eigen / intra_op_parallelism_threads
            # leave jax 0.10 on every core (checked: CPU time / wall time of a 1000² product).
            os.environ["NPROC"] = str(config.threads)
            import jax

            jax.config.update("jax_platforms", "cpu")
            jax.config.update("jax_enable_x64", True)  # float64 rows; every array has an explicit dtype
            meta["jax"] = jax.__version__
            build: Callable[[StepSpec, int], Callable[[], Any]] = _jax_step_case
        else:
            import torch

            torch.set_num_threads(config.threads)
            meta["torch"] = torch.__version__
            if contender == "torch_compile":
                meta["compile_mode"] = config.compile_mode
                # Every row's model runs through the same compiled code object (nn.Module's forward):
                # past 8 graphs dynamo would silently run later rows eager. Allow them all, and make a
                # limit still hit an error the table shows rather than an eager row under this name.
                torch._dynamo.config.recompile_limit = 64
                torch._dynamo.config.fail_on_recompile_limit_hit = True
                def build(spec: StepSpec, seed: int) -> Callable[[], Any]:
                    return _torch_compile_step_case(spec, seed, config.compile_mode)
            else:
                build = _torch_step_case
    except ImportError as exc:
        raise PeerMissing(f"{missing_message(contender)} ({_brief_error(exc)})") from exc
    meta["compile"], meta["errors"], meta["rss"], meta["first_values"] = {}, {}, {}, {}
    if not config.steps:
        return
    for spec in selected_specs(config):
        name = f"step/{spec.key}/{contender}"
        try:
            fn = build(spec, config.seed)
            if contender != "torch":  # compiled once here, never inside a timed step
                meta["compile"][name], meta["first_values"][name] = _compile_warmup(fn)
            else:
                meta["first_values"][name] = _first_values(fn)[0]
            meta["rss"][name] = _rss_increase(fn)
        except Exception as exc:  # noqa: BLE001 - a row that does not compile: shown, the bench goes on
            meta["errors"][name] = _brief_error(exc)
            continue
        cases[name] = fn


def _emit(obj: Any) -> None:
    sys.__stdout__.write(_TAG + json.dumps(obj) + "\n")
    sys.__stdout__.flush()


def worker_main(contender: str, config: BenchConfig) -> int:
    """A contender's process: build and warm every case, then answer ``ROUND`` commands on stdin."""
    # Anything the libraries print must not mix with the protocol lines.
    sys.stdout = sys.stderr
    try:
        cases, meta = _worker_cases(contender, config)
        numbers = {name: _calibrate(fn, config.min_time) for name, fn in cases.items()}
        ch5_input = _ch5_data(config) if config.ch5 and contender in ("numpy", "numba") else None
        if ch5_input is not None:
            meta["ch5"] = ch5_input[2]
            warm = "book" if contender == "numpy" else "fused"
            _ch5_run(warm, ch5_input[0], ch5_input[1], 2, config.seed)  # compile, load, warm
    except PeerMissing as exc:
        _emit({"missing": str(exc)})
        return 0
    except Exception as exc:
        _emit({"error": f"{type(exc).__name__}: {exc}"})
        raise
    from zerodl.threads import get_num_threads

    if contender == "jax":
        meta["threads"] = {"jax": config.threads, "NPROC": os.environ.get("NPROC")}
    elif contender in PEERS:
        meta["threads"] = {"torch": config.threads}
    else:
        meta["threads"] = get_num_threads()
    _emit({"ready": sorted(cases), "numbers": numbers, "meta": meta})
    for line in sys.stdin:
        command = line.strip()
        if command == "QUIT":
            break
        if command != "ROUND":
            continue
        times = {name: _time_case(fn, numbers[name], config.repeats) for name, fn in cases.items()}
        runs = {}
        if ch5_input is not None:
            variants = ("book",) if contender == "numpy" else ("fused", "fused+loss")
            for v in variants:
                runs[v] = _ch5_run(v, ch5_input[0], ch5_input[1], config.ch5_iters, config.seed)
        _emit({"times": times, "runs": runs})
    return 0


# ----------------------------------------------------------------------------- parent side
def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


class _Worker:
    def __init__(self, contender: str, config: BenchConfig, log_dir: Path) -> None:
        self.contender = contender
        self.stderr_path = log_dir / f"{contender}.stderr"
        self._stderr = open(self.stderr_path, "w+")  # noqa: SIM115 - open for the worker's life, closed in close()
        cmd = [sys.executable, "-m", "zerodl.bench", "--worker", contender,
               "--worker-config", json.dumps(dataclasses.asdict(config))]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1)

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(_TAG):
                message = json.loads(line[len(_TAG):])
                if "error" in message:
                    raise RuntimeError(f"{self.contender} worker failed: {message['error']}\n{self._tail()}")
                return message
        raise RuntimeError(f"{self.contender} worker exited (code {self.proc.wait()}):\n{self._tail()}")

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def _tail(self) -> str:
        self._stderr.flush()
        text = self.stderr_path.read_text()
        return text[-3000:]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.send("QUIT")
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def run_bench(config: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure everything ``config`` asks for; return the results (what ``--json`` saves).

    The result holds ``config``, ``machine`` (CPU count, load averages before and after, versions),
    ``rounds`` (raw per-round medians, seconds per call, by contender and case), ``medians`` and the
    table ``rows`` (see :func:`format_table`).
    """
    import tempfile

    config.validate()
    say = progress or (lambda _msg: None)
    missing = {c: missing_message(c) for c in config.contenders if not peer_available(c)}
    contenders = [c for c in config.contenders if c not in missing]
    load_before = _loadavg()
    started = time.perf_counter()
    rounds: dict[str, dict[str, list[float]]] = {c: {} for c in contenders}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {c: {} for c in contenders}
    metas: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="zerodl-bench-") as log_dir:
        workers: list[_Worker] = []
        try:
            for c in list(contenders):  # start one at a time: warm-ups should not overlap either
                say(f"starting the {c} worker (imports, JIT warm-up, calibration)")
                w = _Worker(c, config, Path(log_dir))
                reply = w.read()
                if "missing" in reply:  # found but not importable: dropped with its one line
                    missing[c] = reply["missing"]
                    contenders.remove(c)
                    del rounds[c], runs[c]
                    w.close()
                    continue
                workers.append(w)
                metas[c] = reply
            for r in range(config.rounds):
                shift = r % len(workers)
                for w in workers[shift:] + workers[:shift]:
                    say(f"round {r + 1}/{config.rounds}: {w.contender}")
                    w.send("ROUND")
                    reply = w.read()
                    for name, times in reply["times"].items():
                        rounds[w.contender].setdefault(name, []).append(statistics.median(times))
                    for variant, result in reply.get("runs", {}).items():
                        runs[w.contender].setdefault(variant, []).append(result)
                    time.sleep(config.pause)
        finally:
            for w in workers:
                w.close()
    medians = {c: {name: statistics.median(v) for name, v in cases.items()} for c, cases in rounds.items()}
    results = {
        "config": dataclasses.asdict(config),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "loadavg_before": load_before,
            "loadavg_after": _loadavg(),
            "wall_seconds": time.perf_counter() - started,
            "torch": next((m["meta"]["torch"] for m in metas.values() if m["meta"].get("torch")), None),
            "jax": metas.get("jax", {}).get("meta", {}).get("jax"),
            "compile_mode": metas.get("torch_compile", {}).get("meta", {}).get("compile_mode"),
            "threads": {c: m["meta"].get("threads") for c, m in metas.items()},
            "conv_blas": _conv_blas(),
            "conv_c1": _conv_c1(),
        },
        "contenders": contenders,
        "missing": missing,
        "compile": {c: m["meta"]["compile"] for c, m in metas.items() if m["meta"].get("compile") is not None},
        "errors": {c: m["meta"]["errors"] for c, m in metas.items() if m["meta"].get("errors")},
        "rounds": rounds,
        "medians": medians,
        "runs": runs,
        "skipped_ops": metas.get("numba", metas.get("numpy", {})).get("meta", {}).get("skipped_ops", {}),
        "shapes": metas.get("numba", metas.get("numpy", {})).get("meta", {}).get("shapes", {}),
        "rss": {k: v for m in metas.values() for k, v in m["meta"].get("rss", {}).items()},
        # The first losses (accuracies) of every row's fused/peer step: equal across contenders up to
        # rounding (same weights, same batches; Dropout rows differ: each draws its own masks).
        "first_values": {c: m["meta"].get("first_values", {}) for c, m in metas.items()},
        "ch5_data": next((m["meta"]["ch5"] for m in metas.values() if m["meta"].get("ch5")), None),
    }
    results["rows"] = _rows(results, config)
    return results


#: The headline case of each contender in a step row: what the table compares.
HEADLINE_CASE: dict[str, str] = {"numpy": "book", "numba": "fused", "torch": "torch",
                                 "torch_compile": "torch_compile", "jax": "jax"}


def step_row_medians(key: str, contenders: Sequence[str] = ("numba", "torch", "torch_compile", "jax"),
                     **overrides: Any) -> dict[str, Any]:
    """Measure one step row with the bench's worker machinery (each contender in its own process,
    interleaved rounds) and return its medians: ``{"seconds": {contender: seconds per step of its
    headline case (:data:`HEADLINE_CASE`; numpy: the book's step, or the fused twin for inference)},
    "cases": {contender: {variant: seconds}}, "compile": {contender: seconds}, "missing": {contender:
    line}, "errors": {contender: message}}``. ``overrides`` are :class:`BenchConfig` fields
    (``rounds``, ``repeats``, ``min_time``, ``threads``, ``size``, ``compile_mode``...); a peer
    whose package is missing is absent from ``seconds`` and named in ``missing``.

    Raises ValueError for an unknown row key or setting.
    """
    settings: dict[str, Any] = {"rounds": 3, "repeats": 3, "pause": 0.1}
    settings.update(overrides)
    config = BenchConfig(kernels=False, steps=True, rows=(key,), contenders=tuple(contenders), **settings)
    results = run_bench(config)
    prefix = f"step/{key}/"
    cases = {c: {name[len(prefix):]: v for name, v in results["medians"].get(c, {}).items()
                 if name.startswith(prefix)} for c in results["contenders"]}
    seconds = {}
    for c, found in cases.items():
        value = found.get(HEADLINE_CASE[c], found.get("fused") if c == "numpy" else None)
        if value is not None:
            seconds[c] = value
    return {
        "seconds": seconds,
        "cases": cases,
        "compile": {c: v[prefix + c] for c, v in results["compile"].items() if prefix + c in v},
        "missing": results["missing"],
        "errors": {c: v[prefix + c] for c, v in results["errors"].items() if prefix + c in v},
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def _rows(results: dict[str, Any], config: BenchConfig) -> list[dict[str, Any]]:
    med = results["medians"]
    np_med, nb_med, th_med = med.get("numpy", {}), med.get("numba", {}), med.get("torch", {})
    rows: list[dict[str, Any]] = []
    kernel_names = sorted({n for m in (np_med, nb_med) for n in m if n.startswith("kernel/")})
    for name in kernel_names:
        _, op, dt = name.split("/")
        t_np, t_nb = np_med.get(name), nb_med.get(name)
        rows.append({"section": "kernel", "name": op, "dtype": dt, "shape": results["shapes"].get(name, ""),
                     "numpy": t_np, "numba": t_nb, "speedup": _ratio(t_np, t_nb)})
    blas_rate = {}
    for dt in ("float32", "float64"):
        seconds = nb_med.get(f"blas/numpy/{dt}")
        if seconds:
            blas_rate[dt] = 2.0 * _blas_size(config) ** 3 / seconds
    results["blas_gflops"] = {dt: r / 1e9 for dt, r in blas_rate.items()}
    rss = results.get("rss", {})
    compile_s, errors = results.get("compile", {}), results.get("errors", {})
    for spec in step_specs(config.size):
        key = f"step/{spec.key}"
        peer_cases = [f"{key}/{p}" for p in PEERS]
        if not any(f"{key}/{v}" in m for m in (np_med, nb_med) for v in ("book", "fused", "layers")) and not any(
                name in med.get(p, {}) or name in errors.get(p, {}) for p, name in zip(PEERS, peer_cases)):
            continue
        book, np_fused = np_med.get(f"{key}/book"), np_med.get(f"{key}/fused")
        nb_layers, nb_fused = nb_med.get(f"{key}/layers"), nb_med.get(f"{key}/fused")
        torch_t = th_med.get(f"{key}/torch")
        flops = spec.matmul_flops()
        bound = flops / blas_rate[spec.dtype] if flops and spec.dtype in blas_rate else None
        rows.append({
            "section": "step", "name": spec.title, "dtype": spec.dtype,
            "shape": f"{'eval batch' if spec.inference else 'batch'} {spec.batch}",
            "numpy_book": book, "numpy_fused": np_fused, "numba_layers": nb_layers, "numba_fused": nb_fused,
            "torch": torch_t, "speedup": _ratio(book or np_fused, nb_fused), "vs_torch": _ratio(torch_t, nb_fused),
            "blas_bound": bound, "x_bound": _ratio(nb_fused, bound),
            "gemm_fraction": _ratio(bound, nb_fused), "torch_gemm_fraction": _ratio(bound, torch_t),
            "rss_numba": rss.get(f"{key}/fused"), "rss_torch": rss.get(f"{key}/torch"),
            "fused_path": True,
        })
        for peer in PEERS[1:]:  # the compiling peers: time, ratio, compile time, RSS, error
            name = f"{key}/{peer}"
            peer_t = med.get(peer, {}).get(name)
            rows[-1].update({peer: peer_t, f"vs_{peer}": _ratio(peer_t, nb_fused),
                             f"compile_{peer}": compile_s.get(peer, {}).get(name),
                             f"rss_{peer}": rss.get(name), f"error_{peer}": errors.get(peer, {}).get(name)})
        rows[-1]["error_torch"] = errors.get("torch", {}).get(f"{key}/torch")
    run_rows = results["runs"]
    if any(run_rows.get(c) for c in ("numpy", "numba")):
        def med_run(c, v, field="seconds"):
            vals = [r[field] for r in run_rows.get(c, {}).get(v, [])]
            return statistics.median(vals) if vals else None

        book = med_run("numpy", "book")
        for v in ("fused", "fused+loss"):
            t = med_run("numba", v)
            rows.append({"section": "run", "name": f"ch5 run, {config.ch5_iters} iterations", "variant": v,
                         "numpy_book": book, "numba": t, "speedup": _ratio(book, t),
                         "train_acc_numpy": med_run("numpy", "book", "train_acc"),
                         "train_acc_numba": med_run("numba", v, "train_acc"),
                         "data": results.get("ch5_data")})
    return rows


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.3f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _mb(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"


def _table(header: Sequence[str], body: list[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) if i < 3 else str(c).rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))
    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in body)]


def _conv_blas() -> str:
    """How the Numba convolutions reach BLAS here (see ``zerodl/kernels/_blas.py``)."""
    from zerodl.kernels import _blas

    path = _blas.library_path()
    if path is None:
        return "np.matmul from Python between compiled passes (no compiled binding for this NumPy's BLAS)"
    return f"NumPy's BLAS called from compiled code ({os.path.basename(path)})"


def _conv_c1() -> str:
    """Which route single-channel conv + ReLU + pool layers take here (``zerodl/kernels/_direct_c1.py``)."""
    from zerodl.kernels import _direct_c1

    if _direct_c1.ENABLED and _direct_c1.available():
        return "register tiles (AVX-512 microkernel)"
    return "patch matrix and BLAS products (no AVX-512 here)" if _direct_c1.ENABLED else "patch matrix (tiles off)"


def format_table(results: dict[str, Any]) -> str:
    """The human-readable table of :func:`run_bench`'s results (times in ms per call, medians)."""
    m = results["machine"]
    cfg = results["config"]
    out = [
        (f"zerodl bench: {', '.join(results['contenders'])}, each in its own process; "
         f"{cfg['threads']} thread(s) each; {cfg['rounds']} interleaved rounds x {cfg['repeats']} repeats; "
         f"medians, ms per call"),
        (f"machine: {m['cpu_count']} CPUs, load average {m['loadavg_before']} before, "
         f"{m['loadavg_after']} after; {m['wall_seconds']:.0f} s"),
        f"convolution products: {m.get('conv_blas') or 'unknown'}",
        f"single-channel conv + ReLU + pool layers: {m.get('conv_c1') or 'unknown'}",
        *results.get("missing", {}).values(),
    ]
    rows = results["rows"]
    kernel_rows = [r for r in rows if r["section"] == "kernel"]
    if kernel_rows:
        out += ["", "Kernels (NumPy twin vs Numba twin)"]
        out += _table(["op", "dtype", "shape", "numpy ms", "numba ms", "speedup"],
                      [[r["name"], r["dtype"], r["shape"], _ms(r["numpy"]), _ms(r["numba"]), _x(r["speedup"])]
                       for r in kernel_rows])
    if results.get("skipped_ops"):
        out.append("not measured: " + "; ".join(f"{op} ({why})" for op, why in sorted(results["skipped_ops"].items())))
    step_rows = [r for r in rows if r["section"] == "step"]
    if step_rows:
        rates = ", ".join(f"{dt} {g:.0f} GFLOP/s" for dt, g in sorted(results.get("blas_gflops", {}).items()))
        out += ["", ("Training steps and inference (each step draws a random batch from 10,000 samples and "
                     "gathers it, as training does; numpy book = gradient + update on the NumPy backend; "
                     "fused = net.train_step; inference = accuracy over 10,000 images)")]
        compiling = [p for p in PEERS[1:] if p in results["contenders"]]
        labels = {"torch_compile": "torch.compile", "jax": "jax"}
        out += _table(
            ["network", "dtype", "batch", "numpy book", "numpy fused", "numba layers", "numba fused", "torch",
             *(labels[p] for p in compiling), "speedup", "vs torch", *(f"vs {labels[p]}" for p in compiling),
             "GEMM %", "torch GEMM %", "RSS MB", "torch RSS MB"],
            [[r["name"], r["dtype"], r["shape"].split()[-1],
              _ms(r["numpy_book"]), _ms(r["numpy_fused"]), _ms(r["numba_layers"]), _ms(r["numba_fused"]),
              _ms(r["torch"]), *(_ms(r.get(p)) for p in compiling), _x(r["speedup"]), _x(r["vs_torch"]),
              *(_x(r.get(f"vs_{p}")) for p in compiling), _pct(r.get("gemm_fraction")),
              _pct(r.get("torch_gemm_fraction")), _mb(r.get("rss_numba")), _mb(r.get("rss_torch"))]
             for r in step_rows])
        out.append("speedup = numpy book / numba fused; vs torch = torch eager / numba fused (> 1: zerodl faster); "
                   f"GEMM % = the step's matrix-product FLOPs at the large-matrix rate ({rates}) / the time; "
                   "RSS MB = peak resident-set growth over the first 3 steps")
        if compiling:
            mode = m.get("compile_mode") or "default"
            out.append(f"vs {' / vs '.join(labels[p] for p in compiling)} = the peer's step / numba fused "
                       f"(> 1: zerodl faster); torch.compile mode {mode!r}, jax.jit; their compile times below, "
                       "never inside a step time")
            out += ["", (f"Compile time of the compiling peers (s: the first {COMPILE_WARMUP_CALLS} steps less "
                         f"{COMPILE_WARMUP_CALLS} steady ones) and their RSS growth")]
            out += _table(["network", "dtype", "batch", *(f"{labels[p]} compile s" for p in compiling),
                           *(f"{labels[p]} RSS MB" for p in compiling)],
                          [[r["name"], r["dtype"], r["shape"].split()[-1],
                            *("error" if r.get(f"error_{p}") else "-" if r.get(f"compile_{p}") is None
                              else f"{r[f'compile_{p}']:.2f}" for p in compiling),
                            *(_mb(r.get(f"rss_{p}")) for p in compiling)] for r in step_rows])
        for r in step_rows:
            for p in PEERS:
                if r.get(f"error_{p}"):
                    out.append(f"{p}, {r['name']} {r['dtype']}: {r[f'error_{p}']}")
    run_rows = [r for r in rows if r["section"] == "run"]
    if run_rows:
        out += ["", f"The book's chapter 5 run (TwoLayerNet 784-50-10, batch 100, lr 0.1; data: {run_rows[0]['data']})"]
        out += _table(["run", "numba variant", "-", "numpy book s", "numba s", "speedup", "acc numpy", "acc numba"],
                      [[r["name"], r["variant"], "", "-" if r["numpy_book"] is None else f"{r['numpy_book']:.2f}",
                        "-" if r["numba"] is None else f"{r['numba']:.2f}", _x(r["speedup"]),
                        "-" if r["train_acc_numpy"] is None else f"{r['train_acc_numpy']:.4f}",
                        "-" if r["train_acc_numba"] is None else f"{r['train_acc_numba']:.4f}"]
                       for r in run_rows])
        out.append("fused: train_step, the loss recorded is the one before the update; "
                   "fused+loss: also the book's after-update loss (one more forward pass per step)")
    return "\n".join(out)


# ----------------------------------------------------------------------------- command line
def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="short run for CI (2 rounds, float64 kernels)")
    p.add_argument("--json", metavar="FILE", help="save every figure (per round, medians, table rows) as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="draw the table as a bar chart (png, svg, pdf, ...)")
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 2)")
    p.add_argument("--repeats", type=int, help="timed repeats per case in a round (default 5, quick 3)")
    p.add_argument("--min-time", type=float, help="seconds per repeat (default 0.05, quick 0.01)")
    p.add_argument("--threads", type=int, help="threads of every contender (default: CPU count)")
    p.add_argument("--dtype", action="append", choices=("float32", "float64"),
                   help="kernel dtype (repeatable; default both, quick float64)")
    p.add_argument("--contenders", metavar="LIST",
                   help=f"comma-separated contenders among {','.join(CONTENDERS)} (default: all, quick: "
                        f"{','.join(QUICK_CONTENDERS)}; a peer whose package is missing is left out with one line)")
    p.add_argument("--no-torch", action="store_true",
                   help="leave PyTorch (eager and torch.compile) out even if installed")
    p.add_argument("--no-peers", action="store_true", help="only numpy and numba (no PyTorch, no JAX)")
    p.add_argument("--row", action="append", metavar="KEY",
                   help="measure only this step row (repeatable), e.g. deep_conv_float32")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default=None,
                   help="torch.compile mode of the torch_compile contender (default: 'default')")
    p.add_argument("--only", choices=("kernels", "steps", "ch5"),
                   help="measure only one section (ch5: only the chapter 5 run, implies --ch5)")
    p.add_argument("--ch5", action="store_true", help="add the book's chapter 5 training run end to end")
    p.add_argument("--ch5-iters", type=int, help="iterations of the ch5 run (default 10000, quick 300)")
    p.add_argument("--ch5-data", choices=("mnist", "random"), default=None,
                   help="mnist: the 10,000 real t10k images (default when found), random: same shape")
    p.add_argument("--mnist-dir", default=None, help=f"MNIST IDX files (default {MNIST_DIR_DEFAULT})")
    p.add_argument("--size", choices=("full", "tiny"), default="full", help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """Build a :class:`BenchConfig` from parsed ``zerodl bench`` arguments."""
    overrides: dict[str, Any] = {"size": args.size}
    for name in ("rounds", "repeats", "min_time", "threads", "ch5_iters"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    if args.dtype:
        overrides["dtypes"] = tuple(dict.fromkeys(args.dtype))
    contenders = QUICK_CONTENDERS if args.quick else CONTENDERS
    if args.contenders:
        contenders = tuple(dict.fromkeys(c.strip() for c in args.contenders.split(",") if c.strip()))
    if args.no_torch:
        contenders = tuple(c for c in contenders if c not in ("torch", "torch_compile"))
    if args.no_peers:
        contenders = tuple(c for c in contenders if c not in PEERS)
    overrides["contenders"] = contenders
    if args.row:
        overrides["rows"] = tuple(dict.fromkeys(args.row))
    if args.compile_mode:
        overrides["compile_mode"] = args.compile_mode
    if args.only:
        overrides["kernels"] = args.only == "kernels"
        overrides["steps"] = args.only == "steps"
    overrides["ch5"] = bool(args.ch5) or args.only == "ch5"
    mnist_dir = args.mnist_dir or os.environ.get("ZERODL_MNIST_DIR") or str(MNIST_DIR_DEFAULT)
    overrides["mnist_dir"] = mnist_dir
    found = (Path(mnist_dir) / "t10k-images-idx3-ubyte.gz").exists()
    overrides["ch5_data"] = args.ch5_data or ("mnist" if found else "random")
    return BenchConfig.quick(**overrides) if args.quick else BenchConfig(**overrides)


def run_cli(args: argparse.Namespace) -> int:
    """``zerodl bench``: measure, print the table, save JSON when asked; returns the exit code."""
    from zerodl._fileio import OutputPathError, check_output_paths

    try:
        # The output is checked before minutes of measuring (writable, not a directory, a valid name).
        check_output_paths([("--json", args.json, "json")] + ([("--plot", args.plot)] if args.plot else []))
        if args.plot:
            from zerodl.plots_bench import check_plot_path

            check_plot_path(args.plot)
        config = config_from_args(args)
        config.validate()
    except (ValueError, OutputPathError) as exc:
        print(f"zerodl bench: error: {exc}", file=sys.stderr)
        return 2
    if config.ch5 and config.ch5_data == "mnist" and not (Path(config.mnist_dir) / "t10k-images-idx3-ubyte.gz").exists():
        print(f"zerodl bench: error: MNIST files not found in {config.mnist_dir} (use --ch5-data random)",
              file=sys.stderr)
        return 1
    from zerodl._runlock import OutputInUseError, RunLock

    try:  # the JSON file and the picture are this run's until it ends: a second bench naming them is refused now
        lock = RunLock([args.json, args.plot], command="zerodl bench", inherit=True)
    except OutputInUseError as exc:
        print(f"zerodl bench: error: {exc}", file=sys.stderr)
        return 1
    with lock:
        results = run_bench(config, progress=lambda msg: print(f"... {msg}", file=sys.stderr, flush=True))
        # For the picture (--plot, and python -m zerodl.plots_bench on the --json file): when, and the rows' titles.
        results["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        results["step_titles"] = {s.key: f"{s.title}, {s.dtype}" for s in step_specs(config.size)}
        print(format_table(results))
        if args.json:
            from zerodl._fileio import atomic_write

            with atomic_write(args.json, "w") as f:
                f.write(json.dumps(results, indent=1, default=float))
            print(f"saved {args.json}", file=sys.stderr)
        if args.plot:
            from zerodl.plots_bench import plot_bench

            print(f"saved {plot_bench(results, args.plot)}", file=sys.stderr)
    return 0


def add_subparsers(subparsers: Any) -> None:
    """Register ``zerodl bench`` (the plug-in hook of :mod:`zerodl.cli`)."""
    p = subparsers.add_parser(
        "bench", help="time every kernel and training step: NumPy vs Numba (vs PyTorch)",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    _add_arguments(p)
    p.set_defaults(func=run_cli)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zerodl.bench [options]`` (and the worker entry point)."""
    parser = argparse.ArgumentParser(prog="python -m zerodl.bench", description=__doc__.split("\n\n")[0])
    _add_arguments(parser)
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--worker-config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        raw = json.loads(args.worker_config)
        raw["dtypes"] = tuple(raw["dtypes"])
        raw["contenders"] = tuple(raw["contenders"])
        raw["rows"] = tuple(raw["rows"])
        return worker_main(args.worker, BenchConfig(**raw))
    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())

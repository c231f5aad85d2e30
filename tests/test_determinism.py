"""Determinism: the same seed on the same backend and machine gives bit-identical parameters after
training (fused MLP step, batch norm + dropout, convolution); the two backends agree to rounding
only; and no compiled kernel runs an order-dependent parallel loop (the guard below fails the day one
is added without a deterministic switch)."""

from __future__ import annotations

import inspect

import numba
import numpy as np
import pytest

import zerodl
from zerodl import kernels
from zerodl.datasets import load_digits
from zerodl.kernels import _jit
from zerodl.trainer import Trainer

from .helpers import TOLERANCES


@pytest.fixture(scope="module")
def digits():
    return load_digits(), load_digits(flatten=False)


def _net(kind, dtype):
    if kind == "two-layer":
        return zerodl.TwoLayerNet(64, 32, 10, dtype=dtype, seed=5)
    if kind == "extend":
        return zerodl.MultiLayerNetExtend(64, [24, 24], 10, use_batchnorm=True, use_dropout=True,
                                          dropout_ration=0.2, dtype=dtype, seed=5)
    return zerodl.SimpleConvNet(input_dim=(1, 8, 8), conv_param={"filter_num": 4, "filter_size": 3},
                                hidden_size=16, output_size=10, dtype=dtype, seed=5)


def _train(digits, kind, dtype, steps=None):
    flat, image = digits
    (xtr, ttr), (xte, tte) = image if kind == "conv" else flat
    net = _net(kind, dtype)
    trainer = Trainer(net, xtr[:400], ttr[:400], xte[:100], tte[:100], epochs=2, mini_batch_size=40,
                      optimizer="adam", optimizer_param={"lr": 3e-3}, verbose=False, seed=11)
    if steps is None:
        trainer.train()
    else:
        for _ in range(steps):
            trainer.train_step()
    return trainer


@pytest.mark.parametrize("kind", ["two-layer", "extend", "conv"])
def test_same_seed_same_backend_is_bit_identical(backend, digits, kind, dtype):
    a = _train(digits, kind, dtype)
    b = _train(digits, kind, dtype)
    for key, value in a.network.params.items():
        assert value.dtype == dtype
        np.testing.assert_array_equal(b.network.params[key], value, err_msg=key)
    for key, value in a.network.buffers().items():
        np.testing.assert_array_equal(b.network.buffers()[key], value, err_msg=key)
    assert a.train_loss_list == b.train_loss_list and a.test_acc_list == b.test_acc_list


@pytest.mark.parametrize("kind", ["two-layer", "extend", "conv"])
def test_backends_agree_to_rounding(digits, kind, dtype):
    """Not bit for bit (different summation orders, BLAS through scipy in numba code), but within
    the float tolerance table after a few steps (rounding differences grow with training)."""
    results = {}
    for backend in zerodl.BACKENDS:
        with zerodl.use_backend(backend):
            results[backend] = _train(digits, kind, dtype, steps=3).network.params
    tol = TOLERANCES[np.dtype(dtype)]
    for key, value in results["numpy"].items():
        np.testing.assert_allclose(results["numba"][key], value, rtol=tol["rtol"] * 100, atol=tol["atol"] * 100,
                                   err_msg=key)


def _dispatchers():
    for module in kernels.MODULES:
        for name, obj in vars(module).items():
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                yield f"{module.__name__}.{name}", obj


def test_no_compiled_kernel_runs_parallel_loops():
    """Every kernel is serial, so its loops run in a fixed order and results do not depend on the
    thread count. A kernel compiled with parallel=True (prange reductions are order-dependent) must
    come with a deterministic switch and an entry in the README's determinism notes."""
    # The source, in every mode (NUMBA_DISABLE_JIT=1 leaves plain functions to inspect) ...
    for module in kernels.MODULES:
        source = inspect.getsource(module)
        assert "prange" not in source and "parallel=True" not in source, module.__name__
    if numba.config.DISABLE_JIT:
        return
    # ... and the compiled dispatchers' own options.
    found = dict(_dispatchers())
    assert len(found) > 20, "the scan must see the compiled kernels"
    parallel = sorted(name for name, d in found.items() if d.targetoptions.get("parallel"))
    assert parallel == [], f"parallel kernels without a deterministic switch: {parallel}"
    # No fast-math, except exactly LLVM's `contract` (FMA, see kernels/_jit.py) on the direct
    # convolution kernels, whose rounding tests/kernels/test_convolution.py checks.
    # (Named by where each kernel is defined: a module may import another's kernels.)
    fastmath = {f"{d.py_func.__module__}.{d.py_func.__name__}": d.targetoptions.get("fastmath")
                for d in found.values()}
    contract = sorted(name for name, flags in fastmath.items() if flags)
    assert contract == sorted(CONTRACT_KERNELS), f"fast-math flags outside the direct conv kernels: {contract}"
    for name in contract:
        assert set(fastmath[name]) == set(_jit.CONTRACT) == {"contract"}, (name, fastmath[name])


#: The kernels allowed ``jit(contract=True)`` (fused multiply-add and no other fast-math flag).
CONTRACT_KERNELS = ("zerodl.kernels.convolution._direct_c1_fw3",)


def test_fixed_blas_thread_count_is_reproducible_at_mnist_size(backend):
    """BLAS splits large products across threads, and 1 vs 2 threads may round differently
    (measured: ~2e-16 after 40 steps). With the thread count fixed (``zerodl.num_threads(n)``,
    ``set_num_threads`` or ``OPENBLAS_NUM_THREADS``), runs are bit-identical."""
    rng = np.random.default_rng(0)
    x, t = rng.random((1000, 784)), rng.integers(0, 10, 1000)

    def run():
        with zerodl.num_threads(2):
            trainer = Trainer(zerodl.TwoLayerNet(784, 50, 10, seed=0), x, t, x[:100], t[:100], epochs=2,
                              mini_batch_size=100, optimizer="adam", optimizer_param={"lr": 1e-3},
                              verbose=False, seed=1)
            return trainer.train().network.params

    a, b = run(), run()
    for key, value in a.items():
        np.testing.assert_array_equal(b[key], value, err_msg=key)

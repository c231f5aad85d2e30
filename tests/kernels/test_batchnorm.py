"""batchnorm kernels: numpy vs numba (both dtypes, random shapes), vs a per-column naive oracle,
running statistics written in place, other inputs untouched, dtype kept."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import assert_backends_agree, tolerance
from zerodl import kernels

dims = st.integers(1, 8)


def naive_forward_train(x, gamma, beta, rm, rv, momentum):
    """One column at a time with Python floats (float64): the textbook formulas, nothing shared."""
    n, d = x.shape
    out = np.empty((n, d))
    new_rm, new_rv = np.empty(d), np.empty(d)
    for j in range(d):
        col = [float(v) for v in x[:, j]]
        mu = sum(col) / n
        var = sum((v - mu) ** 2 for v in col) / n
        std = math.sqrt(var + 1e-6)
        for i in range(n):
            out[i, j] = float(gamma[j]) * (col[i] - mu) / std + float(beta[j])
        new_rm[j] = momentum * float(rm[j]) + (1 - momentum) * mu
        new_rv[j] = momentum * float(rv[j]) + (1 - momentum) * var
    return out, new_rm, new_rv


def naive_backward(dout, gamma, x):
    """Closed-form batch-norm gradient (the compact formula, not the book's graph) in float64."""
    x, dout = x.astype(np.float64), dout.astype(np.float64)
    n = x.shape[0]
    mu = x.mean(axis=0)
    inv = 1.0 / np.sqrt(x.var(axis=0) + 1e-6)
    xn = (x - mu) * inv
    dxn = dout * gamma
    dx = inv / n * (n * dxn - dxn.sum(axis=0) - xn * (dxn * xn).sum(axis=0))
    return dx, (dout * xn).sum(axis=0), dout.sum(axis=0)


def _inputs(rng, n, d, dtype):
    x = (rng.standard_normal((n, d)) * 3 + 1).astype(dtype)
    gamma = rng.standard_normal(d).astype(dtype)
    beta = rng.standard_normal(d).astype(dtype)
    rm = rng.standard_normal(d).astype(dtype)
    rv = rng.random(d).astype(dtype)
    return x, gamma, beta, rm, rv


@given(n=dims, d=dims, momentum=st.sampled_from([0.0, 0.5, 0.9, 1.0]), seed=st.integers(0, 2**16))
def test_forward_train_twins_agree(n, d, momentum, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x, gamma, beta, rm, rv = _inputs(rng, n, d, dtype)
        # Arguments 3 and 4 (running statistics) are written by contract: compared between twins.
        (out, xc, xn, std), _ = assert_backends_agree(
            "batchnorm_forward_train", x, gamma, beta, rm, rv, momentum, inplace=(3, 4)
        )
        assert out.shape == xc.shape == xn.shape == (n, d) and std.shape == (d,)
        assert {a.dtype for a in (out, xc, xn, std)} == {np.dtype(dtype)}
        ref_out, ref_rm, ref_rv = naive_forward_train(x, gamma, beta, rm, rv, momentum)
        # Loose for float32 because the naive oracle works in float64; std of a constant column is
        # sqrt(eps) and amplifies rounding, so compare on the output scale.
        tol = {"rtol": 2e-3, "atol": 2e-3} if dtype == np.float32 else tolerance(np.float64)
        np.testing.assert_allclose(out, ref_out, **tol)
        for backend in ("numpy", "numba"):
            rm2, rv2 = rm.copy(), rv.copy()
            kernels.get("batchnorm_forward_train", backend)(x, gamma, beta, rm2, rv2, momentum)
            np.testing.assert_allclose(rm2, ref_rm, **tol)
            np.testing.assert_allclose(rv2, ref_rv, **tol)
            assert rm2.dtype == rv2.dtype == dtype


@given(n=dims, d=dims, seed=st.integers(0, 2**16))
def test_forward_test_twins_agree(n, d, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x, gamma, beta, rm, rv = _inputs(rng, n, d, dtype)
        out, _ = assert_backends_agree("batchnorm_forward_test", x, gamma, beta, rm, rv)
        ref = gamma.astype(np.float64) * (x - rm.astype(np.float64)) / np.sqrt(rv + 1e-6) + beta
        np.testing.assert_allclose(out, ref, **tolerance(dtype))
        assert out.dtype == dtype


@given(n=st.integers(2, 8), d=dims, seed=st.integers(0, 2**16))
def test_backward_twins_agree(n, d, seed):
    rng = np.random.default_rng(seed)
    for dtype in (np.float32, np.float64):
        x, gamma, beta, rm, rv = _inputs(rng, n, d, dtype)
        _, xc, xn, std = kernels.get("batchnorm_forward_train", "numpy")(x, gamma, beta, rm, rv, 0.9)
        dout = rng.standard_normal((n, d)).astype(dtype)
        (dx, dgamma, dbeta), _ = assert_backends_agree("batchnorm_backward", dout, gamma, xc, xn, std)
        assert dx.shape == (n, d) and dgamma.shape == dbeta.shape == (d,)
        assert {a.dtype for a in (dx, dgamma, dbeta)} == {np.dtype(dtype)}
        ref_dx, ref_dgamma, ref_dbeta = naive_backward(dout, gamma, x)
        tol = {"rtol": 1e-3, "atol": 1e-3} if dtype == np.float32 else {"rtol": 1e-7, "atol": 1e-9}
        np.testing.assert_allclose(dx, ref_dx, **tol)
        np.testing.assert_allclose(dgamma, ref_dgamma, **tol)
        np.testing.assert_allclose(dbeta, ref_dbeta, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bit_identical_on_a_typical_batch(dtype):
    # Same summation order and no fastmath: the twins agree to the last bit (NumPy reduces axis 0
    # of a C-contiguous matrix row by row, exactly like the compiled loops).
    rng = np.random.default_rng(7)
    x, gamma, beta, rm, rv = _inputs(rng, 32, 20, dtype)
    rm_np, rv_np, rm_nb, rv_nb = rm.copy(), rv.copy(), rm.copy(), rv.copy()
    a = kernels.get("batchnorm_forward_train", "numpy")(x, gamma, beta, rm_np, rv_np, 0.9)
    b = kernels.get("batchnorm_forward_train", "numba")(x, gamma, beta, rm_nb, rv_nb, 0.9)
    for u, v in zip((*a, rm_np, rv_np), (*b, rm_nb, rv_nb)):
        np.testing.assert_array_equal(u, v)
    dout = rng.standard_normal(x.shape).astype(dtype)
    for u, v in zip(kernels.get("batchnorm_backward", "numpy")(dout, gamma, *a[1:]),
                    kernels.get("batchnorm_backward", "numba")(dout, gamma, *a[1:])):
        np.testing.assert_array_equal(u, v)


def test_single_long_column_within_tolerance():
    # D == 1: NumPy switches to pairwise summation, the kernel sums in order; still within tolerance.
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        x, gamma, beta, rm, rv = _inputs(rng, 300, 1, dtype)
        assert_backends_agree("batchnorm_forward_train", x, gamma, beta, rm, rv, 0.9, inplace=(3, 4))


def test_running_stats_written_in_place_not_rebound(backend):
    x = np.arange(12.0).reshape(4, 3)
    rm, rv = np.zeros(3), np.ones(3)
    alias_m, alias_v = rm, rv
    kernels.get("batchnorm_forward_train")(x, np.ones(3), np.zeros(3), rm, rv, 0.9)
    assert rm is alias_m and rv is alias_v
    np.testing.assert_allclose(rm, 0.1 * x.mean(axis=0))
    np.testing.assert_allclose(rv, 0.9 + 0.1 * x.var(axis=0))


def test_constant_column_gives_finite_output(backend):
    # var = 0: std = sqrt(10e-7) keeps the division finite, the column normalises to 0 (then beta).
    x = np.column_stack([np.full(5, 3.0), np.arange(5.0)])
    out, _, _, std = kernels.get("batchnorm_forward_train")(
        x, np.ones(2), np.full(2, 0.5), np.zeros(2), np.zeros(2), 0.9
    )
    assert np.all(np.isfinite(out)) and np.all(out[:, 0] == 0.5)
    np.testing.assert_allclose(std[0], np.sqrt(10e-7))


def test_non_contiguous_inputs():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 8))[:, ::2]
    assert_backends_agree(
        "batchnorm_forward_train", x, np.ones(4), np.zeros(4), np.zeros(4), np.ones(4), 0.9, inplace=(3, 4)
    )
    assert_backends_agree("batchnorm_forward_test", x, np.ones(4), np.zeros(4), np.zeros(4), np.ones(4))

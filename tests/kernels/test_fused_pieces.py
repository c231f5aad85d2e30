"""The kernels a fused step is made of: numpy vs numba, both dtypes, and against the layer ops.

``<act>_bias_forward(z, b, out)`` and ``<act>_backward_into(dout, kept, dx)`` for every activation,
``bias_forward``, ``affine_backward_into``, ``softmax_loss_grad``, ``weight_decay_grad`` and the
optimizer updates over sequences of arrays.
"""

from __future__ import annotations

import numpy as np
import pytest

import zerodl
from tests.helpers import assert_backends_agree, assert_close, tolerance
from zerodl import kernels

ACTIVATIONS = {  # op prefix -> (layer forward op, how the layer's backward is called)
    "relu": "relu_forward",
    "sigmoid": "sigmoid_forward",
    "gelu": "gelu_forward",
}
SHAPES = [(7, 5), (3, 4, 2, 3)]


def _bias_view(b, ndim):
    return b.reshape((1, -1) + (1,) * (ndim - 2))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", [None, *ACTIVATIONS])
def test_bias_forward_twins_and_layer_path(act, shape, dtype):
    rng = np.random.default_rng(3)
    z = rng.standard_normal(shape).astype(dtype)
    z.flat[::7] = 0.0  # ReLU's boundary
    b = rng.standard_normal(shape[1]).astype(dtype)
    op = "bias_forward" if act is None else f"{act}_bias_forward"
    assert_backends_agree(op, z, b, np.empty_like(z), inplace=[0, 2])
    pre = z + _bias_view(b, len(shape))
    for backend_name in ("numpy", "numba"):
        zz, out = z.copy(), np.empty_like(z)
        kernels.get(op, backend_name)(zz, b, out)
        np.testing.assert_array_equal(zz, pre)
        expected = pre if act is None else kernels.get(ACTIVATIONS[act], backend_name)(pre)
        expected = expected[0] if isinstance(expected, tuple) else expected
        if backend_name == "numpy":
            np.testing.assert_array_equal(out, expected)  # the layer path, bit for bit
        else:
            assert_close(out, expected, dtype, op)
        assert out.dtype == dtype
        if act != "gelu":  # in place (out is z) for activations that keep their output
            zz = z.copy()
            kernels.get(op, backend_name)(zz, b, zz)
            assert_close(zz, out, dtype, f"{op} in place")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("act", ["relu", "sigmoid"])
def test_backward_into_matches_the_layer_backward(act, shape, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    x.flat[::5] = 0.0
    dout = rng.standard_normal(shape).astype(dtype)
    fwd = kernels.get(ACTIVATIONS[act], "numpy")(x)
    out, layer_dx = (fwd[0], kernels.get("relu_backward", "numpy")(dout, fwd[1])) if act == "relu" else \
        (fwd, kernels.get("sigmoid_backward", "numpy")(dout, fwd))
    op = f"{act}_backward_into"
    assert_backends_agree(op, dout, out, np.empty_like(dout), inplace=[2])
    dx = np.empty_like(dout)
    kernels.get(op, "numpy")(dout, out, dx)
    np.testing.assert_array_equal(dx, layer_dx)
    aliased = dout.copy()
    kernels.get(op, "numba")(aliased, out, aliased)
    assert_close(aliased, layer_dx, dtype, "dx is dout")


@pytest.mark.parametrize("one_hot", [False, True])
def test_softmax_loss_grad_is_forward_then_backward(one_hot, dtype):
    rng = np.random.default_rng(5)
    x = (4 * rng.standard_normal((6, 4))).astype(dtype)
    labels = rng.integers(0, 4, 6)
    t = np.eye(4, dtype=dtype)[labels] if one_hot else labels.astype(np.intp)
    loss_np, loss_nb = assert_backends_agree("softmax_loss_grad", x, t, np.empty_like(x), inplace=[2])
    assert loss_np.dtype == loss_nb.dtype == dtype
    y, loss = kernels.get("softmax_loss_forward", "numpy")(x, t)
    dx = np.empty_like(x)
    assert kernels.get("softmax_loss_grad", "numpy")(x, t, dx) == loss
    np.testing.assert_array_equal(dx, kernels.get("softmax_loss_backward", "numpy")(y, t, 1.0))


@pytest.mark.parametrize("need_dx", [True, False])
def test_affine_backward_into_is_affine_backward(need_dx, dtype):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((5, 4)).astype(dtype)
    W = rng.standard_normal((4, 3)).astype(dtype)
    dout = rng.standard_normal((5, 3)).astype(dtype)
    bufs = [np.empty_like(x) if need_dx else None, np.empty_like(W), np.empty(3, dtype)]
    assert_backends_agree("affine_backward_into", dout, x, W, *bufs, inplace=[3, 4, 5])
    dx, dW, db = (np.empty_like(x) if need_dx else None), np.empty_like(W), np.empty(3, dtype)
    kernels.get("affine_backward_into", "numpy")(dout, x, W, dx, dW, db)
    ref = kernels.get("affine_backward", "numpy")(dout, x, W, need_dx)
    for got, want in zip((dx, dW, db), ref):
        if want is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, want)


def test_weight_decay_grad_is_the_books_dw_plus_lambda_w(dtype):
    rng = np.random.default_rng(7)
    grads = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(5).astype(dtype)]
    params = [rng.standard_normal((3, 4)).astype(dtype), rng.standard_normal(5).astype(dtype)]
    for backend_name in ("numpy", "numba"):
        gs = [g.copy() for g in grads]
        kernels.get("weight_decay_grad", backend_name)(gs, params, 0.25)
        for g, g0, p in zip(gs, grads, params):
            assert_close(g, g0 + 0.25 * p, dtype, "dW + λW")


@pytest.mark.parametrize("op,n_state,hyper", [
    ("sgd_update", 0, (0.1,)), ("momentum_update", 1, (0.01, 0.9)), ("nesterov_update", 1, (0.01, 0.9)),
    ("adagrad_update", 1, (0.01, 1e-7)), ("rmsprop_update", 1, (0.01, 0.99, 1e-7)),
    ("adam_update", 2, (0.002, 0.9, 0.999, 1e-7)),
])
def test_one_call_over_many_parameters_equals_one_call_each(op, n_state, hyper, backend, dtype):
    rng = np.random.default_rng(8)
    shapes = [(3, 4), (4,), (2, 2, 3)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    states = [[np.abs(rng.standard_normal(s)).astype(dtype) for s in shapes] for _ in range(n_state)]
    one_p = [p.copy() for p in params]
    one_s = [[a.copy() for a in group] for group in states]
    kernels.get(op)(params, grads, *states, *hyper)
    for k in range(len(shapes)):
        kernels.get(op)(one_p[k], grads[k], *[group[k] for group in one_s], *hyper)
        np.testing.assert_array_equal(params[k], one_p[k])
        for group, one in zip(states, one_s):
            np.testing.assert_array_equal(group[k], one[k])


@pytest.mark.parametrize("need_dx", [True, False])
def test_affine_backward_into_in_parts_agrees_and_keeps_its_bits_across_thread_counts(need_dx, dtype, monkeypatch):
    # parts > 1: the Numba twin cuts its products into row blocks on both cores (conv steps); every
    # entry keeps the product's own reduction order, so it agrees with the NumPy twin (which
    # multiplies whole) to rounding and gives the same bits on one or two threads.
    from zerodl.kernels import _tasks

    monkeypatch.setattr(_tasks, "SPLIT_MIN_MACS", 0)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((37, 50)).astype(dtype)
    W = rng.standard_normal((50, 23)).astype(dtype)
    dout = rng.standard_normal((37, 23)).astype(dtype)
    want = kernels.get("affine_backward", "numpy")(dout, x, W, need_dx)
    runs = []
    for threads in (1, 2):
        bufs = [np.empty_like(x) if need_dx else None, np.empty_like(W), np.empty(23, dtype)]
        with zerodl.num_threads(threads):
            kernels.get("affine_backward_into", "numba")(dout, x, W, *bufs, 3)
        runs.append(bufs)
    for got, ref in zip(runs[0], want):
        if ref is None:
            assert got is None
        else:
            np.testing.assert_allclose(got, ref, **tolerance(dtype))
            assert got.dtype == dtype
    for a, b in zip(*runs):
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_matmul_in_parts_cuts_rows_and_leaves_small_products_whole(dtype, monkeypatch):
    from zerodl.kernels import _tasks

    rng = np.random.default_rng(9)
    a = rng.standard_normal((9, 6)).astype(dtype)
    b = rng.standard_normal((6, 5)).astype(dtype)
    whole = np.empty((9, 5), dtype)
    _tasks.matmul_in_parts(a, b, whole, 4)  # under SPLIT_MIN_MACS: one product
    np.testing.assert_array_equal(whole, a @ b)
    monkeypatch.setattr(_tasks, "SPLIT_MIN_MACS", 0)
    split = np.empty((9, 5), dtype)
    _tasks.matmul_in_parts(a, b, split, 4)
    for r0, r1 in ((0, 2), (2, 4), (4, 6), (6, 9)):  # each block is its own product
        np.testing.assert_array_equal(split[r0:r1], a[r0:r1] @ b)


def _sgd_operands(dtype, n=9, d=7, h=5, seed=10):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, h)).astype(dtype), rng.standard_normal((n, d)).astype(dtype),
            rng.standard_normal((d, h)).astype(dtype))


def test_affine_backward_into_can_leave_dw_to_the_update(dtype):
    # dW None: dx and db as always (bit for bit), no dW product (a step folding W's SGD update
    # into it later, affine_sgd_update).
    dout, x, W = _sgd_operands(dtype)
    ref_dx, _, ref_db = kernels.get("affine_backward", "numpy")(dout, x, W, True)
    for backend_name in ("numpy", "numba"):
        dx, db = np.empty_like(x), np.empty(W.shape[1], dtype)
        kernels.get("affine_backward_into", backend_name)(dout, x, W, dx, None, db, 2)
        np.testing.assert_array_equal(dx, ref_dx)
        assert_close(db, ref_db, dtype, f"{backend_name} db")


def test_affine_sgd_update_is_the_books_sgd_on_the_gradient(dtype):
    # The reference is dW = x.T @ dout then the book's SGD on W, bit for bit; the compiled twin
    # adds -lr·xᵀ·dout straight into W (one gemm with beta = 1): W to rounding.
    dout, x, W = _sgd_operands(dtype)
    lr = 0.05
    _, ref_dW, _ = kernels.get("affine_backward", "numpy")(dout, x, W, False)
    want = W.copy()
    kernels.get("sgd_update", "numpy")(want, ref_dW, lr)
    for backend_name in ("numpy", "numba"):
        W_new, dW = W.copy(), np.empty_like(W)
        inputs = (dout.copy(), x.copy())
        kernels.get("affine_sgd_update", backend_name)(dout, x, W_new, dW, lr)
        np.testing.assert_array_equal(dout, inputs[0])  # the factors are only read
        np.testing.assert_array_equal(x, inputs[1])
        if backend_name == "numpy":
            np.testing.assert_array_equal(W_new, want)
            np.testing.assert_array_equal(dW, ref_dW)
        else:
            assert_close(W_new, want, dtype, "W after the fused update")
            assert not np.array_equal(W_new, W)
        assert W_new.dtype == dtype


def test_affine_sgd_update_checks_against_a_loop_oracle(dtype):
    from tests.naive import affine_sgd_update_naive

    dout, x, W = _sgd_operands(dtype, 6, 4, 3, seed=11)
    W_new = W.copy()
    kernels.get("affine_sgd_update", "numba")(dout, x, W_new, np.empty_like(W), 0.125)
    assert_close(W_new, affine_sgd_update_naive(dout, x, W, 0.125), dtype, "naive W update")


@pytest.mark.parametrize("path", ["blas", "python"])
def test_affine_sgd_update_in_parts_keeps_its_bits_across_thread_counts(path, dtype, monkeypatch):
    # parts > 1 (conv steps): W's rows in fixed blocks, each one gemm; the same bits on one or two
    # threads, to rounding of the reference. "python": NumPy's BLAS not callable from compiled code
    # (another BLAS): the gradient goes through dW and a compiled update pass.
    from zerodl.kernels import _blas, _tasks

    monkeypatch.setattr(_tasks, "SPLIT_MIN_MACS", 0)
    monkeypatch.setattr(_blas, "_forced_off", path == "python")
    if path == "blas" and not _blas.available():
        pytest.skip("NumPy's BLAS is not callable from compiled code here (see kernels/_blas.py)")
    dout, x, W = _sgd_operands(dtype, 37, 50, 23, seed=12)
    want = W.copy()
    kernels.get("affine_sgd_update", "numpy")(dout, x, want, np.empty_like(W), 0.01)
    runs = []
    for threads in (1, 2):
        W_new = W.copy()
        with zerodl.num_threads(threads):
            kernels.get("affine_sgd_update", "numba")(dout, x, W_new, np.empty_like(W), 0.01, 3)
        np.testing.assert_allclose(W_new, want, **tolerance(dtype))
        runs.append(W_new)
    np.testing.assert_array_equal(runs[0], runs[1])


def test_affine_sgd_update_takes_strided_operands(dtype):
    # A column slice of a bigger x (not C-contiguous) takes the dW + update path: same values.
    dout, x_big, W = _sgd_operands(dtype, 8, 10, 4, seed=13)
    x = x_big[:, ::2]
    W = W[:5].copy()
    for backend_name in ("numpy", "numba"):
        W_new = W.copy()
        kernels.get("affine_sgd_update", backend_name)(dout, x, W_new, np.empty_like(W), 0.1)
        assert_close(W_new, W - np.dtype(dtype).type(0.1) * (x.T @ dout), dtype, f"{backend_name} W")


@pytest.mark.parametrize("threads", [1, 2])
def test_matmuls_side_by_side_are_the_whole_products(threads, dtype, monkeypatch):
    # dx and dW of a conv step's Affine, one task each: np.dot's own bits, any thread count.
    from zerodl.kernels import _tasks

    monkeypatch.setattr(_tasks, "SPLIT_MIN_MACS", 0)
    rng = np.random.default_rng(14)
    dout, x, W = (rng.standard_normal(s).astype(dtype) for s in ((13, 6), (13, 9), (9, 6)))
    dx, dW = np.empty_like(x), np.empty_like(W)
    with zerodl.num_threads(threads):
        _tasks.matmuls_side_by_side([(dout, W.T, dx), (x.T, dout, dW)])
    np.testing.assert_array_equal(dx, np.dot(dout, W.T))
    np.testing.assert_array_equal(dW, np.dot(x.T, dout))
    bufs = [np.empty_like(x), np.empty_like(W), np.empty(6, dtype)]
    with zerodl.num_threads(threads):
        kernels.get("affine_backward_into", "numba")(dout, x, W, *bufs, 2)
    ref = [np.empty_like(x), np.empty_like(W), np.empty(6, dtype)]
    kernels.get("affine_backward_into", "numpy")(dout, x, W, *ref)
    for got, want in zip(bufs[:2], ref[:2]):
        np.testing.assert_array_equal(got, want)  # whole products: the reference's bits
    assert_close(bufs[2], ref[2], dtype, "db")

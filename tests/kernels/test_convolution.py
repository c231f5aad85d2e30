"""conv_forward / conv_backward and the ReLU-fused conv_relu_forward / conv_relu_backward: numpy vs
numba (both dtypes, hypothesis shapes/stride/pad), vs the naive per-element oracle, gradient checks;
each backward accepts the other twin's forward cache; bit-identical for one or two threads."""

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests import naive
from tests.helpers import assert_close, tolerance
from zerodl import kernels

DTYPES = (np.float32, np.float64)


@st.composite
def convs(draw):
    n, c, fn = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    fh, fw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride, pad = draw(st.integers(1, 3)), draw(st.integers(0, 2))
    assume(h + 2 * pad >= fh and w + 2 * pad >= fw)
    return n, c, fn, h, w, fh, fw, stride, pad


def _inputs(shape, seed, dtype):
    n, c, fn, h, w, fh, fw, stride, pad = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((fn, c, fh, fw)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    return x, W, b, stride, pad, rng


@settings(max_examples=20)
@given(shape=convs(), seed=st.integers(0, 2**16))
def test_forward_twins_agree_and_match_naive(shape, seed):
    for dtype in DTYPES:
        x, W, b, stride, pad, _ = _inputs(shape, seed, dtype)
        before = [a.copy() for a in (x, W, b)]
        out_np, col_np = kernels.get("conv_forward", "numpy")(x, W, b, stride, pad)
        out_nb, col_nb = kernels.get("conv_forward", "numba")(x, W, b, stride, pad)
        for a, orig in zip((x, W, b), before):
            np.testing.assert_array_equal(a, orig)  # inputs untouched
        assert_close(out_nb, out_np, what="conv_forward out")
        assert out_nb.flags.c_contiguous and out_np.flags.c_contiguous
        # The NumPy twin keeps the book's col; the Numba twin keeps none.
        np.testing.assert_array_equal(col_np, kernels.get("im2col", "numpy")(x, *W.shape[2:], stride, pad))
        assert col_nb is None
        np.testing.assert_allclose(out_nb, naive.conv_forward(x, W, b, stride, pad), **tolerance(dtype))


@settings(max_examples=20)
@given(shape=convs(), seed=st.integers(0, 2**16))
def test_backward_twins_agree_and_match_naive(shape, seed):
    for dtype in DTYPES:
        x, W, b, stride, pad, rng = _inputs(shape, seed, dtype)
        out, col = kernels.get("conv_forward", "numpy")(x, W, b, stride, pad)
        dout = rng.standard_normal(out.shape).astype(dtype)
        before = [a.copy() for a in (dout, x, W, col)]
        ref = kernels.get("conv_backward", "numpy")(dout, x, W, col, stride, pad)
        # Every combination of twin and cache (col from the NumPy forward, None from the Numba one).
        for backend, cache in (("numba", None), ("numba", col), ("numpy", None)):
            got = kernels.get("conv_backward", backend)(dout, x, W, cache, stride, pad)
            for name, g, r in zip(("dx", "dW", "db"), got, ref):
                assert_close(g, r, what=f"conv_backward {backend} {name}")
                assert g.flags.c_contiguous
        # need_dx=False (a network's first layer): no dx, the same dW and db.
        for backend, cache in (("numba", None), ("numpy", col)):
            full = kernels.get("conv_backward", backend)(dout, x, W, cache, stride, pad)
            none_dx, dW_only, db_only = kernels.get("conv_backward", backend)(dout, x, W, cache, stride, pad,
                                                                              False)
            assert none_dx is None
            np.testing.assert_array_equal(dW_only, full[1])
            np.testing.assert_array_equal(db_only, full[2])
        for a, orig in zip((dout, x, W, col), before):
            np.testing.assert_array_equal(a, orig)
        naive_grads = naive.conv_backward(dout, x, W, stride, pad)
        for name, g, r in zip(("dx", "dW", "db"), ref, naive_grads):
            np.testing.assert_allclose(g, r, err_msg=name, **tolerance(dtype))
        assert ref[0].shape == x.shape and ref[1].shape == W.shape and ref[2].shape == b.shape


def test_bias_gradient_bit_identical_to_the_book_order():
    # db is summed in the book's order (n-major, then position) by both twins.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 2, 6, 6))
    W = rng.standard_normal((3, 2, 3, 3))
    dout = rng.standard_normal((4, 3, 4, 4))
    _, _, db_np = kernels.get("conv_backward", "numpy")(dout, x, W, None, 1, 0)
    _, _, db_nb = kernels.get("conv_backward", "numba")(dout, x, W, None, 1, 0)
    np.testing.assert_array_equal(db_nb, db_np)
    # The ReLU-fused backward too (masked entries add +0 in both twins). Tiny shapes can make
    # NumPy sum the column pairwise instead, so this is checked at this shape only.
    b = rng.standard_normal(3)
    out, _ = kernels.get("conv_relu_forward", "numpy")(x, W, b, 1, 0)
    assert (out == 0).any() and (out > 0).any()
    _, _, db_np = kernels.get("conv_relu_backward", "numpy")(dout, out, x, W, None, 1, 0)
    _, _, db_nb = kernels.get("conv_relu_backward", "numba")(dout, out, x, W, None, 1, 0)
    np.testing.assert_array_equal(db_nb, db_np)


@pytest.mark.parametrize("threads", [1, 2])
def test_winograd_relu_bias_gradient_bit_identical_to_the_book_order(threads):
    # On Winograd's route with dx the bias gradient is the call's last task and sums the masked
    # gradient its groups stored, instead of masking dout itself: the same additions in the same
    # order, so the book's bits (the NumPy twin's) for any number of threads.
    import numba

    from zerodl.kernels import convolution
    from zerodl.threads import num_threads

    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4, 10, 10))
    W = rng.standard_normal((6, 4, 3, 3))
    b = rng.standard_normal(6)
    dout = rng.standard_normal((8, 6, 10, 10))
    assert convolution._winograd_ok(4, 3, 3, 1, 1) and convolution._winograd_ok(6, 3, 3, 1, 1)
    out, _ = kernels.get("conv_relu_forward", "numpy")(x, W, b, 1, 1)
    assert (out == 0).any() and (out > 0).any()
    _, _, db_np = kernels.get("conv_relu_backward", "numpy")(dout, out, x, W, None, 1, 1)
    with num_threads(min(threads, numba.config.NUMBA_NUM_THREADS)):
        dx, _, db_nb = kernels.get("conv_relu_backward", "numba")(dout, out, x, W, None, 1, 1)
    np.testing.assert_array_equal(db_nb, db_np)
    assert dx.shape == x.shape


@pytest.mark.parametrize("wide_max_junk", [0.0, 1.0], ids=["row-copies", "wide-grid"])
def test_both_unit_stride_layouts_agree(monkeypatch, wide_max_junk):
    # The Numba twin picks the wide grid or row-by-row copies for unit stride; both are exact.
    from zerodl.kernels import convolution

    monkeypatch.setattr(convolution, "WIDE_MAX_JUNK", wide_max_junk)
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)  # one image per chunk: exercises chunking
    monkeypatch.setattr(convolution, "WINO_CHUNK_BYTES", 1)
    monkeypatch.setattr(convolution, "GEMM_COLS", 7)  # and products cut into column blocks
    monkeypatch.setattr(convolution, "GEMM_DW_COLS", 5)  # (those of a dW-only backward too)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3, 2, 5, 6))
    W = rng.standard_normal((4, 2, 3, 2))
    b = rng.standard_normal(4)
    for pad in (0, 1, 2):
        out_np, col = convolution.conv_forward_numpy(x, W, b, 1, pad)
        out_nb, _ = convolution.conv_forward_numba(x, W, b, 1, pad)
        assert_close(out_nb, out_np, what=f"pad {pad} out")
        dout = rng.standard_normal(out_np.shape)
        for g, r in zip(convolution.conv_backward_numba(dout, x, W, None, 1, pad),
                        convolution.conv_backward_numpy(dout, x, W, col, 1, pad)):
            assert_close(g, r, what=f"pad {pad} grads")
        # Without dx (a first layer): the dW products in blocks of GEMM_DW_COLS columns.
        for g, r in zip(convolution.conv_backward_numba(dout, x, W, None, 1, pad, need_dx=False)[1:],
                        convolution.conv_backward_numpy(dout, x, W, col, 1, pad)[1:]):
            assert_close(g, r, what=f"pad {pad} grads without dx")


def test_numba_twin_restores_the_blas_thread_limit():
    # The compiled twin runs its products with one BLAS thread and restores the previous limit,
    # also when nested, also after an exception.
    from threadpoolctl import threadpool_info, threadpool_limits

    from zerodl.kernels.convolution import _one_blas_thread

    def blas_threads():  # NumPy's BLAS, the one the products use
        return [lib["num_threads"] for lib in threadpool_info()
                if lib["user_api"] == "blas" and "numpy" in lib["filepath"]]

    rng = np.random.default_rng(2)
    x, W, b = rng.standard_normal((2, 1, 5, 5)), rng.standard_normal((2, 1, 3, 3)), np.zeros(2)
    with threadpool_limits(limits=2, user_api="blas"):
        before = blas_threads()
        assert before  # NumPy's BLAS is visible (2 threads where the machine has 2 cores)
        with _one_blas_thread():
            assert all(n == 1 for n in blas_threads())
            with _one_blas_thread():
                kernels.get("conv_forward", "numba")(x, W, b, 1, 0)
            assert all(n == 1 for n in blas_threads())
        assert blas_threads() == before
        with pytest.raises(RuntimeError), _one_blas_thread():
            raise RuntimeError("boom")
        assert blas_threads() == before


def test_numba_twins_bit_identical_across_thread_counts(monkeypatch):
    # The groups of chunks run on several threads; chunks and groups depend on the shapes only, the
    # weight gradient adds the groups' partial sums in group order: one thread or two, same bits.
    import numba

    from zerodl.kernels import convolution

    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)  # one image per chunk: 7 chunks, 4 groups

    monkeypatch.setattr(convolution, "WINO_CHUNK_BYTES", 1)
    monkeypatch.setattr(convolution, "GEMM_COLS", 11)  # products in column blocks
    monkeypatch.setattr(convolution, "GEMM_DW_COLS", 13)
    rng = np.random.default_rng(8)
    # 3 channels: the patch-matrix route; 4 (= WINO_MIN_CHANNELS) and 4 filters: Winograd, dx too;
    # 1 channel: the direct forward.
    for dtype, C in ((np.float32, 3), (np.float64, 3), (np.float32, 4), (np.float64, 4), (np.float32, 1)):
        x = rng.standard_normal((7, C, 6, 5)).astype(dtype)
        W = rng.standard_normal((4, C, 3, 3)).astype(dtype)
        b = rng.standard_normal(4).astype(dtype)
        dout = rng.standard_normal((7, 4, 6, 5)).astype(dtype)
        runs = []
        old = numba.get_num_threads()
        try:
            for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
                numba.set_num_threads(threads)
                out, keep = convolution.conv_forward_numba(x, W, b, 1, 1)
                relu_out, _ = convolution.conv_relu_forward_numba(x, W, b, 1, 1)
                runs.append((out, *convolution.conv_backward_numba(dout, x, W, keep, 1, 1), relu_out,
                             *convolution.conv_relu_backward_numba(dout, relu_out, x, W, None, 1, 1),
                             *convolution.conv_relu_backward_numba(dout, relu_out, x, W, None, 1, 1,
                                                                   need_dx=False)[1:]))
        finally:
            numba.set_num_threads(old)
        for a, r in zip(*runs):
            np.testing.assert_array_equal(a, r)
            assert a.dtype == dtype
        assert convolution._Plan(x.shape, W.shape, 1, 1, x.itemsize).groups == convolution.GROUPS


@settings(max_examples=15)
@given(shape=convs(), seed=st.integers(0, 2**16))
def test_conv_relu_twins_agree_and_match_naive(shape, seed):
    # The ReLU-fused pair: forward = relu(conv), backward = conv_backward of the masked gradient.
    for dtype in DTYPES:
        x, W, b, stride, pad, rng = _inputs(shape, seed, dtype)
        before = [a.copy() for a in (x, W, b)]
        out_np, col_np = kernels.get("conv_relu_forward", "numpy")(x, W, b, stride, pad)
        out_nb, col_nb = kernels.get("conv_relu_forward", "numba")(x, W, b, stride, pad)
        for a, orig in zip((x, W, b), before):
            np.testing.assert_array_equal(a, orig)
        assert_close(out_nb, out_np, what="conv_relu_forward out")
        assert out_nb.dtype == dtype and out_nb.flags.c_contiguous and col_nb is None
        assert (out_nb >= 0).all()
        # The same col as conv_forward keeps, and the ReLU of conv_forward's output.
        np.testing.assert_array_equal(col_np, kernels.get("im2col", "numpy")(x, *W.shape[2:], stride, pad))
        plain, _ = kernels.get("conv_forward", "numba")(x, W, b, stride, pad)
        np.testing.assert_array_equal(out_nb, np.where(plain <= 0, dtype(0), plain))
        np.testing.assert_allclose(out_nb, naive.conv_relu_forward(x, W, b, stride, pad), **tolerance(dtype))

        dout = rng.standard_normal(out_np.shape).astype(dtype)
        out = out_np
        before = [a.copy() for a in (dout, out, x, W, col_np)]
        ref = kernels.get("conv_relu_backward", "numpy")(dout, out, x, W, col_np, stride, pad)
        for backend, cache in (("numba", None), ("numba", col_np), ("numpy", None)):
            got = kernels.get("conv_relu_backward", backend)(dout, out, x, W, cache, stride, pad)
            for name, g, r in zip(("dx", "dW", "db"), got, ref):
                assert_close(g, r, what=f"conv_relu_backward {backend} {name}")
                assert g.flags.c_contiguous and g.dtype == dtype
            # need_dx=False: no dx, the same dW and db.
            none_dx, dW_only, db_only = kernels.get("conv_relu_backward", backend)(
                dout, out, x, W, cache, stride, pad, False)
            assert none_dx is None
            np.testing.assert_array_equal(dW_only, got[1])
            np.testing.assert_array_equal(db_only, got[2])
        for a, orig in zip((dout, out, x, W, col_np), before):
            np.testing.assert_array_equal(a, orig)
        for name, g, r in zip(("dx", "dW", "db"), ref, naive.conv_relu_backward(dout, out, x, W, stride, pad)):
            np.testing.assert_allclose(g, r, err_msg=name, **tolerance(dtype))


@pytest.mark.parametrize("op", ["conv", "conv_relu"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("stride, pad", [(1, 1), (2, 0)])
def test_gradient_check(op, backend, stride, pad):
    # Analytic dx, dW, db against central differences of sum(forward(x) * dout), float64.
    from tests.helpers import check_layer_gradient

    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 2, 5, 5))
    W = rng.standard_normal((3, 2, 3, 3))
    b = rng.standard_normal(3)
    forward = kernels.get(f"{op}_forward", backend)
    backward = kernels.get(f"{op}_backward", backend)
    out, keep = forward(x, W, b, stride, pad)
    dout = rng.standard_normal(out.shape)
    extra = (out,) if op == "conv_relu" else ()
    dx, dW, db = backward(dout, *extra, x, W, keep, stride, pad)
    check_layer_gradient(lambda v: forward(v, W, b, stride, pad)[0], x, dout, dx)
    check_layer_gradient(lambda v: forward(x, v, b, stride, pad)[0], W, dout, dW)
    check_layer_gradient(lambda v: forward(x, W, v, stride, pad)[0], b, dout, db)


@pytest.mark.parametrize("pad", [0, 1, 2])
@pytest.mark.parametrize("hw", [(6, 6), (5, 7)], ids=["even", "odd"])
def test_winograd_route_matches_numpy_and_naive(monkeypatch, pad, hw):
    # 3x3 unit-stride layers with >= WINO_MIN_CHANNELS channels take Winograd F(2x2, 3x3) in the
    # Numba twins (forward, and dx when dout has that many channels): rounding differs from the
    # direct sums by a few ulps, inside the dtype tolerances (see the comment in convolution.py).
    from zerodl.kernels import convolution

    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)  # one image per chunk: several groups

    monkeypatch.setattr(convolution, "WINO_CHUNK_BYTES", 1)
    rng = np.random.default_rng(17 + pad)
    C = FN = convolution.WINO_MIN_CHANNELS
    for dtype in DTYPES:
        x = rng.standard_normal((3, C, *hw)).astype(dtype)
        W = rng.standard_normal((FN, C, 3, 3)).astype(dtype)
        b = rng.standard_normal(FN).astype(dtype)
        assert convolution._winograd_ok(C, 3, 3, 1, pad) and convolution._winograd_ok(FN, 3, 3, 1, 2 - pad)
        before = [a.copy() for a in (x, W, b)]
        for op in ("conv", "conv_relu"):
            out, col = kernels.get(f"{op}_forward", "numpy")(x, W, b, 1, pad)
            got, _ = kernels.get(f"{op}_forward", "numba")(x, W, b, 1, pad)
            assert_close(got, out, what=f"{op} winograd forward")
            assert got.flags.c_contiguous and got.shape == out.shape
            ref_naive = (naive.conv_relu_forward if op == "conv_relu" else naive.conv_forward)(x, W, b, 1, pad)
            np.testing.assert_allclose(got, ref_naive, **tolerance(dtype))
            dout = rng.standard_normal(out.shape).astype(dtype)
            extra = (out,) if op == "conv_relu" else ()
            ref = kernels.get(f"{op}_backward", "numpy")(dout, *extra, x, W, col, 1, pad)
            grads = kernels.get(f"{op}_backward", "numba")(dout, *extra, x, W, None, 1, pad)
            for name, g, r in zip(("dx", "dW", "db"), grads, ref):
                assert_close(g, r, what=f"{op} winograd {name}")
                assert g.flags.c_contiguous
            # The direct (patch matrix) route of the same twin agrees too.
            monkeypatch.setattr(convolution, "WINOGRAD", False)
            direct = kernels.get(f"{op}_backward", "numba")(dout, *extra, x, W, None, 1, pad)
            monkeypatch.setattr(convolution, "WINOGRAD", True)
            for name, g, r in zip(("dx", "dW", "db"), grads, direct):
                assert_close(g, r, what=f"{op} winograd vs direct {name}")
        for a, orig in zip((x, W, b), before):
            np.testing.assert_array_equal(a, orig)


def test_winograd_gradient_check():
    from tests.helpers import check_layer_gradient
    from zerodl.kernels import convolution

    rng = np.random.default_rng(23)
    C = convolution.WINO_MIN_CHANNELS
    x = rng.standard_normal((2, C, 4, 5))
    W = rng.standard_normal((C, C, 3, 3))
    b = rng.standard_normal(C)
    for op in ("conv", "conv_relu"):
        forward = kernels.get(f"{op}_forward", "numba")
        out, keep = forward(x, W, b, 1, 1)
        dout = rng.standard_normal(out.shape)
        extra = (out,) if op == "conv_relu" else ()
        dx, dW, db = kernels.get(f"{op}_backward", "numba")(dout, *extra, x, W, keep, 1, 1)
        check_layer_gradient(lambda v, f=forward: f(v, W, b, 1, 1)[0], x, dout, dx)
        check_layer_gradient(lambda v, f=forward: f(x, v, b, 1, 1)[0], W, dout, dW)
        check_layer_gradient(lambda v, f=forward: f(x, W, v, 1, 1)[0], b, dout, db)


# ----------------------------------------------------------------------------- direct single-channel route
@pytest.mark.parametrize(("n", "fn", "h", "w", "fh", "pad"), [
    (3, 16, 28, 28, 3, 1),  # DeepConvNet's first layer: four blocks of four filters
    (2, 6, 7, 5, 3, 0),  # four filters, then two singly
    (1, 3, 4, 9, 1, 2),  # filters one row high; three singly
    (4, 5, 6, 6, 5, 2),  # filters five rows high
])
def test_direct_single_channel_route_rounding_within_the_table(monkeypatch, n, fn, h, w, fh, pad):
    # The direct kernel (fused multiply-adds: jit(contract=True)) against the NumPy twin, the naive
    # oracle and the patch route, within the dtype's tolerance from the table in tests/helpers.py.
    from zerodl.kernels import _direct_c1, conv_relu_pool, convolution

    monkeypatch.setattr(_direct_c1, "ENABLED", False)  # the pooled layer on this route, not on register tiles
    rng = np.random.default_rng(fn + h)
    for dtype in DTYPES:
        x = rng.standard_normal((n, 1, h, w)).astype(dtype)
        W = rng.standard_normal((fn, 1, fh, 3)).astype(dtype)
        b = rng.standard_normal(fn).astype(dtype)
        plan = convolution._Plan(x.shape, W.shape, 1, pad, x.itemsize)
        assert plan.direct is convolution._direct_c1_fw3
        out = convolution.conv_forward_numba(x, W, b, 1, pad)[0]
        relu_out = convolution.conv_relu_forward_numba(x, W, b, 1, pad)[0]
        assert out.dtype == dtype and relu_out.dtype == dtype
        assert_close(out, kernels.get("conv_forward", "numpy")(x, W, b, 1, pad)[0], what="direct conv")
        np.testing.assert_allclose(out, naive.conv_forward(x, W, b, 1, pad), **tolerance(dtype))
        np.testing.assert_array_equal(relu_out, np.where(out <= 0, dtype(0), out))
        if (h + 2 * pad - fh + 1) >= 2 and (w + 2 * pad - 2) >= 2:
            pooled = conv_relu_pool.conv_relu_pool_inference_numba(x, W, b, 1, pad)
            np.testing.assert_array_equal(pooled, kernels.get("max_pool_forward", "numba")(relu_out, 2, 2, 2, 0)[0])
        monkeypatch.setattr(convolution, "DIRECT_C1", False)
        assert convolution._Plan(x.shape, W.shape, 1, pad, x.itemsize).direct is None
        assert_close(out, convolution.conv_forward_numba(x, W, b, 1, pad)[0], what="direct vs patch route")
        monkeypatch.setattr(convolution, "DIRECT_C1", True)


def test_direct_route_only_for_single_channel_unit_stride_3_wide():
    from zerodl.kernels import convolution

    def direct(C, fw, stride):
        return convolution._Plan((2, C, 8, 8), (3, C, 3, fw), stride, 1, 4).direct is not None

    assert direct(1, 3, 1)
    assert not direct(2, 3, 1) and not direct(1, 3, 2) and not direct(1, 5, 1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn, c", [(16, 1), (3, 5), (32, 32), (64, 64)])
def test_winograd_filter_transform_matches_its_formula(dtype, fn, c):
    # U[4a + b, f, c] = (G g Gᵀ)[a, b]: bit for bit the kernel's expression order (a loop oracle),
    # and within rounding of the matrix form. 32x32 and 64x64 are the shapes whose planes are
    # multiples of 4 KiB, which the kernel writes through a buffer.
    from zerodl.kernels.convolution import _wino_filters

    W = np.random.default_rng(fn * 100 + c).standard_normal((fn, c, 3, 3)).astype(dtype)
    U = _wino_filters(W)
    assert U.shape == (16, fn, c) and U.dtype == dtype
    half = dtype(0.5)
    oracle = np.empty_like(U)
    for f in range(fn):
        for ch in range(c):
            g = W[f, ch]
            t = np.empty((4, 3), dtype=dtype)
            for k in range(3):
                t[0, k], t[3, k] = g[0, k], g[2, k]
                t[1, k] = half * (g[0, k] + g[1, k] + g[2, k])
                t[2, k] = half * (g[0, k] - g[1, k] + g[2, k])
            for a in range(4):
                r0, r1, r2 = t[a]
                oracle[4 * a:4 * a + 4, f, ch] = (r0, half * (r0 + r1 + r2), half * (r0 - r1 + r2), r2)
    np.testing.assert_array_equal(U, oracle)
    G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    matrix = np.einsum("ai,fcij,bj->abfc", G, W.astype(np.float64), G).reshape(16, fn, c)
    np.testing.assert_allclose(U, matrix, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)

"""conv_relu_pool_forward / conv_relu_pool_backward (conv + ReLU + 2x2 max pooling, fused): numpy vs
numba (both dtypes; the Winograd-fused route and the chained one), vs the naive oracle and vs the
unfused chain of ops, inputs untouched, dtypes, gradient check, bit-identical for 1 or 2 threads."""

import numpy as np
import pytest

from tests import naive
from tests.helpers import assert_close, check_layer_gradient, tolerance
from zerodl import kernels
from zerodl.kernels import _direct_c1, conv_relu_pool, convolution

DTYPES = (np.float32, np.float64)

#: (N, C, H, W, FN, F, pad): Winograd-fused (C >= 4, 3x3, even output), odd output (fused too:
#: the last tile row / column dropped), few channels (chained), a 5x5 filter (chained).
CASES = [
    (3, 4, 6, 6, 5, 3, 1),
    (2, 4, 5, 7, 4, 3, 2),
    (2, 4, 6, 4, 4, 3, 0),
    (3, 2, 6, 6, 3, 3, 1),
    (2, 1, 8, 8, 3, 5, 0),
]


def _inputs(case, dtype, seed=0):
    n, c, h, w, fn, f, pad = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    W = rng.standard_normal((fn, c, f, f)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    return x, W, b, pad, rng


@pytest.mark.parametrize("case", CASES)
def test_forward_twins_agree_and_match_naive_and_the_chain(case):
    for dtype in DTYPES:
        x, W, b, pad, _ = _inputs(case, dtype)
        before = [a.copy() for a in (x, W, b)]
        p_np, a_np, col = kernels.get("conv_relu_pool_forward", "numpy")(x, W, b, 1, pad)
        p_nb, a_nb, col_nb = kernels.get("conv_relu_pool_forward", "numba")(x, W, b, 1, pad)
        for a, orig in zip((x, W, b), before):
            np.testing.assert_array_equal(a, orig)
        # The Numba twin keeps nothing beside pooled and arg_max, but on the register-tile route
        # (one channel, AVX-512) its windows' codes (tested in test_direct_c1).
        n, fn, ph, pw = p_nb.shape
        assert col_nb is None or (x.shape[1] == 1 and _direct_c1.codes_fit(col_nb, n, fn, ph, pw))
        np.testing.assert_array_equal(col, kernels.get("im2col", "numpy")(x, *W.shape[2:], 1, pad))
        assert_close(p_nb, p_np, what="pooled")
        np.testing.assert_array_equal(a_nb, a_np)
        assert p_nb.dtype == dtype and a_nb.dtype == np.intp and p_nb.flags.c_contiguous
        ref_p, ref_a = naive.conv_relu_pool_forward(x, W, b, 1, pad)
        np.testing.assert_allclose(p_nb, ref_p, **tolerance(dtype))
        np.testing.assert_array_equal(a_nb, ref_a)
        # The unfused chain of the Numba twins gives the same maxima and positions.
        out, _ = kernels.get("conv_relu_forward", "numba")(x, W, b, 1, pad)
        p_chain, a_chain = kernels.get("max_pool_forward", "numba")(out, 2, 2, 2, 0)
        assert_close(p_nb, p_chain, what="pooled vs chain")
        np.testing.assert_array_equal(a_nb, a_chain)


def test_winograd_fused_route_is_taken_for_the_books_shapes():
    # The books' DeepConvNet pooled layers (16 channels and up, 3x3, pad 1/2) take the fused route.
    assert convolution._winograd_ok(16, 3, 3, 1, 1) and convolution._winograd_ok(32, 3, 3, 1, 2)
    assert CASES[0][1] >= convolution.WINO_MIN_CHANNELS


@pytest.mark.parametrize("case", CASES)
def test_backward_twins_agree_and_match_naive(case):
    for dtype in DTYPES:
        x, W, b, pad, rng = _inputs(case, dtype, seed=1)
        pooled, arg, col = kernels.get("conv_relu_pool_forward", "numpy")(x, W, b, 1, pad)
        assert (pooled == 0).any() and (pooled > 0).any()  # both sides of the ReLU's mask
        dpooled = rng.standard_normal(pooled.shape).astype(dtype)
        before = [a.copy() for a in (dpooled, pooled, arg, x, W, col)]
        ref = kernels.get("conv_relu_pool_backward", "numpy")(dpooled, pooled, arg, x, W, col, 1, pad)
        for backend, cache in (("numba", None), ("numba", col), ("numpy", None)):
            got = kernels.get("conv_relu_pool_backward", backend)(dpooled, pooled, arg, x, W, cache, 1, pad)
            for name, g, r in zip(("dx", "dW", "db"), got, ref):
                assert_close(g, r, what=f"{backend} {name}")
                assert g.flags.c_contiguous and g.dtype == dtype
            none_dx, dW_only, db_only = kernels.get("conv_relu_pool_backward", backend)(
                dpooled, pooled, arg, x, W, cache, 1, pad, False)
            assert none_dx is None
            np.testing.assert_array_equal(dW_only, got[1])
            np.testing.assert_array_equal(db_only, got[2])
        for a, orig in zip((dpooled, pooled, arg, x, W, col), before):
            np.testing.assert_array_equal(a, orig)
        for name, g, r in zip(("dx", "dW", "db"), ref,
                              naive.conv_relu_pool_backward(dpooled, pooled, arg, x, W, 1, pad)):
            np.testing.assert_allclose(g, r, err_msg=name, **tolerance(dtype))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[3]], ids=["fused", "odd", "chained"])
def test_gradient_check(backend, case):
    x, W, b, pad, rng = _inputs(case, np.float64, seed=2)
    forward = kernels.get("conv_relu_pool_forward", backend)
    pooled, arg, keep = forward(x, W, b, 1, pad)
    dpooled = rng.standard_normal(pooled.shape)
    dx, dW, db = kernels.get("conv_relu_pool_backward", backend)(dpooled, pooled, arg, x, W, keep, 1, pad)
    check_layer_gradient(lambda v: forward(v, W, b, 1, pad)[0], x, dpooled, dx)
    check_layer_gradient(lambda v: forward(x, v, b, 1, pad)[0], W, dpooled, dW)
    check_layer_gradient(lambda v: forward(x, W, v, 1, pad)[0], b, dpooled, db)


@pytest.mark.parametrize("case", [(3, 2, 6, 6, 3, 3, 1), (2, 1, 8, 8, 3, 5, 0), (5, 1, 9, 8, 9, 3, 1),
                                  (1, 3, 7, 9, 11, 2, 0)],
                         ids=["patch", "5x5", "odd-rows-9-filters", "odd-cols-one-image"])
def test_patch_route_unpools_into_the_products_and_sums_db_in_the_books_order(monkeypatch, case):
    # The patch route's backward writes the unpooled gradient straight into each chunk's product
    # columns and sums db off the pooled arrays (the full-resolution gradient is never stored): db
    # bit for bit the NumPy twin's (the book's order), dW / dx as the unfused chain of Numba ops,
    # also with chunks of one image, products in column blocks and rows/columns no window covers.
    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)
    monkeypatch.setattr(convolution, "GEMM_DW_COLS", 7)
    monkeypatch.setattr(_direct_c1, "ENABLED", False)  # the patch route (test_direct_c1 has the other)
    for dtype in DTYPES:
        x, W, b, pad, rng = _inputs(case, dtype, seed=6)
        pooled, arg, col = kernels.get("conv_relu_pool_forward", "numpy")(x, W, b, 1, pad)
        dpooled = rng.standard_normal(pooled.shape).astype(dtype)
        dpooled[..., 0] = -0.0  # signed zeros add nothing either
        ref = conv_relu_pool.conv_relu_pool_backward_numpy(dpooled, pooled, arg, x, W, col, 1, pad)
        out = kernels.get("conv_relu_forward", "numpy")(x, W, b, 1, pad)[0]
        dout = kernels.get("max_pool_backward", "numpy")(
            np.where(pooled <= 0, dtype(0), dpooled), arg, out.shape, 2, 2, 2, 0)
        for need_dx in (True, False):
            chain = convolution.conv_backward_numba(dout, x, W, None, 1, pad, need_dx)
            got = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, pooled, arg, x, W, None, 1, pad,
                                                               need_dx)
            np.testing.assert_array_equal(got[2], ref[2])
            np.testing.assert_array_equal(got[1], chain[1])
            if need_dx:
                np.testing.assert_array_equal(got[0], chain[0])
            assert got[1].dtype == got[2].dtype == dtype


def test_nan_propagates_like_the_chain():
    x, W, b, pad, _ = _inputs(CASES[0], np.float64, seed=3)
    x[0, 0, 2, 2] = np.nan
    p_nb, a_nb, _ = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
    p_np, a_np, _ = conv_relu_pool.conv_relu_pool_forward_numpy(x, W, b, 1, pad)
    assert np.isnan(p_nb).any()
    np.testing.assert_array_equal(np.isnan(p_nb), np.isnan(p_np))
    np.testing.assert_array_equal(a_nb, a_np)


@pytest.mark.parametrize("compiled_products", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_winograd_odd_outputs_pool_in_the_transform_with_the_chains_bits(monkeypatch, dtype, compiled_products):
    # Odd output sizes (DeepConvNet's last conv: 7x7 in, pad 2, 9x9 out) pool in Winograd's output
    # transform too, dropping the last tile row / column as the 2x2 pooling drops the output's last
    # row / column: pooled, arg_max and the inference values are the chain's bit for bit, NaN too,
    # in the compiled group loops and in the Python loops alike.
    from zerodl.kernels import _blas

    monkeypatch.setattr(_blas, "_forced_off", not compiled_products)
    rng = np.random.default_rng(21)
    for n, c, h, w, fn, pad in ((3, 8, 7, 7, 8, 2), (2, 4, 5, 7, 4, 2), (2, 4, 9, 6, 4, 1), (2, 4, 5, 5, 4, 0)):
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        W = rng.standard_normal((fn, c, 3, 3)).astype(dtype)
        b = rng.standard_normal(fn).astype(dtype)
        assert convolution._winograd_ok(c, 3, 3, 1, pad)
        for poison in (False, True):
            if poison:
                x[1, 0, 2, 3] = np.nan
            out, _ = convolution.conv_relu_forward_numba(x, W, b, 1, pad)
            assert out.shape[2] % 2 or out.shape[3] % 2
            p_chain, a_chain = kernels.get("max_pool_forward", "numba")(out, 2, 2, 2, 0)
            p, a, col = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
            p_infer = conv_relu_pool.conv_relu_pool_inference_numba(x, W, b, 1, pad)
            assert col is None and p.shape == p_chain.shape and p.dtype == dtype
            np.testing.assert_array_equal(p, p_chain)
            np.testing.assert_array_equal(a, a_chain)
            np.testing.assert_array_equal(p_infer, p_chain)
            assert np.isnan(p).any() == poison


@pytest.mark.parametrize("compiled_products", [True, False])
def test_patch_route_pools_each_group_as_the_chain_does(monkeypatch, compiled_products):
    # Off Winograd's route (SimpleConvNet's 1-channel 5x5 layer) each task pools the images it has
    # just convolved: several groups of one-image chunks, a NaN in one image (that group pools
    # with the NaN-aware pass, the others with the fast one), both product paths: the chain's
    # maxima and positions exactly.
    from zerodl.kernels import _blas

    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)
    monkeypatch.setattr(_blas, "_forced_off", not compiled_products)
    monkeypatch.setattr(_direct_c1, "ENABLED", False)
    for dtype in DTYPES:
        x, W, b, pad, _ = _inputs((7, 1, 8, 8, 3, 5, 0), dtype, seed=6)
        x[5, 0, 3, 3] = np.nan
        pooled, arg, _ = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
        out, _ = kernels.get("conv_relu_forward", "numba")(x, W, b, 1, pad)
        p_chain, a_chain = kernels.get("max_pool_forward", "numba")(out, 2, 2, 2, 0)
        np.testing.assert_array_equal(pooled, p_chain)
        np.testing.assert_array_equal(arg, a_chain)
        assert np.isnan(pooled[5]).any() and not np.isnan(np.delete(pooled, 5, axis=0)).any()
        p_np, a_np, _ = conv_relu_pool.conv_relu_pool_forward_numpy(x, W, b, 1, pad)
        np.testing.assert_array_equal(arg, a_np)
        np.testing.assert_array_equal(np.isnan(pooled), np.isnan(p_np))


def test_numba_twins_bit_identical_across_thread_counts(monkeypatch):
    import numba

    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)  # one image per chunk: several groups

    monkeypatch.setattr(convolution, "WINO_CHUNK_BYTES", 1)
    runs = []
    old = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            run = []
            # Winograd's fused route, and the patch route (unpooled into the products' columns).
            for case in ((7, 4, 6, 6, 4, 3, 1), (7, 1, 8, 8, 5, 5, 0)):
                x, W, b, pad, _ = _inputs(case, np.float32, seed=4)
                pooled, arg, _ = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
                dpooled = np.random.default_rng(5).standard_normal(pooled.shape).astype(np.float32)
                grads = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, pooled, arg, x, W, None, 1, pad)
                run += [pooled, arg, *grads]
            runs.append(run)
    finally:
        numba.set_num_threads(old)
    for a, r in zip(*runs):
        np.testing.assert_array_equal(a, r)


# ----------------------------------------------------------------------------- inference op
@pytest.mark.parametrize("case", CASES)
def test_inference_twins_match_the_training_forward_and_naive(case):
    for dtype in DTYPES:
        x, W, b, pad, _ = _inputs(case, dtype)
        before = [a.copy() for a in (x, W, b)]
        got_np = kernels.get("conv_relu_pool_inference", "numpy")(x, W, b, 1, pad)
        got_nb = kernels.get("conv_relu_pool_inference", "numba")(x, W, b, 1, pad)
        for a, orig in zip((x, W, b), before):
            np.testing.assert_array_equal(a, orig)
        assert got_nb.dtype == dtype and got_np.dtype == dtype and got_nb.flags.c_contiguous
        # Each twin gives its training forward's pooled values bit for bit (same products, same
        # additions; the maximum of the ReLU'd values taken without the arg-max).
        np.testing.assert_array_equal(got_np, kernels.get("conv_relu_pool_forward", "numpy")(x, W, b, 1, pad)[0])
        np.testing.assert_array_equal(got_nb, kernels.get("conv_relu_pool_forward", "numba")(x, W, b, 1, pad)[0])
        assert_close(got_nb, got_np, what="pooled (inference)")
        np.testing.assert_allclose(got_nb, naive.conv_relu_pool_inference(x, W, b, 1, pad), **tolerance(dtype))


def test_inference_patch_route_pools_in_the_scatter(monkeypatch):
    # A 5x5 single-channel layer (SimpleConvNet's) with an odd output (7x7: the last row and column
    # are dropped) on the patch route, and the books' 1-channel 3x3 first layer.
    monkeypatch.setattr(_direct_c1, "ENABLED", False)
    rng = np.random.default_rng(7)
    for shape, wshape, pad in (((3, 1, 11, 11), (4, 1, 5, 5), 0), ((2, 1, 8, 6), (5, 1, 3, 3), 1)):
        for dtype in DTYPES:
            x = rng.standard_normal(shape).astype(dtype)
            W = rng.standard_normal(wshape).astype(dtype)
            b = rng.standard_normal(wshape[0]).astype(dtype)
            assert not convolution._winograd_ok(shape[1], *wshape[2:], 1, pad)
            got = kernels.get("conv_relu_pool_inference", "numba")(x, W, b, 1, pad)
            out, _ = kernels.get("conv_relu_forward", "numba")(x, W, b, 1, pad)
            np.testing.assert_array_equal(got, kernels.get("max_pool_forward", "numba")(out, 2, 2, 2, 0)[0])
            np.testing.assert_allclose(got, naive.conv_relu_pool_inference(x, W, b, 1, pad), **tolerance(dtype))
            x[0, 0, 1, 2] = np.nan  # NaN wins wherever it reaches (both scatter passes: odd and even rows)
            got = kernels.get("conv_relu_pool_inference", "numba")(x, W, b, 1, pad)
            out, _ = kernels.get("conv_relu_forward", "numba")(x, W, b, 1, pad)
            assert np.isnan(got).any()
            np.testing.assert_array_equal(got, kernels.get("max_pool_forward", "numba")(out, 2, 2, 2, 0)[0])


@pytest.mark.parametrize("case", [CASES[0], CASES[4]])
def test_inference_nan_propagates_like_the_training_forward(case):
    for dtype in DTYPES:
        x, W, b, pad, _ = _inputs(case, dtype, seed=3)
        x[0, 0, 2, 2] = np.nan
        got = kernels.get("conv_relu_pool_inference", "numba")(x, W, b, 1, pad)
        ref = kernels.get("conv_relu_pool_forward", "numpy")(x, W, b, 1, pad)[0]
        assert np.isnan(got).any()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(got, kernels.get("conv_relu_pool_forward", "numba")(x, W, b, 1, pad)[0])


@pytest.mark.parametrize("case", [(7, 4, 6, 6, 4, 3, 1), (7, 1, 8, 8, 3, 5, 0)])
def test_inference_bit_identical_across_thread_counts(monkeypatch, case):
    import numba

    monkeypatch.setattr(convolution, "CHUNK_BYTES", 1)  # one image per chunk: several groups

    monkeypatch.setattr(convolution, "WINO_CHUNK_BYTES", 1)
    x, W, b, pad, _ = _inputs(case, np.float32, seed=4)
    runs = []
    old = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            runs.append(conv_relu_pool.conv_relu_pool_inference_numba(x, W, b, 1, pad))
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(runs[0], runs[1])


# ----------------------------------------------------------------------------- with the next Affine's product
#: (N, C, H, W, FN, F, pad, H2): the op's cases; the first two are large enough (N·features·H2 >=
#: SPLIT_MIN_MACS) for the compiled twin's row blocks, the first on the register-tile route.
AFFINE_CASES = [
    (20, 1, 28, 28, 30, 5, 0, 100),
    (12, 4, 16, 16, 32, 3, 1, 100),
    (3, 1, 8, 8, 3, 5, 0, 7),
    (2, 4, 6, 6, 5, 3, 1, 4),
]


def _spy_on_tiles(monkeypatch, name, fused_kwarg):
    # Record, for each call of _direct_c1.<name>, whether it came with the fused tasks' keyword.
    calls = []
    original = getattr(_direct_c1, name)

    def spy(*args, **kwargs):
        calls.append(bool(kwargs.get(fused_kwarg)))
        return original(*args, **kwargs)

    monkeypatch.setattr(_direct_c1, name, spy)
    return calls


@pytest.mark.parametrize("case", AFFINE_CASES)
def test_affine_forward_is_the_forward_then_the_product(case, monkeypatch):
    # The NumPy twin: the forward twin and np.dot, bit for bit. The compiled twin: its own forward
    # twin and matmul_in_parts with the same parts, bit for bit, whatever the route (one call of
    # fused tasks on the register-tile route when the product is cut); the twins agree to rounding.
    from zerodl.kernels._tasks import matmul_in_parts

    n, c, h, w, fn, f, pad, h2 = case
    fused_calls = _spy_on_tiles(monkeypatch, "forward", "after")
    for dtype in DTYPES:
        x, W, b, _, rng = _inputs((n, c, h, w, fn, f, pad), dtype, seed=11)
        p_ref, a_ref, _ = conv_relu_pool.conv_relu_pool_forward_numpy(x, W, b, 1, pad)
        W2 = rng.standard_normal((p_ref[0].size, h2)).astype(dtype)
        before = [a.copy() for a in (x, W, b, W2)]
        z_np = np.full((n, h2), np.nan, dtype=dtype)
        p_np, a_np, _ = conv_relu_pool.conv_relu_pool_affine_forward_numpy(x, W, b, 1, pad, W2, z_np, 2)
        np.testing.assert_array_equal(p_np, p_ref)
        np.testing.assert_array_equal(a_np, a_ref)
        np.testing.assert_array_equal(z_np, np.dot(p_ref.reshape(n, -1), W2))
        for parts in (1, 2, 3):
            z_nb = np.full((n, h2), np.nan, dtype=dtype)
            p_nb, a_nb, col_nb = conv_relu_pool.conv_relu_pool_affine_forward_numba(x, W, b, 1, pad, W2, z_nb, parts)
            p_ch, a_ch, col_ch = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
            z_ch = np.empty_like(z_nb)
            matmul_in_parts(p_ch.reshape(n, -1), W2, z_ch, parts)
            np.testing.assert_array_equal(p_nb, p_ch)
            np.testing.assert_array_equal(a_nb, a_ch)
            np.testing.assert_array_equal(z_nb, z_ch)
            assert (col_nb is None) == (col_ch is None)
            if col_nb is not None:
                np.testing.assert_array_equal(col_nb, col_ch)
            assert_close(p_nb, p_np, what="pooled")
            np.testing.assert_array_equal(a_nb, a_np)
            # z to rounding against the size of its terms (entries near 0 cancel large products)
            scale = np.abs(p_np.reshape(n, -1)).astype(np.float64) @ np.abs(W2).astype(np.float64)
            assert np.all(np.abs(z_nb.astype(np.float64) - z_np) <= tolerance(dtype)["rtol"] * scale), "z"
        for a, orig in zip((x, W, b, W2), before):
            np.testing.assert_array_equal(a, orig)
    # The first case takes the fused tasks (register tiles, a product large enough to cut) with 2
    # and 3 parts, and only those.
    if case is AFFINE_CASES[0] and _direct_c1.available():
        assert fused_calls.count(True) == 2 * len(DTYPES)  # parts 2 and 3 in each dtype
    else:
        assert not any(fused_calls)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_affine_forward_refuses_a_product_that_does_not_fit(backend):
    op = kernels.get("conv_relu_pool_affine_forward", backend)
    x, W, b, pad, _ = _inputs((2, 1, 8, 8, 3, 5, 0), np.float64)
    good_W2, good_z = np.zeros((12, 4)), np.zeros((2, 4))
    for W2, z, what in ((np.zeros((13, 4)), good_z, r"W2 \(13, 4\)"), (good_W2, np.zeros((3, 4)), r"z \(3, 4\)"),
                        (good_W2, np.zeros((4, 2)).T, "not C-contiguous")):
        with pytest.raises(ValueError, match=rf"conv_relu_pool_affine_forward: .*12 features.*{what}"):
            op(x, W, b, 1, pad, W2, z, 2)


@pytest.mark.parametrize("case", AFFINE_CASES)
@pytest.mark.parametrize("with_dW", [True, False])
def test_affine_backward_is_the_affines_backward_then_the_blocks(case, with_dW, monkeypatch):
    # The NumPy twin: affine_backward_into then conv_relu_pool_backward, bit for bit. The compiled
    # twin: the same compiled twins in turn, bit for bit (one call whose first tasks are the
    # Affine's products where it applies: register tiles, products cut, no dx); the twins agree to
    # rounding. dW2 None: not computed (the SGD fold's case).
    n, c, h, w, fn, f, pad, h2 = case
    fused_calls = _spy_on_tiles(monkeypatch, "weight_grad", "first_tasks")
    for dtype in DTYPES:
        x, W, b, _, _ = _inputs((n, c, h, w, fn, f, pad), dtype, seed=12)
        results = {}
        for name in ("numpy", "numba"):
            op, chain_affine, chain_conv = (kernels.get(k, name) for k in (
                "conv_relu_pool_affine_backward", "affine_backward_into", "conv_relu_pool_backward"))
            pooled, arg, col = kernels.get("conv_relu_pool_forward", name)(x, W, b, 1, pad)  # each twin's own col
            W2 = np.random.default_rng(13).standard_normal((pooled[0].size, h2)).astype(dtype)
            dz = np.random.default_rng(14).standard_normal((n, h2)).astype(dtype)
            before = [a.copy() for a in (dz, W2, pooled, arg, x, W)]
            for need_dx in (False, True):
                bufs = [np.full(s, np.nan, dtype=dtype) for s in ((n, W2.shape[0]), W2.shape, (h2,))]
                got = op(dz, W2, bufs[0], bufs[1] if with_dW else None, bufs[2], 2, pooled, arg, x, W, col, 1, pad,
                         need_dx)
                ref = [np.full(s, np.nan, dtype=dtype) for s in ((n, W2.shape[0]), W2.shape, (h2,))]
                chain_affine(dz, pooled.reshape(n, -1), W2, ref[0], ref[1] if with_dW else None, ref[2], 2)
                want = chain_conv(ref[0].reshape(pooled.shape), pooled, arg, x, W, col, 1, pad, need_dx)
                for a, r in zip([*got, *(bufs if with_dW else bufs[::2])], [*want, *(ref if with_dW else ref[::2])]):
                    if r is None:
                        assert a is None
                    else:
                        np.testing.assert_array_equal(a, r)
                results[name, need_dx] = got, bufs
            for a, orig in zip((dz, W2, pooled, arg, x, W), before):
                np.testing.assert_array_equal(a, orig)
        for need_dx in (False, True):
            (g_np, b_np), (g_nb, b_nb) = results["numpy", need_dx], results["numba", need_dx]
            for a, r, what in zip([*g_nb[1:], b_nb[0], b_nb[2]], [*g_np[1:], b_np[0], b_np[2]],
                                  ("dW", "db", "dx2", "db2")):
                tol = tolerance(dtype)["rtol"]  # against the array's scale: sums of many signed terms cancel
                np.testing.assert_allclose(a, r, rtol=tol, atol=tol * float(np.abs(r).max()), err_msg=what)
    if case is AFFINE_CASES[0] and _direct_c1.available():
        assert fused_calls.count(True) == len(DTYPES)  # need_dx False only, in each dtype
    else:
        assert not any(fused_calls)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_affine_backward_refuses_gradients_that_do_not_fit(backend):
    op = kernels.get("conv_relu_pool_affine_backward", backend)
    x, W, b, pad, _ = _inputs((2, 1, 8, 8, 3, 5, 0), np.float64)
    pooled, arg, col = kernels.get("conv_relu_pool_forward", backend)(x, W, b, 1, pad)
    W2, dz, dx2, dW2, db2 = np.zeros((12, 4)), np.zeros((2, 4)), np.zeros((2, 12)), np.zeros((12, 4)), np.zeros(4)
    for args, what in (((np.zeros((2, 5)), W2, dx2, dW2, db2), r"dz \(2, 5\)"),
                       ((dz, W2, np.zeros((2, 13)), dW2, db2), r"dx2 must be a C-contiguous \(2, 12\)"),
                       ((dz, W2, dx2, np.zeros((4, 12)), db2), r"dW2 must be a C-contiguous \(12, 4\)"),
                       ((dz, W2, dx2, dW2, np.zeros(5)), r"db2 must be a C-contiguous \(4,\)")):
        with pytest.raises(ValueError, match=rf"conv_relu_pool_affine_backward: .*{what}"):
            op(*args, 2, pooled, arg, x, W, col, 1, pad, False)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_dx_in_column_blocks_has_the_whole_products_bits(dtype):
    # conv_relu_pool_affine_backward_numba makes SimpleConvNet's dx2 = dz @ W2ᵀ (batch 100,
    # Affine(4320, 100)) in two column blocks on both cores: the same bits as the whole product.
    rng = np.random.default_rng(21)
    dz = rng.standard_normal((100, 100)).astype(dtype)
    W2 = rng.standard_normal((4320, 100)).astype(dtype)
    whole = np.dot(dz, W2.T)
    blocks = np.full_like(whole, np.nan)
    for c0, c1 in ((0, 2160), (2160, 4320)):
        np.matmul(dz, W2[c0:c1].T, out=blocks[:, c0:c1])
    np.testing.assert_array_equal(blocks, whole)

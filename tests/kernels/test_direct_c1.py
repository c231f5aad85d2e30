"""The register-tile route of conv_relu_pool for single-channel layers (kernels/_direct_c1.py).

The LLVM microkernel against a loop oracle; the route's forward, inference and weight gradient
against the NumPy twins (the book's chain) and the naive oracle, in both dtypes, over filter blocks
(more than 32 filters), odd outputs, padding, NaN and inf; bit-identical for 1 or 2 threads; the
route is taken only where it applies."""

import numba
import numpy as np
import pytest

from tests import naive
from tests.helpers import assert_close, tolerance
from zerodl.kernels import _direct_c1, conv_relu_pool

DTYPES = (np.float32, np.float64)

pytestmark = pytest.mark.skipif(not _direct_c1.available(), reason="no AVX-512: the register-tile route is off")

#: (N, H, W, FN, FH, FW, pad): SimpleConvNet's layer; two filter blocks; odd outputs (a pooled
#: column past the last tile); padding and non-square filters; one image; a single window.
CASES = [
    (3, 28, 28, 30, 5, 5, 0),
    (2, 10, 12, 40, 3, 3, 1),
    (3, 11, 9, 7, 5, 3, 0),
    (2, 7, 8, 5, 2, 4, 2),
    (1, 6, 6, 33, 1, 1, 0),
    (2, 4, 5, 3, 3, 3, 0),  # outputs 2x3: one pooling window per image
]


def _inputs(case, dtype, seed):
    n, h, w, fn, fh, fw, pad = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, h, w)).astype(dtype)
    W = rng.standard_normal((fn, 1, fh, fw)).astype(dtype)
    b = rng.standard_normal(fn).astype(dtype)
    return x, W, b, pad, rng


def _compiled(tile_fn):
    # A compiled caller of one of the module's tile functions (their microkernel is the overload).
    @numba.njit
    def call(x, pix, offs, wp, tile):
        tile_fn(x, pix, offs, wp, tile)

    return call


_TILES = [(_direct_c1._fma_tile, None), (_direct_c1._fma_tile4, 4), (_direct_c1._fma_tile5, 5),
          (_direct_c1._fma_tile6, 6)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("python", "rows"), _TILES, ids=["default", "4", "5", "6"])
def test_microkernels_match_a_loop_oracle_and_leave_their_inputs(dtype, python, rows):
    compiled = _compiled(python)
    rng = np.random.default_rng(1)
    mr = rows or _direct_c1.tile_pixels(dtype)
    x = rng.standard_normal(300).astype(dtype)
    for n_taps in (1, 7, 25):
        pix = rng.integers(0, 150, mr).astype(np.int64)
        offs = rng.integers(0, 150, n_taps).astype(np.int64)
        wp = rng.standard_normal((n_taps, _direct_c1.TILE_CH)).astype(dtype)
        tile = np.full((mr, _direct_c1.TILE_CH), np.nan, dtype=dtype)
        before = [a.copy() for a in (x, pix, offs, wp)]
        compiled(x, pix, offs, wp, tile)
        for a, orig in zip((x, pix, offs, wp), before):
            np.testing.assert_array_equal(a, orig)
        want = np.zeros((mr, _direct_c1.TILE_CH))
        for p in range(mr):
            for t in range(n_taps):
                want[p] += float(x[pix[p] + offs[t]]) * wp[t].astype(np.float64)
        np.testing.assert_allclose(tile, want, **tolerance(dtype))
        # The Python body (the JIT off) is the same sum.
        loose = np.empty_like(tile)
        python(x, pix, offs, wp, loose)
        np.testing.assert_allclose(loose, want, **tolerance(dtype))

@numba.njit
def _unpool_calls(g, code, d, windows, row):
    for k, o in windows:
        _direct_c1._unpool_window(g, code, k, d, o, row)


@numba.njit
def _add_halves_call(g, code, order, acc):
    _direct_c1._add_halves(g, code, order, acc)


@numba.njit
def _pool_calls(tile, windows, bias, best, kbest):
    for up, down, at in windows:
        _direct_c1._pool_window(tile, up, down, bias, best[at], kbest[at])


@pytest.mark.parametrize("dtype", DTYPES)
def test_pool_window_matches_a_loop_oracle(dtype):
    # max_pool_forward's rule on relu(tile + bias), lane by lane: the first maximum in row-major
    # order wins, ties included; a NaN wins (the first one); all four <= 0 give +0, code 4.
    ch = _direct_c1.TILE_CH
    rng = np.random.default_rng(8)
    tile = rng.standard_normal((8, ch)).astype(dtype)
    tile[:, 0] = [1, 1, 1, 1, 1, 1, 1, 1]  # ties: position 0
    tile[:, 1] = [-1, -2, -3, -4, -1, -2, -3, -4]  # all ReLU'd: +0 at position 0
    tile[[1, 6], 2] = np.nan  # a NaN wins
    tile[[1, 3, 6, 7], 3] = [np.nan, np.nan, np.nan, np.inf]  # the first NaN wins
    tile[5, 4] = np.inf
    bias = rng.standard_normal(ch).astype(dtype)
    bias[:2] = 0
    windows = np.array([[0, 4, 0], [2, 6, 2]], dtype=np.int64)  # (up, down, at)
    want_b = np.full((3, ch), 9.0, dtype=dtype)
    want_k = np.full((3, ch), 9, dtype=np.int8)
    for up, down, at in windows:
        for v in range(ch):
            vals = [tile[r, v] + bias[v] for r in (up, up + 1, down, down + 1)]
            vals = [dtype(0) if val <= 0 else val for val in vals]
            b, k = vals[0], 0
            for r in range(1, 4):
                if not (b >= vals[r] or np.isnan(b)):
                    b, k = vals[r], r
            want_b[at, v], want_k[at, v] = b, (4 if b <= 0 else k)  # 4: masked by the ReLU
    before = [a.copy() for a in (tile, bias)]
    for call in (_pool_calls, getattr(_pool_calls, "py_func", _pool_calls)):
        best = np.full((3, ch), 9.0, dtype=dtype)
        kbest = np.full((3, ch), 9, dtype=np.int8)
        call(tile, windows, bias, best, kbest)
        np.testing.assert_array_equal(best, want_b)
        np.testing.assert_array_equal(kbest, want_k)
        assert not np.signbit(best[0, 1]) and kbest[0, 1] == 4 and np.isnan(best[0, 2])
        for a, orig in zip((tile, bias), before):
            np.testing.assert_array_equal(a, orig)


@pytest.mark.parametrize("dtype", DTYPES)
def test_window_selects_match_a_loop_oracle_and_leave_their_inputs(dtype):
    # The unpooling of a window (its four positions from 32 gradients and codes) and the bias
    # gradient's masked add, compiled (LLVM IR) and as their Python bodies, against plain loops;
    # codes 0-3 and 4 (none), -0.0 and NaN gradients pass through exactly.
    ch = _direct_c1.TILE_CH
    rng = np.random.default_rng(7)
    g = rng.standard_normal(4 * ch).astype(dtype)
    g[3], g[40] = -0.0, np.nan
    code = rng.integers(0, 5, 4 * ch).astype(np.int8)
    row = 3 * ch  # a row of three output positions; windows at offsets 0 and one position in
    windows = np.array([[0, 0], [2 * ch, ch]], dtype=np.int64)
    want = np.full(8 * ch, 7.0, dtype=dtype)
    for k, o in windows:
        for r in range(4):
            at = o + (r >> 1) * row + (r & 1) * ch
            for v in range(ch):
                want[at + v] = g[k + v] if code[k + v] == r else 0.0
    before = [a.copy() for a in (g, code)]
    for call in (_unpool_calls, getattr(_unpool_calls, "py_func", _unpool_calls)):
        d = np.full(8 * ch, 7.0, dtype=dtype)
        call(g, code, d, windows, row)
        np.testing.assert_array_equal(d, want)
        assert np.signbit(d[3]) == (code[3] == 0)  # -0.0 where taken, +0 where not
        for a, orig in zip((g, code), before):
            np.testing.assert_array_equal(a, orig)
    halves = np.array([[0, 0], [ch, 1], [2 * ch, 0], [3 * ch, 1]], dtype=np.int64)
    acc0 = rng.standard_normal(ch).astype(dtype)
    want_acc = acc0.copy()
    for k, half in halves:
        for v in range(ch):
            want_acc[v] += g[k + v] if code[k + v] >> 1 == half else dtype(0)
    for call in (_add_halves_call, getattr(_add_halves_call, "py_func", _add_halves_call)):
        acc = acc0.copy()
        call(g, code, halves.reshape(-1), acc)
        np.testing.assert_array_equal(acc, want_acc)



def test_weight_gradient_tiles_waste_the_fewest_taps():
    assert _direct_c1.dw_tile_taps(25, np.float32) == 5  # SimpleConvNet's 5x5: 5 tiles of 5
    assert _direct_c1.dw_tile_taps(25, np.float64) == 5
    assert _direct_c1.dw_tile_taps(9, np.float32) == 5  # 3x3: 2 tiles of 5 (10 rows), not 2 of 8
    assert _direct_c1.dw_tile_taps(16, np.float32) == 8 and _direct_c1.dw_tile_taps(16, np.float64) == 4
    assert _direct_c1.dw_tile_taps(12, np.float64) == 6
    assert _direct_c1.dw_tile_taps(1, np.float32) == 4


@pytest.mark.parametrize("case", CASES)
def test_forward_and_inference_match_the_numpy_twin_and_naive(case):
    for dtype in DTYPES:
        x, W, b, pad, _ = _inputs(case, dtype, seed=2)
        assert _direct_c1.usable(1, 1, x.shape[2] + 2 * pad - W.shape[2] + 1, x.shape[3] + 2 * pad - W.shape[3] + 1,
                                 dtype)
        before = [a.copy() for a in (x, W, b)]
        pooled, arg, col = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
        infer = conv_relu_pool.conv_relu_pool_inference_numba(x, W, b, 1, pad)
        for a, orig in zip((x, W, b), before):
            np.testing.assert_array_equal(a, orig)
        assert pooled.dtype == dtype and arg.dtype == np.intp and pooled.flags.c_contiguous
        p_np, a_np, _ = conv_relu_pool.conv_relu_pool_forward_numpy(x, W, b, 1, pad)
        assert_close(pooled, p_np, what="pooled")
        np.testing.assert_array_equal(arg, a_np)
        # The windows' codes kept for the backward: channels last, 4 where the ReLU masks the
        # window (and in the padding channels of the last block of 32), else the arg-max.
        n, fn, ph, pw = pooled.shape
        blocks = -(-fn // _direct_c1.TILE_CH)
        assert _direct_c1.codes_fit(col, n, fn, ph, pw)
        want = np.full((n, blocks * _direct_c1.TILE_CH, ph, pw), 4)
        want[:, :fn] = np.where(pooled <= 0, 4, arg)
        want = want.reshape(n, blocks, _direct_c1.TILE_CH, ph * pw).transpose(0, 1, 3, 2).reshape(col.shape)
        np.testing.assert_array_equal(col, want)
        ref_p, ref_a = naive.conv_relu_pool_forward(x, W, b, 1, pad)
        np.testing.assert_allclose(pooled, ref_p, **tolerance(dtype))
        np.testing.assert_array_equal(arg, ref_a)
        np.testing.assert_array_equal(infer, pooled)  # the same kernel: the same bits
        assert (pooled == 0).any() and (pooled > 0).any()


def test_ties_and_zeros_take_the_first_position():
    # Every value of a window below zero: the ReLU makes four zeros, the first one wins (arg 0);
    # equal positive values: the first too.
    for dtype in DTYPES:
        x = np.zeros((2, 1, 6, 6), dtype=dtype)
        W = np.ones((3, 1, 3, 3), dtype=dtype)
        b = np.array([-1.0, 2.0, 0.0], dtype=dtype)
        pooled, arg, _ = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, 1)
        p_np, a_np, _ = conv_relu_pool.conv_relu_pool_forward_numpy(x, W, b, 1, 1)
        np.testing.assert_array_equal(pooled, p_np)
        np.testing.assert_array_equal(arg, a_np)
        assert (arg == 0).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_as_the_chain(value):
    # A NaN reaching a window wins it (its first NaN's position); inf and -inf as the book's
    # arithmetic gives them (inf - inf = NaN inside a sum). The weight gradient: 0 · inf = NaN
    # where the book's product meets it.
    for dtype in DTYPES:
        x, W, b, pad, rng = _inputs(CASES[1], dtype, seed=3)
        x[0, 0, 4, 5] = value
        x[1, 0, 0, 0] = value
        pooled, arg, _ = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
        p_np, a_np, _ = conv_relu_pool.conv_relu_pool_forward_numpy(x, W, b, 1, pad)
        np.testing.assert_array_equal(np.isnan(pooled), np.isnan(p_np))
        np.testing.assert_array_equal(np.isinf(pooled), np.isinf(p_np))
        np.testing.assert_array_equal(arg, a_np)
        finite = np.isfinite(p_np)
        assert_close(pooled[finite], p_np[finite], what="finite pooled")
        dpooled = rng.standard_normal(pooled.shape).astype(dtype)
        _, dW, db = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, p_np, a_np, x, W, None, 1, pad, False)
        _, dW_np, db_np = conv_relu_pool.conv_relu_pool_backward_numpy(dpooled, p_np, a_np, x, W, None, 1, pad,
                                                                      False)
        np.testing.assert_array_equal(np.isnan(dW), np.isnan(dW_np))
        np.testing.assert_array_equal(db, db_np)


@pytest.mark.parametrize("case", CASES)
def test_backward_matches_the_numpy_twin_and_naive(case):
    for dtype in DTYPES:
        x, W, b, pad, rng = _inputs(case, dtype, seed=4)
        pooled, arg, col = conv_relu_pool.conv_relu_pool_forward_numpy(x, W, b, 1, pad)
        dpooled = rng.standard_normal(pooled.shape).astype(dtype)
        dpooled[..., 0] = -0.0
        before = [a.copy() for a in (dpooled, pooled, arg, x, W)]
        ref = conv_relu_pool.conv_relu_pool_backward_numpy(dpooled, pooled, arg, x, W, col, 1, pad)
        none_dx, dW, db = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, pooled, arg, x, W, None, 1, pad,
                                                                       False)
        for a, orig in zip((dpooled, pooled, arg, x, W), before):
            np.testing.assert_array_equal(a, orig)
        assert none_dx is None and dW.dtype == db.dtype == dtype and dW.flags.c_contiguous
        assert_close(dW, ref[1], what="dW")
        np.testing.assert_array_equal(db, ref[2])  # the book's order, bit for bit
        for name, g, r in zip(("dW", "db"), (dW, db), naive.conv_relu_pool_backward(dpooled, pooled, arg, x, W, 1,
                                                                                      pad)[1:]):
            np.testing.assert_allclose(g, r, err_msg=name, **tolerance(dtype))
        # Asked for dx as well: the patch route's dx, and the same dW and db.
        dx, dW2, db2 = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, pooled, arg, x, W, None, 1, pad, True)
        assert_close(dx, ref[0], what="dx")
        np.testing.assert_array_equal(dW2, dW)
        np.testing.assert_array_equal(db2, db)


@pytest.mark.parametrize("case", CASES)
def test_backward_from_the_forwards_codes_equals_the_backward_from_arg_max(case):
    # The forward's col (each window's code, channels last) stands for pooled and arg_max in the
    # backward: the same dW and db bits as the backward that makes the codes itself, over one and two
    # blocks of 32 filters, with NaN windows and ReLU-masked ones. A col that does not fit this batch
    # (another batch's, another dtype, not contiguous) is not read.
    for dtype in DTYPES:
        x, W, b, pad, rng = _inputs(case, dtype, seed=9)
        x[0, 0, 0, 0] = np.nan
        b[-1] = -1e3  # the last filter's windows all masked by the ReLU
        pooled, arg, col = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
        assert (pooled == 0).any() and np.isnan(pooled).any()
        dpooled = rng.standard_normal(pooled.shape).astype(dtype)
        ref = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, pooled, arg, x, W, None, 1, pad, False)
        before = col.copy()
        got = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, pooled, arg, x, W, col, 1, pad, False)
        np.testing.assert_array_equal(col, before)  # read only
        for a, r in zip(got[1:], ref[1:]):
            np.testing.assert_array_equal(a, r)
        n, fn, ph, pw = pooled.shape
        for wrong in (col[:-1] if n > 1 else col[:, :, :-1], col.astype(np.int32), col[..., ::-1],
                      np.zeros_like(col)[..., :0]):
            assert not _direct_c1.codes_fit(wrong, n, fn, ph, pw)
            other = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, pooled, arg, x, W, wrong, 1, pad, False)
            for a, r in zip(other[1:], ref[1:]):
                np.testing.assert_array_equal(a, r)


def test_bit_identical_for_one_or_two_threads():
    x, W, b, pad, _ = _inputs((9, 12, 12, 40, 5, 5, 1), np.float32, seed=5)
    runs = []
    old = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            pooled, arg, _ = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
            dpooled = np.random.default_rng(6).standard_normal(pooled.shape).astype(np.float32)
            runs.append([pooled, arg, *conv_relu_pool.conv_relu_pool_backward_numba(
                dpooled, pooled, arg, x, W, None, 1, pad, False)[1:]])
    finally:
        numba.set_num_threads(old)
    for a, r in zip(*runs):
        np.testing.assert_array_equal(a, r)


def test_route_only_for_one_channel_unit_stride_and_when_enabled(monkeypatch):
    assert _direct_c1.usable(1, 1, 24, 24, np.float32) and _direct_c1.usable(1, 1, 2, 2, np.float64)
    assert not _direct_c1.usable(2, 1, 24, 24, np.float32)  # several channels: Winograd or patches
    assert not _direct_c1.usable(1, 2, 24, 24, np.float32)  # strided
    assert not _direct_c1.usable(1, 1, 1, 24, np.float32)  # no pooling window
    monkeypatch.setattr(_direct_c1, "ENABLED", False)
    assert not _direct_c1.usable(1, 1, 24, 24, np.float32)


def test_available_follows_numbas_target(monkeypatch):
    # A portable target (NUMBA_CPU_NAME=generic, no features) has no AVX-512: the patch route.
    try:
        monkeypatch.setattr(numba.core.config, "CPU_NAME", "generic")
        monkeypatch.setattr(numba.core.config, "CPU_FEATURES", None)
        _direct_c1.available.cache_clear()
        assert not _direct_c1.available()
        monkeypatch.setattr(numba.core.config, "CPU_FEATURES", "+avx2,+fma")
        _direct_c1.available.cache_clear()
        assert not _direct_c1.available()
        monkeypatch.setattr(numba.core.config, "CPU_FEATURES", "+avx2,+avx512f,+fma")
        _direct_c1.available.cache_clear()
        assert _direct_c1.available()
    finally:
        monkeypatch.undo()
        _direct_c1.available.cache_clear()
    assert _direct_c1.available()  # this machine (the module's skip condition)


def test_off_the_route_the_patch_route_gives_the_same_values(monkeypatch):
    x, W, b, pad, rng = _inputs(CASES[0], np.float64, seed=7)
    on = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
    dpooled = rng.standard_normal(on[0].shape)
    grads_on = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, on[0], on[1], x, W, None, 1, pad, False)

    def not_here(*args, **kwargs):
        raise AssertionError("the register-tile route was taken")

    monkeypatch.setattr(_direct_c1, "available", lambda: False)  # a CPU without AVX-512
    monkeypatch.setattr(_direct_c1, "forward", not_here)
    monkeypatch.setattr(_direct_c1, "weight_grad", not_here)
    off = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, pad)
    grads_off = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, on[0], on[1], x, W, None, 1, pad, False)
    np.testing.assert_allclose(off[0], on[0], **tolerance(np.float64))
    np.testing.assert_array_equal(off[1], on[1])
    np.testing.assert_allclose(grads_off[1], grads_on[1], **tolerance(np.float64))
    np.testing.assert_array_equal(grads_off[2], grads_on[2])


def test_mixed_dtypes_follow_x_as_the_patch_route_does(monkeypatch):
    # The op called directly with float64 filters on float32 images (the layers convert first):
    # no typing error; x's dtype throughout, as on the patch route.
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 1, 9, 9)).astype(np.float32)
    W, b = rng.standard_normal((5, 1, 3, 3)), rng.standard_normal(5)
    pooled, arg, _ = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, 1)
    dpooled = rng.standard_normal(pooled.shape)
    _, dW, db = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, pooled, arg, x, W, None, 1, 1, False)
    monkeypatch.setattr(_direct_c1, "ENABLED", False)
    p_patch, a_patch, _ = conv_relu_pool.conv_relu_pool_forward_numba(x, W, b, 1, 1)
    _, dW_patch, db_patch = conv_relu_pool.conv_relu_pool_backward_numba(dpooled, pooled, arg, x, W, None, 1, 1,
                                                                         False)
    assert pooled.dtype == p_patch.dtype and dW.dtype == dW_patch.dtype and db.dtype == db_patch.dtype
    assert_close(pooled, p_patch, what="pooled")
    np.testing.assert_array_equal(arg, a_patch)
    assert_close(dW, dW_patch, what="dW")

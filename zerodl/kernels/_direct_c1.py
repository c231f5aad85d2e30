"""Single-channel convolution + ReLU + 2x2 max pooling, direct, on register tiles.

The layer this is for: SimpleConvNet's first block (one input channel, 30 filters of 5x5, ReLU,
2x2 pooling), or any first layer of that form. Its convolution has too little depth (K = FH·FW taps)
for the patch matrix's BLAS product to pay for the patch copies, and its output is large (30 planes
of 24x24 per image) next to the pooled result the net keeps.

How: one *register tile* is a block of pixels × 32 output channels whose sums stay in the CPU's
vector registers while every tap is added (16 accumulators of 512 bits: 8 pixels × 2 vectors in
float32, 4 pixels × 4 vectors in float64). Numba's own loops never keep such a block in registers
(their accumulators go through memory, see NUMBA-NOTES), so :func:`_fma_tile` is written in LLVM IR
(``numba.extending.intrinsic``): explicit ``<16 x float>`` / ``<8 x double>`` vectors, one ``llvm.fma``
per tap and vector. The same microkernel computes

* the forward: ``tile[p, f] = Σ_t x[pix[p] + off[t]] · W[f, t]`` (pixels × channels; 2 rows × 4
  columns of outputs in float32, so each tile holds two whole pooling windows), then bias, ReLU and
  the pooling (first maximum in row-major order; a NaN wins) straight from the tile: the
  full-resolution output is never written (the window's compares and selects, 32 channels at a time,
  are LLVM IR too: :func:`_pool_window`; Numba's loop of them stayed scalar);
* the weight gradient: ``dWᵀ[t, f] = Σ_q x[q + off[t]] · D[q, f]`` (taps × channels, summed over an
  image's output positions q), D the image's unpooled, ReLU-masked gradient in channels-last order;
  its tiles have 4, 5, 6 or 8 rows of taps, whichever wastes the fewest (:func:`dw_tile_taps`).
  D is made window by window with vector selects (:func:`_unpool_window`, also LLVM IR) from each
  window's gradient and position code, put channels last; the bias gradient is summed from those
  in the book's order (bit for bit), 32 channels at a time (:func:`_add_halves`).

Twins: these are the compiled route of ``conv_relu_pool_forward_numba``, ``…_inference_numba`` and
``…_backward_numba`` (see :mod:`zerodl.kernels.conv_relu_pool`) for single-channel, unit-stride
layers; their NumPy twins are the book's chain. Rounding: each sum is one FMA per tap in tap order
(forward) or output-position order (dW), so results differ from the BLAS product by rounding only;
the pooling and arg-max are those of ``max_pool_forward`` on the rounded values. Bit-identical for
any thread count (the dW partial sums are per fixed group of images, added in group order).

Only where the CPU has AVX-512 (:func:`available`): elsewhere a 16-register tile of 512-bit vectors
would spill, and the patch route stays. Under ``NUMBA_DISABLE_JIT`` :func:`_fma_tile` is a NumPy
product (same values up to rounding).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from zerodl.kernels._jit import jit
from zerodl.kernels._tasks import even_blocks, run_tasks
from zerodl.kernels.im2col import out_hw

#: Output channels per register tile (filters are packed in blocks of this many, zero-padded).
TILE_CH = 32

#: Fixed number of groups of images per call (the dW partial sums: one per group, added in group
#: order, so the result does not depend on the number of threads). 4 keeps 2 cores evenly loaded.
GROUPS = 4

#: Switch for this route (tests and A/B measurements turn it off; :func:`available` must hold too).
ENABLED = True


def tile_pixels(dtype: np.dtype) -> int:
    """Pixels per forward register tile (and rows of :data:`_fma_tile`): 16 vector registers of
    accumulators. The weight gradient's tiles take :func:`dw_tile_taps` rows instead."""
    return 8 if np.dtype(dtype) == np.float32 else 4


@functools.cache
def available() -> bool:
    """Whether numba compiles for a CPU with AVX-512 (32 vector registers of 512 bits): the host's
    features, or ``NUMBA_CPU_FEATURES`` when set; a ``NUMBA_CPU_NAME`` target (such as ``generic``,
    for a portable cache) without features is taken to have none."""
    features = numba.core.config.CPU_FEATURES
    if features is None:
        if numba.core.config.CPU_NAME not in (None, "host"):
            return False
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    return "+avx512f" in features.split(",")


# ----------------------------------------------------------------------------- the microkernel
def _counted_loop(builder, n, inits, name, step):
    # Emit `for t in range(n)` whose loop-carried values start at `inits` (φ-nodes: they stay in
    # registers) and are replaced each iteration by step(t, values); returns the final values, the
    # builder placed after the loop.
    i64 = ir.IntType(64)
    entry = builder.block
    head = builder.append_basic_block(f"{name}.head")
    body = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    t = builder.phi(i64)
    t.add_incoming(ir.Constant(i64, 0), entry)
    values = []
    for init in inits:
        phi = builder.phi(init.type)
        phi.add_incoming(init, entry)
        values.append(phi)
    builder.cbranch(builder.icmp_signed("<", t, n), body, done)
    builder.position_at_end(body)
    new = step(t, values)
    latch = builder.block
    t.add_incoming(builder.add(t, ir.Constant(i64, 1)), latch)
    for phi, value in zip(values, new):
        phi.add_incoming(value, latch)
    builder.branch(head)
    builder.position_at_end(done)
    return values


def _splat(builder, scalar, vty):
    # A vector of `vty` with every lane `scalar`.
    i32 = ir.IntType(32)
    undef = ir.Constant(vty, ir.Undefined)
    one = builder.insert_element(undef, scalar, ir.Constant(i32, 0))
    return builder.shuffle_vector(one, undef, ir.Constant(ir.VectorType(i32, vty.count), [0] * vty.count))


def _tile_codegen(rows: int | None):
    # The LLVM IR of a tile of `rows` rows (None: tile_pixels of the dtype): a loop over t whose
    # φ-nodes are the rows × NV accumulator vectors (registers), NV = 32 / lanes.
    def typer(typingctx, x, pix, offs, wp, tile):
        if not (isinstance(x, types.Array) and x.dtype in (types.float32, types.float64)
                and wp.dtype == x.dtype and tile.dtype == x.dtype):
            return None
        return types.void(x, pix, offs, wp, tile), codegen

    def codegen(context, builder, signature, args):
        xa, pa, oa, wa, ta = (context.make_array(t)(context, builder, v) for t, v in zip(signature.args, args))
        is32 = signature.args[0].dtype == types.float32
        lanes = 16 if is32 else 8
        nv = TILE_CH // lanes
        mr = rows if rows is not None else (8 if is32 else 4)
        fty = context.get_value_type(signature.args[0].dtype)
        vty = ir.VectorType(fty, lanes)
        i64 = ir.IntType(64)
        # Without it LLVM splits 512-bit vectors on CPUs tuned for 256-bit ones (the host here).
        set.add(builder.function.attributes, '"min-legal-vector-width"="512"')
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                             f"llvm.fma.v{lanes}{'f32' if is32 else 'f64'}")
        n_taps = builder.extract_value(oa.shape, 0)
        base = [builder.load(builder.gep(pa.data, [ir.Constant(i64, p)])) for p in range(mr)]
        align = 4 if is32 else 8  # the element's: rows of wp and tile need no more

        def tap(t, acc):
            off = builder.load(builder.gep(oa.data, [t]))
            row = builder.gep(wa.data, [builder.mul(t, ir.Constant(i64, TILE_CH))])
            w = [builder.load(builder.bitcast(builder.gep(row, [ir.Constant(i64, v * lanes)]), vty.as_pointer()),
                              align=align) for v in range(nv)]
            new = []
            for p in range(mr):
                bc = _splat(builder, builder.load(builder.gep(xa.data, [builder.add(base[p], off)])), vty)
                new += [builder.call(fma, [w[v], bc, acc[p * nv + v]]) for v in range(nv)]
            return new

        acc = _counted_loop(builder, n_taps, [ir.Constant(vty, None)] * (mr * nv), "tile", tap)
        for p in range(mr):
            for v in range(nv):
                ptr = builder.gep(ta.data, [ir.Constant(i64, p * TILE_CH + v * lanes)])
                builder.store(acc[p * nv + v], builder.bitcast(ptr, vty.as_pointer()), align=align)
        return context.get_dummy_value()

    return typer


def _make_tile(rows: int | None, name: str):
    """A tile function of ``rows`` rows (``None``: :func:`tile_pixels` of the dtype): compiled, the
    intrinsic above, inlined; called from Python (the JIT off), a NumPy product."""

    def fma_tile(x, pix, offs, wp, tile):
        mr = tile.shape[0]
        tile[:] = x[pix[:mr, None] + offs[None, :]] @ wp

    fma_tile.__name__ = fma_tile.__qualname__ = name
    ir_tile = intrinsic(_tile_codegen(rows))

    @overload(fma_tile, inline="always")
    def _compiled(x, pix, offs, wp, tile):
        def impl(x, pix, offs, wp, tile):
            ir_tile(x, pix, offs, wp, tile)

        return impl

    return fma_tile


#: ``_fma_tile(x, pix, offs, wp, tile)``: ``tile[p, :] = Σ_t x[pix[p] + offs[t]] · wp[t, :]`` for
#: ``p < MR``, from zero. x: 1-D float array; pix, offs: 1-D int64; wp (T, 32) and tile (MR, 32)
#: C-contiguous, MR = :func:`tile_pixels` (8 in float32, 4 in float64: 16 accumulator registers).
#: Indices are not checked (callers keep them inside ``x``). Compiled: one FMA per tap in ``t``
#: order, the sums in registers.
_fma_tile = _make_tile(None, "_fma_tile")
#: The same with MR = 4, 5 or 6 rows whatever the dtype: the weight gradient's tiles of taps
#: (:func:`dw_tile_taps`; up to 24 accumulators of the 32 registers).
_fma_tile4 = _make_tile(4, "_fma_tile4")
_fma_tile5 = _make_tile(5, "_fma_tile5")
_fma_tile6 = _make_tile(6, "_fma_tile6")


# ----------------------------------------------------------------------------- unpooling, vectorised
# The weight gradient's input D (the unpooled, ReLU-masked gradient, channels last) is made window by
# window: each 2x2 window's four rows of 32 channels from the window's 32 gradients and codes (0-3:
# where the maximum was; 4: masked by the ReLU, or a padding channel). Numba's own loop over the 32
# lanes is unrolled into scalar selects that become branches (no vector instruction in its assembly),
# which mispredict on random codes: 40-60 us an image. So these are written in LLVM IR too: one
# vector select per store.
def _code_vectors(context, builder, signature, args):
    # The vectors of lanes, the arrays and helpers both codegens share.
    arrays = [context.make_array(t)(context, builder, v) if isinstance(t, types.Array) else v
              for t, v in zip(signature.args, args)]
    is32 = signature.args[0].dtype == types.float32
    lanes = 16 if is32 else 8
    fty = context.get_value_type(signature.args[0].dtype)
    set.add(builder.function.attributes, '"min-legal-vector-width"="512"')
    return arrays, lanes, ir.VectorType(fty, lanes), ir.VectorType(ir.IntType(8), lanes)  # codes: int8


def _load_vec(builder, data, index, vty, align):
    return builder.load(builder.bitcast(builder.gep(data, [index]), vty.as_pointer()), align=align)


def _as_i64(context, builder, value, ty):
    return context.cast(builder, value, ty, types.int64)


def _unpool_window_typer(typingctx, g, code, k, d, o, row):
    if not (isinstance(g, types.Array) and g.dtype in (types.float32, types.float64) and d.dtype == g.dtype
            and code.dtype == types.int8 and all(isinstance(t, types.Integer) for t in (k, o, row))):
        return None

    def codegen(context, builder, signature, args):
        (ga, ca, k, da, o, row), lanes, vty, cty = _code_vectors(context, builder, signature, args)
        k, o, row = (_as_i64(context, builder, v, signature.args[i]) for v, i in ((k, 2), (o, 4), (row, 5)))
        i64 = ir.IntType(64)
        align = 4 if lanes == 16 else 8
        zero = ir.Constant(vty, None)
        for v in range(TILE_CH // lanes):
            at = builder.add(k, ir.Constant(i64, v * lanes))
            gv = _load_vec(builder, ga.data, at, vty, align)
            cv = _load_vec(builder, ca.data, at, cty, 1)
            for r in range(4):
                take = builder.icmp_signed("==", cv, ir.Constant(cty, [r] * lanes))
                dst = builder.add(o, ir.Constant(i64, (r & 1) * TILE_CH + v * lanes))
                if r >> 1:
                    dst = builder.add(dst, row)
                ptr = builder.bitcast(builder.gep(da.data, [dst]), vty.as_pointer())
                builder.store(builder.select(take, gv, zero), ptr, align=align)
        return context.get_dummy_value()

    return types.void(g, code, k, d, o, row), codegen


def _add_halves_typer(typingctx, g, code, order, acc):
    if not (isinstance(g, types.Array) and g.dtype in (types.float32, types.float64) and acc.dtype == g.dtype
            and code.dtype == types.int8 and order.dtype == types.int64):
        return None

    def codegen(context, builder, signature, args):
        (ga, ca, oa, aa), lanes, vty, cty = _code_vectors(context, builder, signature, args)
        i64 = ir.IntType(64)
        align = 4 if lanes == 16 else 8
        zero = ir.Constant(vty, None)
        nv = TILE_CH // lanes
        ptrs = [builder.bitcast(builder.gep(aa.data, [ir.Constant(i64, v * lanes)]), vty.as_pointer())
                for v in range(nv)]
        start = [builder.load(p, align=align) for p in ptrs]
        steps = builder.udiv(builder.extract_value(oa.shape, 0), ir.Constant(i64, 2))
        two = ir.Constant(i64, 2)

        def window(s, acc):
            k = builder.load(builder.gep(oa.data, [builder.mul(s, two)]))
            half = builder.load(builder.gep(oa.data, [builder.add(builder.mul(s, two), ir.Constant(i64, 1))]))
            halves = _splat(builder, builder.trunc(half, ir.IntType(8)), cty)
            new = []
            for v in range(nv):
                at = builder.add(k, ir.Constant(i64, v * lanes))
                gv = _load_vec(builder, ga.data, at, vty, align)
                cv = _load_vec(builder, ca.data, at, cty, 1)
                take = builder.icmp_signed("==", builder.ashr(cv, ir.Constant(cty, [1] * lanes)), halves)
                new.append(builder.fadd(acc[v], builder.select(take, gv, zero)))
            return new

        acc = _counted_loop(builder, steps, start, "halves", window)
        for v in range(nv):
            builder.store(acc[v], ptrs[v], align=align)
        return context.get_dummy_value()

    return types.void(g, code, order, acc), codegen


def _unpool_window(g, code, k, d, o, row):
    """``d[o + (r >> 1)·row + (r & 1)·32 + v] = g[k + v] if code[k + v] == r else 0`` for the
    window's four positions r (row-major) and the 32 lanes v. g, d: 1-D float arrays of one dtype;
    code: 1-D int8 (0-3 the maximum's position, 4 none). Compiled: LLVM IR, vector selects."""
    gv, cv = g[k:k + TILE_CH], code[k:k + TILE_CH]
    for r in range(4):
        at = o + (r >> 1) * row + (r & 1) * TILE_CH
        d[at:at + TILE_CH] = np.where(cv == r, gv, 0)


def _add_halves(g, code, order, acc):
    """``acc[v] += g[k + v] if code[k + v] >> 1 == half else +0`` for the 32 lanes v, over the
    pairs ``(k, half) = order[2s], order[2s + 1]`` in turn: each window's entry where the book's
    row-major sum meets it, in its upper (half 0) or lower (half 1) output row. Compiled: LLVM IR,
    the sums in vector registers."""
    for s in range(order.shape[0] // 2):
        k, half = order[2 * s], order[2 * s + 1]
        acc += np.where(code[k:k + TILE_CH] >> 1 == half, g[k:k + TILE_CH], 0).astype(acc.dtype)


def _pool_window_typer(typingctx, tile, up, down, bias, best, kbest):
    if not (isinstance(tile, types.Array) and tile.dtype in (types.float32, types.float64)
            and bias.dtype == best.dtype == tile.dtype and kbest.dtype == types.int8
            and all(isinstance(t, types.Integer) for t in (up, down))):
        return None

    def codegen(context, builder, signature, args):
        (ta, up, down, ba, sa, ka), lanes, vty, cty = _code_vectors(context, builder, signature, args)
        up, down = (_as_i64(context, builder, v, signature.args[i]) for v, i in ((up, 1), (down, 2)))
        i64 = ir.IntType(64)
        align = 4 if lanes == 16 else 8
        zero = ir.Constant(vty, None)
        width = ir.Constant(i64, TILE_CH)
        rows = (up, builder.add(up, ir.Constant(i64, 1)), down, builder.add(down, ir.Constant(i64, 1)))
        true = ir.Constant(ir.VectorType(ir.IntType(1), lanes), [1] * lanes)
        for v in range(TILE_CH // lanes):
            lane0 = ir.Constant(i64, v * lanes)
            b = _load_vec(builder, ba.data, lane0, vty, align)
            best = k = None
            for r, row in enumerate(rows):
                val = builder.fadd(_load_vec(builder, ta.data, builder.add(builder.mul(row, width), lane0), vty, align),
                                   b)
                val = builder.select(builder.fcmp_ordered("<=", val, zero), zero, val)  # ReLU; NaN passes
                if r == 0:
                    best, k = val, ir.Constant(cty, [0] * lanes)
                    continue
                # The first maximum wins, and a NaN wins: take v unless best >= v or best is NaN.
                keep = builder.or_(builder.fcmp_ordered(">=", best, val), builder.fcmp_unordered("uno", best, best))
                take = builder.xor(keep, true)
                best = builder.select(take, val, best)
                k = builder.select(take, ir.Constant(cty, [r] * lanes), k)
            # Code 4 where the maximum is <= 0: the ReLU's mask of the backward (then all four were
            # ReLU'd to +0 and the first, position 0, won).
            k = builder.select(builder.fcmp_ordered("<=", best, zero), ir.Constant(cty, [4] * lanes), k)
            builder.store(best, builder.bitcast(builder.gep(sa.data, [lane0]), vty.as_pointer()), align=align)
            builder.store(k, builder.bitcast(builder.gep(ka.data, [lane0]), cty.as_pointer()), align=1)
        return context.get_dummy_value()

    return types.void(tile, up, down, bias, best, kbest), codegen


def _pool_window(tile, up, down, bias, best, kbest):
    """One pooling window straight from a forward tile, 32 channels: ``best[:32] = max`` and
    ``kbest[:32]`` its code (int8): the argmax (row-major 0-3) of ``relu(tile[r] + bias)`` over the
    window's rows r = up, up + 1, down, down + 1 (first maximum wins; a NaN wins, the first NaN),
    or 4 where the maximum is <= 0 (the ReLU's mask; the argmax there is 0). Compiled: LLVM IR,
    vector compares and selects."""
    vals = [tile[r] + bias for r in (up, up + 1, down, down + 1)]
    vals = [np.where(v <= 0, np.zeros_like(v), v) for v in vals]
    b, k = vals[0], np.zeros(TILE_CH, dtype=np.int8)
    for r in range(1, 4):
        with np.errstate(invalid="ignore"):
            take = ~((b >= vals[r]) | np.isnan(b))
        b = np.where(take, vals[r], b)
        k = np.where(take, np.int8(r), k)
    best[:TILE_CH] = b
    kbest[:TILE_CH] = np.where(b <= 0, np.int8(4), k)


_pool_window_ir = intrinsic(_pool_window_typer)


@overload(_pool_window, inline="always")
def _pool_window_compiled(tile, up, down, bias, best, kbest):
    def impl(tile, up, down, bias, best, kbest):
        _pool_window_ir(tile, up, down, bias, best, kbest)

    return impl


_unpool_window_ir = intrinsic(_unpool_window_typer)
_add_halves_ir = intrinsic(_add_halves_typer)


@overload(_unpool_window, inline="always")
def _unpool_window_compiled(g, code, k, d, o, row):
    def impl(g, code, k, d, o, row):
        _unpool_window_ir(g, code, k, d, o, row)

    return impl


@overload(_add_halves, inline="always")
def _add_halves_compiled(g, code, order, acc):
    def impl(g, code, order, acc):
        _add_halves_ir(g, code, order, acc)

    return impl


def dw_tile_taps(n_taps: int, dtype: np.dtype) -> int:
    """Taps per weight-gradient tile: the row count (4, 5, 6, or float32's 8) that wastes the fewest
    rows over ``n_taps`` (then the larger). SimpleConvNet's 25 taps: 5 tiles of 5, not 4 of 8 (one
    thread, float32 dW 2.17 → 1.81-1.92 ms a batch; float64 3.62 → 3.35-3.46 with 5 instead of 4)."""
    menu = (4, 5, 6, 8) if np.dtype(dtype) == np.float32 else (4, 5, 6)
    return min(menu, key=lambda r: (-(-n_taps // r) * r, -r))


# ----------------------------------------------------------------------------- compiled passes
@jit
def _pad_into(x, pad, xpad):
    # The single-channel image x (H, W) into the interior of the flat zero-bordered xpad.
    h, w = x.shape
    wp = w + 2 * pad
    for y in range(h):
        base = (y + pad) * wp + pad
        for i in range(w):
            xpad[base + i] = x[y, i]


@jit
def _forward_images(x, wp, offs, bp, pad, mr, train, pooled, arg_max, codes):
    # x (B, 1, H, W) → pooled (B, FN, PH, PW), and if train arg_max and codes: max_pool(relu(conv(x)
    # + b)). wp (blocks, T, 32) and bp (blocks, 32): the filters and biases packed by pack_filters
    # and pack_bias; offs (T,): the taps' offsets in the padded image (tap_offsets). A tile covers
    # output rows 2i, 2i + 1 and mr / 2 columns: the pooling windows of mr / 4 pooled columns (a
    # column past the last window repeats the last one, and its result is not used). codes (B,
    # blocks, PH·PW·32) int8: each window's code (_pool_window), channels last, kept for the
    # backward (padding channels: 4, their filters and biases being zero).
    n_img, _, h, w = x.shape
    fn, ph, pw = pooled.shape[1], pooled.shape[2], pooled.shape[3]
    dt = x.dtype
    row = w + 2 * pad
    xpad = np.zeros((h + 2 * pad) * row, dtype=dt)
    tile = np.empty((mr, TILE_CH), dtype=dt)
    pix = np.empty(mr, dtype=np.int64)
    best_row = np.empty((pw, TILE_CH), dtype=dt)  # a pooled row, channels last
    k_row = np.empty((pw, TILE_CH), dtype=np.int8)  # its codes, when not kept
    cols = mr // 2
    last = 2 * pw - 1
    for j in range(n_img):
        _pad_into(x[j, 0], pad, xpad)
        for blk in range(wp.shape[0]):
            f0 = blk * TILE_CH
            nf = min(TILE_CH, fn - f0)
            wb = wp[blk]
            bb = bp[blk]
            kept = codes[j, blk].reshape(ph * pw, TILE_CH) if train else k_row
            for i in range(ph):
                at = i * pw if train else 0
                for c0 in range(0, 2 * pw, cols):
                    for r in range(2):  # (no division by cols: it is not a constant)
                        for c in range(cols):
                            pix[r * cols + c] = (2 * i + r) * row + min(c0 + c, last)
                    _fma_tile(xpad, pix, offs, wb, tile)
                    for q in range(min(cols // 2, pw - c0 // 2)):
                        _pool_window(tile, 2 * q, cols + 2 * q, bb, best_row[c0 // 2 + q], kept[at + c0 // 2 + q])
                for f in range(nf):
                    dst = pooled[j, f0 + f, i]
                    for q in range(pw):
                        dst[q] = best_row[q, f]
                if train:
                    for f in range(nf):
                        dst_k = arg_max[j, f0 + f, i]
                        for q in range(pw):
                            dst_k[q] = kept[at + q, f] & 3  # a masked window's (4) maximum is at 0


@jit
def _weight_grad_images(x, dpooled, pooled, arg_max, pad, taps, out_h, out_w, mr, dWt, grad_cl, code_cl,
                        have_codes):
    # dWt (blocks, T_pad, 32) += Σ over images of Σ_q x[q + taps[t]] · D[q, f], D the image's
    # gradient of the convolution's output (unpooled, ReLU-masked: dpooled where pooled > 0 or
    # NaN, at the window's arg-max; zero elsewhere) in channels-last order, q over the OH·OW
    # output positions in row-major order. Image by image, from the group's zeroed dWt. Also
    # writes each image's windows channels last (grad_cl, code_cl (B, blocks, PH·PW·32): the
    # gradient and the code 0-3 of its position, 4 where masked or a padding channel), from
    # which D is made and the bias gradient summed (_bias_grad_windows). With have_codes, code_cl
    # holds the forward's codes already (read only; pooled and arg_max are not read).
    n_img, _, h, w = x.shape
    fn, ph, pw = dpooled.shape[1], dpooled.shape[2], dpooled.shape[3]
    m = ph * pw
    g_cm = dpooled.reshape(n_img, fn, m)  # channel-major planes of the windows
    p_cm = pooled.reshape(n_img, fn, m)
    a_cm = arg_max.reshape(n_img, fn, m)
    dt = x.dtype
    row = w + 2 * pad
    xpad = np.zeros((h + 2 * pad) * row, dtype=dt)
    n_taps = taps.shape[0]
    qoffs = np.empty(out_h * out_w, dtype=np.int64)
    for y in range(out_h):
        for i in range(out_w):
            qoffs[y * out_w + i] = y * row + i
    D = np.zeros((out_h * out_w, TILE_CH), dtype=dt)  # positions outside every window stay zero
    d_flat = D.reshape(out_h * out_w * TILE_CH)
    tile = np.empty((mr, TILE_CH), dtype=dt)
    pix = np.empty(mr, dtype=np.int64)
    zero = dt.type(0)
    for j in range(n_img):
        _pad_into(x[j, 0], pad, xpad)
        for blk in range(dWt.shape[0]):
            f0 = blk * TILE_CH
            nf = min(TILE_CH, fn - f0)
            g_cl = grad_cl[j, blk]
            c_cl = code_cl[j, blk]
            for f in range(TILE_CH):
                if f < nf and have_codes:
                    sg = g_cm[j, f0 + f]
                    for k in range(m):
                        g_cl[k * TILE_CH + f] = sg[k]
                elif f < nf:
                    sg, sp, sa = g_cm[j, f0 + f], p_cm[j, f0 + f], a_cm[j, f0 + f]
                    for k in range(m):
                        g_cl[k * TILE_CH + f] = sg[k]
                        c_cl[k * TILE_CH + f] = 4 if sp[k] <= zero else sa[k]  # ReLU'd: none
                elif have_codes:  # the forward's codes say 4 here
                    for k in range(m):
                        g_cl[k * TILE_CH + f] = zero
                else:
                    for k in range(m):
                        g_cl[k * TILE_CH + f] = zero
                        c_cl[k * TILE_CH + f] = 4
            for i in range(ph):
                for q in range(pw):
                    _unpool_window(g_cl, c_cl, (i * pw + q) * TILE_CH, d_flat,
                                   (2 * i * out_w + 2 * q) * TILE_CH, out_w * TILE_CH)
            for t0 in range(0, n_taps, mr):
                for p in range(mr):
                    pix[p] = taps[min(t0 + p, n_taps - 1)]
                if mr == 5:
                    _fma_tile5(xpad, pix, qoffs, D, tile)
                elif mr == 6:
                    _fma_tile6(xpad, pix, qoffs, D, tile)
                elif mr == 4:
                    _fma_tile4(xpad, pix, qoffs, D, tile)
                else:  # float32's 8 (tile_pixels)
                    _fma_tile(xpad, pix, qoffs, D, tile)
                part = dWt[blk]
                for p in range(min(mr, part.shape[0] - t0)):
                    for f in range(TILE_CH):
                        part[t0 + p, f] += tile[p, f]


@jit
def _bias_grad_windows(grad_cl, code_cl, ph, pw, db):
    # db of the unpooled, masked gradient, bit for bit the book's sum (image by image, then
    # row-major over the full-resolution output, from +0; see convolution's _bias_grad) without
    # writing it: in pooled row i, the windows whose entry is in the upper output row, left to
    # right, then those in the lower row. Every other window adds +0 there, which changes no sum
    # that starts from +0 (such a sum is never -0). 32 channels at a time, one vector chain each.
    n_img, blocks = grad_cl.shape[0], grad_cl.shape[1]
    order = np.empty(4 * ph * pw, dtype=np.int64)  # (k, half) pairs in the book's order
    s = 0
    for i in range(ph):
        for half in range(2):
            for q in range(pw):
                order[s] = (i * pw + q) * TILE_CH
                order[s + 1] = half
                s += 2
    acc = np.zeros(TILE_CH, dtype=db.dtype)
    for blk in range(blocks):
        acc[:] = 0
        for n in range(n_img):
            _add_halves(grad_cl[n, blk], code_cl[n, blk], order, acc)
        for f in range(min(TILE_CH, db.shape[0] - blk * TILE_CH)):
            db[blk * TILE_CH + f] = acc[f]


# ----------------------------------------------------------------------------- drivers
def pack_filters(W: np.ndarray) -> np.ndarray:
    """W (FN, 1, FH, FW) → (ceil(FN / 32), FH·FW, 32): tap-major blocks of 32 filters, zero-padded."""
    FN = W.shape[0]
    T = W.shape[2] * W.shape[3]
    blocks = -(-FN // TILE_CH)
    wp = np.zeros((blocks * TILE_CH, T), dtype=W.dtype)
    wp[:FN] = W.reshape(FN, T)
    return np.ascontiguousarray(wp.reshape(blocks, TILE_CH, T).transpose(0, 2, 1))


def pack_bias(b: np.ndarray) -> np.ndarray:
    """b (FN,) → (ceil(FN / 32), 32), zero-padded."""
    blocks = -(-b.shape[0] // TILE_CH)
    bp = np.zeros(blocks * TILE_CH, dtype=b.dtype)
    bp[: b.shape[0]] = b
    return bp.reshape(blocks, TILE_CH)


def tap_offsets(fh: int, fw: int, row: int) -> np.ndarray:
    """The (FH·FW,) offsets of a filter's taps, row-major, in a flat image of rows of ``row`` values."""
    return np.array([fy * row + fx for fy in range(fh) for fx in range(fw)], dtype=np.int64)


def usable(C: int, stride: int, out_h: int, out_w: int, dtype: np.dtype) -> bool:
    """Whether :func:`forward` / :func:`weight_grad` take this layer (one channel, unit stride,
    at least one pooling window, float32/64, an AVX-512 CPU, :data:`ENABLED`)."""
    return (ENABLED and C == 1 and stride == 1 and out_h >= 2 and out_w >= 2
            and np.dtype(dtype) in (np.float32, np.float64) and available())


def forward(x: np.ndarray, W: np.ndarray, b: np.ndarray, pad: int, train: bool,
            blocks: list[tuple[int, int]] | None = None,
            after: Callable[[np.ndarray, int, int], None] | None = None,
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``max_pool_forward(relu(conv(x, W) + b), 2, 2, 2, 0)`` for a :func:`usable` layer →
    ``(pooled, arg_max, codes)``: ``pooled`` and ``arg_max`` (``intp``) (N, FN, OH // 2, OW // 2);
    ``codes`` (N, ceil(FN / 32), PH·PW·32) ``int8``, each window's code channels last (0-3 where
    its maximum is, 4 where the ReLU masks it), which :func:`weight_grad` reads instead of
    ``pooled`` and ``arg_max``. The last two only when ``train``.

    ``blocks``: the images of each task, contiguous ``(n0, n1)`` ranges covering the batch (default
    :data:`GROUPS` equal ones); ``after(pooled, n0, n1)``, if given, runs in each task right after
    its images are pooled (the next layer's rows of those images, while they are in the core's cache)."""
    N, _, H, Wd = x.shape
    FN, _, FH, FW = W.shape
    oh, ow = out_hw(H, Wd, FH, FW, 1, pad)
    x = np.ascontiguousarray(x)
    wp = pack_filters(W.astype(x.dtype, copy=False))  # x's dtype throughout, as the patch route
    bp = pack_bias(b.astype(x.dtype, copy=False))
    offs = tap_offsets(FH, FW, Wd + 2 * pad)
    ph, pw = oh // 2, ow // 2
    pooled = np.empty((N, FN, ph, pw), dtype=x.dtype)
    arg_max = np.empty(pooled.shape if train else (N, FN, 1, 1), dtype=np.intp)
    codes = np.empty((N, wp.shape[0], ph * pw * TILE_CH) if train else (N, wp.shape[0], 0), dtype=np.int8)
    bounds = even_blocks(N, GROUPS) if blocks is None else blocks
    mr = tile_pixels(x.dtype)

    def group(g: int) -> None:
        n0, n1 = bounds[g]
        _forward_images(x[n0:n1], wp, offs, bp, pad, mr, train, pooled[n0:n1], arg_max[n0:n1], codes[n0:n1])
        if after is not None:
            after(pooled, n0, n1)

    run_tasks(group, len(bounds))
    return (pooled, arg_max, codes) if train else (pooled, None, None)


def codes_fit(codes: object, N: int, FN: int, ph: int, pw: int) -> bool:
    """Whether ``codes`` is a :func:`forward` ``codes`` array for this batch and layer (its type,
    dtype, shape and layout: the compiled backward indexes it unchecked)."""
    return (isinstance(codes, np.ndarray) and codes.dtype == np.int8 and codes.flags.c_contiguous
            and codes.shape == (N, -(-FN // TILE_CH), ph * pw * TILE_CH))


def weight_grad(dpooled: np.ndarray, pooled: np.ndarray, arg_max: np.ndarray, x: np.ndarray,
                W_shape: tuple[int, int, int, int], pad: int,
                codes: np.ndarray | None = None, first_tasks: Sequence[Callable[[], None]] = (),
                ready: Callable[[], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(dW, db)`` of ``conv_relu_pool_backward`` for a :func:`usable` layer: dW (FN, 1, FH, FW)
    from register tiles, db (FN,) bit for bit the book's sum. ``dpooled``, ``pooled``, ``arg_max``
    (N, FN, PH, PW) C-contiguous, ``arg_max`` ``intp``; x's dtype throughout. ``codes``: the
    forward's (:func:`codes_fit`), read instead of ``pooled`` and ``arg_max``; else they are
    made from those. ``first_tasks`` run in the same call onto both cores, before the groups of
    images are handed out; ``ready()``, if given, is called by each group before it reads
    ``dpooled`` (which one of ``first_tasks`` may be writing: the next layer's backward product)."""
    N, _, H, Wd = x.shape
    FN, _, FH, FW = W_shape
    oh, ow = out_hw(H, Wd, FH, FW, 1, pad)
    x = np.ascontiguousarray(x)
    dpooled = np.ascontiguousarray(dpooled, dtype=x.dtype)  # x's dtype throughout, as the patch route
    pooled = np.ascontiguousarray(pooled, dtype=x.dtype)
    arg_max = np.ascontiguousarray(arg_max, dtype=np.intp)
    T = FH * FW
    mr = dw_tile_taps(T, x.dtype)
    blocks = -(-FN // TILE_CH)
    bounds = even_blocks(N, GROUPS)
    parts = np.zeros((len(bounds), blocks, -(-T // mr) * mr, TILE_CH), dtype=x.dtype)
    ph, pw = dpooled.shape[2], dpooled.shape[3]
    grad_cl = np.empty((N, blocks, ph * pw * TILE_CH), dtype=x.dtype)
    have_codes = codes is not None and codes_fit(codes, N, FN, ph, pw)
    code_cl = codes if have_codes else np.empty((N, blocks, ph * pw * TILE_CH), dtype=np.int8)
    taps = tap_offsets(FH, FW, Wd + 2 * pad)

    def task(i: int) -> None:
        if i < len(first_tasks):
            first_tasks[i]()
            return
        if ready is not None:
            ready()
        n0, n1 = bounds[i - len(first_tasks)]
        _weight_grad_images(x[n0:n1], dpooled[n0:n1], pooled[n0:n1], arg_max[n0:n1], pad, taps, oh, ow, mr,
                            parts[i - len(first_tasks)], grad_cl[n0:n1], code_cl[n0:n1], have_codes)

    run_tasks(task, len(first_tasks) + len(bounds))
    db = np.empty(FN, dtype=x.dtype)
    _bias_grad_windows(grad_cl, code_cl, ph, pw, db)  # serial: the book's order over the batch
    total = parts[0].copy()
    for g in range(1, len(bounds)):  # in group order: the same bits for any number of threads
        total += parts[g]
    dWt = total[:, :T].transpose(0, 2, 1).reshape(blocks * TILE_CH, T)[:FN]
    return np.ascontiguousarray(dWt).reshape(FN, 1, FH, FW), db

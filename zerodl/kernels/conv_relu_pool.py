"""Convolution + ReLU + 2x2 max pooling, fused: the conv blocks of both books' nets in one op.

Twins: ``conv_relu_pool_forward_numpy`` / ``conv_relu_pool_forward_numba`` and
``conv_relu_pool_backward_numpy`` / ``conv_relu_pool_backward_numba``.

Contract (both twins); pooling is the books' only one: 2x2 windows, stride 2, no padding, on the
``(N, FN, OH, OW)`` output of ``conv_relu_forward`` (see :mod:`zerodl.kernels.convolution`):

* ``conv_relu_pool_forward(x (N, C, H, W), W (FN, C, FH, FW), b (FN,), stride, pad)`` →
  ``(pooled, arg_max, col)``: ``pooled, arg_max (N, FN, OH // 2, OW // 2)`` are exactly
  ``max_pool_forward(relu(conv(x) + b), 2, 2, 2, 0)`` (first maximum of each window in row-major
  order, ``arg_max`` as ``intp``; a NaN wins and propagates), ``col`` what the twin keeps for its
  backward (the NumPy twin: what ``conv_forward`` keeps; the Numba twin: ``None``, or on the
  register-tile route the windows' codes, see :func:`zerodl.kernels._direct_c1.forward`).
  The ReLU output itself is not returned: the backward needs only ``pooled`` (the ReLU's mask at
  every window's maximum is ``pooled > 0``) and ``arg_max``, or the same facts in ``col``.
* ``conv_relu_pool_backward(dpooled, pooled, arg_max, x, W, col=None, stride, pad, need_dx=True)``
  → ``(dx, dW, db)``: the gradients of ``sum(pooled · dpooled)``, i.e. ``max_pool_backward`` then
  the book's ``Relu.backward`` (zero where the maximum was ``<= 0``) then ``conv_backward``.

With the Affine layer that follows a block (SimpleConvNet's), two more, so that the fused step makes one
call onto both cores where it made two:

* ``conv_relu_pool_affine_forward(x, W, b, stride, pad, W2, z, parts)`` → what
  ``conv_relu_pool_forward`` returns, and ``z = pooled.reshape(N, -1) @ W2`` written into ``z``;
* ``conv_relu_pool_affine_backward(dz, W2, dx2, dW2, db2, parts, pooled, arg_max, x, W, col, stride, pad,
  need_dx)`` → the block's ``(dx, dW, db)``, after the Affine's ``affine_backward_into(dz, pooled.reshape(N,
  -1), W2, dx2, dW2, db2, parts)`` (``dx2``: the gradient of ``pooled``; ``dW2`` ``None``: not computed).

Both are bit for bit the two ops in turn on each backend (``parts``: the Affine's row blocks, see
:mod:`zerodl.kernels.affine`).

For inference (no backward to follow), one more op on the same arguments:

* ``conv_relu_pool_inference(x, W, b, stride, pad)`` → ``pooled``: the ``pooled`` of
  ``conv_relu_pool_forward`` (the same values, NaN included), without ``arg_max`` or ``col``: nothing
  is kept for a backward pass, and the Numba twin writes neither the full-resolution output nor the
  arg-max (the Winograd route pools in the output transform, the patch route in the pass that
  scatters the product).

Rows or columns of the convolution's output that no window covers (odd ``OH`` / ``OW``) are
dropped by the pooling, as in :mod:`zerodl.kernels.pooling`. Inputs are never written; outputs
are new C-contiguous arrays of ``x``'s dtype (``arg_max``: ``intp``).

The NumPy twins chain the book-route twins. The Numba twin's forward, for the layers where the
convolution takes Winograd's route (3x3, unit stride, >= 4 channels, even ``OH`` and ``OW``), pools
inside Winograd's output transform: each 2x2 output tile is exactly one pooling window, so the
full-resolution output is never written (measured against the chained Numba twins, batch 100,
DeepConvNet's pooled layers: forward 10-17 % faster in float32, 17-33 % in float64, and no
full-resolution array is kept for the backward). Single-channel, unit-stride layers
(SimpleConvNet's 1-channel 5x5 layer) take register tiles where the CPU has AVX-512
(:mod:`zerodl.kernels._direct_c1`): the forward pools straight from each tile of pixels × 32
filters and keeps each window's code (where its maximum is, or masked) channels last as ``col``;
the backward's dW is one more tile product over the gradient unpooled from those codes, and db is
summed off them in the book's order (batch 100, both cores: against the patch route, forward 1.47 →
0.90 ms in float32, 2.28 → 1.24 ms in float64; then the windows' vector selects and codes, forward
0.87 → 0.81 ms and 1.30 → 1.24 ms, backward without dx 1.55 → 0.97 ms and 2.37 → 1.64 ms). Elsewhere, off Winograd's route, each task pools the group of images
it has just convolved, while they are in its core's cache (one call on both cores instead of the
chain's two: batch 100, 1.60 → 1.45 ms in float32, 2.57 → 2.29 ms in float64); odd Winograd outputs
chain the compiled twins. Its backward
scatters the masked ``dpooled`` into the convolution's gradient in one pass (no separate
``max_pool_backward`` and ReLU mask) and runs ``conv_backward_numba`` on it; on the patch route
(SimpleConvNet's layer) it scatters straight into each chunk's product columns instead and sums
the bias gradient off the pooled arrays in the book's order, so the full-resolution gradient is
never stored (backward 1.14x faster in float32, 1.2x in float64, one thread).
"""

from __future__ import annotations

import threading

import numpy as np

from zerodl.kernels import _direct_c1
from zerodl.kernels._jit import jit
from zerodl.kernels._tasks import matmul_in_parts, row_blocks, run_tasks
from zerodl.kernels.affine import affine_backward_into_numba, affine_backward_into_numpy
from zerodl.kernels.convolution import (
    SCATTER_POOLED,
    SCATTER_RELU,
    WINO_POOL,
    WINO_POOL_INFER,
    _backward_numba,
    _one_blas_thread,
    _patch_forward,
    _Plan,
    _unpool_masked,
    _Wino,
    _wino_filters,
    _winograd_ok,
    conv_backward_numpy,
    conv_relu_forward_numpy,
)
from zerodl.kernels.im2col import out_hw
from zerodl.kernels.pooling import (
    _max_pool_forward,
    max_pool_backward_numpy,
    max_pool_forward_numpy,
)

OPS = ("conv_relu_pool_forward", "conv_relu_pool_backward", "conv_relu_pool_inference",
       "conv_relu_pool_affine_forward", "conv_relu_pool_affine_backward")


# ----------------------------------------------------------------------------- NumPy references
def conv_relu_pool_forward_numpy(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reference: the book's ``Convolution``, ``Relu`` and ``Pooling(2, 2, stride=2)`` forwards."""
    out, col = conv_relu_forward_numpy(x, W, b, stride, pad)
    pooled, arg_max = max_pool_forward_numpy(out, 2, 2, 2, 0)
    return pooled, arg_max, col


def conv_relu_pool_inference_numpy(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """Reference: the book's ``Convolution``, ``Relu`` and ``Pooling(2, 2, stride=2)`` forwards →
    ``pooled (N, FN, OH // 2, OW // 2)`` only (the layer path's values, bit for bit)."""
    return conv_relu_pool_forward_numpy(x, W, b, stride, pad)[0]


def _check_affine_product(pooled_shape: tuple[int, ...], W2: np.ndarray, z: np.ndarray,
                          op: str = "conv_relu_pool_affine_forward", name: str = "z") -> None:
    # The next Affine's weights and product (or its gradient) against the pooled output they take.
    n, features = pooled_shape[0], int(np.prod(pooled_shape[1:]))
    if W2.ndim != 2 or W2.shape[0] != features or z.shape != (n, W2.shape[1]) or not z.flags.c_contiguous:
        raise ValueError(
            f"{op}: the pooled output has {features} features per image (shape {pooled_shape}): W2 must "
            f"be ({features}, H) and {name} a C-contiguous ({n}, H) array, got W2 {W2.shape} and {name} "
            f"{z.shape}{'' if z.flags.c_contiguous else ' (not C-contiguous)'}")


def _check_affine_grads(pooled_shape: tuple[int, ...], W2: np.ndarray, dz: np.ndarray, dx2: np.ndarray,
                        dW2: np.ndarray | None, db2: np.ndarray) -> None:
    op = "conv_relu_pool_affine_backward"
    _check_affine_product(pooled_shape, W2, dz, op, "dz")
    want = {"dx2": (pooled_shape[0], W2.shape[0]), "dW2": W2.shape, "db2": (W2.shape[1],)}
    for name, arr in (("dx2", dx2), ("dW2", dW2), ("db2", db2)):
        if arr is not None and (arr.shape != want[name] or not arr.flags.c_contiguous):
            raise ValueError(f"{op}: {name} must be a C-contiguous {want[name]} array, got {arr.shape}")


def conv_relu_pool_affine_forward_numpy(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, pad: int, W2: np.ndarray, z: np.ndarray,
    parts: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reference: :func:`conv_relu_pool_forward_numpy`, then the next Affine layer's product of the
    flattened pooled output into ``z``: ``z (N, H) = pooled.reshape(N, -1) @ W2`` (the bias and
    activation stay with that layer). Returns what ``conv_relu_pool_forward`` returns. ``parts``:
    as in :func:`zerodl.kernels.affine.affine_backward_into_numpy` (the compiled twin may cut the
    product into that many fixed row blocks); here the product is whole, the book's bits."""
    pooled, arg_max, col = conv_relu_pool_forward_numpy(x, W, b, stride, pad)
    _check_affine_product(pooled.shape, W2, z)
    np.dot(pooled.reshape(pooled.shape[0], -1), W2, out=z)
    return pooled, arg_max, col


def conv_relu_pool_affine_backward_numpy(
    dz: np.ndarray, W2: np.ndarray, dx2: np.ndarray, dW2: np.ndarray | None, db2: np.ndarray, parts: int,
    pooled: np.ndarray, arg_max: np.ndarray, x: np.ndarray, W: np.ndarray, col: np.ndarray | None,
    stride: int, pad: int, need_dx: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Reference: the backward of :func:`conv_relu_pool_affine_forward_numpy`'s two layers. First the
    Affine's, into its buffers: ``affine_backward_into(dz, pooled.reshape(N, -1), W2, dx2, dW2, db2,
    parts)`` (``dW2`` ``None``: not computed, as there); then :func:`conv_relu_pool_backward_numpy` of
    ``dx2`` (the gradient of ``pooled``) → the convolution's ``(dx, dW, db)``."""
    _check_affine_grads(pooled.shape, W2, dz, dx2, dW2, db2)
    affine_backward_into_numpy(dz, pooled.reshape(pooled.shape[0], -1), W2, dx2, dW2, db2, parts)
    return conv_relu_pool_backward_numpy(dx2.reshape(pooled.shape), pooled, arg_max, x, W, col, stride, pad,
                                         need_dx)


def conv_relu_pool_backward_numpy(
    dpooled: np.ndarray,
    pooled: np.ndarray,
    arg_max: np.ndarray,
    x: np.ndarray,
    W: np.ndarray,
    col: np.ndarray | None = None,
    stride: int = 1,
    pad: int = 0,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Reference: the book's ``Pooling``, ``Relu`` and ``Convolution`` backwards → ``(dx, dW, db)``.

    The ReLU's mask at each window's maximum is ``pooled <= 0`` (the maximum's value is ``pooled``);
    every other entry of the convolution's gradient is zero already.
    """
    FN = W.shape[0]
    N, _, H, Wd = x.shape
    oh, ow = out_hw(H, Wd, W.shape[2], W.shape[3], stride, pad)
    masked = np.where(pooled <= 0, dpooled.dtype.type(0), dpooled)
    dout = max_pool_backward_numpy(masked, arg_max, (N, FN, oh, ow), 2, 2, 2, 0)
    return conv_backward_numpy(dout, x, W, col, stride, pad, need_dx)


# ----------------------------------------------------------------------------- compiled kernels
@jit
def _bias_grad_unpooled(dpooled, pooled, arg_max, db):
    # db of the gradient _unpool_masked would write, bit for bit the book's order (image by
    # image, then row-major over the full-resolution output, from zero; see convolution's
    # _bias_grad) without writing it: each window's one entry is added where the row-major walk
    # meets it (pooled row i: the windows whose maximum is in the upper row, left to right, then
    # those in the lower row), and the zeros elsewhere are left out - adding +0 changes no sum
    # that starts from +0 (such a sum is never -0). Image by image: a flat select pass writes
    # each window's masked gradient to `upper` or `lower` (+0 in the other), then eight channels
    # at a time add them up in that order (eight independent chains, as _bias_grad).
    n_img, fn, ph, pw = dpooled.shape
    m = fn * ph * pw
    g = dpooled.reshape(n_img, m)
    p = pooled.reshape(n_img, m)
    a = arg_max.reshape(n_img, m)
    upper = np.empty((fn, ph, pw), dtype=db.dtype)
    lower = np.empty((fn, ph, pw), dtype=db.dtype)
    uf = upper.reshape(-1)
    lf = lower.reshape(-1)
    zero = db.dtype.type(0)
    acc = np.zeros(fn, dtype=db.dtype)
    for n in range(n_img):
        gn, pn, an = g[n], p[n], a[n]
        for q in range(m):
            v = gn[q]  # loaded before the selects (see convolution's _bias_grad_masked)
            v = zero if pn[q] <= zero else v
            low = an[q] >= 2
            uf[q] = zero if low else v
            lf[q] = v if low else zero
        f = 0
        while f + 8 <= fn:
            a0, a1, a2, a3 = acc[f], acc[f + 1], acc[f + 2], acc[f + 3]
            a4, a5, a6, a7 = acc[f + 4], acc[f + 5], acc[f + 6], acc[f + 7]
            for i in range(ph):
                for half in (upper, lower):
                    r0, r1, r2, r3 = half[f, i], half[f + 1, i], half[f + 2, i], half[f + 3, i]
                    r4, r5, r6, r7 = half[f + 4, i], half[f + 5, i], half[f + 6, i], half[f + 7, i]
                    for k in range(pw):
                        a0 += r0[k]
                        a1 += r1[k]
                        a2 += r2[k]
                        a3 += r3[k]
                        a4 += r4[k]
                        a5 += r5[k]
                        a6 += r6[k]
                        a7 += r7[k]
            acc[f], acc[f + 1], acc[f + 2], acc[f + 3] = a0, a1, a2, a3
            acc[f + 4], acc[f + 5], acc[f + 6], acc[f + 7] = a4, a5, a6, a7
            f += 8
        while f < fn:
            a0 = acc[f]
            for i in range(ph):
                for half in (upper, lower):
                    r0 = half[f, i]
                    for k in range(pw):
                        a0 += r0[k]
            acc[f] = a0
            f += 1
    db[:] = acc


def conv_relu_pool_forward_numba(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Compiled twin of :func:`conv_relu_pool_forward_numpy`; returns ``(pooled, arg_max, col)``,
    ``col`` ``None`` or, on the register-tile route, the windows' codes for the backward.

    Winograd layers pool inside the output transform, each 2x2 output tile one pooling window (an
    odd output size drops the last tile row or column, as the pooling drops the output's last row
    or column; the values of the chain :func:`~zerodl.kernels.convolution.conv_relu_forward_numba` +
    :func:`~zerodl.kernels.max_pool_forward_numba`, bit for bit); single-channel layers pool straight
    from register tiles (:func:`zerodl.kernels._direct_c1.forward`, AVX-512 only); other patch-route
    layers pool each group of images in the task that convolved it (the kernels of
    :func:`~zerodl.kernels.max_pool_forward_numba`, so the same values).
    """
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    oh, ow = out_hw(H, Wd, FH, FW, stride, pad)
    if _direct_c1.usable(C, stride, oh, ow, x.dtype):
        # One input channel (SimpleConvNet's layer): register tiles, pooled straight from them;
        # the windows' codes, channels last, kept for the backward.
        return _direct_c1.forward(x, W, b, pad, train=True)
    if not _winograd_ok(C, FH, FW, stride, pad):
        # The patch route (SimpleConvNet's layer): each group of images is pooled by the task that
        # wrote its ReLU output, right after (still in that core's cache; one call on both cores
        # instead of two). The same kernels as the chain below, so the same values.
        x = np.ascontiguousarray(x)
        b = np.ascontiguousarray(b)
        plan = _Plan(x.shape, W.shape, stride, pad, x.dtype.itemsize)
        out = np.empty((N, FN, oh, ow), dtype=x.dtype)
        pooled = np.empty((N, FN, oh // 2, ow // 2), dtype=x.dtype)
        arg_max = np.empty((N, FN, oh // 2, ow // 2), dtype=np.intp)

        def pool(n0: int, n1: int) -> None:
            _max_pool_forward(out[n0:n1], 2, 2, 2, 0, pooled[n0:n1], arg_max[n0:n1])

        _patch_forward(plan, x, W, b, SCATTER_RELU, out, after_group=pool)
        return pooled, arg_max, None
    x = np.ascontiguousarray(x)
    b = np.ascontiguousarray(b)
    wino = _Wino(x.shape, FN, pad, x.dtype, full_output=False)
    U = _wino_filters(W)
    pooled = np.empty((N, FN, oh // 2, ow // 2), dtype=x.dtype)
    arg_max = np.empty((N, FN, oh // 2, ow // 2), dtype=np.intp)
    with _one_blas_thread():
        run_tasks(lambda g: wino.group(g, x, U, b, True, WINO_POOL, pooled, arg_max), wino.groups)
    return pooled, arg_max, None


def conv_relu_pool_backward_numba(
    dpooled: np.ndarray,
    pooled: np.ndarray,
    arg_max: np.ndarray,
    x: np.ndarray,
    W: np.ndarray,
    col: np.ndarray | None = None,
    stride: int = 1,
    pad: int = 0,
    need_dx: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`conv_relu_pool_backward_numpy`. ``col``: the forward's third result;
    the register-tile route reads its window codes instead of ``pooled`` and ``arg_max`` when it
    fits this batch (:func:`zerodl.kernels._direct_c1.codes_fit`), every other ``col`` is ignored.

    One compiled pass (parts of the batch on both cores) unpools the masked ``dpooled`` into the
    convolution's gradient, then
    :func:`~zerodl.kernels.convolution.conv_backward_numba` (both cores, fixed reduction order).
    On the patch route the unpooling writes each chunk's product columns directly and ``db`` is
    summed from ``dpooled``, ``pooled`` and ``arg_max`` (same bits as the book's sum).
    Single-channel layers (AVX-512): dW from register tiles
    (:func:`zerodl.kernels._direct_c1.weight_grad`), the same ``db``; dx, if asked for, from the
    patch route.
    """
    _, C, FH, FW = W.shape
    _, _, H, Wd = x.shape
    oh, ow = out_hw(H, Wd, FH, FW, stride, pad)
    dpooled = np.ascontiguousarray(dpooled)
    pooled = np.ascontiguousarray(pooled)
    arg_max = np.ascontiguousarray(arg_max, dtype=np.intp)
    if _direct_c1.usable(C, stride, oh, ow, x.dtype):
        # One input channel (SimpleConvNet's layer): dW on register tiles from the unpooled
        # gradient, db in the book's order off the windows the tiles' tasks put channels last. A
        # first layer needs no dx; when asked for, dx comes from the patch route (whose own dW is
        # dropped, so dW does not depend on need_dx).
        dW, db = _direct_c1.weight_grad(dpooled, pooled, arg_max, x, W.shape, pad, codes=col)
        if not need_dx:
            return None, dW, db
        return _backward_routes(dpooled, pooled, arg_max, x, W, stride, pad, True)[0], dW, db
    return _backward_routes(dpooled, pooled, arg_max, x, W, stride, pad, need_dx)


def _backward_routes(dpooled: np.ndarray, pooled: np.ndarray, arg_max: np.ndarray, x: np.ndarray,
                     W: np.ndarray, stride: int, pad: int, need_dx: bool,
                     ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    # conv_relu_pool_backward_numba off the register-tile route: the patch route or Winograd's.
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    oh, ow = out_hw(H, Wd, FH, FW, stride, pad)
    if not _winograd_ok(C, FH, FW, stride, pad) and not (
            need_dx and pad <= 2 and _winograd_ok(FN, FH, FW, stride, 2 - pad)):
        # The patch route (SimpleConvNet's layer, the books' first layers): each chunk's gradient
        # is unpooled straight into its product layout and db summed off the pooled arrays, so the
        # full-resolution gradient is never written (nor read twice: by the copy into the
        # products' layout and by the bias gradient).
        return _backward_numba(None, None, x, W, stride, pad, need_dx, (dpooled, pooled, arg_max),
                               lambda db: _bias_grad_unpooled(dpooled, pooled, arg_max, db))
    # Winograd's route: the convolution's gradient is unpooled group by group by the tasks that
    # read it (still in the core's cache, no call of its own), and db summed off the pooled arrays.
    dout = np.empty((N, FN, oh, ow), dtype=dpooled.dtype)

    def unpool(n0: int, n1: int) -> None:
        _unpool_masked(dpooled[n0:n1], pooled[n0:n1], arg_max[n0:n1], dout[n0:n1])

    return _backward_numba(dout, None, np.ascontiguousarray(x), W, stride, pad, need_dx,
                           bias=lambda db: _bias_grad_unpooled(dpooled, pooled, arg_max, db), prepare=unpool)


def conv_relu_pool_affine_forward_numba(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int, pad: int, W2: np.ndarray, z: np.ndarray,
    parts: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Compiled twin of :func:`conv_relu_pool_affine_forward_numpy`: the same values as
    :func:`conv_relu_pool_forward_numba` followed by
    :func:`~zerodl.kernels._tasks.matmul_in_parts` ``(pooled, W2, z, parts)``, bit for bit.

    On the register-tile route, when the product is cut into row blocks, each block is one task: its
    images' conv + ReLU + pool, then its rows of the product, while the pooled rows are in that
    core's cache, in one call onto both cores instead of two (batch 100, SimpleConvNet's layer and
    Affine(4320, 100), 2 threads, ``benchmarks_scripts/merged_calls.py``, two runs: float32 1.51 →
    1.38-1.39 ms, float64 2.57-2.72 → 2.39-2.56 ms). Elsewhere the two calls in turn."""
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    oh, ow = out_hw(H, Wd, FH, FW, stride, pad)
    _check_affine_product((N, FN, oh // 2, ow // 2), W2, z)
    blocks = row_blocks(N, parts, N * W2.shape[0] * W2.shape[1])  # matmul_in_parts' row blocks
    if len(blocks) > 1 and _direct_c1.usable(C, stride, oh, ow, x.dtype):

        def rows(pooled: np.ndarray, n0: int, n1: int) -> None:
            np.dot(pooled[n0:n1].reshape(n1 - n0, -1), W2, out=z[n0:n1])

        return _direct_c1.forward(x, W, b, pad, True, blocks=blocks, after=rows)
    pooled, arg_max, col = conv_relu_pool_forward_numba(x, W, b, stride, pad)
    matmul_in_parts(pooled.reshape(N, -1), W2, z, parts)
    return pooled, arg_max, col


def conv_relu_pool_affine_backward_numba(
    dz: np.ndarray, W2: np.ndarray, dx2: np.ndarray, dW2: np.ndarray | None, db2: np.ndarray, parts: int,
    pooled: np.ndarray, arg_max: np.ndarray, x: np.ndarray, W: np.ndarray, col: np.ndarray | None,
    stride: int, pad: int, need_dx: bool,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Compiled twin of :func:`conv_relu_pool_affine_backward_numpy`: the same values as
    :func:`~zerodl.kernels.affine.affine_backward_into_numba` followed by
    :func:`conv_relu_pool_backward_numba`, bit for bit.

    On the register-tile route, without the convolution's dx, when the Affine's products are big
    enough to go on both cores: one call, whose first tasks are the Affine's ``dx2`` product in two
    column blocks and its ``dW2`` product (whole) and whose other tasks, the convolution's groups of
    images, wait for ``dx2`` (batch 100, SimpleConvNet's layer and Affine(4320, 100), 2 threads,
    ``benchmarks_scripts/merged_calls.py``, two runs: float32 2.01-2.03 → 1.94-1.99 ms, float64
    3.84-4.01 → 3.66-3.74 ms; ``dx2`` in column blocks, both cores on it: SimpleConvNet steps, both
    trees in alternating processes, 4 pairs, float32 3.10-3.19 → 3.05-3.09 ms, float64 5.75-5.99 →
    5.54-5.83). Each element of a column block is the same dot product as the whole product's
    (the same bits, tested). Elsewhere the two in turn."""
    _check_affine_grads(pooled.shape, W2, dz, dx2, dW2, db2)
    _, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    oh, ow = out_hw(H, Wd, FH, FW, stride, pad)
    # The products go on both cores exactly when affine_backward_into would cut them (side by side).
    split = len(row_blocks(N, parts, N * W2.shape[0] * W2.shape[1])) > 1
    same = dz.dtype == W2.dtype == dx2.dtype == pooled.dtype == x.dtype and (dW2 is None or dW2.dtype == x.dtype)
    if not (split and same and not need_dx and _direct_c1.usable(C, stride, oh, ow, x.dtype)):
        affine_backward_into_numba(dz, pooled.reshape(N, -1), W2, dx2, dW2, db2, parts)
        return conv_relu_pool_backward_numba(dx2.reshape(pooled.shape), pooled, arg_max, x, W, col, stride, pad,
                                             need_dx)
    # dx2 in two column blocks, one task each (each element the same dot product as the whole
    # product's), so that both cores make it and the groups that wait for it start sooner.
    cols = dx2.shape[1]
    halves = [(0, cols // 2), (cols // 2, cols)]
    done = [threading.Event() for _ in halves]
    failed: list[BaseException] = []

    def dx_product(half: int) -> None:
        c0, c1 = halves[half]
        try:
            np.matmul(dz, W2[c0:c1].T, out=dx2[:, c0:c1])
        except BaseException as exc:
            failed.append(exc)
            raise
        finally:
            done[half].set()

    def ready() -> None:
        for event in done:  # the dx2 tasks are taken before any group: never a wait on a task not yet started
            event.wait()
        if failed:
            raise RuntimeError("conv_relu_pool_affine_backward: the product dx2 failed") from failed[0]

    first = [lambda h=h: dx_product(h) for h in range(len(halves))]
    if dW2 is not None:
        x2 = pooled.reshape(N, -1)
        first.append(lambda: np.dot(x2.T, dz, out=dW2))
    dW, db = _direct_c1.weight_grad(dx2.reshape(pooled.shape), pooled, arg_max, x, W.shape, pad, codes=col,
                                    first_tasks=first, ready=ready)
    affine_backward_into_numba(dz, pooled.reshape(N, -1), W2, None, None, db2, 1)  # db2: column sums only
    return None, dW, db


def conv_relu_pool_inference_numba(
    x: np.ndarray, W: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """Compiled twin of :func:`conv_relu_pool_inference_numpy`: ``pooled`` only.

    Winograd layers pool in the output transform (one flat pass per filter, no arg-max, no NaN
    pre-check; an odd output size drops the last tile row or column, as the pooling drops the
    output's last row or column); layers off Winograd's
    route take register tiles if they have one channel (AVX-512), else the patch route with the
    pooling in the pass that scatters the product. No full-resolution output and no arg-max are written; chunks and
    groups as in the training twins (both cores, bit-identical for any thread count).
    """
    FN, C, FH, FW = W.shape
    N, _, H, Wd = x.shape
    oh, ow = out_hw(H, Wd, FH, FW, stride, pad)
    x = np.ascontiguousarray(x)
    b = np.ascontiguousarray(b)
    if _direct_c1.usable(C, stride, oh, ow, x.dtype):
        return _direct_c1.forward(x, W, b, pad, train=False)[0]
    pooled = np.empty((N, FN, oh // 2, ow // 2), dtype=x.dtype)
    if not _winograd_ok(C, FH, FW, stride, pad):
        plan = _Plan(x.shape, W.shape, stride, pad, x.dtype.itemsize)
        _patch_forward(plan, x, W, b, SCATTER_POOLED, pooled)
        return pooled
    wino = _Wino(x.shape, FN, pad, x.dtype, full_output=False)
    U = _wino_filters(W)
    with _one_blas_thread():
        run_tasks(lambda g: wino.group(g, x, U, b, True, WINO_POOL_INFER, pooled), wino.groups)
    return pooled

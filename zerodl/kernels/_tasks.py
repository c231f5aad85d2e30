"""Both cores for the compiled twins that call BLAS between compiled passes (convolution, pooling).

:func:`run_tasks` runs ``task(0) … task(n - 1)`` on up to ``numba.get_num_threads()`` threads: the
calling thread and the workers of one process-wide :class:`~concurrent.futures.ThreadPoolExecutor`.
The compiled passes release the GIL (``nogil`` in ``_jit.py``) and so do NumPy's products, so the
threads really run at once. Why Python threads rather than numba's ``prange``: a task calls NumPy's
BLAS between compiled passes (BLAS inside njit code would load SciPy's second OpenBLAS, see
NUMBA-NOTES), and one pool of threads that sleep when idle never busy-waits against BLAS's or
numba's own (numba's OpenMP workers spin for a while after each parallel loop).

Tasks must write disjoint outputs and must not depend on which thread runs them, or on how many
threads there are: callers cut their work by the shapes alone, so results are bit-identical for
any thread count. ``zerodl.num_threads(1)`` (which sets numba's count) makes every call sequential.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

_local = threading.local()
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1


def _thread_pool() -> ThreadPoolExecutor:
    # One pool per process, created on first use; a forked child (whose copy of the pool has no
    # threads) makes its own.
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="zerodl")
            _pool_pid = os.getpid()
        return _pool


def run_tasks(task: Callable[[int], None], n_tasks: int) -> None:
    """``task(i)`` for every ``i < n_tasks``, on up to ``numba.get_num_threads()`` threads.

    The caller's thread works too, and returns only when every task has finished; the first error
    raised by a task is re-raised here (after the other threads have stopped).
    """
    threads = min(numba.get_num_threads(), n_tasks)
    if threads <= 1 or getattr(_local, "in_worker", False):
        # Sequential, also when a task itself calls run_tasks: a pool thread waiting on tasks
        # queued behind it could otherwise deadlock the pool.
        for i in range(n_tasks):
            task(i)
        return
    counter = itertools.count()  # next() is atomic under the GIL: each task is taken once

    def worker() -> None:
        for i in counter:
            if i >= n_tasks:
                return
            task(i)

    def pool_worker() -> None:
        _local.in_worker = True
        try:
            worker()
        finally:
            _local.in_worker = False

    futures = [_thread_pool().submit(pool_worker) for _ in range(threads - 1)]
    try:
        worker()
    finally:
        for f in futures:
            f.exception()  # wait for every worker before the caller's buffers go away
    for f in futures:
        f.result()  # re-raise a worker's error


#: Products smaller than this many multiply-adds stay whole in :func:`matmul_in_parts`: a call of
#: :func:`run_tasks` costs ~0.1 ms of thread hand-offs (SimpleConvNet's Affine(100, 10) backward took
#: 0.19 ms split against 0.02 ms whole), more than a product of a few million multiply-adds takes.
SPLIT_MIN_MACS = 8_000_000


def even_blocks(rows: int, parts: int) -> list[tuple[int, int]]:
    """``rows`` rows cut into ``min(parts, rows)`` (at least 1) contiguous ``(r0, r1)`` blocks of
    sizes differing by at most one, fixed by ``rows`` and ``parts`` alone."""
    parts = max(1, min(parts, rows))
    return list(itertools.pairwise(i * rows // parts for i in range(parts + 1)))


def row_blocks(rows: int, parts: int, macs: int) -> list[tuple[int, int]]:
    """The fixed ``(r0, r1)`` blocks :func:`in_row_blocks` cuts ``rows`` rows into: ``parts`` of
    them, or the whole ``[(0, rows)]`` when ``parts`` is 1 or the product behind them has fewer
    than :data:`SPLIT_MIN_MACS` multiply-adds (``macs``). They depend on ``parts``, ``rows`` and
    ``macs`` alone, never on the thread count."""
    return even_blocks(rows, 1 if macs < SPLIT_MIN_MACS else parts)


def in_row_blocks(rows: int, parts: int, macs: int, block: Callable[[int, int], None]) -> None:
    """``block(r0, r1)`` over the blocks of :func:`row_blocks`, one task each (:func:`run_tasks`),
    or once in the calling thread when there is one block."""
    blocks = row_blocks(rows, parts, macs)
    if len(blocks) == 1:
        block(*blocks[0])
        return
    run_tasks(lambda i: block(*blocks[i]), len(blocks))


def matmul_in_parts(a, b, out, parts: int) -> None:
    """``out (N, M) = a (N, K) @ b (K, M)`` with the rows of ``a`` and ``out`` cut into ``parts`` fixed blocks, one task
    each (:func:`in_row_blocks`): both cores for a product while BLAS runs on one thread per call (the
    convolutions' steps, see ``Piece.uses_task_threads``). ``out`` (C-contiguous) is written; each
    row's sum is the BLAS product of that row, so the blocks are fixed by ``parts`` and the shapes
    alone, never by the thread count (the same bits for any number of threads). Products under
    :data:`SPLIT_MIN_MACS` multiply-adds are computed whole.
    """
    n = out.shape[0]

    def block(r0: int, r1: int) -> None:
        if r0 == 0 and r1 == n:
            np.dot(a, b, out=out)
        else:
            np.dot(a[r0:r1], b, out=out[r0:r1])

    in_row_blocks(n, parts, n * a.shape[1] * out.shape[1], block)


def matmuls_side_by_side(products: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """``np.dot(a, b, out=out)`` for every ``(a, b, out)`` of ``products``, each whole, one task each
    (:func:`run_tasks`): both cores for independent products while BLAS runs on one thread per call
    (an Affine's ``dx`` and ``dW`` in the convolutions' steps). Each product is the whole-matrix BLAS
    call, so the bits are those of ``np.dot`` for any thread count. The outputs must be disjoint and
    C-contiguous. When any of them has fewer than :data:`SPLIT_MIN_MACS` multiply-adds they run
    one after the other (DeepConvNet's Affine(1024, 50): 5M each, 0.30 ms in turn, 0.375 ms side
    by side: the hand-off to the other thread costs about as much as such a product).

    SimpleConvNet's Affine(4320, 100), batch 100, one BLAS thread per call: ``dx`` and ``dW`` side by
    side 1.14 ms (float32) / 2.40 ms (float64), against 1.70 / 3.06 ms as two products each cut
    into two row blocks (:func:`matmul_in_parts`), whose halves run at 55-65 % of a whole product's
    rate per core."""
    smallest = min(a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in products)
    if smallest < SPLIT_MIN_MACS or len(products) < 2:
        for a, b, out in products:
            np.dot(a, b, out=out)
        return

    def product(i: int) -> None:
        a, b, out = products[i]
        np.dot(a, b, out=out)

    run_tasks(product, len(products))

"""Both cores for the compiled twins that call BLAS between compiled passes (convolution, pooling).

:func:`run_tasks` runs ``task(0) … task(n - 1)`` on up to ``numba.get_num_threads()`` threads: the
calling thread and the workers of one process-wide :class:`_Team`. The compiled passes release the
GIL (``nogil`` in ``_jit.py``) and so do NumPy's products, so the threads really run at once. Why
Python threads rather than numba's ``prange``: a task calls NumPy's BLAS between compiled passes
(BLAS inside njit code would load SciPy's second OpenBLAS, see NUMBA-NOTES), and numba's OpenMP
workers spin against BLAS's and ours after each parallel loop.

The team's threads hand work over in compiled code (:mod:`zerodl.kernels._spin`): after a call a
worker spins, GIL released, for up to :data:`SPIN_SECONDS` waiting for the next one, and reports a
finished job from inside that GIL-free call; the caller spins the same way for the reports. A
hand-over through Python objects (locks, futures) cost 80-200 µs a call here, because each side
slept — on a lock, or on the GIL at the end of a compiled call while the other thread held it for
its bookkeeping — and waking a sleeping virtual CPU is slow (``conv_notes.md``, session 8). Past the
spin budget both sides sleep on a condition, so an idle process does not burn a core.

Tasks must write disjoint outputs and must not depend on which thread runs them, or on how many
threads there are: callers cut their work by the shapes alone, so results are bit-identical for
any thread count. ``zerodl.num_threads(1)`` (which sets numba's count) makes every call sequential,
and so does a call made from inside a task, or while another thread's call has the team.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable

import numba
import numpy as np

from zerodl.kernels import _spin

#: How long a worker spins for the next call, and the caller for the workers' reports, before
#: sleeping. In a training step the calls come 0.1-1 ms apart (DeepConvNet: 12 a step). The
#: environment variable ``ZERODL_TASK_SPIN_US`` (microseconds, read when the team is made) overrides
#: it; 0 makes both sides sleep at once (for a machine shared with other busy processes).
SPIN_SECONDS = 1e-3
SPIN_ENV = "ZERODL_TASK_SPIN_US"

_local = threading.local()
_team_lock = threading.Lock()
_team: _Team | None = None


class _Job:
    """One call of :func:`run_tasks`: its tasks, the shared counter that deals them out, how many
    workers take part, and the errors their tasks raised."""

    def __init__(self, seq: int, task: Callable[[int], None], n_tasks: int, workers: int) -> None:
        self.seq = seq
        self.task = task
        self.n_tasks = n_tasks
        self.workers = workers
        self.counter = itertools.count()  # next() is atomic under the GIL: each task is taken once
        self.errors: list[BaseException] = []
        self.stop = False  # the team's last job: its workers return (see _Team.close)

    def work(self) -> None:
        for i in self.counter:
            if i >= self.n_tasks:
                return
            self.task(i)


class _Team:
    """The worker threads (numba's thread limit less one), their shared ``int64`` state (posted
    job number, done count: :mod:`~zerodl.kernels._spin`) and the condition both sides sleep on
    once their spin budget is spent."""

    def __init__(self, workers: int) -> None:
        self.pid = os.getpid()
        self.state = np.zeros(_spin.STATE_SIZE, np.int64)
        seconds = spin_seconds()
        self.spins = 0 if numba.config.DISABLE_JIT or seconds == 0 else _spins_for(seconds)
        self.lock = threading.Lock()  # held by the thread whose call has the team
        self.cond = threading.Condition()
        self.sleeping_workers = 0
        self.caller_sleeping = False
        self.job = _Job(0, _no_task, 0, 0)
        self.done_target = 0
        self.threads = [
            threading.Thread(target=self._work, args=(k,), name=f"zerodl-{k}", daemon=True) for k in range(workers)
        ]
        for thread in self.threads:
            thread.start()

    # ------------------------------------------------------------------------- worker side
    def _work(self, index: int) -> None:
        _local.in_worker = True
        seen, finished = 0, 0
        while True:
            posted = _spin.signal_and_wait(self.state, finished, seen, self.spins)
            finished = 0
            if posted < 0:
                self._sleep_until_posted(seen)
            job = self.job  # the newest job: a worker that slept through one never runs it twice
            if job.stop:
                return
            seen = job.seq
            engaged = index < job.workers
            if engaged:
                try:
                    job.work()
                except BaseException as error:  # noqa: BLE001 - re-raised in the caller's thread
                    job.errors.append(error)
            job = None  # dropped before the report: the call's arrays must not outlive it here
            if not engaged:
                continue
            if self.caller_sleeping:
                with self.cond:
                    _spin.add(self.state, _spin.DONE, 1)
                    self.cond.notify_all()
            else:
                finished = 1  # reported by signal_and_wait, GIL released

    def _sleep_until_posted(self, seen: int) -> None:
        with self.cond:
            self.sleeping_workers += 1
            try:
                while self.state[_spin.POSTED] == seen:
                    self.cond.wait()
            finally:
                self.sleeping_workers -= 1

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers: each returns at the next job it sees (spinning or asleep), and they are
        joined. The process keeps one team for its life; this is for a team made aside (tests)."""
        with self.lock:  # no call of run in progress
            job = _Job(self.job.seq + 1, _no_task, 0, 0)
            job.stop = True
            self.job = job
            with self.cond:
                self.state[_spin.POSTED] = job.seq
                self.cond.notify_all()
        for thread in self.threads:
            thread.join(timeout)

    # ------------------------------------------------------------------------- caller side
    def run(self, task: Callable[[int], None], n_tasks: int, workers: int) -> None:
        job = _Job(self.job.seq + 1, task, n_tasks, workers)
        self.job = job
        self.done_target += workers
        self.state[_spin.POSTED] = job.seq  # the spinning workers see it; sleeping ones are woken
        if self.sleeping_workers:
            with self.cond:
                self.cond.notify_all()
        try:
            job.work()
        finally:
            self._wait_for_workers()  # before the caller's buffers go away, even on an error
            self.job = _Job(job.seq, _no_task, 0, 0)  # keeps no reference to the tasks' arrays
        if job.errors:
            raise job.errors[0]

    def _wait_for_workers(self) -> None:
        if _spin.wait_until_at_least(self.state, _spin.DONE, self.done_target, self.spins):
            return
        with self.cond:
            self.caller_sleeping = True
            try:
                # A worker that read caller_sleeping just before it was set reports without a
                # notify: the timeout bounds that rare wait.
                while self.state[_spin.DONE] < self.done_target:
                    self.cond.wait(0.001)
            finally:
                self.caller_sleeping = False


def spin_seconds() -> float:
    """The spin budget: :data:`SPIN_SECONDS`, or ``ZERODL_TASK_SPIN_US`` microseconds when set (a
    whole number from 0 to 1,000,000; anything else is a ``ValueError`` naming the variable)."""
    raw = os.environ.get(SPIN_ENV)
    if raw is None or raw.strip() == "":
        return SPIN_SECONDS
    try:
        micros = int(raw)
    except ValueError:
        micros = -1
    if not 0 <= micros <= 1_000_000:
        raise ValueError(f"environment variable {SPIN_ENV}={raw!r}: expected a whole number of microseconds "
                         f"from 0 to 1000000 (how long zerodl's task threads spin before sleeping; default "
                         f"{SPIN_SECONDS * 1e6:.0f})")
    return micros * 1e-6


def _no_task(i: int) -> None:
    raise AssertionError("the idle job has no tasks")


def _spins_for(seconds: float) -> int:
    # pause instructions in `seconds` on this CPU (a pause takes ~10-150 cycles depending on the model)
    state = np.zeros(_spin.STATE_SIZE, np.int64)
    trial = 20_000
    _spin.wait_until_at_least(state, _spin.DONE, 1, 10)  # compile, or load from the cache
    start = time.perf_counter()
    _spin.wait_until_at_least(state, _spin.DONE, 1, trial)
    elapsed = max(time.perf_counter() - start, 1e-9)
    return max(1, int(trial * seconds / elapsed))


def _current_team() -> _Team:
    # One team per process, made on first use; a forked child (whose copy has no threads) makes its own.
    global _team
    with _team_lock:
        if _team is None or _team.pid != os.getpid():
            _team = _Team(max(1, numba.config.NUMBA_NUM_THREADS) - 1)
        return _team


def _forget_team_in_child() -> None:
    # A fork copies the team (without its threads) and the locks as they were: one held by another
    # thread at that moment would never be released in the child.
    global _team, _team_lock
    _team, _team_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_team_in_child)


def run_tasks(task: Callable[[int], None], n_tasks: int) -> None:
    """``task(i)`` for every ``i < n_tasks``, on up to ``numba.get_num_threads()`` threads.

    The caller's thread works too, and returns only when every task has finished; the first error
    raised by a task is re-raised here (after the other threads have stopped).
    """
    threads = min(numba.get_num_threads(), n_tasks)
    if threads > 1 and not getattr(_local, "in_worker", False):
        team = _current_team()
        # Sequential, also when a task itself calls run_tasks or another thread's call has the
        # team: a team waiting on tasks queued behind it could otherwise deadlock.
        if team.lock.acquire(blocking=False):
            try:
                team.run(task, n_tasks, threads - 1)
            finally:
                team.lock.release()
            return
    for i in range(n_tasks):
        task(i)


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

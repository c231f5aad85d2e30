"""run_tasks: the thread runner of the conv and pooling twins (every task once, errors re-raised,
numba's thread count respected, nested calls sequential)."""

import threading

import numba
import pytest

from zerodl.kernels._tasks import run_tasks


def _record(n):
    seen, threads, lock = [], set(), threading.Lock()

    def task(i):
        with lock:
            seen.append(i)
            threads.add(threading.get_ident())

    run_tasks(task, n)
    return seen, threads


def test_every_task_runs_once():
    for n in (0, 1, 2, 9):
        seen, _ = _record(n)
        assert sorted(seen) == list(range(n))


def test_one_numba_thread_runs_everything_in_the_caller_in_order():
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        seen, threads = _record(6)
    finally:
        numba.set_num_threads(old)
    assert seen == list(range(6)) and threads == {threading.get_ident()}


def test_a_task_error_is_reraised_after_the_others_finish():
    done = []

    def task(i):
        if i == 3:
            raise RuntimeError("task 3 failed")
        done.append(i)

    with pytest.raises(RuntimeError, match="task 3"):
        run_tasks(task, 8)
    assert 3 not in done


def test_nested_calls_complete():
    inner = []
    lock = threading.Lock()

    def outer(i):
        def leaf(k):
            with lock:
                inner.append((i, k))

        run_tasks(leaf, 3)

    run_tasks(outer, 4)
    assert sorted(inner) == [(i, k) for i in range(4) for k in range(3)]


def test_row_blocks_are_fixed_by_rows_parts_and_size():
    from zerodl.kernels._tasks import SPLIT_MIN_MACS, even_blocks, in_row_blocks, row_blocks

    assert even_blocks(100, 4) == [(0, 25), (25, 50), (50, 75), (75, 100)]
    assert even_blocks(3, 4) == [(0, 1), (1, 2), (2, 3)] and even_blocks(7, 1) == [(0, 7)]

    big = SPLIT_MIN_MACS
    assert row_blocks(100, 2, big) == [(0, 50), (50, 100)]
    assert row_blocks(10, 3, big) == [(0, 3), (3, 6), (6, 10)]
    assert row_blocks(2, 5, big) == [(0, 1), (1, 2)]  # no more blocks than rows
    assert row_blocks(100, 2, big - 1) == [(0, 100)]  # too small a product to split
    assert row_blocks(100, 1, big) == row_blocks(100, 0, big) == [(0, 100)]
    seen, lock = [], threading.Lock()

    def block(r0, r1):
        with lock:
            seen.append((r0, r1))

    in_row_blocks(10, 3, big, block)
    assert sorted(seen) == row_blocks(10, 3, big)

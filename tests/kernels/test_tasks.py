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

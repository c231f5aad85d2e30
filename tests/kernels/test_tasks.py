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


# ------------------------------------------------------------------- the team's hand-over
def _on_worker() -> bool:
    return threading.current_thread().name.startswith("zerodl-")


def _two_threads():
    old = numba.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one CPU: run_tasks never hands work to another thread")
    numba.set_num_threads(2)
    return old


def test_calls_back_to_back_run_every_task_once():
    # Hundreds of calls in a row: the worker is still spinning from one call when the next is posted.
    old = _two_threads()
    try:
        for call in range(300):
            n = 2 + call % 5
            counts = [0] * n
            lock = threading.Lock()

            def task(i, counts=counts, lock=lock):
                with lock:
                    counts[i] += 1

            run_tasks(task, n)
            assert counts == [1] * n, call
    finally:
        numba.set_num_threads(old)


def _handover_with_sleeping_sides(monkeypatch, worker_task):
    # spins = 0: both sides go straight to their condition. The caller's task holds until the worker
    # has taken the other task, so both threads take part whatever the scheduling.
    from zerodl.kernels import _tasks

    team = _tasks._current_team()
    monkeypatch.setattr(team, "spins", 0)
    worker_started = threading.Event()

    def task(i):
        if _on_worker():
            worker_started.set()
            worker_task(team)
        else:
            assert worker_started.wait(10), "the worker never took a task"

    run_tasks(task, 2)
    assert worker_started.is_set()


def test_a_caller_asleep_is_woken_by_the_worker(monkeypatch):
    old = _two_threads()
    try:
        def worker_task(team):
            # Finish only once the caller has given up spinning and sleeps on the condition.
            while not team.caller_sleeping:
                threading.Event().wait(0.0005)

        _handover_with_sleeping_sides(monkeypatch, worker_task)
        _handover_with_sleeping_sides(monkeypatch, lambda team: None)  # the worker woken from its sleep
    finally:
        numba.set_num_threads(old)


def test_an_error_on_the_worker_is_reraised_and_the_team_goes_on(monkeypatch):
    old = _two_threads()
    try:
        def worker_task(team):
            raise ValueError("worker task failed")

        with pytest.raises(ValueError, match="worker task failed"):
            _handover_with_sleeping_sides(monkeypatch, worker_task)
        seen, _ = _record(7)
        assert sorted(seen) == list(range(7))
    finally:
        numba.set_num_threads(old)


def test_calls_from_two_threads_at_once_both_complete():
    # One of them has the team; the other runs its tasks in its own thread, in order.
    old = _two_threads()
    results, errors = {}, []
    start = threading.Barrier(2)

    def caller(name):
        try:
            start.wait()
            for _ in range(50):
                seen, _ = _record(5)
                assert sorted(seen) == list(range(5))
            results[name] = True
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=caller, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        numba.set_num_threads(old)
    assert not errors and results == {0: True, 1: True}


def test_a_forked_child_makes_its_own_team():
    import multiprocessing

    from zerodl.kernels import _tasks

    old = _two_threads()
    try:
        parent_team = _tasks._current_team()
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_child_runs_tasks, args=(queue, id(parent_team)))
        child.start()
        report = queue.get(timeout=60)
        child.join(60)
    finally:
        numba.set_num_threads(old)
    assert child.exitcode == 0 and report == ("ok", True, list(range(6))), report


def _child_runs_tasks(queue, parent_team_id):
    from zerodl.kernels import _tasks

    try:
        seen, _ = _record(6)
        queue.put(("ok", id(_tasks._current_team()) != parent_team_id, sorted(seen)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        queue.put(("error", repr(exc), []))


def test_spin_waits():
    # The compiled waits (and their Python bodies, which NUMBA_DISABLE_JIT runs) on one state array.
    import numpy as np

    from zerodl.kernels import _spin

    for signal_and_wait, wait_until_at_least, add in (
            (_spin.signal_and_wait, _spin.wait_until_at_least, _spin.add),
            (getattr(_spin.signal_and_wait, "py_func", _spin.signal_and_wait),
             getattr(_spin.wait_until_at_least, "py_func", _spin.wait_until_at_least),
             getattr(_spin.add, "py_func", _spin.add))):
        state = np.zeros(_spin.STATE_SIZE, np.int64)
        assert signal_and_wait(state, 1, 0, 100) == -1  # nothing posted: the spins run out
        assert state[_spin.DONE] == 1  # but the finished job was reported first
        state[_spin.POSTED] = 7
        assert signal_and_wait(state, 0, 0, 100) == 7 and state[_spin.DONE] == 1
        assert signal_and_wait(state, 0, 7, 0) == -1
        assert add(state, _spin.DONE, 2) == 1 and state[_spin.DONE] == 3
        assert wait_until_at_least(state, _spin.DONE, 3, 0)
        assert not wait_until_at_least(state, _spin.DONE, 4, 50)
        assert state.dtype == np.int64 and state[_spin.POSTED] == 7  # nothing else written


def test_the_spin_budget_comes_from_the_environment(monkeypatch):
    from zerodl.kernels import _tasks

    monkeypatch.delenv(_tasks.SPIN_ENV, raising=False)
    assert _tasks.spin_seconds() == _tasks.SPIN_SECONDS
    monkeypatch.setenv(_tasks.SPIN_ENV, "250")
    assert _tasks.spin_seconds() == pytest.approx(250e-6)
    monkeypatch.setenv(_tasks.SPIN_ENV, "0")
    assert _tasks.spin_seconds() == 0
    for bad in ("-1", "1.5", "fast", "2000000"):
        monkeypatch.setenv(_tasks.SPIN_ENV, bad)
        with pytest.raises(ValueError, match=f"{_tasks.SPIN_ENV}='{bad}'.*microseconds"):
            _tasks.spin_seconds()


def test_a_team_without_spinning_still_runs_every_task(monkeypatch):
    # ZERODL_TASK_SPIN_US=0: both sides sleep at once, every hand-over goes through the condition.
    from zerodl.kernels import _tasks

    old = _two_threads()
    monkeypatch.setenv(_tasks.SPIN_ENV, "0")
    monkeypatch.setattr(_tasks, "_team", None)  # a new team, made with the variable set
    team = None
    try:
        team = _tasks._current_team()
        assert team.spins == 0
        for n in (2, 5, 2, 9):
            seen, _ = _record(n)
            assert sorted(seen) == list(range(n))
    finally:
        numba.set_num_threads(old)
        if team is not None:
            team.close()  # no sleeping workers left behind once monkeypatch restores the process's team
    assert team is not None and not any(thread.is_alive() for thread in team.threads)


def test_a_closed_team_stops_its_spinning_and_sleeping_workers(monkeypatch):
    # close() reaches a worker wherever it waits: spinning right after a call, or asleep.
    from zerodl.kernels import _tasks

    old = _two_threads()
    try:
        for spin_us in ("1000000", "0"):  # workers still spinning at close / asleep at once
            monkeypatch.setenv(_tasks.SPIN_ENV, spin_us)
            team = _tasks._Team(1)
            seen = []
            team.run(seen.append, 4, 1)
            assert sorted(seen) == [0, 1, 2, 3]
            team.close()
            assert not any(thread.is_alive() for thread in team.threads), spin_us
    finally:
        numba.set_num_threads(old)


def test_a_call_keeps_no_reference_to_its_tasks():
    # The team must not hold the last call's closure (and the arrays it captured) after the call.
    import gc
    import weakref

    old = _two_threads()
    try:
        class Buffer:
            pass

        for _ in range(3):
            buffer = Buffer()
            ref = weakref.ref(buffer)
            run_tasks(lambda i, buffer=buffer: None, 2)
            del buffer
            gc.collect()
            assert ref() is None
    finally:
        numba.set_num_threads(old)

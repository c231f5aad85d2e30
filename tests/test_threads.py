"""zerodl.num_threads / set_num_threads limit NumPy's and SciPy's BLAS and numba, and restore them."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from threadpoolctl import threadpool_info

import zerodl
from zerodl import threads


def _blas_threads() -> dict[str, int]:
    return {lib["filepath"]: lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_context_limits_every_blas_and_numba_then_restores():
    before_blas = (threads._load_scipy_blas(), _blas_threads())[1]
    before_numba = numba.get_num_threads()
    # NumPy's OpenBLAS (the products of both backends) must be seen, and SciPy's when installed.
    assert any("numpy" in path for path in before_blas)
    try:
        import scipy  # noqa: F401
    except ImportError:
        pass
    else:
        assert any("scipy" in path for path in before_blas)
    with zerodl.num_threads(1) as limits:
        assert set(_blas_threads().values()) == {1}
        assert numba.get_num_threads() == 1
        assert limits["blas"] == 1 and limits["numba"] == 1
    assert _blas_threads() == before_blas
    assert numba.get_num_threads() == before_numba


def test_context_restores_when_the_block_raises():
    before_blas, before_numba = _blas_threads(), numba.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"):
        with zerodl.num_threads(1):
            raise RuntimeError("boom")
    assert _blas_threads() == before_blas
    assert numba.get_num_threads() == before_numba


def test_training_inside_the_context_gives_the_same_result(rng):
    x, t = rng.random((8, 6)), rng.integers(0, 3, 8)
    a = zerodl.TwoLayerNet(6, 5, 3, seed=0)
    b = zerodl.TwoLayerNet(6, 5, 3, seed=0)
    with zerodl.num_threads(1):
        la = a.train_step(x, t, zerodl.SGD(0.1))
    lb = b.train_step(x, t, zerodl.SGD(0.1))
    np.testing.assert_allclose(la, lb, rtol=1e-12)


def test_set_num_threads_returns_what_to_restore():
    before = threads.set_num_threads(1)
    try:
        assert threads.get_num_threads()["blas"] == 1
        assert numba.get_num_threads() == 1
    finally:
        threads.set_num_threads(before["blas"])
        numba.set_num_threads(before["numba"])
    assert threads.get_num_threads()["blas"] == before["blas"]


def test_more_threads_than_numba_has_is_clamped_not_an_error():
    with zerodl.num_threads(numba.config.NUMBA_NUM_THREADS + 3):
        assert numba.get_num_threads() == numba.config.NUMBA_NUM_THREADS


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="positive integer"):
        with zerodl.num_threads(bad):
            pass
    with pytest.raises(ValueError, match="positive integer"):
        threads.set_num_threads(bad)


def test_overlapping_limits_in_two_threads_never_leave_blas_at_one():
    # A kernel-style limit (1 thread) held in one thread while num_threads(2) enters and leaves in
    # another, in the order that broke two uncoordinated owners: enter A, enter B, leave A, leave B
    # (B used to record A's 1 as "the original" and restore it).
    import threading

    from zerodl.kernels import _threads

    threads._load_scipy_blas()  # every BLAS loaded first (num_threads loads SciPy's when installed)
    before = _blas_threads()
    a_in, b_in, a_out = threading.Event(), threading.Event(), threading.Event()
    seen = {}

    def kernel_like():
        with _threads.limited(1):
            a_in.set()
            b_in.wait(5)
            seen["during"] = _threads.active_limits()
        a_out.set()

    def user_block():
        a_in.wait(5)
        with zerodl.num_threads(2):
            b_in.set()
            a_out.wait(5)
            seen["after_kernel_left"] = _threads.active_limits()

    workers = [threading.Thread(target=kernel_like), threading.Thread(target=user_block)]
    for th in workers:
        th.start()
    for th in workers:
        th.join(10)
    assert seen == {"during": (1, 2), "after_kernel_left": (2,)}
    assert _threads.active_limits() == ()
    assert _blas_threads() == before, "the limits before the first block must be restored"


def test_interleaved_limits_cap_at_the_smallest_and_restore_the_baseline():
    import contextlib

    from zerodl.kernels import _threads

    threads._load_scipy_blas()
    before = _blas_threads()
    a, b = _threads.limited(1), zerodl.num_threads(2)
    with contextlib.ExitStack() as outer:
        a.__enter__()
        outer.enter_context(b)
        assert set(_blas_threads().values()) == {1}  # the smallest active limit wins
        a.__exit__(None, None, None)
        assert set(_blas_threads().values()) == {min(2, v) for v in before.values()}
    assert _blas_threads() == before

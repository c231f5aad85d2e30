"""How many threads zerodl computes with: the BLAS libraries and numba's parallel kernels.

A zerodl process can hold several thread pools at once: NumPy's OpenBLAS (the products of both
backends), numba's own pool (``parallel=True`` kernels), SciPy's OpenBLAS when SciPy is loaded
(zerodl itself no longer needs it: no kernel calls ``np.dot`` inside compiled code) and, when
PyTorch is imported, its OpenMP pool. On a small machine pools that busy-wait for work fight over
the cores and a step can become many times slower, so :func:`num_threads` limits them all together:

>>> import zerodl
>>> with zerodl.num_threads(1):      # doctest: +SKIP
...     net.train_step(x, t, opt)

:func:`set_num_threads` does the same for the rest of the process. Both use threadpoolctl for the
BLAS/OpenMP libraries (loading SciPy's BLAS first, so that numba's is limited too) and
``numba.set_num_threads`` for numba, whose setting is per calling thread (numba's rule).

One owner: the BLAS limit is process-wide, so every temporary limit — this module's and the
kernels' own (a kernel may run its BLAS calls on one thread) — goes through one lock and one count
(:mod:`zerodl.kernels._threads`): overlapping blocks in different threads combine, and the limits
in force before the first block are restored when the last one ends; BLAS is never left at the
temporary value.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from zerodl.kernels import _threads


def _check(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"number of threads must be a positive integer, got {n!r}")
    return n


def _load_scipy_blas() -> None:
    # threadpoolctl only sees libraries already loaded. SciPy is optional (zerodl does not use it);
    # when installed, load its OpenBLAS now so that a user's SciPy code is limited too.
    import sys

    if "scipy.linalg.cython_blas" in sys.modules:
        return
    try:
        import scipy.linalg.cython_blas  # noqa: F401
    except ImportError:
        return
    _threads.refresh()


def _numba_limit(n: int) -> int:
    import numba

    # numba refuses more threads than its pool was started with (NUMBA_NUM_THREADS).
    return min(n, numba.config.NUMBA_NUM_THREADS)


def get_num_threads() -> dict[str, int]:
    """The current limits: ``{"blas": …, "numba": …}`` and ``"openmp"`` when an OpenMP pool is loaded.

    ``blas``/``openmp`` are the largest limit over the loaded libraries of that kind.
    """
    import numba
    from threadpoolctl import threadpool_info

    _load_scipy_blas()
    info: dict[str, int] = {"numba": numba.get_num_threads()}
    for lib in threadpool_info():
        api = lib["user_api"]
        info[api] = max(info.get(api, 0), int(lib["num_threads"]))
    return info


def set_num_threads(n: int) -> dict[str, int]:
    """Limit BLAS (NumPy's and SciPy's), OpenMP and numba to ``n`` threads for the rest of the process.

    Returns the limits before the call (as :func:`get_num_threads`). Prefer :func:`num_threads`,
    which restores them. Raises ValueError unless ``n`` is a positive integer.
    """
    import numba

    n = _check(n)
    before = get_num_threads()
    _threads.set_baseline(n)
    numba.set_num_threads(_numba_limit(n))
    return before


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[dict[str, int]]:
    """Within the block, BLAS (NumPy's and SciPy's), OpenMP and numba use at most ``n`` threads.

    The previous limits are restored on exit, also when the block raises. Yields the limits in force.
    """
    import numba

    n = _check(n)
    _load_scipy_blas()
    old_numba = numba.get_num_threads()
    with _threads.limited(n):
        try:
            numba.set_num_threads(_numba_limit(n))
            yield get_num_threads()
        finally:
            numba.set_num_threads(old_numba)

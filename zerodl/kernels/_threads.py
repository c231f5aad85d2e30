"""The one owner of the process-wide BLAS thread limit (public face: :mod:`zerodl.threads`).

BLAS libraries have one thread setting per process. Two code paths that each save, lower and
restore it independently corrupt it when they overlap in different threads: a ``num_threads``
block entered while a convolution kernel has lowered the limit to 1 records 1 as "the original" and
restores 1, leaving BLAS at one thread for good. Here every temporary limit goes through one lock
and one list of active requests:

* the limits to restore (the *baseline*) are read only when no temporary limit is active;
* while requests are active, each library runs at ``min(baseline, *requests)``;
* when the last request ends, the baseline is restored exactly.

It lives on the kernel floor so that kernels may lower the limit around their BLAS calls without
importing anything above them.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

_lock = threading.Lock()
_requests: list[int] = []          # active temporary limits, in entry order
_baseline: list[tuple[Any, int]] = []  # (library controller, its limit) while requests are active
_controller: Any = None


_modules_seen = 0  # len(sys.modules) at the last scan


def _libraries() -> list[Any]:
    # A new BLAS/OpenMP library arrives with a Python import (SciPy, PyTorch): rescan the loaded
    # libraries when the module table has grown since the last scan, not on every call.
    global _controller, _modules_seen
    if _controller is None or len(sys.modules) != _modules_seen:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
        _modules_seen = len(sys.modules)
    return [lib for lib in _controller.lib_controllers if lib.user_api in ("blas", "openmp")]


def refresh() -> None:
    """Rescan the loaded libraries (after a new BLAS/OpenMP library was loaded); while limits are
    active, a new library joins the baseline with its current limit and is capped at once."""
    global _controller
    with _lock:
        _controller = None
        if _requests:
            # Controllers compare by identity: match the baseline's by library file.
            known = {lib.filepath for lib, _ in _baseline}
            _baseline.extend((lib, lib.num_threads) for lib in _libraries() if lib.filepath not in known)
            _apply()


def _apply() -> None:
    cap = min(_requests)
    for lib, base in _baseline:
        lib.set_num_threads(min(base, cap))
    # A library loaded while a limit is active would escape it: callers that load one call
    # refresh(); BLAS libraries are loaded once per process, so this is rare.


@contextlib.contextmanager
def limited(n: int) -> Iterator[None]:
    """Within the block, BLAS and OpenMP use at most ``n`` threads (process-wide); nested and
    concurrent blocks combine (the smallest active limit wins) and the last one to leave restores
    the limits that were in force before the first entered."""
    with _lock:
        if not _requests:
            _baseline[:] = [(lib, lib.num_threads) for lib in _libraries()]
        _requests.append(n)
        _apply()
    try:
        yield
    finally:
        with _lock:
            _requests.remove(n)
            if _requests:
                _apply()
            else:
                for lib, base in _baseline:
                    lib.set_num_threads(base)
                _baseline.clear()


def set_baseline(n: int) -> None:
    """Set the limit for the rest of the process; while temporary limits are active it becomes the
    limit they restore (and caps them now)."""
    with _lock:
        if _requests:
            _baseline[:] = [(lib, n) for lib, _ in _baseline]
            _apply()
        else:
            for lib in _libraries():
                lib.set_num_threads(n)


def active_limits() -> tuple[int, ...]:
    """The temporary limits now active (for tests and diagnostics)."""
    with _lock:
        return tuple(_requests)

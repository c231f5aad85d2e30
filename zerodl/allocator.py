"""Keep freed memory in the process: large NumPy temporaries without page faults.

A training step allocates and frees the same large arrays every time (a ReLU output of
``(100, 30, 24, 24)`` float64 is 13.8 MB). With glibc's defaults such a block is freed back to the
operating system — by ``munmap``, or by trimming the heap once more than a few MB sit free at its
top — and the next step's allocation of the same size faults every 4 KiB page in again: about 2 ms
per such array on the development machine, a quarter of a SimpleConvNet step. PyTorch avoids this
with its own caching allocator; NumPy and Numba use ``malloc``.

:func:`tune_malloc` tells glibc to serve blocks up to ``mmap_threshold`` from the heap and never to
trim the heap below ``trim_threshold`` of free memory, so the step's blocks are reused as they are.
The price is that the process keeps its peak memory until it exits (as PyTorch's allocator does).
The ``zerodl`` command calls it at start; a library does not change process-wide settings on
import, so scripts call it themselves::

    import zerodl
    zerodl.tune_malloc()      # True on glibc (Linux), False where there is nothing to tune
"""

from __future__ import annotations

import ctypes
import platform

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2: 32 MiB on 64-bit systems.
MAX_MMAP_THRESHOLD = 32 * 1024 * 1024
DEFAULT_TRIM_THRESHOLD = 1024 * 1024 * 1024

_applied: tuple[int, int] | None = None


def tune_malloc(mmap_threshold: int = MAX_MMAP_THRESHOLD, trim_threshold: int = DEFAULT_TRIM_THRESHOLD) -> bool:
    """Make glibc keep freed blocks for reuse (see the module docstring). Process-wide.

    Args:
        mmap_threshold: blocks up to this many bytes come from the heap, not from ``mmap``
            (1 MiB .. 32 MiB; glibc's own limit on 64-bit systems).
        trim_threshold: free memory at the top of the heap kept, not returned to the system
            (1 MiB .. 2**31 - 1 bytes: mallopt takes a C int).

    Returns ``True`` when glibc accepted both settings, ``False`` when the C library is not glibc
    (macOS, Windows, musl): nothing is changed there. Raises ValueError for out-of-range sizes.
    Setting both matters: a trim threshold alone switches off glibc's adaptive mmap threshold and
    makes every large block an ``mmap``, which is slower than the default.
    """
    global _applied
    for name, value, low, high in (("mmap_threshold", mmap_threshold, 1 << 20, MAX_MMAP_THRESHOLD),
                                   ("trim_threshold", trim_threshold, 1 << 20, 2**31 - 1)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValueError(f"tune_malloc: {name} must be an integer number of bytes in [{low}, {high}], "
                             f"got {value!r}")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if ok:
        _applied = (mmap_threshold, trim_threshold)
    return ok


def malloc_tuned() -> tuple[int, int] | None:
    """``(mmap_threshold, trim_threshold)`` last applied by :func:`tune_malloc` in this process, else None."""
    return _applied

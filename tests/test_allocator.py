"""zerodl.tune_malloc: glibc keeps freed blocks; bad sizes are refused; the command applies it."""

import platform
import subprocess
import sys

import pytest

import zerodl
from zerodl import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@pytest.mark.parametrize("kwargs, word", [
    ({"mmap_threshold": 1}, "mmap_threshold"),
    ({"mmap_threshold": 64 << 20}, "mmap_threshold"),
    ({"mmap_threshold": 2.5e6}, "mmap_threshold"),
    ({"trim_threshold": -5}, "trim_threshold"),
    ({"trim_threshold": 2**31}, "trim_threshold"),
    ({"trim_threshold": True}, "trim_threshold"),
])
def test_bad_sizes_are_refused(kwargs, word):
    with pytest.raises(ValueError, match=word):
        zerodl.tune_malloc(**kwargs)


def _run(code: str, **env: str) -> str:
    import os

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return out.stdout.strip()


def test_applied_in_a_fresh_process():
    # In a child, so this test process keeps glibc's defaults.
    out = _run("import zerodl; from zerodl.allocator import malloc_tuned; "
               "print(malloc_tuned(), zerodl.tune_malloc(), malloc_tuned())")
    if GLIBC:
        assert out == f"None True ({allocator.MAX_MMAP_THRESHOLD}, {allocator.DEFAULT_TRIM_THRESHOLD})"
    else:
        assert out == "None False None"


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's; elsewhere tune_malloc changes nothing")
def test_freed_blocks_are_reused_without_page_faults():
    # The effect itself: after tuning, allocating and freeing a 14 MB array again and again costs
    # (almost) no new minor page faults; with glibc's defaults each round faults its pages in.
    code = (
        "import resource, sys, numpy as np, zerodl\n"
        "if sys.argv[1] == 'tuned': zerodl.tune_malloc()\n"
        "def faults(): return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "a = np.ones((100, 30, 24, 24)); b = np.ones((100, 30, 24, 24)); del a, b\n"
        "before = faults()\n"
        "for _ in range(20):\n"
        "    a = np.ones((100, 30, 24, 24)); b = np.ones((100, 30, 24, 24)); c = np.ones(10); del a, b\n"
        "print(faults() - before)\n"
    )
    pages = 100 * 30 * 24 * 24 * 8 // 4096
    tuned = int(subprocess.run([sys.executable, "-c", code, "tuned"], capture_output=True, text=True,
                               check=True).stdout)
    assert tuned < pages  # less than one array's worth of pages over 20 rounds of two arrays


def test_the_command_tunes_unless_told_not_to():
    code = ("import sys, zerodl.cli as cli, zerodl.allocator as al\n"
            "cli.main(['evaluate', 'no-such-model.npz'])\n"
            "print(al.malloc_tuned() is not None)")
    assert _run(code) == str(GLIBC)
    assert _run(code, ZERODL_TUNE_MALLOC="0") == "False"

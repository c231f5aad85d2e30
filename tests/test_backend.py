"""The backend switch: default, set/get, context manager, environment variable, threads."""

import os
import subprocess
import sys
import threading

import pytest

import zerodl
from zerodl import kernels


def test_default_is_numba_and_switching_changes_the_kernel():
    assert zerodl.get_backend() == "numba"
    assert kernels.get("affine_forward").__name__ == "affine_forward_numba"
    with zerodl.use_backend("numpy") as name:
        assert name == "numpy" == zerodl.get_backend()
        assert kernels.get("affine_forward").__name__ == "affine_forward_numpy"
    assert zerodl.get_backend() == "numba"


def test_set_backend_is_process_wide_and_restorable():
    try:
        zerodl.set_backend("NumPy ")
        assert zerodl.get_backend() == "numpy"
        seen = []
        th = threading.Thread(target=lambda: seen.append(zerodl.get_backend()))
        th.start()
        th.join()
        assert seen == ["numpy"]
    finally:
        zerodl.set_backend("numba")


@pytest.mark.parametrize("bad", ["torch", "", None, 3])
def test_unknown_backend_lists_valid_ones(bad):
    with pytest.raises(ValueError, match="expected one of 'numba', 'numpy'"):
        zerodl.set_backend(bad)
    with pytest.raises(ValueError, match="'numba', 'numpy'"):
        with zerodl.use_backend(bad):
            pass


def test_use_backend_is_local_to_the_thread():
    inside = threading.Event()
    release = threading.Event()
    seen = {}

    def worker():
        with zerodl.use_backend("numpy"):
            seen["worker"] = zerodl.get_backend()
            inside.set()
            release.wait(5)

    th = threading.Thread(target=worker)
    th.start()
    inside.wait(5)
    seen["main"] = zerodl.get_backend()
    release.set()
    th.join()
    assert seen == {"worker": "numpy", "main": "numba"}


def test_use_backend_restores_on_error():
    with pytest.raises(RuntimeError):
        with zerodl.use_backend("numpy"):
            raise RuntimeError("boom")
    assert zerodl.get_backend() == "numba"


def _run(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_environment_variable():
    out = _run("import zerodl; print(zerodl.get_backend())", ZERODL_BACKEND="numpy")
    assert out.returncode == 0 and out.stdout.strip() == "numpy"
    bad = _run("import zerodl", ZERODL_BACKEND="cuda")
    assert bad.returncode != 0
    assert "unknown ZERODL_BACKEND value 'cuda'" in bad.stderr and "'numba', 'numpy'" in bad.stderr

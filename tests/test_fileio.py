"""atomic_write: all or nothing, ordinary permissions."""

import os
import stat

import pytest

from zerodl._fileio import atomic_write


def test_writes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    with atomic_write(path) as f:
        f.write(b"one")
    with atomic_write(path) as f:
        f.write(b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]


def test_crash_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"good")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write(b"half")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_permissions_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f.txt", "w") as f:
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644

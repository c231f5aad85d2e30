"""benchmarks_scripts/handoff.py runs (its quick mode) and refuses bad options with a clear message."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numba
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks_scripts" / "handoff.py"


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[1]))
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="the script needs 2 threads")
def test_the_microbenchmark_prints_both_runners():
    done = _run("--rounds", "1", "--gaps", "0,0.1", "--no-steps")
    assert done.returncode == 0, done.stderr
    assert re.search(r"one task alone: \d+ µs", done.stdout)
    assert "executor (before)" in done.stdout and "team (now)" in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if re.match(r"\s+\d+\.\d ms", line)]
    assert [r[0] for r in rows] == ["0.0", "0.1"]
    assert all(len(r) == 4 and all(re.fullmatch(r"-?\d+", v) for v in r[2:]) for r in rows), rows


def test_bad_options_are_named():
    for args, message in ((["--rounds", "0"], "--rounds must be at least 1"),
                          (["--gaps", "1,x"], "--gaps must be comma-separated"),
                          (["--gaps", "-1"], "--gaps must not be negative")):
        done = _run(*args)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)


def test_the_filter_transform_script_prints_every_shape():
    script = SCRIPT.parent / "wino_filter.py"
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[1]))
    done = subprocess.run([sys.executable, str(script), "--repeats", "2"], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[1:]]
    assert [r[0] for r in rows] == ["16x1", "16x16", "32x16", "32x32", "64x32", "64x64"]
    assert all(len(r) == 3 and all(float(v) > 0 for v in r[1:]) for r in rows), rows
    bad = subprocess.run([sys.executable, str(script), "--repeats", "0"], capture_output=True, text=True, env=env,
                         timeout=60, check=False)
    assert bad.returncode == 2 and "--repeats must be at least 1" in bad.stderr

"""Bad ``NUMBA_*`` environment variables are one zerodl line at import, not numba's traceback (for
NUMBA_NUM_THREADS=0) nor a warning after which numba silently ignores the setting (for unparsable
values) nor a cache that is silently never written (NUMBA_CACHE_DIR naming a file)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from zerodl._numba_env import NumbaEnvironmentError, _problem, check_numba_environment


def _env(**changes):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_") or k == "NUMBA_CACHE_DIR"}
    env.update(changes)
    return env


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("not a folder")
    return path


BAD = {
    "threads 0": ("NUMBA_NUM_THREADS", "0", "NUMBA_NUM_THREADS='0': expected a positive number of threads"),
    "threads -2": ("NUMBA_NUM_THREADS", "-2", "NUMBA_NUM_THREADS='-2': expected a positive number"),
    "threads abc": ("NUMBA_NUM_THREADS", "abc", "NUMBA_NUM_THREADS='abc': expected a positive number"),
    "disable jit": ("NUMBA_DISABLE_JIT", "xyz", "NUMBA_DISABLE_JIT='xyz': expected 0 (off) or 1 (on)"),
    "boundscheck": ("NUMBA_BOUNDSCHECK", "yes", "NUMBA_BOUNDSCHECK='yes': expected 0 (off) or 1 (on)"),
    "opt": ("NUMBA_OPT", "9", "NUMBA_OPT='9': expected one of 0, 1, 2, 3 or max"),
    "cache file": ("NUMBA_CACHE_DIR", "{file}", "NUMBA_CACHE_DIR='{file}': is a file, not a folder"),
    "cache under file": ("NUMBA_CACHE_DIR", "{file}/sub", ("NUMBA_CACHE_DIR='{file}/sub': {file} on its path is a "
                                                          "file, not a folder")),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_variable_is_one_line_in_process(case, a_file):
    name, value, message = (s.format(file=a_file) for s in BAD[case])
    with pytest.raises(NumbaEnvironmentError) as err:
        check_numba_environment({name: value})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize("case", ["threads 0", "threads abc", "disable jit", "cache file"])
def test_import_and_the_command_print_one_line_and_exit_1(case, a_file):
    name, value, message = (s.format(file=a_file) for s in BAD[case])
    env = _env(**{name: value})
    for command in ([sys.executable, "-c", "import zerodl"], [sys.executable, "-m", "zerodl", "train", "--epochs", "1"]):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 1, proc.stderr
        assert proc.stderr.startswith(f"zerodl: error: {message}"), proc.stderr
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert proc.stdout == ""


def test_good_values_pass(tmp_path):
    good = [{}, {"NUMBA_NUM_THREADS": "1"}, {"NUMBA_NUM_THREADS": " 64 "}, {"NUMBA_NUM_THREADS": ""},
            {"NUMBA_DISABLE_JIT": "1"}, {"NUMBA_DISABLE_JIT": "0"}, {"NUMBA_BOUNDSCHECK": "1"},
            {"NUMBA_OPT": "max"}, {"NUMBA_OPT": "0"}, {"NUMBA_CACHE_DIR": str(tmp_path)},
            {"NUMBA_CACHE_DIR": str(tmp_path / "new" / "folder")}]  # numba creates missing folders
    for environ in good:
        assert _problem(environ) is None, environ
        check_numba_environment(environ)


def test_other_exceptions_keep_their_traceback():
    code = ("import sys, zerodl._numba_env as m\n"
            "try:\n    m.check_numba_environment({'NUMBA_OPT': 'x'})\nexcept ValueError:\n    pass\n"
            "raise RuntimeError('something else')")
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "RuntimeError: something else" in proc.stderr

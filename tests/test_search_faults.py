"""The hyper-parameter search loses nothing: a worker killed mid-trial costs at most that trial
(it is run again), the results file holds every finished trial when the search is stopped by a
signal, and ``resume`` runs only the trials that did not finish — the same search, or refused.

Synchronisation is on files the trials write (``started`` with the worker's pid, one ``ran-*`` file
per execution), never on sleeps. The trial functions live here, at module level, so that worker
processes import them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from zerodl.experiments import search

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")

MARKERS = "ZERODL_TEST_SEARCH_MARKERS"
#: Longest a test waits for a trial to report that it started (it normally takes a second).
WAIT = 240.0


def _markers(data) -> Path:
    # In the data when the test passes it (a process pool's forkserver may predate any environment
    # change of the test), else from the environment of the search's own process.
    if "markers" in data:
        return Path(str(data["markers"]))
    return Path(os.environ[MARKERS])


def hang_first_time(spec, data):
    """Trial 1, the first time it runs: records its worker's pid in ``started`` and waits to be
    killed. Every execution of every trial leaves a ``ran-<index>-*`` file."""
    markers = _markers(data)
    (markers / f"ran-{spec['index']}-{uuid.uuid4().hex}").touch()
    if spec["index"] == 1:
        started = markers / "started"
        if not started.exists():
            tmp = markers / f".started.{os.getpid()}"
            tmp.write_text(str(os.getpid()))
            tmp.rename(started)  # appears whole
            threading.Event().wait(WAIT)  # the test kills this process (or stops the search) here
            raise RuntimeError("trial 1 was not killed")
    return search.train_trial(spec, data)


def _ran(directory: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for p in directory.glob("ran-*"):
        index = int(p.name.split("-")[1])
        counts[index] = counts.get(index, 0) + 1
    return counts


def _wait_for(path: Path, proc: subprocess.Popen | None = None, thread: threading.Thread | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the search ended before {path.name} appeared: {proc.stderr.read()}")
        if thread is not None and not thread.is_alive():
            pytest.fail(f"the search ended before {path.name} appeared")
        if time.monotonic() > deadline:
            pytest.fail(f"{path.name} did not appear")
        time.sleep(0.01)  # polling for the file, not waiting for time to pass


def _tiny_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 6))
    t = (x[:, 0] > 0).astype(np.intp) + (x[:, 1] > 0)
    return search.validation_split(x, t, 0.25, seed=0)


KW = {"epochs": 1, "hidden": (4,), "batch_size": 10, "progress": False}


# -- a worker killed mid-trial ------------------------------------------------------------------
@pytest.mark.parametrize("executor", ["dask", "process"])
def test_a_worker_killed_mid_trial_costs_only_that_trial_which_is_run_again(executor, tmp_path):
    data, trials = {**_tiny_data(), "markers": np.array(str(tmp_path))}, search.make_trials(4, seed=2)
    outcome: dict[str, object] = {}

    def run_search():
        try:
            outcome["result"] = search.search(data, trials, executor=executor, workers=2,
                                              trial_fn=hang_first_time, results_path=tmp_path / "r.json", **KW)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            outcome["error"] = exc

    thread = threading.Thread(target=run_search)
    thread.start()
    try:
        _wait_for(tmp_path / "started", thread=thread)
        os.kill(int((tmp_path / "started").read_text()), signal.SIGKILL)
    finally:
        thread.join(timeout=WAIT)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    result = outcome["result"]
    assert [t.status for t in result.trials] == ["ok"] * 4
    ran = _ran(tmp_path)
    if executor == "dask":  # only the killed worker's trial ran again
        assert [t.attempts for t in result.trials] == [1, 2, 1, 1]
        assert ran == {0: 1, 1: 2, 2: 1, 3: 1}
    else:  # a dead worker breaks the whole process pool: the trials in flight on it run again
        assert result.trials[1].attempts == 2 and ran[1] == 2
        assert all(ran[t.index] <= t.attempts for t in result.trials)
    serial = search.search(data, trials, executor="serial", **KW)
    assert [t.val_acc_list for t in result.trials] == [t.val_acc_list for t in serial.trials]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [r["attempts"] for r in saved["trials"]] == [t.attempts for t in result.trials]


def die_always_on_trial_1(spec, data):
    if spec["index"] == 1:
        os._exit(7)
    return search.train_trial(spec, data)


def test_dask_trial_that_kills_every_worker_is_reported_crashed_after_a_retry():
    data, trials = _tiny_data(), search.make_trials(3, seed=2)
    result = search.search(data, trials, executor="dask", workers=2, trial_fn=die_always_on_trial_1, **KW)
    assert [t.status for t in result.trials] == ["ok", "crashed", "ok"]
    assert result.trials[1].attempts == search.DASK_ATTEMPTS
    assert "worker died while running this trial, 2 times" in result.trials[1].error


# -- stopped by a signal, then resumed ----------------------------------------------------------
SEARCH_SCRIPT = textwrap.dedent("""
    import sys
    from tests.test_search_faults import hang_first_time
    from zerodl.experiments import search

    executor, results, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    try:
        result = search.run(None, quick=True, trials=5, executor=executor, workers=2, results=results,
                            resume=mode == "resume", trial_fn=hang_first_time, progress=False)
    except search.SearchInterrupted as exc:
        print(exc, file=sys.stderr)
        sys.exit(exc.exit_code)
    print("executed", result.data["result"].executed)
""")


@pytest.mark.parametrize("executor", ["serial", "process", "dask"])
def test_sigterm_keeps_finished_trials_and_resume_runs_only_the_rest(executor, tmp_path):
    env = {**os.environ, MARKERS: str(tmp_path), "PYTHONUNBUFFERED": "1"}
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    results = tmp_path / "search.json"
    proc = subprocess.Popen([sys.executable, "-c", SEARCH_SCRIPT, executor, str(results), "new"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(tmp_path / "started", proc)  # trial 1 is running (and will not end by itself)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    saved = json.loads(results.read_text())
    finished = [r["index"] for r in saved["trials"]]
    assert 1 not in finished and len(finished) < 5
    if executor == "serial":
        assert finished == [0]  # trials run in order; the stop came during trial 1
    # (the last line: Dask's workers may log their scheduler going away before it)
    assert err.strip().splitlines()[-1] == (f"interrupted by SIGTERM after {len(finished)} of 5 trials; the {len(finished)} "
                           f"finished are in {results} (continue with --resume)")
    before = {r["index"]: r for r in saved["trials"]}
    ran_before = _ran(tmp_path)

    proc = subprocess.run([sys.executable, "-c", SEARCH_SCRIPT, executor, str(results), "resume"], env=env,
                          capture_output=True, text=True, timeout=WAIT, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"executed {5 - len(finished)}"
    ran_after = _ran(tmp_path)
    for index in range(5):  # the finished trials were not run again; the others ran once more
        assert ran_after.get(index, 0) - ran_before.get(index, 0) == (0 if index in before else 1), index
    saved = json.loads(results.read_text())
    assert [r["index"] for r in saved["trials"]] == [0, 1, 2, 3, 4]
    for r in saved["trials"]:
        if r["index"] in before:
            assert r == before[r["index"]]
        assert r["status"] == "ok"


# -- resume refuses another search --------------------------------------------------------------
def test_resume_with_other_options_is_refused_naming_the_option(tmp_path):
    results = tmp_path / "s.json"
    kw = {"quick": True, "executor": "serial", "progress": False, "results": str(results)}
    search.run(None, trials=2, **kw)
    first = results.read_text()
    with pytest.raises(search.SearchResultsError, match=r"written with --trials 2, this search has --trials 3"):
        search.run(None, trials=3, resume=True, **kw)
    with pytest.raises(search.SearchResultsError, match=r"written with --seed 0, this search has --seed 4"):
        search.run(None, trials=2, seed=4, resume=True, **kw)
    with pytest.raises(search.SearchResultsError, match=r"--quick True, this search has --quick False"):
        search.run(None, trials=2, quick=False, resume=True,
                   **{k: v for k, v in kw.items() if k != "quick"})
    assert results.read_text() == first  # refused before anything was written
    # The same search resumes (nothing left to run) and another executor is fine.
    again = search.run(None, trials=2, resume=True, **{**kw, "executor": "process"})
    assert again.data["result"].executed == 0


def test_unfinished_results_are_not_replaced_without_resume_and_damaged_ones_refused(tmp_path):
    data, trials = _tiny_data(), search.make_trials(3, seed=1)
    results = tmp_path / "s.json"
    search.search(data, trials[:2], executor="serial", results_path=results, **KW)
    doc = json.loads(results.read_text())
    doc["options"]["total"] = 3  # as a search of 3 stopped after 2
    results.write_text(json.dumps(doc))
    with pytest.raises(search.SearchResultsError, match=r"unfinished search \(2 of 3 trials\).*--resume"):
        search.search(data, trials, executor="serial", results_path=results, **KW)
    with pytest.raises(search.SearchResultsError, match="other trials"):
        search.search(data, trials, executor="serial", results_path=results, resume=True, **KW)
    with pytest.raises(search.SearchResultsError, match="other data"):
        search.search(search.validation_split(np.ones((60, 6)), np.zeros(60, np.intp), 0.25, 0), trials[:2],
                      executor="serial", results_path=results, resume=True, **KW)
    results.write_text("{not json")
    with pytest.raises(search.SearchResultsError, match="not a zerodl search results file"):
        search.search(data, trials, executor="serial", results_path=results, resume=True, **KW)


def test_cli_search_resume_mismatch_is_one_line_exit_2(tmp_path, capsys):
    import argparse

    from zerodl.experiments import cli

    def run(*argv):
        parser = argparse.ArgumentParser(prog="zerodl")
        cli.add_subparsers(parser.add_subparsers(dest="command", required=True))
        args = parser.parse_args(["experiment", "search", "--quick", "--executor", "serial", "--no-progress",
                                  "--out", str(tmp_path / "s.png"), *argv])
        return args.func(args)

    assert run("--trials", "2") == 0
    assert (tmp_path / "s.json").exists()  # the default results file: --out with .json
    capsys.readouterr()
    assert run("--trials", "3", "--resume") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"zerodl experiment search: error: {tmp_path / 's.json'}: written with --trials 2, "
                          "this search has --trials 3")
    assert run("--trials", "2", "--resume") == 0
    assert "2 from the earlier run, 0 run now" in capsys.readouterr().out


def test_a_results_file_in_use_by_another_search_is_refused(tmp_path):
    from zerodl._runlock import OutputInUseError, RunLock

    data, trials = _tiny_data(), search.make_trials(2, seed=1)
    with RunLock([tmp_path / "s.json"], command="another search"), \
            pytest.raises(OutputInUseError, match=r"s\.json is in use by another run .*another search"):
        search.search(data, trials, executor="serial", results_path=tmp_path / "s.json", **KW)
    assert not (tmp_path / "s.json").exists()
    search.search(data, trials, executor="serial", results_path=tmp_path / "s.json", **KW)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]


def test_cli_reports_a_stopped_search_in_one_line_with_128_plus_signal(tmp_path, capsys, monkeypatch):
    import argparse

    from zerodl.experiments import cli

    def stopped(out, **kwargs):
        raise search.SearchInterrupted(signal.SIGTERM, 2, 6, kwargs["results"])

    monkeypatch.setattr(search, "run", stopped)
    parser = argparse.ArgumentParser(prog="zerodl")
    cli.add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["experiment", "search", "--quick", "--out", str(tmp_path / "s.png")])
    assert args.func(args) == 143
    err = capsys.readouterr().err
    assert err == (f"zerodl experiment search: interrupted by SIGTERM after 2 of 6 trials; the 2 finished are in "
                   f"{tmp_path / 's.json'} (continue with --resume)\n")

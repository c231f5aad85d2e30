"""One run owns its output files (zerodl._runlock): a second run naming one of them is refused up
front, in another process or in the same one; a run killed with SIGKILL never blocks the next one;
locks are taken all-or-nothing; the checkpoint's atomic writes and temporary-file cleanup work with
the lock file beside them.

Processes are synchronised on what they print (a "holding" line on stdout), never on sleeps: a
holder blocks reading its stdin until the test lets it go (or kills it).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from zerodl._fileio import remove_stale_temporaries
from zerodl._runlock import OutputInUseError, RunLock, hold_outputs, lock_path
from zerodl.callbacks import Callback
from zerodl.networks import MultiLayerNet
from zerodl.trainer import Trainer

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX flock")

#: A process that locks the outputs named on its command line, says so, and waits for its stdin.
HOLD_OUTPUTS = textwrap.dedent("""
    import sys
    from zerodl._runlock import RunLock
    lock = RunLock(sys.argv[1:], command="test holder")
    print("holding", flush=True)
    sys.stdin.readline()
    lock.release()
    print("released", flush=True)
""")

#: A Trainer on the checkpoint argv[1]; with argv[2] == "hold" it says so at the start of train()
#: (the lock is then held) and waits for its stdin before the first step.
TRAINER_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from zerodl.callbacks import Callback
    from zerodl.networks import MultiLayerNet
    from zerodl.trainer import Trainer

    class Hold(Callback):
        def on_train_begin(self, trainer):
            print("holding", flush=True)
            sys.stdin.readline()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4))
    t = (x[:, 0] > 0).astype(np.intp)
    net = MultiLayerNet(4, [5], 2, seed=0)
    callbacks = [Hold()] if sys.argv[2] == "hold" else []
    Trainer(net, x, t, x, t, epochs=1, mini_batch_size=10, seed=0, checkpoint_path=sys.argv[1],
            callbacks=callbacks, verbose=False).train()
    print("trained", flush=True)
""")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    env = dict(os.environ)
    if not env.get("NUMBA_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = str(tmp_path_factory.mktemp("numba_cache"))
    env["PYTHONUNBUFFERED"] = "1"
    env["ZERODL_DATA_DIR"] = str(tmp_path_factory.mktemp("empty_data_dir"))
    return env


def _start_holder(env, cwd, *args, script=HOLD_OUTPUTS):
    proc = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], cwd=cwd, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "holding":
        proc.kill()
        pytest.fail(f"the holder did not start: {line!r} {proc.stderr.read()}")
    return proc


def _let_go(proc):
    out, err = proc.communicate("\n", timeout=300)
    return out, err


def _run(env, cwd, *args, script=None):
    command = [sys.executable, "-c", script, *map(str, args)] if script else [sys.executable, "-m", *map(str, args)]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False)


def _data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 4))
    return x, (x[:, 0] > 0).astype(np.intp)


def _trainer(path, **kw):
    x, t = _data()
    return Trainer(MultiLayerNet(4, [5], 2, seed=0), x, t, x, t, epochs=1, mini_batch_size=10, seed=0,
                   checkpoint_path=path, verbose=False, **kw)


# -- two processes on one checkpoint ------------------------------------------------------------
def test_second_trainer_process_is_refused_and_a_killed_holder_never_blocks(env, tmp_path):
    ckpt = tmp_path / "ck.npz"
    first = _start_holder(env, tmp_path, ckpt, "hold", script=TRAINER_SCRIPT)
    try:
        second = _run(env, tmp_path, ckpt, "no", script=TRAINER_SCRIPT)
        assert second.returncode == 1
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("zerodl._runlock.OutputInUseError: ")
        assert f"{ckpt} is in use by another run (pid {first.pid}, started " in last
        assert "wait for it or choose another path" in last
        assert not ckpt.exists()  # the refused run wrote nothing
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
        first.communicate()
    # The killed run's lock file is still there, but nobody holds it: the next run starts.
    assert os.path.exists(lock_path(ckpt))
    third = _run(env, tmp_path, ckpt, "no", script=TRAINER_SCRIPT)
    assert third.returncode == 0, third.stderr
    assert third.stdout.strip() == "trained"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]  # its lock file removed on release


def test_holder_released_normally_lets_the_next_run_in(env, tmp_path):
    ckpt = tmp_path / "ck.npz"
    holder = _start_holder(env, tmp_path, ckpt)
    with pytest.raises(OutputInUseError, match=rf"in use by another run \(pid {holder.pid}, .*test holder\)"):
        RunLock([ckpt])
    out, _ = _let_go(holder)
    assert out.strip() == "released" and holder.returncode == 0
    assert not os.path.exists(lock_path(ckpt))
    with RunLock([ckpt]) as lock:
        assert lock.held


# -- the zerodl command -------------------------------------------------------------------------
def test_cli_train_refuses_a_checkpoint_or_model_in_use(env, tmp_path):
    holder = _start_holder(env, tmp_path, "ck.npz", "model.npz")
    try:
        for option, name in (("--checkpoint", "ck.npz"), ("--save", "model.npz")):
            proc = _run(env, tmp_path, "zerodl", "train", "--epochs", "1", "--hidden", "4", option, name)
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
            assert proc.stderr.startswith(f"zerodl train: error: {name} is in use by another run "
                                          f"(pid {holder.pid}, started ")
            assert "dataset:" not in proc.stdout  # refused before any data was loaded
    finally:
        _let_go(holder)
    proc = _run(env, tmp_path, "zerodl", "train", "--epochs", "1", "--hidden", "4", "--checkpoint", "ck.npz",
                "--save", "model.npz")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz", "model.npz"]


def test_cli_experiment_and_search_refuse_outputs_in_use(env, tmp_path):
    holder = _start_holder(env, tmp_path, "fig.png", "search.json")
    try:
        proc = _run(env, tmp_path, "zerodl", "experiment", "overfit", "--quick", "--out", "fig.png")
        assert proc.returncode == 1
        assert re.fullmatch(rf"zerodl experiment overfit: error: fig\.png is in use by another run "
                            rf"\(pid {holder.pid}, [^\n]*\n", proc.stderr), proc.stderr
        for entry in ("zerodl", "zerodl.experiments"):  # the zerodl command, and the module run alone
            args = ["search", "--quick", "--trials", "1", "--executor", "serial", "--out", "other.png",
                    "--results", "search.json"]
            proc = _run(env, tmp_path, entry, *(["experiment"] if entry == "zerodl" else []), *args)
            assert proc.returncode == 1, proc.stderr
            assert proc.stderr.startswith(f"zerodl experiment search: error: search.json is in use by another "
                                          f"run (pid {holder.pid}, ")
            assert not (tmp_path / "other.png").exists()
        proc = _run(env, tmp_path, "zerodl", "bench", "--quick", "--json", "search.json")
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"zerodl bench: error: search.json is in use by another run (pid {holder.pid}, ")
    finally:
        _let_go(holder)


# -- the Trainer from Python --------------------------------------------------------------------
def test_two_trainers_in_one_process_on_one_checkpoint(tmp_path):
    ckpt = tmp_path / "ck.npz"
    other = _trainer(ckpt)
    refused = []

    class TrySecond(Callback):
        def on_train_begin(self, trainer):
            with pytest.raises(OutputInUseError, match=rf"ck\.npz is in use by another run \(pid {os.getpid()}, "
                                                       "this process"):
                other.train()
            refused.append(True)

    _trainer(ckpt, callbacks=[TrySecond()]).train()
    assert refused == [True]
    assert not os.path.exists(lock_path(ckpt))  # released when train() returned
    assert other.current_iter == 0  # the refused one did no step
    other.resume()  # the first one's checkpoint, now free
    other.train()


def test_resume_holds_the_checkpoint_until_train_returns_or_raises(tmp_path):
    ckpt = tmp_path / "ck.npz"
    _trainer(ckpt).train()
    first = _trainer(ckpt)
    assert first.resume() is True
    with pytest.raises(OutputInUseError):
        _trainer(ckpt, overwrite_checkpoint=True).train()
    first.train()
    assert not os.path.exists(lock_path(ckpt))

    class Boom(Callback):
        def on_train_begin(self, trainer):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        _trainer(ckpt, overwrite_checkpoint=True, callbacks=[Boom()]).train()
    with RunLock([ckpt]):  # released although train() raised
        pass


def test_trainer_inside_a_run_that_holds_its_checkpoint(tmp_path):
    ckpt = tmp_path / "ck.npz"
    with hold_outputs([ckpt]):  # what `zerodl train` does: the Trainer uses the run's lock
        _trainer(ckpt).train()
        assert os.path.exists(lock_path(ckpt))  # still the command's
    assert not os.path.exists(lock_path(ckpt))
    with RunLock([ckpt], inherit=False), pytest.raises(OutputInUseError):  # someone else's lock
        _trainer(ckpt, overwrite_checkpoint=True).train()


def test_atomic_writes_and_temporary_cleanup_with_the_lock_beside(tmp_path):
    ckpt = tmp_path / "ck.npz"
    stale = tmp_path / ".ck.npz.abcd1234.tmp"  # what a write killed mid-way leaves
    stale.write_bytes(b"half")
    seen = []

    class Look(Callback):
        def on_train_end(self, trainer):  # after the final checkpoint, before the lock is released
            seen.append(sorted(p.name for p in tmp_path.iterdir()))

    _trainer(ckpt, checkpoint_every=1, callbacks=[Look()]).train()
    assert seen == [["ck.npz", "ck.npz.lock"]]  # the stale temporary removed, the lock file kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]
    with RunLock([ckpt]):
        assert remove_stale_temporaries(ckpt) == []  # the lock file is no temporary
        assert os.path.exists(lock_path(ckpt))


# -- all or nothing -----------------------------------------------------------------------------
def test_locks_are_taken_all_or_nothing(tmp_path):
    a, b, c = tmp_path / "a.npz", tmp_path / "b.png", tmp_path / "sub" / "c.json"
    with RunLock([b]):
        with pytest.raises(OutputInUseError, match="b.png is in use"):
            RunLock([a, b, c])
        assert not os.path.exists(lock_path(a))  # a was taken, then given back
        with RunLock([a, c]) as lock:  # free again
            assert len(lock.lock_files) == 2
    # The same file named twice (or through another path) is locked once.
    with RunLock([a, str(tmp_path / "." / "a.npz"), None]) as lock:
        assert lock.lock_files == [lock_path(a)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub"]


def test_error_message_and_attributes(tmp_path):
    with RunLock([tmp_path / "x.npz"], command="zerodl train --save x.npz"), \
            pytest.raises(OutputInUseError) as err:
        RunLock([tmp_path / "x.npz"])
    assert err.value.pid == os.getpid()
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'x.npz'} is in use by another run (pid {os.getpid()}, this process, "
                              "started ")
    assert message.endswith(": zerodl train --save x.npz); wait for it or choose another path")


def test_a_newcomer_that_locked_a_just_removed_lock_file_tries_again(tmp_path, monkeypatch):
    """The holder removes its lock file (still holding it) and then lets go; a newcomer that had
    opened the file just before gets the lock on a file nobody can find any more. It must notice
    and lock the file at the path instead, or a third run would also get in."""
    from zerodl import _runlock

    out = tmp_path / "ck.npz"
    holder = RunLock([out])
    real_open = os.open
    opened = []

    def open_then_holder_leaves(path, flags, mode=0o777, **kw):
        fd = real_open(path, flags, mode, **kw)
        if not opened:
            holder.release()  # between the newcomer's open and its flock
        opened.append(path)
        return fd

    monkeypatch.setattr(_runlock.os, "open", open_then_holder_leaves)
    newcomer = RunLock([out])
    monkeypatch.undo()
    assert len(opened) == 2  # the first file was gone: opened again
    assert os.path.exists(lock_path(out))
    with pytest.raises(OutputInUseError):
        RunLock([out])
    newcomer.release()
    assert not os.path.exists(lock_path(out))

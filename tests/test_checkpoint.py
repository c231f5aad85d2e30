"""Checkpoints: complete state, atomic writes, bit-identical resume (both backends), refusal of
checkpoints from another run, and a training process killed with SIGKILL that resumes and completes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import zerodl
from zerodl import checkpoint as ck
from zerodl.callbacks import LambdaCallback
from zerodl.datasets import load_digits
from zerodl.trainer import EarlyStopping, Trainer


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _extend_net():
    # Batch norm (running statistics) and Dropout (its own generator): every kind of state.
    return zerodl.MultiLayerNetExtend(64, [16, 16], 10, use_batchnorm=True, use_dropout=True,
                                      dropout_ration=0.2, seed=1)


def _trainer(digits, net=None, **kw):
    (xtr, ttr), (xte, tte) = digits
    kw.setdefault("optimizer", "adam")
    kw.setdefault("optimizer_param", {"lr": 1e-3})
    return Trainer(net if net is not None else _extend_net(), xtr, ttr, xte, tte, epochs=2,
                   mini_batch_size=50, verbose=False, seed=3, **kw)


def _assert_same_run(a, b):
    for key, value in a.network.params.items():
        np.testing.assert_array_equal(b.network.params[key], value, err_msg=key)
    for key, value in a.network.buffers().items():
        np.testing.assert_array_equal(b.network.buffers()[key], value, err_msg=key)
    sa, sb = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert sa["iter"] == sb["iter"]
    for name, table in sa["state"].items():
        for key, value in table.items():
            np.testing.assert_array_equal(sb["state"][name][key], value, err_msg=f"{name}/{key}")
    assert a.train_loss_list == b.train_loss_list
    assert a.train_acc_list == b.train_acc_list and a.test_acc_list == b.test_acc_list
    assert (a.current_iter, a.current_epoch) == (b.current_iter, b.current_epoch)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


@pytest.mark.parametrize("optimizer", ["adam", "momentum"])
def test_resume_mid_epoch_is_bit_identical(backend, digits, tmp_path, optimizer):
    reference = _trainer(digits, optimizer=optimizer).train()
    path = tmp_path / "run.ckpt"
    first = _trainer(digits, optimizer=optimizer)
    for _ in range(17):  # stop mid-epoch (27 iterations per epoch), between two steps
        first.train_step()
    ck.save_checkpoint(first, path)
    resumed = _trainer(digits, optimizer=optimizer)
    assert resumed.resume(path) is True
    assert resumed.current_iter == 17 and len(resumed.train_loss_list) == 17
    resumed.train()
    _assert_same_run(reference, resumed)
    assert resumed.final_test_acc == reference.final_test_acc


def test_trainer_writes_periodic_and_final_checkpoints(backend, digits, tmp_path):
    path = tmp_path / "run.ckpt"
    seen = []

    def spy(trainer, epoch, logs):
        seen.append(ck.read_checkpoint(path)[0]["trainer"]["current_iter"] if path.exists() else None)

    stopped = _trainer(digits, checkpoint_path=path, checkpoint_every=5,
                       callbacks=[spy, lambda tr, epoch, logs: epoch == 2]).train()
    # Epoch 2 ends at iteration 27 (after 28 steps): the checkpoint at 25 was the latest one then.
    assert seen == [None, 25]
    meta, arrays = ck.read_checkpoint(path)
    assert meta["trainer"]["current_iter"] == stopped.current_iter == 28  # final one, at the stop
    assert {"param/W1", "buffer/running_mean1", "optimizer/m/W1", "optimizer/v/gamma1"} <= set(arrays)
    assert set(meta["rng"]["layers"]) == {"Dropout1", "Dropout2"}
    resumed = _trainer(digits, checkpoint_path=path)
    resumed.resume()
    resumed.train()
    _assert_same_run(_trainer(digits).train(), resumed)


def test_checkpoint_is_plain_npz_without_pickle(digits, tmp_path):
    trainer = _trainer(digits)
    trainer.train_step()
    path = ck.save_checkpoint(trainer, tmp_path / "c.npz")
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data[ck.META_KEY][()]))
        assert all(data[k].dtype.kind in "fU" for k in data.files)
    assert meta["format"] == ck.FORMAT_NAME and meta["optimizer"]["class"] == "Adam"
    assert meta["trainer"]["train_loss_list"] == trainer.train_loss_list


def test_failed_save_leaves_previous_checkpoint(digits, tmp_path, monkeypatch):
    trainer = _trainer(digits)
    trainer.train_step()
    path = ck.save_checkpoint(trainer, tmp_path / "c.npz")
    good = path.read_bytes()
    trainer.train_step()

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(trainer, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temporary file left


@pytest.mark.parametrize("change, fragments", [
    ({"mini_batch_size": 40}, ["batches of 50", "batches of 40"]),
    ({"optimizer": "sgd"}, ["Adam state", "SGD"]),
    ({"net": "two-layer"}, ["MultiLayerNetExtend", "TwoLayerNet"]),
    ({"record_loss": "before_update"}, ["record_loss", "before_update"]),
])
def test_checkpoint_of_another_run_is_refused_and_changes_nothing(digits, tmp_path, change, fragments):
    path = tmp_path / "c.npz"
    source = _trainer(digits)
    source.train_step()
    ck.save_checkpoint(source, path)
    change = dict(change)
    net = zerodl.TwoLayerNet(64, 16, 10, seed=0) if change.pop("net", None) else _extend_net()
    (xtr, ttr), (xte, tte) = digits
    kw = {"optimizer": "adam", "optimizer_param": {"lr": 1e-3}, "mini_batch_size": 50, **change}
    if kw["optimizer"] == "sgd":
        kw["optimizer_param"] = None
    target = Trainer(net, xtr, ttr, xte, tte, epochs=2, verbose=False, seed=3, **kw)
    before = {k: v.copy() for k, v in net.params.items()}
    with pytest.raises(ck.CheckpointError) as info:
        target.resume(path)
    for fragment in fragments:
        assert fragment in str(info.value)
    assert target.current_iter == 0
    for key, value in before.items():
        np.testing.assert_array_equal(net.params[key], value)


def _tampered(path, edit):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop(ck.META_KEY)[()]))
    edit(meta)
    np.savez(path, **{ck.META_KEY: np.array(json.dumps(meta))}, **arrays)
    return path


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["rng"].update(trainer={"bit_generator": "PCG64", "state": "x"}), "cannot restore the generator"),
    (lambda m: m["rng"]["layers"].pop("Dropout1"), "generator states for layers"),
    (lambda m: m["optimizer"]["hyperparams"].update(update=1.0), "optimizer hyper-parameters"),
    (lambda m: m["optimizer"]["hyperparams"].update(lr=float("nan")), "finite number"),
    (lambda m: m["trainer"]["train_loss_list"].pop(), "recorded losses"),
    (lambda m: m["trainer"].update(current_epoch=7), "accuracy lists"),
    (lambda m: m["trainer"].update(train_time="soon"), "train_time"),
    (lambda m: m.update(format_version=99), "format version 99"),
    (lambda m: m.update(trainer=[]), "'trainer' is missing or not an object"),
])
def test_tampered_checkpoint_metadata_is_refused_and_changes_nothing(digits, tmp_path, edit, fragment):
    source = _trainer(digits)
    for _ in range(3):
        source.train_step()
    path = _tampered(ck.save_checkpoint(source, tmp_path / "c.npz"), edit)
    target = _trainer(digits)
    before = ({k: v.copy() for k, v in target.network.params.items()}, target.rng.bit_generator.state,
              [layer.rng.bit_generator.state for layer in target.network.layers.values() if hasattr(layer, "rng")])
    with pytest.raises(ck.CheckpointError, match=fragment):
        target.resume(path)
    assert target.current_iter == 0 and target.optimizer.iter == 0 and target.optimizer.lr == 1e-3
    for key, value in before[0].items():
        np.testing.assert_array_equal(target.network.params[key], value)
    assert target.rng.bit_generator.state == before[1]
    assert [layer.rng.bit_generator.state for layer in target.network.layers.values()
            if hasattr(layer, "rng")] == before[2]


def test_missing_and_damaged_checkpoints(digits, tmp_path):
    trainer = _trainer(digits)
    assert trainer.resume(tmp_path / "absent.npz") is False  # a first run starts afresh
    with pytest.raises(ValueError, match="no checkpoint_path"):
        trainer.resume()
    trainer.train_step()
    path = ck.save_checkpoint(trainer, tmp_path / "c.npz")
    data = path.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ck.CheckpointError, match="cut.npz"):
        _trainer(digits).resume(tmp_path / "cut.npz")
    zerodl.save_network(trainer.network, tmp_path / "model.npz")
    with pytest.raises(ck.CheckpointError, match="not a zerodl checkpoint"):
        _trainer(digits).resume(tmp_path / "model.npz")


def test_checkpoint_arguments_are_validated(digits, tmp_path):
    with pytest.raises(ValueError, match="checkpoint_every was given without checkpoint_path"):
        _trainer(digits, checkpoint_every=5)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer"):
        _trainer(digits, checkpoint_path=tmp_path / "c", checkpoint_every=0)
    with pytest.raises(ValueError, match="is a directory"):
        _trainer(digits, checkpoint_path=tmp_path)


@pytest.mark.skipif(not hasattr(signal, "SIGINT") or os.name == "nt", reason="POSIX signals")
def test_ctrl_c_writes_a_final_checkpoint_that_resumes_bit_identically(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    previous = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        def press_ctrl_c(trainer, epoch, logs):
            if epoch == 2:
                os.kill(os.getpid(), signal.SIGINT)  # honoured at the end of this step

        stopped = _trainer(digits, checkpoint_path=path, checkpoint_every=1000, callbacks=[press_ctrl_c]).train()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stopped.interrupted
    assert ck.read_checkpoint(path)[0]["trainer"]["current_iter"] == stopped.current_iter == 28
    resumed = _trainer(digits, checkpoint_path=path)
    resumed.resume()
    resumed.train()
    _assert_same_run(_trainer(digits).train(), resumed)


def test_interrupt_inside_a_step_keeps_the_last_consistent_checkpoint(digits, tmp_path):
    """A KeyboardInterrupt in the middle of a step (a second Ctrl-C, here raised from the epoch
    evaluation) may leave the step half-recorded: no final checkpoint is written from that state,
    the last periodic one stays, and resuming from it still reproduces the uninterrupted run."""
    path = tmp_path / "run.ckpt"

    def interrupt(trainer, epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    stopped = _trainer(digits, checkpoint_path=path, checkpoint_every=10, callbacks=[interrupt]).train()
    assert stopped.interrupted and stopped.current_iter == 28
    assert ck.read_checkpoint(path)[0]["trainer"]["current_iter"] == 20
    resumed = _trainer(digits, checkpoint_path=path)
    resumed.resume()
    resumed.train()
    _assert_same_run(_trainer(digits).train(), resumed)


def test_cli_resume_continues_to_the_uninterrupted_result(backend, tmp_path, capsys):
    from zerodl import cli

    common = ["train", "--hidden", "16", "--batch-size", "50", "--backend", backend, "--seed", "3"]
    ckpt = str(tmp_path / "run.ckpt")
    assert cli.main([*common, "--epochs", "2", "--checkpoint", ckpt, "--checkpoint-every", "7"]) == 0
    assert cli.main([*common, "--epochs", "3", "--checkpoint", ckpt, "--resume",
                     "--save", str(tmp_path / "resumed.npz")]) == 0
    assert "resumed from" in capsys.readouterr().out
    assert cli.main([*common, "--epochs", "3", "--save", str(tmp_path / "straight.npz")]) == 0
    resumed, straight = zerodl.load_network(tmp_path / "resumed.npz"), zerodl.load_network(tmp_path / "straight.npz")
    for key, value in straight.params.items():
        np.testing.assert_array_equal(resumed.params[key], value, err_msg=key)


# -- SIGKILL mid-run ------------------------------------------------------------------------------
_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import zerodl
    from zerodl.callbacks import Callback
    from zerodl.datasets import load_digits
    from zerodl.trainer import Trainer

    class Report(Callback):
        # One 100-byte line per step: the test synchronises on them, and 1077 of them are more
        # than a pipe holds, so the run cannot finish while the test is not reading.
        def on_step_end(self, trainer, iteration, loss):
            print(f"step {iteration}".ljust(99), flush=True)

    checkpoint, every, out, resume = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "resume"
    (xtr, ttr), (xte, tte) = load_digits()
    net = zerodl.MultiLayerNetExtend(64, [32], 10, use_batchnorm=True, use_dropout=True,
                                     dropout_ration=0.1, seed=0)
    trainer = Trainer(net, xtr, ttr, xte, tte, epochs=40, mini_batch_size=50, optimizer="adam",
                      optimizer_param={"lr": 1e-3}, verbose=False, seed=1,
                      checkpoint_path=None if checkpoint == "-" else checkpoint,
                      checkpoint_every=None if checkpoint == "-" else every, callbacks=[Report()])
    if resume:
        assert trainer.resume(), "no checkpoint to resume from"
        print("resumed at", trainer.current_iter, flush=True)
    trainer.train()
    np.savez(out, **{"param/" + k: v for k, v in net.params.items()},
             **{"buffer/" + k: v for k, v in net.buffers().items()},
             losses=np.array(trainer.train_loss_list), iters=np.array(trainer.current_iter))
""")


def _env(cache_dir):
    env = dict(os.environ)
    env.update(OPENBLAS_NUM_THREADS="1", NUMBA_CACHE_DIR=str(cache_dir), ZERODL_BACKEND="numpy")
    # The script runs from tmp_path: make it import the zerodl under test, not an installed copy.
    root = os.path.dirname(os.path.dirname(zerodl.__file__))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def test_sigkill_mid_run_then_resume_completes_bit_identical(tmp_path, tmp_path_factory):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    env = _env(tmp_path_factory.getbasetemp() / "numba-cache")
    ckpt = tmp_path / "run.ckpt"
    # Checkpoint every step: the process is killed while writing or between two writes.
    victim = subprocess.Popen([sys.executable, str(script), str(ckpt), "1", str(tmp_path / "never.npz"), "run"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    reference = subprocess.Popen([sys.executable, str(script), "-", "1", str(tmp_path / "reference.npz"), "run"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # Synchronised on what the run reports, never on time: step 20 started, so the checkpoints
        # of steps 0..19 were written (one at the end of every step).
        for line in victim.stdout:
            if line.split() == [b"step", b"20"]:
                break
        else:
            pytest.fail(f"the run reported no step 20: {victim.stderr.read().decode()}")
        # While it rewrites the checkpoint at every step, a reader never finds a partial file.
        iterations = [ck.read_checkpoint(ckpt)[0]["trainer"]["current_iter"] for _ in range(30)]
        assert iterations[0] >= 20 and iterations == sorted(iterations), iterations
        assert victim.poll() is None, f"the run ended before it could be killed: {victim.communicate()}"
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "never.npz").exists()
    # Whatever moment the kill hit, the checkpoint is a complete one (stray temporaries may remain).
    meta, _ = ck.read_checkpoint(ckpt)
    killed_at = meta["trainer"]["current_iter"]
    assert 0 < killed_at < 1077  # 40 epochs x 26.94 iterations
    with zipfile.ZipFile(ckpt) as archive:
        assert archive.testzip() is None
    _, err = reference.communicate(timeout=120)
    assert reference.returncode == 0, err.decode()
    resumed = subprocess.run([sys.executable, str(script), str(ckpt), "500", str(tmp_path / "resumed.npz"), "resume"],
                             env=env, capture_output=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert f"resumed at {killed_at}" in resumed.stdout.decode()
    # The resumed run's writes removed whatever temporary file the kill left behind.
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with np.load(tmp_path / "reference.npz") as a, np.load(tmp_path / "resumed.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(b[key], a[key], err_msg=key)


# -- a checkpoint belongs to its run ---------------------------------------------------------------
def test_an_existing_checkpoint_is_not_replaced_unless_asked(digits, tmp_path):
    path = tmp_path / "run.ckpt"
    first = _trainer(digits, checkpoint_path=path)
    first.train_step()
    ck.save_checkpoint(first, path)
    good = path.read_bytes()
    other = _trainer(digits, checkpoint_path=path)
    with pytest.raises(ck.CheckpointError, match="already exists and is not this run's checkpoint"):
        other.train()
    assert other.current_iter == 0 and path.read_bytes() == good  # refused before the first step
    restarted = Trainer(*_data(digits), epochs=1, mini_batch_size=50, verbose=False, seed=3, optimizer="adam",
                        optimizer_param={"lr": 1e-3}, checkpoint_path=path, overwrite_checkpoint=True).train()
    assert ck.read_checkpoint(path)[0]["trainer"]["current_iter"] == restarted.current_iter == 26
    resumed = _trainer(digits, checkpoint_path=path)
    assert resumed.resume() and resumed.train().current_iter == resumed.max_iter  # its own file now


def _data(digits):
    (xtr, ttr), (xte, tte) = digits
    return _extend_net(), xtr, ttr, xte, tte


def test_resume_refuses_what_it_cannot_honour(digits, tmp_path):
    path = tmp_path / "c.npz"
    source = _trainer(digits, run_config={"dataset": "digits", "seed": 3})
    source.train_step()
    ck.save_checkpoint(source, path)
    (xtr, ttr), (xte, tte) = digits
    cases = [
        (lambda: _trainer(digits, net=zerodl.MultiLayerNetExtend(64, [16, 16], 10, activation="sigmoid",
                                                                 use_batchnorm=True, use_dropout=True,
                                                                 dropout_ration=0.2, seed=1)),
         "activation: 'relu' in the checkpoint, 'sigmoid' here"),
        (lambda: _trainer(digits, net=zerodl.MultiLayerNetExtend(64, [16, 16], 10, weight_decay_lambda=0.1,
                                                                 use_batchnorm=True, use_dropout=True,
                                                                 dropout_ration=0.2, seed=1)),
         "weight_decay_lambda"),
        (lambda: Trainer(_extend_net(), xtr[::-1].copy(), ttr[::-1].copy(), xte, tte, epochs=2, mini_batch_size=50,
                         verbose=False, seed=3, optimizer="adam", optimizer_param={"lr": 1e-3}),
         "other training or test data"),
        (lambda: Trainer(_extend_net(), xtr, ttr, xte, tte, epochs=2, mini_batch_size=50, verbose=False, seed=4,
                         optimizer="adam", optimizer_param={"lr": 1e-3}), "seed 3; this Trainer has seed 4"),
        (lambda: Trainer(_extend_net(), xtr, ttr, xte, tte, epochs=2, mini_batch_size=50, verbose=False,
                         optimizer="adam", optimizer_param={"lr": 1e-3}), "np.random's global state"),
        (lambda: _trainer(digits, optimizer_param={"lr": 5e-3}), "lr 0.001 in the checkpoint, 0.005 here"),
        (lambda: _trainer(digits, callbacks=[EarlyStopping()]), "stateful callbacks ['EarlyStopping']"),
        (lambda: _trainer(digits, run_config={"dataset": "digits", "seed": 4}),
         "other settings (seed: 3 in the checkpoint, 4 here)"),
    ]
    for make, fragment in cases:
        target = make()
        before = {k: v.copy() for k, v in target.network.params.items()}
        with pytest.raises(ck.CheckpointError, match=re.escape(fragment)):
            target.resume(path)
        assert target.current_iter == 0, fragment
        for key, value in before.items():
            np.testing.assert_array_equal(target.network.params[key], value)


def test_resume_honours_a_new_learning_rate_only_when_asked(digits, tmp_path):
    path = tmp_path / "c.npz"
    source = _trainer(digits)
    source.train_step()
    ck.save_checkpoint(source, path)
    keep = _trainer(digits, optimizer_param={"lr": 5e-3})
    assert keep.resume(path, hyperparams="trainer") and keep.optimizer.lr == 5e-3 and keep.current_iter == 1
    take = _trainer(digits, optimizer_param={"lr": 5e-3})
    assert take.resume(path, hyperparams="checkpoint") and take.optimizer.lr == 1e-3


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["optimizer"]["hyperparams"].update(lr=-0.001), "lr must be a positive finite number"),
    (lambda m: m["optimizer"]["hyperparams"].update(beta1=1.5), "beta1"),
    (lambda m: m["rng"]["trainer"]["state"].update(state={"__ndarray__": [1], "dtype": "<U99999999"}),
     "integer dtype"),
    (lambda m: m["callbacks"][0]["state"].update(wait=99), "wait must be an integer in 0..2"),
    (lambda m: m["callbacks"][0]["state"].update(best=float("inf")), "best must be a finite number"),
    (lambda m: m["callbacks"][0]["state"].update(best_epoch=50), "best_epoch must be null or an epoch in 1..1"),
    (lambda m: m.update(callbacks=[]), "holds state for callbacks []"),
    (lambda m: m["trainer"].update(seed=-3), "trainer.seed"),
    (lambda m: m["rng"].update(batches="dice"), "rng.batches"),
    (lambda m: m["trainer"]["history"].append({"loss": "low"}), "holds non-numbers for ['loss']"),
])
def test_every_restored_value_is_validated(digits, tmp_path, edit, fragment):
    """A tampered checkpoint (negative learning rate, impossible callback state, ...) is refused as
    the constructors would refuse those values, and nothing is changed."""
    source = _trainer(digits, callbacks=[EarlyStopping(patience=2, restore_best=True)])
    for _ in range(2):
        source.train_step()
    path = _tampered(ck.save_checkpoint(source, tmp_path / "c.npz"), edit)
    stopper = EarlyStopping(patience=2, restore_best=True)
    target = _trainer(digits, callbacks=[stopper])
    with pytest.raises(ck.CheckpointError, match=re.escape(fragment)):
        target.resume(path, hyperparams="checkpoint")
    assert target.current_iter == 0 and target.optimizer.lr == 1e-3 and target.optimizer.iter == 0
    assert stopper.best is None and stopper.wait == 0


def test_early_stopping_state_is_checkpointed_so_a_resumed_run_is_bit_identical(digits, tmp_path):
    def run(path=None, steps=None):
        stopper = EarlyStopping(monitor="test_acc", patience=2, min_delta=0.002, restore_best=True)
        trainer = Trainer(_extend_net(), *digits[0], *digits[1], epochs=30, mini_batch_size=50, verbose=False,
                          seed=3, optimizer="adam", optimizer_param={"lr": 3e-3}, callbacks=[stopper],
                          checkpoint_path=path, checkpoint_every=steps)
        return trainer, stopper

    reference, ref_stopper = run()
    reference.train()
    assert ref_stopper.stopped_epoch is not None and reference.current_iter < reference.max_iter
    path = tmp_path / "run.ckpt"
    # Interrupt mid-run (after a few epochs, with EarlyStopping already waiting), then resume.
    first, first_stopper = run(path, 1)

    def interrupt(trainer, epoch, logs):
        if epoch == ref_stopper.stopped_epoch - 1:
            raise KeyboardInterrupt  # raised inside the step: the last periodic checkpoint stays

    first.callbacks.append(LambdaCallback(interrupt))
    first.train()
    assert first.interrupted and first_stopper.wait >= 1
    resumed, resumed_stopper = run(path)
    assert resumed.resume()
    # The stopper continues from the checkpoint's epoch (written before the torn step), not afresh.
    assert resumed_stopper.best is not None and resumed_stopper.best_epoch is not None
    assert resumed.current_epoch == ref_stopper.stopped_epoch - 2
    resumed.train()
    assert resumed_stopper.stopped_epoch == ref_stopper.stopped_epoch
    assert resumed_stopper.best_epoch == ref_stopper.best_epoch
    _assert_same_run(reference, resumed)
    assert resumed.final_test_acc == reference.final_test_acc
    # A stopped run stays stopped: resuming its final checkpoint runs no more steps.
    again, _ = run(path)
    assert again.resume() and again.train().current_iter == reference.current_iter
    _assert_same_run(reference, again)


def test_global_state_batches_resume_bit_identically(digits, tmp_path):
    def make(path=None):
        return Trainer(_extend_net(), *digits[0], *digits[1], epochs=2, mini_batch_size=50, verbose=False,
                       optimizer="adam", optimizer_param={"lr": 1e-3}, checkpoint_path=path)

    np.random.seed(11)
    reference = make().train()
    np.random.seed(11)
    first = make(tmp_path / "g.ckpt")
    for _ in range(13):
        first.train_step()
    ck.save_checkpoint(first, tmp_path / "g.ckpt")
    np.random.seed(999)  # whatever the program did since: the checkpoint holds np.random's state
    resumed = make(tmp_path / "g.ckpt")
    assert resumed.resume()
    resumed.train()
    for key, value in reference.network.params.items():
        np.testing.assert_array_equal(resumed.network.params[key], value, err_msg=key)
    assert resumed.train_loss_list == reference.train_loss_list


def test_the_next_write_removes_temporaries_of_killed_writes(digits, tmp_path):
    from zerodl._fileio import atomic_write

    path = tmp_path / "run.ckpt"
    stale = tmp_path / ".run.ckpt.k1ll3d_x.tmp"  # what a SIGKILL during a write leaves
    stale.write_bytes(b"\0" * 4096)
    unrelated = tmp_path / ".run.ckpt.backup"
    unrelated.write_bytes(b"keep")
    trainer = _trainer(digits)
    trainer.train_step()
    with atomic_write(tmp_path / "run.ckpt", "wb") as live:  # a write in progress is left alone
        live.write(b"x")
        ck.save_checkpoint(trainer, path)
        live_tmp = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert len(live_tmp) == 1 and live_tmp[0] != stale
        ck.save_checkpoint(trainer, path)  # another write while that one is still open
        assert live_tmp[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, unrelated.name])


def test_format_1_checkpoints_still_resume(digits, tmp_path):
    """Files of the previous format (no callback state, batch source, seed or fingerprint) load."""
    source = _trainer(digits)
    for _ in range(3):
        source.train_step()

    def as_version_1(meta):
        meta["format_version"] = 1
        for key in ("callbacks", "run"):
            meta.pop(key)
        meta["rng"].pop("batches")
        meta["trainer"].pop("seed")
        meta.pop("data", None)

    path = _tampered(ck.save_checkpoint(source, tmp_path / "v1.npz"), as_version_1)
    resumed = _trainer(digits)
    assert resumed.resume(path) and resumed.current_iter == 3
    with pytest.raises(ck.CheckpointError, match="format 1"):
        _trainer(digits, callbacks=[EarlyStopping()]).resume(path)


# -- zerodl train: --checkpoint, --resume, --restart ------------------------------------------------
def test_cli_refuses_to_replace_another_runs_checkpoint_before_any_work(tmp_path, capsys, monkeypatch):
    from zerodl import cli

    common = ["train", "--hidden", "8", "--epochs", "1", "--batch-size", "100", "--backend", "numpy"]
    ckpt = tmp_path / "run.ckpt"
    assert cli.main([*common, "--checkpoint", str(ckpt)]) == 0
    good = ckpt.read_bytes()
    capsys.readouterr()

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the checkpoint options were checked")

    with monkeypatch.context() as m:
        m.setattr(cli, "_load_data", no_data)
        assert cli.main([*common, "--checkpoint", str(ckpt)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "already exists" in err[0] and "--resume" in err[0] and "--restart" in err[0]
        assert cli.main([*common, "--checkpoint", str(ckpt), "--resume", "--restart"]) == 1
        assert "give one of them" in capsys.readouterr().err
        assert cli.main([*common, "--checkpoint", str(ckpt), "--resume", "--activation", "sigmoid"]) == 1
        err = capsys.readouterr().err
        assert "--activation 'relu'" in err and "--activation 'sigmoid'" in err and "Traceback" not in err
        assert cli.main([*common, "--checkpoint", str(ckpt), "--resume", "--seed", "5"]) == 1
        assert "--seed 0" in capsys.readouterr().err
        assert cli.main([*common, "--checkpoint", str(ckpt), "--resume", "--hidden", "9"]) == 1
        assert "--hidden [8]" in capsys.readouterr().err
    assert ckpt.read_bytes() == good
    assert cli.main([*common, "--epochs", "2", "--checkpoint", str(ckpt), "--restart", "--seed", "4"]) == 0
    assert ck.read_checkpoint(ckpt)[0]["run"]["seed"] == 4


def test_cli_resume_uses_and_prints_the_runs_seed_and_lr_or_the_new_lr(tmp_path, capsys):
    from zerodl import cli

    common = ["train", "--hidden", "8", "--batch-size", "100", "--backend", "numpy"]
    ckpt = tmp_path / "run.ckpt"
    assert cli.main([*common, "--epochs", "1", "--seed", "7", "--lr", "0.002", "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    assert cli.main([*common, "--epochs", "2", "--checkpoint", str(ckpt), "--resume",
                     "--save", str(tmp_path / "m.npz")]) == 0
    out = capsys.readouterr().out
    assert "training: adam lr=0.002, 2 epochs, batch 100, seed 7" in out and "resumed from" in out
    meta = zerodl.load_network(tmp_path / "m.npz").metadata
    assert meta["seed"] == 7 and meta["lr"] == 0.002
    assert ck.read_checkpoint(ckpt)[0]["optimizer"]["hyperparams"]["lr"] == 0.002
    assert cli.main([*common, "--epochs", "3", "--checkpoint", str(ckpt), "--resume", "--lr", "0.0005"]) == 0
    out = capsys.readouterr().out
    assert "training: adam lr=0.0005" in out and "replaces the checkpoint's 0.002" in out
    assert ck.read_checkpoint(ckpt)[0]["optimizer"]["hyperparams"]["lr"] == 0.0005


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name == "nt", reason="POSIX signals")
def test_cli_second_signal_during_the_final_writes_leaves_complete_files(tmp_path, capsys, monkeypatch):
    """SIGTERM mid-training, then another SIGTERM while the model is being written: the writes
    finish, no temporary file is left, exit 143."""
    from zerodl import cli
    from zerodl import io as zio
    from zerodl.loop import TrainingLoop

    real_step, real_save = TrainingLoop.train_step, zio.save_network

    def step(self):
        real_step(self)
        if self.current_iter == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    def save(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives during the model write
        return real_save(*args, **kwargs)

    monkeypatch.setattr(TrainingLoop, "train_step", step)
    monkeypatch.setattr(zio, "save_network", save)
    model, ckpt = tmp_path / "m.npz", tmp_path / "run.ckpt"
    before = signal.getsignal(signal.SIGTERM)
    code = cli.main(["train", "--hidden", "8", "--epochs", "3", "--backend", "numpy", "--save", str(model),
                     "--checkpoint", str(ckpt)])
    assert code == 143 and signal.getsignal(signal.SIGTERM) is before
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("interrupted after 5 of ") and "(SIGTERM)" in err[-1]
    assert zerodl.load_network(model).metadata["iterations"] == 5
    assert ck.read_checkpoint(ckpt)[0]["trainer"]["current_iter"] == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz", "run.ckpt"]

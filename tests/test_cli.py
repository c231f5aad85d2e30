"""The ``zerodl`` command, run for real in subprocesses (``python -m zerodl ...``).

Subprocesses share one ``NUMBA_CACHE_DIR`` (a session fixture), so the kernels are compiled once per
test session rather than once per command. Plug-in discovery and a few error paths are tested in
process, where they can be monkeypatched.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import types

import numpy as np
import pytest

import zerodl
from zerodl import cli

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ACCURACY = re.compile(r"^test accuracy: (\d\.\d{4}) \((\d+)/(\d+)\)$", re.MULTILINE)


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory):
    """Environment of every subprocess: one shared numba cache, unbuffered output, no user data dir.

    An existing ``NUMBA_CACHE_DIR`` (CI sets one for the whole run) is shared, else a session
    directory: either way the subprocesses compile each kernel once, not once per command.
    """
    env = dict(os.environ)
    if not env.get("NUMBA_CACHE_DIR"):
        env["NUMBA_CACHE_DIR"] = str(tmp_path_factory.mktemp("numba_cache"))
    env["PYTHONUNBUFFERED"] = "1"
    env["ZERODL_DATA_DIR"] = str(tmp_path_factory.mktemp("empty_data_dir"))
    env.pop("ZERODL_BACKEND", None)
    return env


def run(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "zerodl", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def _accuracy(stdout):
    found = ACCURACY.findall(stdout)
    assert len(found) == 1, stdout
    return found[0]


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 100 and height > 100


@pytest.fixture(scope="module")
def trained(cli_env, tmp_path_factory):
    """``zerodl train`` on the embedded digits at a small size, saving the model and the curves."""
    out = tmp_path_factory.mktemp("train")
    result = run(cli_env, "train", "--epochs", 4, "--hidden", 32, "--save", out / "model.npz",
                 "--plot", out / "curves.png", "--seed", 1, "--threads", 1)
    assert result.returncode == 0, result.stderr
    return out, result


# -- train / evaluate -------------------------------------------------------------------------
def test_train_reports_split_table_accuracy_throughput_and_saves(trained):
    out, result = trained
    stdout = result.stdout
    assert "dataset: scikit-learn's 8x8 digits" in stdout
    assert re.search(r"^split: stratified \(1,347 train / 450 test\)$", stdout, re.MULTILINE)
    assert re.search(r"^\s+epoch\s+iter\s+loss\s+train acc\s+test acc\s+time$", stdout, re.MULTILINE)
    rows = re.findall(r"^\s+(\d+)/4\s+\d+\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+[\d.]+s$", stdout, re.MULTILINE)
    assert [int(r[0]) for r in rows] == [1, 2, 3, 4]
    acc, correct, total = _accuracy(stdout)
    assert total == "450" and float(acc) > 0.8
    assert re.search(r"^throughput: [\d,]+ samples/s", stdout, re.MULTILINE)
    assert "step" in result.stderr and "samples/s=" in result.stderr  # the tqdm bar
    assert f"saved model: {out / 'model.npz'}" in stdout
    _assert_png(out / "curves.png")
    net = zerodl.load_network(out / "model.npz")
    assert type(net).__name__ == "MultiLayerNet" and net.config["hidden_size_list"] == [32]
    assert net.metadata["dataset"] == "digits" and net.metadata["test_accuracy"] == float(correct) / 450


def test_evaluate_gives_the_identical_accuracy_in_both_backends(trained, cli_env):
    out, result = trained
    trained_acc = _accuracy(result.stdout)
    for backend in ("numpy", "numba"):
        ev = run(cli_env, "evaluate", out / "model.npz", "--backend", backend,
                 "--plot", out / f"cm_{backend}.png", *(["--threads", 2] if backend == "numba" else []))
        assert ev.returncode == 0, ev.stderr
        assert _accuracy(ev.stdout) == trained_acc, backend
        assert f"backend {backend}" in ev.stdout
        assert "per-class accuracy:" in ev.stdout
        matrix = re.findall(r"^\s+(\d)((?:\s+\d+){10})$", ev.stdout, re.MULTILINE)
        assert [int(r[0]) for r in matrix] == list(range(10))
        counts = np.array([[int(v) for v in r[1].split()] for r in matrix])
        assert counts.sum() == 450 and np.trace(counts) == int(trained_acc[1])
        _assert_png(out / f"cm_{backend}.png")


def test_train_on_real_mnist_says_which_split(cli_env, mnist_dir, tmp_path):
    result = run(cli_env, "train", "--dataset", "mnist", "--data-dir", mnist_dir, "--no-download",
                 "--epochs", 1, "--hidden", 16, "--save", tmp_path / "mnist.npz")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^split: t10k \(8,000 train / 2,000 test\)$", result.stdout, re.MULTILINE)
    assert "dataset: MNIST t10k split" in result.stdout
    acc, _, total = _accuracy(result.stdout)
    assert total == "2000" and float(acc) > 0.5
    meta = zerodl.load_network(tmp_path / "mnist.npz").metadata
    assert meta["dataset"] == "mnist" and meta["dataset_split"] == "t10k"
    assert meta["data_dir"] == str(mnist_dir.resolve())


def test_gradcheck_passes_in_both_backends(cli_env):
    result = run(cli_env, "gradcheck", "--hidden", 10)
    assert result.returncode == 0, result.stdout + result.stderr
    for backend in zerodl.BACKENDS:
        assert f"backend {backend}:" in result.stdout
    for key in ("W1", "b1", "W2", "b2"):
        assert len(re.findall(rf"^\s+{key}\s+\S+\s+\S+\s+\S+\s+ok$", result.stdout, re.MULTILINE)) == 2
    assert "gradient check passed" in result.stdout


# -- errors -----------------------------------------------------------------------------------
def test_bad_arguments_exit_2_with_a_one_line_error(cli_env):
    result = run(cli_env, "train", "--epochs", "0")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("usage: zerodl train")
    errors = [line for line in lines if "error:" in line]
    assert errors == [lines[-1]]
    assert lines[-1] == "zerodl train: error: argument --epochs: expected a positive integer, got '0'"
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_missing_dataset_exits_1_with_the_loaders_message(cli_env, tmp_path):
    result = run(cli_env, "train", "--dataset", "mnist", "--data-dir", tmp_path, "--no-download")
    assert result.returncode == 1
    assert result.stderr.startswith("zerodl train: error: MNIST file(s) not found in")
    assert str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr


def test_help(cli_env):
    result = run(cli_env, "--help")
    assert result.returncode == 0 and result.stderr == ""
    for command in ("train", "evaluate", "gradcheck"):
        assert command in result.stdout


@pytest.mark.parametrize("command", ["train", "evaluate", "gradcheck"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: zerodl {command}")
    if command == "train":
        for option in ("--dataset", "--data-dir", "--net", "--hidden", "--activation", "--optimizer",
                       "--lr", "--epochs", "--batch-size", "--weight-decay", "--backend", "--dtype",
                       "--seed", "--save", "--plot", "--threads"):
            assert option in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"zerodl {zerodl.__version__}")


def _stop_training_with(cli_env, tmp_path, signum):
    """Start a training that cannot finish on its own before the test has read its output, wait
    until it reports its first epoch (so it is training, its stop handlers installed), send
    ``signum``, and return what it did. No timing is involved: 100000 epochs print 100000 table
    rows, far more than a pipe holds, so the process blocks until the test reads them, which it
    does only after signalling."""
    model, ckpt = tmp_path / "partial.npz", tmp_path / "run.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "zerodl", "train", "--epochs", "100000", "--hidden", "16", "--threads", "1",
         "--save", str(model), "--checkpoint", str(ckpt), "--checkpoint-every", "1000000"],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in proc.stdout:  # the first table row: training is under way
            if re.match(r"^\s+1/100000\s", line):
                break
        else:
            pytest.fail(f"no epoch row; stderr: {proc.stderr.read()}")
        assert proc.poll() is None
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc, stdout, stderr, model, ckpt


def _assert_stopped_cleanly(proc, stdout, stderr, model, ckpt, signum):
    from zerodl.checkpoint import read_checkpoint

    assert proc.returncode == 128 + signum, stderr
    assert "Traceback" not in stderr
    name = signal.Signals(signum).name
    last = stderr.strip().splitlines()[-1]  # one line says what happened and what was written
    assert last.startswith("interrupted after ") and f"({name})" in last, last
    assert f"checkpoint {ckpt}" in last and f"model {model}" in last and "(trained so far)" in last
    assert "(trained so far)" in stdout
    net = zerodl.load_network(model)
    iterations = net.metadata["iterations"]
    assert net.metadata["interrupted"] is True and iterations >= 1
    # The final checkpoint is the state the model was saved in (not the last periodic one: there
    # was none, --checkpoint-every is larger than the run).
    meta, arrays = read_checkpoint(ckpt)
    assert meta["trainer"]["current_iter"] == iterations
    for key, value in net.params.items():
        np.testing.assert_array_equal(arrays["param/" + key], value, err_msg=key)
    assert sorted(p.name for p in ckpt.parent.iterdir()) == sorted([ckpt.name, model.name])  # no temporaries


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_ctrl_c_saves_the_model_so_far_and_exits_130(cli_env, tmp_path):
    proc, stdout, stderr, model, ckpt = _stop_training_with(cli_env, tmp_path, signal.SIGINT)
    assert proc.returncode == 130, stderr
    assert "interrupted after" in stderr and "Traceback" not in stderr
    assert "(trained so far)" in stdout
    net = zerodl.load_network(model)
    assert net.metadata["interrupted"] is True and net.metadata["iterations"] >= 1
    _assert_stopped_cleanly(proc, stdout, stderr, model, ckpt, signal.SIGINT)


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name == "nt", reason="POSIX signals")
def test_sigterm_saves_the_checkpoint_and_model_and_exits_143(cli_env, tmp_path):
    proc, stdout, stderr, model, ckpt = _stop_training_with(cli_env, tmp_path, signal.SIGTERM)
    assert proc.returncode == 143
    _assert_stopped_cleanly(proc, stdout, stderr, model, ckpt, signal.SIGTERM)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP") or os.name == "nt", reason="POSIX signals")
def test_sighup_saves_the_checkpoint_and_model_and_exits_129(cli_env, tmp_path):
    proc, stdout, stderr, model, ckpt = _stop_training_with(cli_env, tmp_path, signal.SIGHUP)
    assert proc.returncode == 129
    _assert_stopped_cleanly(proc, stdout, stderr, model, ckpt, signal.SIGHUP)


# -- in process: plug-ins, the builder table, user errors ----------------------------------------
def test_net_builders_table():
    for name, spec in cli.NET_BUILDERS.items():
        assert spec.input in ("flat", "image"), name
        assert callable(spec.build) and spec.help
    args = cli.build_parser().parse_args(["train", "--hidden", "7", "5", "--activation", "sigmoid",
                                          "--dtype", "float32", "--weight-decay", "0.1"])
    args.net_rng = np.random.default_rng(0)
    net = cli.NET_BUILDERS["mlp"].build(args, (64,), 10)
    assert net.config["hidden_size_list"] == [7, 5] and net.config["activation"] == "sigmoid"
    assert net.dtype == np.float32 and net.weight_decay_lambda == 0.1
    with pytest.raises(cli.CLIError, match="one hidden layer"):
        cli.NET_BUILDERS["two-layer"].build(args, (64,), 10)


def test_user_error_is_one_message_and_exit_1(capsys):
    code = cli.main(["train", "--net", "two-layer", "--hidden", "10", "10", "--epochs", "1"])
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("zerodl train: error: --net two-layer has one hidden layer")


def test_evaluate_missing_model_is_a_clear_error(capsys, tmp_path):
    assert cli.main(["evaluate", str(tmp_path / "nope.npz")]) == 1
    assert "model file not found" in capsys.readouterr().err


def _plugin_module(name, func_result):
    module = types.ModuleType(name)

    def add_subparsers(subparsers):
        p = subparsers.add_parser("hello", help="a plug-in command")
        p.add_argument("--code", type=int, default=func_result)
        p.set_defaults(func=lambda args: args.code)

    module.add_subparsers = add_subparsers
    return module


def test_plugins_are_added_dispatched_or_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "zerodl_fake_plugin", _plugin_module("zerodl_fake_plugin", 7))
    monkeypatch.setattr(cli, "PLUGINS", ("zerodl.no_such_plugin.cli", "zerodl_fake_plugin"))
    assert cli.main(["hello"]) == 7
    assert cli.main(["hello", "--code", "0"]) == 0


def test_a_plugin_with_a_broken_import_is_not_hidden(monkeypatch, tmp_path):
    (tmp_path / "zerodl_broken_plugin.py").write_text("import zerodl_dependency_that_is_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(cli, "PLUGINS", ("zerodl_broken_plugin",))
    with pytest.raises(ModuleNotFoundError, match="zerodl_dependency_that_is_missing"):
        cli.build_parser()


def test_default_plugins_that_exist_load(monkeypatch):
    """The real PLUGINS tuple: existing modules add their commands, absent ones are skipped."""
    import argparse

    parser = argparse.ArgumentParser()
    added = cli._add_plugins(parser.add_subparsers())
    for name in cli.PLUGINS:
        try:
            __import__(name)
        except ModuleNotFoundError:
            assert name not in added
        else:
            assert name in added


# -- plots (in process) -------------------------------------------------------------------------
def test_plots_write_valid_pngs(tmp_path):
    from zerodl.plots import plot_confusion_matrix, plot_learning_curves, smooth_curve

    losses = list(np.linspace(2.3, 0.1, 50))
    curves = plot_learning_curves(losses, [0.2, 0.8, 0.9], [0.2, 0.7, 0.85], tmp_path / "c.png",
                                  iter_per_epoch=20, epoch_iterations=[1, 21, 41], title="t")
    _assert_png(curves)
    cm = plot_confusion_matrix([[5, 1], [0, 4]], tmp_path / "cm.png", class_names=["cat", "dog"])
    _assert_png(cm)
    # The book's smooth_curve now (11-point Kaiser window, no window argument; issue 13): a curve
    # shorter than the window comes back unsmoothed, a long constant curve stays constant. The old
    # box-window expectation smooth_curve([1, 2, 3], 3) == [1.5, 2, 2.5] no longer applies.
    np.testing.assert_allclose(smooth_curve([1.0, 2.0, 3.0]), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(smooth_curve(np.full(30, 1.5)), 1.5, rtol=1e-15)
    with pytest.raises(ValueError, match="square"):
        plot_confusion_matrix([[1, 2, 3]], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="3 train accuracies but 2 test"):
        plot_learning_curves(losses, [0.1, 0.2, 0.3], [0.1, 0.2], tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_a_failed_plot_leaves_the_old_png(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from zerodl.plots import plot_confusion_matrix

    path = plot_confusion_matrix(np.eye(3, dtype=int), tmp_path / "cm.png")
    good = path.read_bytes()

    def broken_savefig(self, *args, **kwargs):
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        plot_confusion_matrix(np.ones((3, 3), dtype=int), path)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]


def test_zerodl_import_stays_light():
    """The command starts fast: importing zerodl and building the parser pulls in no plotting,
    progress-bar, scikit-learn or dask modules (they are imported inside the commands)."""
    code = ("import sys, zerodl.cli as c; c.build_parser(); "
            "print(','.join(m for m in ('matplotlib', 'tqdm', 'sklearn', 'dask') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""

"""Chapter 6 experiments: smoke tests at tiny size through the CLI (table printed, PNG written), and
the search: same trials serial == process pool == Dask, failures reported with their parameters
while the search goes on."""

import argparse
import os

import numpy as np
import pytest

from zerodl.experiments import cli, search
from zerodl.experiments._common import format_table, smooth_curve, train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cli(argv):
    parser = argparse.ArgumentParser(prog="zerodl")
    cli.add_subparsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


# Tiny versions of each experiment: (cli args, strings the table must contain).
SMOKE = {
    "optimizers": (["--quick"], ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "test acc"]),
    "init": (["--quick"], ["std=0.01", "Xavier", "He", "std act L5"]),
    "batchnorm": (["--quick"], ["train acc (BN)", "train acc (no BN)", "1.0000", "1.000e-04"]),
    "overfit": (["--quick"], ["no regularisation", "weight decay λ=0.1", "dropout 0.2", "gap"]),
    "search": (["--quick", "--executor", "serial", "--trials", "3"], ["best", "val acc", "weight decay"]),
}


@pytest.mark.parametrize("name", list(SMOKE))
def test_experiment_smoke(name, tmp_path, capsys):
    extra, expected = SMOKE[name]
    out = tmp_path / "figs" / f"{name}.png"
    code = _cli(["experiment", name, "--out", str(out), "--no-progress", "--seed", "1", *extra])
    assert code == 0
    printed = capsys.readouterr().out
    for text in expected:
        assert text in printed, f"{text!r} missing from the {name} table:\n{printed}"
    assert f"wrote {out}" in printed
    assert out.read_bytes()[:8] == PNG_MAGIC and out.stat().st_size > 10_000
    written = sorted(p.name for p in out.parent.iterdir())  # no temporary or lock file left behind
    assert written == sorted([out.name] + ([out.with_suffix(".json").name] if name == "search" else []))


def test_numpy_backend_and_module_entry_point(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "bn.png"
    proc = subprocess.run(
        [sys.executable, "-m", "zerodl.experiments", "batchnorm", "--quick", "--backend", "numpy",
         "--out", str(out), "--no-progress"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "train acc (BN)" in proc.stdout and out.read_bytes()[:8] == PNG_MAGIC


def test_progress_lines_go_to_stderr(tmp_path, capsys):
    assert _cli(["experiment", "overfit", "--quick", "--out", str(tmp_path / "o.png")]) == 0
    captured = capsys.readouterr()
    assert "[overfit 4/4" in captured.err and "[overfit" not in captured.out


def test_cli_reports_bad_input_cleanly(tmp_path, capsys):
    code = _cli(["experiment", "init", "--quick", "--dataset", "mnist", "--data-dir", str(tmp_path),
                 "--out", str(tmp_path / "x.png"), "--no-progress"])
    assert code == 2
    assert "zerodl experiment init: error:" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


def test_train_loop_is_seeded_and_records_epochs():
    from zerodl.networks import MultiLayerNet
    from zerodl.optimizer import SGD

    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
    runs = []
    for _ in range(2):
        net = MultiLayerNet(4, [5], 3, seed=0)
        runs.append(train(net, SGD(0.1), x, t, batch_size=10, epochs=3, rng=np.random.default_rng(1),
                          x_test=x[:6], t_test=t[:6]))
    assert runs[0].loss == runs[1].loss and len(runs[0].loss) == 9
    assert runs[0].train_acc == runs[1].train_acc and len(runs[0].train_acc) == 4  # start of 3 epochs + end


def test_helpers():
    assert np.allclose(smooth_curve(np.ones(50)), 1.0) and len(smooth_curve(np.arange(50.0))) == 50
    table = format_table(["a", "b"], [["x", 0.5], ["yy", 1e-6]], title="T")
    assert table.splitlines()[0] == "T" and "1.000e-06" in table


# ----------------------------------------------------------------------------- search
def _tiny_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 6))
    t = (x[:, 0] > 0).astype(np.intp) + (x[:, 1] > 0)
    return search.validation_split(x, t, 0.25, seed=0)


def _tiny_trials():
    trials = search.make_trials(4, seed=3, lr_range=(-3, -0.5))
    # A trial whose parameters make the optimizer refuse to start: it must fail alone.
    trials.append(search.Trial(4, {"lr": -1.0, "weight_decay": 1e-5}, seed=99))
    return trials


def _summary(result):
    return [(t.index, t.status, t.val_acc_list, t.train_acc_list) for t in result.trials]


def test_search_serial_process_and_dask_agree_and_report_failures():
    data, trials = _tiny_data(), _tiny_trials()
    kw = {"epochs": 2, "hidden": (8,), "batch_size": 10, "progress": False}
    serial = search.search(data, trials, executor="serial", **kw)
    process = search.search(data, trials, executor="process", workers=2, **kw)
    dask = search.search(data, trials, executor="dask", workers=2, **kw)
    assert _summary(process) == _summary(serial) == _summary(dask)
    assert serial.best is not None
    assert process.best.index == dask.best.index == serial.best.index
    assert process.best.params == serial.best.params
    for result in (serial, process, dask):
        assert [t.index for t in result.failed] == [4]
        failed = result.failed[0]
        assert failed.status == "failed" and failed.params == {"lr": -1.0, "weight_decay": 1e-5}
        assert "lr must be a positive finite number" in failed.error
        assert "trial 4 FAILED | lr -1.000e+00" in failed.describe()
        assert sum(t.ok for t in result.trials) == 4


def die_on_negative_lr(spec, data):
    """A trial function whose worker process dies (no exception to catch) for lr < 0."""
    if spec["params"]["lr"] < 0:
        os._exit(3)
    return search.train_trial(spec, data)


def test_search_survives_a_worker_process_that_dies():
    data = _tiny_data()
    trials = [search.Trial(0, {"lr": -1.0, "weight_decay": 1e-6}, 1)] + search.make_trials(2, seed=5)[:2]
    trials[1].index, trials[2].index = 1, 2
    result = search.search(data, trials, executor="process", workers=1, epochs=1, hidden=(4,),
                           batch_size=10, trial_fn=die_on_negative_lr, progress=False)
    status = {t.index: t.status for t in result.trials}
    assert status == {0: "crashed", 1: "ok", 2: "ok"}
    assert "worker process died" in result.failed[0].error
    assert result.failed[0].params["lr"] == -1.0
    serial = search.search(data, trials[1:], executor="serial", epochs=1, hidden=(4,), batch_size=10,
                           progress=False)
    assert [t.val_acc_list for t in result.trials[1:]] == [t.val_acc_list for t in serial.trials]


def test_make_trials_is_log_uniform_and_seeded():
    a, b = search.make_trials(50, seed=7), search.make_trials(50, seed=7)
    assert [t.params for t in a] == [t.params for t in b] and [t.seed for t in a] == [t.seed for t in b]
    lrs = np.log10([t.params["lr"] for t in a])
    wds = np.log10([t.params["weight_decay"] for t in a])
    assert lrs.min() >= -6 and lrs.max() <= -2 and wds.min() >= -8 and wds.max() <= -4
    assert search.make_trials(5, seed=8)[0].params != a[0].params


def test_validation_split_is_carved_from_training_data_only():
    x = np.arange(40.0).reshape(20, 2)
    t = np.arange(20)
    d = search.validation_split(x, t, 0.2, seed=0)
    assert len(d["x_val"]) == 4 and len(d["x_train"]) == 16
    assert sorted(np.r_[d["t_val"], d["t_train"]]) == list(range(20))  # a partition of the input
    assert set(d) == {"x_train", "t_train", "x_val", "t_val"}  # no test data anywhere
    with pytest.raises(ValueError, match="validation_rate"):
        search.validation_split(x, t, 1.5, seed=0)


def test_search_argument_errors():
    with pytest.raises(ValueError, match="unknown executor 'threads'"):
        search.search(_tiny_data(), [], executor="threads")
    with pytest.raises(ValueError, match="scheduler address needs executor='dask'"):
        search.search(_tiny_data(), [], executor="process", scheduler="tcp://127.0.0.1:1")


def test_search_on_a_dask_scheduler_address():
    # A cluster the search did not start, reached by its address (what --scheduler does).
    from dask.distributed import LocalCluster

    data, trials = _tiny_data(), _tiny_trials()[:2]
    kw = {"epochs": 1, "hidden": (4,), "batch_size": 10, "progress": False}
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as cluster:
        remote = search.search(data, trials, executor="dask", scheduler=cluster.scheduler_address, **kw)
        assert cluster.scheduler_address.startswith("tcp://")
    serial = search.search(data, trials, executor="serial", **kw)
    assert _summary(remote) == _summary(serial)

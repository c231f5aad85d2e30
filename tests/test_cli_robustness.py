"""The command line under careless and hostile use (issue 14, items 2, 5 and 6).

* Every output path is checked before any work (:func:`zerodl._fileio.check_output_paths`), for
  every subcommand: writable, not a directory or device, a name the file system takes, distinct
  from the inputs and from the other outputs.
* Sizes are checked against the data and the machine's memory before anything is allocated.
* Every failure a user causes is one line on stderr naming the option, variable or file; usage
  errors exit 2 (argparse prints its usage line first), failures at run time exit 1; never a
  traceback. A walk over every subcommand that ``zerodl --help`` lists proves it.

Most cases run in process (``cli.main``) — they fail before any real work, so they are fast; the
environment variable, a real write-size limit and the listed subcommands need real processes.
"""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest

import zerodl
from zerodl import cli
from zerodl._fileio import OutputPathError, check_output_path, check_output_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(zerodl.__file__)))


def _env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("ZERODL_BACKEND", None)
    env.update(extra)
    return env


def _run(*args, env=None, timeout=300, **kwargs):
    return subprocess.run([sys.executable, "-m", "zerodl", *map(str, args)], env=env or _env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, check=False, **kwargs)


def _main(argv, capsys):
    """Run ``zerodl argv`` in process: ``(exit code, stdout, stderr)``."""
    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *fragments, usage=None):
    """The contract: exit != 0; one ``zerodl ...: error: ...`` line, the last on stderr; no traceback.

    Usage errors found by argparse (exit 2) print the usage first; every other failure prints the
    error line alone.
    """
    assert code not in (0, None), err
    assert "Traceback" not in err, err
    lines = err.rstrip("\n").splitlines()
    errors = [line for line in lines if "error:" in line]
    assert errors == [lines[-1]], err
    assert lines[-1].startswith("zerodl"), err
    if usage is None:
        usage = lines[0].startswith("usage:")
    if not usage:
        assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[-1], (fragment, lines[-1])


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command gets as far as loading data or measuring (work started)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the command started working before refusing its options")

    monkeypatch.setattr(cli, "_load_data", refuse)
    import zerodl.bench

    monkeypatch.setattr(zerodl.bench, "run_bench", refuse)


@pytest.fixture
def model(tmp_path):
    return zerodl.save_network(zerodl.MultiLayerNet(64, [8], 10, seed=0), tmp_path / "m.npz",
                               metadata={"dataset": "digits", "input": "flat"})


# -- output paths: the reusable check ---------------------------------------------------------------
def test_check_output_paths_accepts_ordinary_outputs(tmp_path):
    check_output_paths([("--save", tmp_path / "m.npz"), ("--plot", None), ("--x", tmp_path / "new" / "deep" / "f")])
    (tmp_path / "old.npz").write_bytes(b"old")  # an existing file is replaced: fine
    check_output_paths([("--save", tmp_path / "old.npz")], [("MODEL", tmp_path / "other.npz")])
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    check_output_paths([("--save", tmp_path / "dangling")])
    check_output_paths([("--save", tmp_path / "ünï ✓.npz")])


@pytest.mark.parametrize("case", ["directory", "trailing-slash", "under-a-file", "device", "fifo", "empty",
                                  "nul", "name-too-long", "path-too-long", "symlink-loop", "dot"])
def test_check_output_path_refusals(tmp_path, case):
    (tmp_path / "file").write_bytes(b"x")
    path, fragment = {
        "directory": (tmp_path, "is a directory"),
        "trailing-slash": (f"{tmp_path}/new/", "directory name"),
        "under-a-file": (tmp_path / "file" / "m.npz", "is a file"),
        "device": ("/dev/null", "character device"),
        "fifo": (tmp_path / "pipe", "FIFO"),
        "empty": ("", "expected a file name"),
        "nul": (f"{tmp_path}/a\x00b", "NUL"),
        "name-too-long": (tmp_path / ("n" * 300 + ".npz"), "this file system takes"),
        "path-too-long": (str(tmp_path) + "/d" * 2100 + "/m.npz", "longer than this file system takes"),
        "symlink-loop": (tmp_path / "loop" / "m.npz", "symbolic links"),
        "dot": (f"{tmp_path}/..", "directory name"),
    }[case]
    if case == "fifo":
        os.mkfifo(path)
    if case == "symlink-loop":
        (tmp_path / "loop").symlink_to(tmp_path / "loop")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(OutputPathError) as info:
        check_output_path("--save", path)
    message = str(info.value)
    assert message.startswith("--save") and fragment in message and "\n" not in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created


def test_name_that_fits_but_leaves_no_room_for_the_temporary_file(tmp_path):
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(OutputPathError, match="temporary file"):
        check_output_path("--plot", tmp_path / ("p" * (limit - 4)))
    check_output_path("--plot", tmp_path / ("p" * (limit - 15)))


def test_outputs_must_differ_from_inputs_and_each_other(tmp_path, model):
    link = tmp_path / "link.npz"
    link.symlink_to(model)
    hard = tmp_path / "hard.npz"
    os.link(model, hard)
    relative = os.path.relpath(model)
    for out in (model, link, hard, relative, f"{tmp_path}/./sub/../m.npz"):
        with pytest.raises(OutputPathError, match="is the same file as MODEL"):
            check_output_paths([("--plot", out)], [("MODEL", model)])
    with pytest.raises(OutputPathError, match=r"--checkpoint .*: is the same file as --save"):
        check_output_paths([("--save", tmp_path / "x"), ("--checkpoint", tmp_path / "x")])


def test_permission_denied_and_read_only_file_systems(tmp_path, monkeypatch):
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode))
    with pytest.raises(OutputPathError, match=f"permission denied: cannot create files in {tmp_path}"):
        check_output_path("--save", tmp_path / "m.npz")
    monkeypatch.setattr(os, "access", real_access)

    class ReadOnly:
        f_flag, f_bavail, f_frsize = os.ST_RDONLY, 10**6, 4096

    class Full:
        f_flag, f_bavail, f_frsize = 0, 3, 4096

    monkeypatch.setattr(os, "statvfs", lambda p: ReadOnly())
    with pytest.raises(OutputPathError, match="read-only file system"):
        check_output_path("--save", tmp_path / "m.npz")
    monkeypatch.setattr(os, "statvfs", lambda p: Full())
    with pytest.raises(OutputPathError, match=r"is full \(12,288 bytes free\)"):
        check_output_path("--save", tmp_path / "m.npz")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write into any directory")
def test_permission_denied_for_real(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match="permission denied"):
            check_output_path("--save", locked / "m.npz")
    finally:
        locked.chmod(0o700)


# -- output paths: every subcommand, before any work --------------------------------------------------
@pytest.mark.parametrize("argv, fragments", [
    (["train", "--save", "{dir}"], ["--save", "is a directory"]),
    (["train", "--plot", "{file}/curves.png"], ["--plot", "is a file"]),
    (["train", "--checkpoint", "{dir}"], ["--checkpoint", "is a directory"]),
    (["train", "--save", "{dir}/x.npz", "--checkpoint", "{dir}/x.npz"], ["--checkpoint", "same file as --save"]),
    (["train", "--save", "{dir}/a.npz", "--plot", "{dir}/a.npz"], ["--plot", "same file as --save"]),
    (["train", "--save", "{dir}/" + "n" * 300], ["--save", "this file system takes"]),
    (["train", "--net", "simple-conv", "--filters-png", "/dev/null"], ["--filters-png", "character device"]),
    (["train", "--misclassified-png", "{dir}/"], ["--misclassified-png", "directory name"]),
    (["train", "--save", "{dir}/m.pkl"], ["--save", ".npz"]),
    (["evaluate", "{model}", "--plot", "{model}"], ["--plot", "same file as MODEL"]),
    (["evaluate", "{model}", "--misclassified-png", "{dir}/link.npz"], ["--misclassified-png", "same file as MODEL"]),
    (["evaluate", "{model}", "--plot", "{dir}"], ["--plot", "is a directory"]),
    (["bench", "--json", "{dir}"], ["--json", "is a directory"]),
    (["bench", "--json", "{file}/out.json"], ["--json", "is a file"]),
    (["experiment", "optimizers", "--out", "{dir}"], ["--out", "is a directory"]),
    (["experiment", "search", "--out", "/dev/zero"], ["--out", "character device"]),
])
def test_outputs_refused_before_any_work_for_every_subcommand(tmp_path, model, capsys, no_work, argv, fragments):
    (tmp_path / "file").write_bytes(b"x")
    (tmp_path / "link.npz").symlink_to(model)
    subs = {"{dir}": str(tmp_path), "{file}": str(tmp_path / "file"), "{model}": str(model)}
    argv = [next((a.replace(k, v) for k, v in subs.items() if k in a), a) for a in argv]
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    model_bytes = model.read_bytes()
    code, out, err = _main(argv, capsys)
    assert code == 2
    assert_one_line_error(code, err, *fragments)
    assert out == ""
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before  # nothing written
    assert model.read_bytes() == model_bytes


# -- sizes against the data and the memory --------------------------------------------------------------
def test_estimates_of_ordinary_runs_are_modest():
    args = cli.build_parser().parse_args(["train"])
    params, activations, n = cli.estimate_training_bytes(args)
    assert n == 64 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    assert params == n * 8 * 4 and params + activations < 64 * 2**20
    conv = cli.build_parser().parse_args(["train", "--net", "simple-conv", "--dataset", "mnist"])
    assert sum(cli.estimate_training_bytes(conv)[:2]) < 2**30
    deep = cli.build_parser().parse_args(["train", "--net", "deep-conv", "--dataset", "mnist"])
    assert sum(cli.estimate_training_bytes(deep)[:2]) < 2**30


@pytest.mark.parametrize("argv, fragments", [
    (["train", "--hidden", "100000000"], ["--hidden 100000000", "GiB", "memory available"]),
    (["train", "--hidden", "100", "100000000", "10"], ["--hidden 100 100000000 10"]),
    (["train", "--batch-size", "100000000"], ["--batch-size 100000000", "1,347 training samples"]),
    (["train", "--dataset", "mnist", "--batch-size", "100000"], ["--batch-size 100000", "60,000"]),
    (["train", "--net", "simple-conv", "--filters", "100000000"], ["--filters 100000000", "memory available"]),
    (["train", "--net", "deep-conv", "--dataset", "mnist", "--conv-hidden", "1000000000"], ["--conv-hidden"]),
    (["gradcheck", "--hidden", "100000000"], ["--hidden 100000000", "two losses per parameter"]),
    (["gradcheck", "--samples", "100000000"], ["--samples 100000000", "training samples"]),
    (["gradcheck", "--samples", "1000", "--hidden", "1000"], ["--samples 1000 with --hidden 1000", "(--samples 8 or less at this size)"]),
])
def test_sizes_refused_before_allocating(capsys, no_work, argv, fragments):
    code, _, err = _main(argv, capsys)
    assert code == 2
    assert_one_line_error(code, err, *fragments)


def test_the_batch_is_blamed_when_only_the_batch_is_too_big(capsys, no_work, monkeypatch):
    argv = ["train", "--dataset", "mnist", "--batch-size", "20000", "--hidden", "500"]
    alone = cli.build_parser().parse_args([*argv[:-3], "1", *argv[-2:]])
    monkeypatch.setattr(cli, "_available_memory", lambda: sum(cli.estimate_training_bytes(alone)[:2]) + 1)
    code, _, err = _main(argv, capsys)  # the network with a batch of one fits; this batch does not
    assert_one_line_error(code, err, "--batch-size 20000", "memory available")
    monkeypatch.setattr(cli, "_available_memory", lambda: 30 * 2**20)
    code, _, err = _main(["train", "--hidden", "3000", "3000"], capsys)
    assert_one_line_error(code, err, "--hidden 3000 3000")


def test_available_memory_is_plausible():
    available = cli._available_memory()
    assert available is None or 0 < available < 2**50


# -- every subcommand, bad values, one line each ----------------------------------------------------
def _subcommands():
    """What ``zerodl --help`` lists, read from a real process."""
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    listed = re.findall(r"^    ([a-z][\w-]*)(?:\s|$)", result.stdout, re.MULTILINE)
    assert "train" in listed, result.stdout
    return listed


#: Bad values per subcommand (``{model}`` and friends are filled in per test).
BAD = {
    "train": [
        (["--seed", "-1"], ["--seed", "non-negative"]),
        (["--seed", "abc"], ["--seed"]),
        (["--epochs", "0"], ["--epochs"]),
        (["--lr", "nan"], ["--lr"]),
        (["--lr", "-1"], ["--lr"]),
        (["--hidden", "0"], ["--hidden"]),
        (["--weight-decay", "inf"], ["--weight-decay"]),
        (["--threads", "0"], ["--threads"]),
        (["--threads", "100000"], ["--threads"]),
        (["--dtype", "float16"], ["--dtype"]),
        (["--checkpoint-every", "5"], ["--checkpoint-every needs --checkpoint"]),
        (["--resume"], ["--resume needs --checkpoint"]),
        (["--checkpoint", "{garbage}", "--resume", "--epochs", "1"], ["garbage.ckpt"]),
        (["--checkpoint", "{fifo}", "--resume"], ["--checkpoint", "FIFO"]),
        (["--net", "deep-conv"], ["--net deep-conv", "28x28"]),
        (["--net", "two-layer", "--hidden", "5", "5"], ["--net two-layer"]),
        (["--dataset", "mnist", "--data-dir", "{empty}", "--no-download"], ["MNIST file(s) not found", "{empty}"]),
        (["--data-dir", "{empty}"], ["--data-dir"]),
        (["--save", "{dir}"], ["--save"]),
    ],
    "evaluate": [
        (["{missing}"], ["model file not found", "missing.npz"]),
        (["{garbage}"], ["garbage.ckpt"]),
        (["{fifo}"], ["fifo", "FIFO"]),
        (["{dir}"], ["directory"]),
        (["{pickle}"], ["book.pkl", "load_params"]),
        (["{edited}"], ["edited.npz", "'dataset'", "cifar"]),
        (["{edited_seed}"], ["seed.npz", "'dataset_seed'", "-1"]),
        (["{edited_size}"], ["size.npz", "'dataset_test_size'", "nan"]),
        (["{edited_dir}"], ["dir.npz", "'data_dir'", "[1]"]),
        (["{model}", "--dataset", "mnist", "--data-dir", "{empty}", "--no-download"], ["MNIST file(s) not found"]),
        (["{model}", "--backend", "cuda"], ["--backend"]),
        (["{model}", "--threads", "-3"], ["--threads"]),
        (["{model}", "--plot", "{model}"], ["--plot", "same file as MODEL"]),
    ],
    "gradcheck": [
        (["--samples", "0"], ["--samples"]),
        (["--rtol", "-1"], ["--rtol"]),
        (["--atol", "nan"], ["--atol"]),
        (["--seed", "-1"], ["--seed"]),
        (["--hidden", "100000000"], ["--hidden"]),
    ],
    "bench": [
        (["--json", "{dir}"], ["--json"]),
        (["--rounds", "0"], ["rounds"]),
        (["--min-time", "nan"], ["min_time"]),
        (["--dtype", "float16"], ["--dtype"]),
    ],
    "experiment": [
        (["optimizers", "--seed", "-1"], ["--seed"]),
        (["init", "--out", "{dir}"], ["--out"]),
        (["batchnorm", "--backend", "cuda"], ["--backend"]),
        (["overfit", "--dataset", "cifar"], ["--dataset"]),
        (["search", "--trials", "0"], ["--trials"]),
        (["nonexistent"], ["nonexistent"]),
        ([], ["NAME"]),
    ],
}


def test_the_walk_covers_every_subcommand_zerodl_help_lists():
    listed = _subcommands()
    assert set(listed) == set(BAD), f"add bad-value cases for {sorted(set(listed) - set(BAD))}"
    experiments = cli.build_parser()._subparsers._group_actions[0].choices["experiment"]
    names = set(experiments._subparsers._group_actions[0].choices)
    covered = {argv[0] for argv, _ in BAD["experiment"] if argv}
    assert names <= covered, f"add cases for experiment {sorted(names - covered)}"


@pytest.fixture
def files(tmp_path, model):
    import pickle

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"PK\x03\x04 not an archive at all")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    empty = tmp_path / "empty"
    empty.mkdir()
    book = tmp_path / "book.pkl"
    book.write_bytes(pickle.dumps({"W1": np.ones((64, 8))}))
    with np.load(model) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__zerodl__")[()]))
    for name, key, value in (("edited", "dataset", "cifar"), ("seed", "dataset_seed", -1),
                             ("size", "dataset_test_size", float("nan")), ("dir", "data_dir", [1])):
        edited = json.loads(json.dumps(meta))
        edited["metadata"][key] = value
        np.savez(tmp_path / f"{name}.npz", __zerodl__=np.array(json.dumps(edited)), **arrays)
    yield {"{edited_seed}": str(tmp_path / "seed.npz"), "{edited_size}": str(tmp_path / "size.npz"),
           "{edited_dir}": str(tmp_path / "dir.npz"),"{model}": str(model), "{garbage}": str(garbage), "{fifo}": str(fifo), "{empty}": str(empty),
           "{dir}": str(tmp_path), "{missing}": str(tmp_path / "missing.npz"), "{pickle}": str(book),
           "{edited}": str(tmp_path / "edited.npz")}


def _fill(items, files):
    out = []
    for item in items:
        for key, value in files.items():
            item = item.replace(key, value)
        out.append(item)
    return out


@pytest.mark.parametrize("command, index", [(c, i) for c, cases in BAD.items() for i in range(len(cases))],
                         ids=[f"{c}-{' '.join(a)}" for c, cases in BAD.items() for a, _ in cases])
def test_every_subcommand_with_bad_values_gives_one_line(files, capsys, monkeypatch, command, index):
    import zerodl.bench

    def refuse(*args, **kwargs):
        raise AssertionError("the benchmark started")

    monkeypatch.setattr(zerodl.bench, "run_bench", refuse)
    argv, fragments = BAD[command][index]
    code, _, err = _main([command, *_fill(argv, files)], capsys)
    assert_one_line_error(code, err, *_fill(fragments, files))


def test_the_experiments_loader_errors_are_one_line(files, capsys):
    """experiments/cli.py prints its own errors; a multi-line loader message must not pass through."""
    code, _, err = _main(["experiment", "init", "--quick", "--dataset", "mnist", "--data-dir", files["{empty}"]],
                         capsys)
    assert_one_line_error(code, err, "MNIST")


def test_a_bug_is_still_one_line_and_can_show_its_traceback(capsys, monkeypatch):
    def broken(args):
        raise KeyError("oops")

    monkeypatch.setattr(cli, "cmd_gradcheck", broken)
    monkeypatch.setattr(cli, "build_parser", _parser_with(cli.build_parser, "gradcheck", broken))
    code, _, err = _main(["gradcheck"], capsys)
    assert_one_line_error(code, err, "internal error: KeyError", "ZERODL_TRACEBACK=1")
    monkeypatch.setenv("ZERODL_TRACEBACK", "1")
    with pytest.raises(KeyError):
        cli.main(["gradcheck"])


def _parser_with(build, command, func):
    def build_patched():
        parser = build()
        parser._subparsers._group_actions[0].choices[command].set_defaults(func=func)
        return parser
    return build_patched


# -- the environment, the disk -----------------------------------------------------------------------
def test_bad_zerodl_backend_is_one_line_naming_the_variable():
    result = _run("train", "--epochs", "1", env=_env(ZERODL_BACKEND="bogus"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith("zerodl: error: environment variable ZERODL_BACKEND='bogus'")
    assert "'numba', 'numpy'" in result.stderr and "Traceback" not in result.stderr
    # A library user can still catch it, as a ValueError, and gets no hook output then.
    code = "import sys\ntry:\n    import zerodl\nexcept ValueError as e:\n    print(type(e).__name__)\n"
    caught = subprocess.run([sys.executable, "-c", code], env=_env(ZERODL_BACKEND="bogus"), cwd=ROOT,
                            capture_output=True, text=True, timeout=120, check=False)
    assert caught.stdout.strip() == "BackendEnvironmentError" and caught.stderr == ""


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs a file-size limit (POSIX)")
def test_a_write_that_hits_a_size_limit_is_one_line_naming_the_file_and_leaves_nothing(tmp_path):
    """A real write failure, no mock: the process may write at most 16 KiB per file (RLIMIT_FSIZE,
    SIGXFSZ ignored), so saving the 140 KB model fails with EFBIG, as a full disk fails with ENOSPC."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    out = tmp_path / "out"
    out.mkdir()
    model = out / "model.npz"
    result = subprocess.run([sys.executable, "-m", "zerodl", "train", "--epochs", "1", "--backend", "numpy",
                             "--save", str(model)], env=_env(), cwd=ROOT, capture_output=True, text=True,
                            timeout=300, preexec_fn=limit, check=False)
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"zerodl train: error: {model}: cannot write: File too large", result.stderr
    assert "Traceback" not in result.stderr
    assert "test accuracy:" in result.stdout  # the training itself ran; only the save failed
    assert list(out.iterdir()) == []  # no model, no temporary file


def test_a_full_disk_during_a_checkpoint_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("zerodl._fileio.os.fsync", full)
    ckpt = tmp_path / "run.ckpt"
    code, _, err = _main(["train", "--epochs", "1", "--hidden", "8", "--backend", "numpy",
                          "--checkpoint", ckpt, "--save", tmp_path / "m.npz"], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1] == f"zerodl train: error: {ckpt}: cannot write: No space left on device"
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no model, no temporary file


def test_an_output_must_not_overwrite_the_dataset(tmp_path, capsys, no_work):
    data = tmp_path / "data"
    data.mkdir()
    images = data / "t10k-images-idx3-ubyte.gz"
    images.write_bytes(b"the data")
    code, _, err = _main(["train", "--dataset", "mnist", "--data-dir", data, "--save", images], capsys)
    assert code == 2
    assert_one_line_error(code, err, "--save", "same file as the MNIST file t10k-images-idx3-ubyte.gz")
    assert images.read_bytes() == b"the data"


def test_a_reader_that_stops_early_is_no_traceback(model):
    """`zerodl evaluate m.npz | head -1`: the pipe closes under the command; no traceback, no noise."""
    proc = subprocess.Popen([sys.executable, "-m", "zerodl", "evaluate", str(model), "--backend", "numpy"],
                            env=_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # no reader left: the command's first print meets a broken pipe
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err.decode()
    assert b"Traceback" not in err and b"Exception ignored" not in err, err.decode()



def test_an_output_does_not_replace_a_file_of_another_kind(tmp_path, model, capsys, no_work):
    """A slip such as `--misclassified-png m.npz` would replace a model with a picture."""
    png = tmp_path / "curves.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 32)
    (tmp_path / "notes.txt").write_text("anything")
    with pytest.raises(OutputPathError, match=r"exists and holds a zerodl model; writing a PNG picture over it"):
        check_output_paths([("--plot", model, "png")])
    with pytest.raises(OutputPathError, match="holds a PNG picture"):
        check_output_paths([("--save", png, "model")])
    with pytest.raises(OutputPathError, match="holds a zerodl model"):
        check_output_paths([("--json", model, "json")])
    with pytest.raises(OutputPathError, match="--checkpoint .* holds a zerodl model; writing a zerodl checkpoint"):
        check_output_paths([("--checkpoint", model, "checkpoint")])
    np.savez(tmp_path / "data.npz", x=np.arange(3))
    with pytest.raises(OutputPathError, match="holds a zip/.npz archive"):
        check_output_paths([("--save", tmp_path / "data.npz", "model")])
    check_output_paths([("--save", model, "model"), ("--plot", png, "png"), ("--x", tmp_path / "notes.txt", "png")])
    before = model.read_bytes()
    other = zerodl.save_network(zerodl.MultiLayerNet(64, [8], 10, seed=1), tmp_path / "other.npz",
                                metadata={"dataset": "digits"})
    code, _, err = _main(["evaluate", other, "--misclassified-png", model], capsys)
    assert code == 2
    assert_one_line_error(code, err, "--misclassified-png", "would lose it")
    assert model.read_bytes() == before


@pytest.mark.parametrize("target", ["directory", "fifo", "/dev/null"])
def test_atomic_write_never_replaces_what_is_not_a_file(tmp_path, target):
    """Library saves too (no CLI check in front): renaming over /dev/null as root would replace the
    device with a regular file."""
    from zerodl._fileio import NotARegularFileError

    if target == "directory":
        path = tmp_path / "d"
        path.mkdir()
    elif target == "fifo":
        path = tmp_path / "p"
        os.mkfifo(path)
    else:
        path = target
    before = sorted(os.listdir(os.path.dirname(path)))
    with pytest.raises(NotARegularFileError, match="refusing to replace it with a file"):
        zerodl.save_network(zerodl.TwoLayerNet(4, 3, 2), path)
    assert sorted(os.listdir(os.path.dirname(path))) == before

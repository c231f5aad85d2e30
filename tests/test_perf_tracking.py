"""Performance tracking: the asv configuration, the kept asv history and its published page, the
regression gate (``benchmarks_scripts/perf_gate.py``), the speed-ratio ``track_`` benchmarks and
``zerodl bench --plot``.

Nothing here depends on timing: the gate is shown a kernel slowed by a sleep thousands of times
longer than the kernel, with a factor of 3.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ASV_DIR = ROOT / "asv_bench"
RESULTS = ASV_DIR / "results"
GATE = ROOT / "benchmarks_scripts" / "perf_gate.py"



def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


perf_gate = _load(GATE, "perf_gate")


def _conf() -> dict:
    asv_util = pytest.importorskip("asv.util", reason="asv is a test dependency (pip install -e '.[test]')")
    return asv_util.load_json(str(ASV_DIR / "asv.conf.json"), js_comments=True)


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement_name(requirement: str) -> str:
    return re.match(r"[A-Za-z0-9._-]+", requirement).group(0).lower().replace("_", "-")


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)


# ----------------------------------------------------------------------------- asv configuration
def test_asv_matrix_lists_exactly_the_runtime_dependencies():
    pyproject = _pyproject()
    runtime = {_requirement_name(r) for r in pyproject["project"]["dependencies"]}
    matrix = {_requirement_name(r) for r in _conf()["matrix"]["req"]}
    assert matrix == runtime


def test_build_tools_come_from_the_build_system_not_the_matrix():
    pyproject = _pyproject()
    build_requires = {_requirement_name(r) for r in pyproject["build-system"]["requires"]}
    conf = _conf()
    assert {"setuptools", "wheel"} <= build_requires
    assert not ({"setuptools", "wheel"} & set(conf["matrix"]["req"]))
    # pip's isolated build installs [build-system].requires; --no-build-isolation would need them in
    # the environment (they are not: the matrix holds the runtime dependencies only).
    assert all("--no-build-isolation" not in command for command in conf["build_command"])


# ----------------------------------------------------------------------------- the kept history
def _kept_result_files() -> list[Path]:
    return sorted(p for p in RESULTS.glob("*/*.json") if p.name != "machine.json")


def test_kept_results_are_asv_results_of_one_machine_name_per_directory():
    assert _conf()["results_dir"] == "results"
    machines = [d for d in RESULTS.iterdir() if d.is_dir()]
    assert machines, "no kept results: python benchmarks_scripts/perf_gate.py --record"
    for d in machines:
        info = json.loads((d / "machine.json").read_text())
        assert info["machine"] == d.name
    files = _kept_result_files()
    assert files
    for path in files:
        result = json.loads(path.read_text())
        assert result["params"]["machine"] == path.parent.name
        assert re.fullmatch(r"[0-9a-f]{40}", result["commit_hash"])
        assert result["result_columns"][0] == "result" and result["results"]
    assert (RESULTS / "benchmarks.json").exists()
    # The history grows by a file per recorded commit: each must stay small (the quick subset only).
    for path in files:
        assert path.stat().st_size < 64_000, f"{path.name}: {path.stat().st_size} bytes; record the subset only"


def test_kept_results_are_not_ignored_by_git():
    if _git("rev-parse", "--git-dir").returncode:
        pytest.skip("not a git checkout")
    for path in [*_kept_result_files(), RESULTS / "benchmarks.json"]:
        assert _git("check-ignore", "-q", str(path.relative_to(ROOT))).returncode == 1, path


def test_kept_results_cover_the_gate_subset_and_the_ratios():
    names = set()
    for path in _kept_result_files():
        names |= set(json.loads(path.read_text())["results"])
    assert "bench_train_step.DeepConvNetStep.time_step" in names
    assert {"bench_speedup.NumbaOverNumpy.track_speedup", "bench_speedup.ZerodlOverTorch.track_speedup"} <= names


def test_publish_draws_every_kept_benchmark(tmp_path):
    """``asv publish`` of the kept results: a graph data file for every benchmark of every result.

    asv graphs a result only when its commit is on the first-parent history of a configured branch;
    here the branch is HEAD (a fresh clone of main, or a branch off main), through a copy of the
    configuration pointing at the kept results and a temporary html directory."""
    if _git("rev-parse", "--git-dir").returncode:
        pytest.skip("not a git checkout")
    if _git("rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        pytest.skip("a shallow clone: the kept results' commits are not all there")
    first_parent = set(_git("rev-list", "--first-parent", "HEAD").stdout.split())
    # asv draws a kept value only while its benchmark's code is the version it was recorded with (an
    # edited benchmark starts a new line), and no point for a skipped one (NaN: a peer missing, or a
    # zerodl older than the benchmark): expect exactly those points.
    current = {name: b.get("version") for name, b in json.loads((RESULTS / "benchmarks.json").read_text()).items()
               if isinstance(b, dict)}
    expected: dict[str, dict[str, set[str]]] = {}  # machine -> benchmark -> commits with a value
    for path in _kept_result_files():
        result = json.loads(path.read_text())
        assert result["commit_hash"] in first_parent, (
            f"{path.name}: commit {result['commit_hash'][:10]} is not on HEAD's first-parent history; "
            "record merged commits of main (perf_gate.py --record on main)")
        version_at = result["result_columns"].index("version")
        for name, value in result["results"].items():
            if value and value[0] is not None and any(v is not None and v == v for v in _flatten(value[0])) \
                    and value[version_at] == current.get(name):
                expected.setdefault(path.parent.name, {}).setdefault(name, set()).add(result["commit_hash"])
    assert expected, "no kept result of the current benchmarks' versions"
    conf = _conf()
    conf.update(repo=str(ROOT), branches=["HEAD"], results_dir=str(RESULTS), html_dir=str(tmp_path / "html"),
                benchmark_dir=str(ASV_DIR / "benchmarks"), env_dir=str(tmp_path / "env"))
    config = tmp_path / "asv.conf.json"
    config.write_text(json.dumps(conf))
    done = subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(config)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    html = tmp_path / "html"
    assert (html / "index.html").exists() and (html / "index.json").exists()
    index = json.loads((html / "index.json").read_text())
    # graphs/<param dirs>/branch-HEAD/.../machine-<name>/.../<benchmark>.json: [[revision, value], ...]
    for machine, names in expected.items():
        # (one graph per environment: a machine recorded with two interpreters has two graph files)
        graphs: dict[str, list[Path]] = {}
        for p in (html / "graphs").rglob("*.json"):
            if "branch-HEAD" in p.parts and f"machine-{machine}" in p.parts:
                graphs.setdefault(p.stem, []).append(p)
        missing = sorted(set(names) - set(graphs))
        assert not missing, f"machine {machine}: no graph data for {missing}"
        for name, commits in names.items():  # a point per kept commit, with a value
            points = [point for g in graphs[name] for point in json.loads(g.read_text())]
            assert len(points) == len(commits), name
            assert all(value is not None for _, value in points), name
    assert {n for names in expected.values() for n in names} <= set(index["benchmarks"])


def _flatten(value):
    return value if isinstance(value, list) else [value]


# ----------------------------------------------------------------------------- the speed ratios
bench_speedup = _load(ASV_DIR / "benchmarks" / "bench_speedup.py", "bench_speedup")


def test_ratio_benchmarks_divide_the_slower_by_zerodl():
    medians = {"numpy": {"step/two_layer": 3.0}, "numba": {"step/two_layer": 1.5}, "torch": {"step/two_layer": 6.0}}
    assert bench_speedup.NumbaOverNumpy().track_speedup(medians, "step/two_layer") == 2.0
    assert bench_speedup.ZerodlOverTorch().track_speedup(medians, "step/two_layer") == 4.0
    assert bench_speedup.NumbaOverNumpy.unit == bench_speedup.ZerodlOverTorch.unit == "ratio"
    assert [p.split("/")[1] for p in bench_speedup.ZerodlOverTorch.params] == bench_speedup.STEPS


def test_torch_ratio_is_skipped_the_asv_way_without_torch(monkeypatch):
    monkeypatch.setattr(bench_speedup, "torch_available", lambda: False)
    bench = bench_speedup.ZerodlOverTorch()
    cache = bench.setup_cache()
    assert cache == {}  # never None: asv hands a None cache to no setup (it would fail, not skip)
    with pytest.raises(NotImplementedError, match="PyTorch is not installed"):
        bench.setup(cache, "step/two_layer")


def test_compiling_peer_ratios_divide_the_peer_by_zerodl_and_skip_what_is_missing():
    measured = {"seconds": {"numba": {"two_layer": 1.0, "mlp_adam": 2.0},
                            "torch_compile": {"two_layer": 3.0, "mlp_adam": 5.0}, "jax": {"two_layer": 1.5}},
                "missing": []}
    peers = bench_speedup.ZerodlOverCompilingPeers()
    peers.setup(measured, "step/two_layer", "jax")
    assert peers.track_speedup(measured, "step/two_layer", "jax") == 1.5
    assert peers.track_speedup(measured, "step/mlp_adam", "torch_compile") == 2.5
    with pytest.raises(NotImplementedError, match="jax"):  # a peer that failed or is missing: skipped
        peers.setup(measured, "step/mlp_adam", "jax")
    with pytest.raises(NotImplementedError, match="no compiling peers"):  # a zerodl older than the peers
        peers.setup({}, "step/two_layer", "jax")
    assert bench_speedup.PEERS == ["torch_compile", "jax"]
    from zerodl import bench

    assert set(bench_speedup.PEERS) <= set(bench.CONTENDERS) and set(bench_speedup.PEERS) <= set(bench.HEADLINE_CASE)


def test_ratio_cases_exist_in_zerodl_bench():
    from zerodl import bench

    assert set(bench_speedup.STEPS) <= {s.key for s in bench.step_specs("full")}
    assert set(bench_speedup.KERNELS) <= set(bench.KERNEL_INPUTS)


# ----------------------------------------------------------------------------- the gate
def _gate(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # each worker sets its own tree
    return subprocess.run([sys.executable, str(GATE), *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout, check=False)


def test_every_regex_of_the_gate_subset_selects_benchmarks():
    done = _gate("--list", timeout=120)
    assert done.returncode == 0, done.stderr
    names = done.stdout.split("\n")
    for pattern in perf_gate.GATE_SUBSET:
        assert any(re.search(pattern, n) for n in names), pattern
    for step in ("TwoLayerNetStep", "MultiLayerNetStep", "SimpleConvNetStep", "DeepConvNetStep"):
        assert f"bench_train_step.{step}.time_step('numba', 'fused', 'float32')" in names
    assert all("('numba'" in n for n in names if n)


@pytest.fixture(scope="module")
def slowed_trees(tmp_path_factory):
    """Two copies of the package: ``base`` as is, ``head`` with ``relu_forward_numba`` sleeping 20 ms
    per call (the kernel itself takes microseconds at the benchmark's 100x100 shape)."""
    root = tmp_path_factory.mktemp("gate")
    ignore = shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc")
    for name in ("base", "head"):
        shutil.copytree(ROOT / "zerodl", root / name / "zerodl", ignore=ignore)
    relu = root / "head" / "zerodl" / "kernels" / "relu.py"
    relu.write_text(relu.read_text() + (
        "\n\nimport time as _time\n_relu_forward_fast = relu_forward_numba\n\n\n"
        "def relu_forward_numba(x):\n    _time.sleep(0.02)  # the deliberate regression\n"
        "    return _relu_forward_fast(x)\n"))
    return root


SLOWED = "bench_relu.Relu.time_forward('numba', 'float64', 'mlp_hidden_100x100')"
GATE_TINY = ("--bench", r"^bench_relu\.Relu\.time_(forward|backward)\('numba', 'float64', 'mlp_hidden",
             "--rounds", "1", "--repeats", "2", "--sample-time", "0.002", "--factor", "3", "--quiet")


def test_gate_names_the_slowed_kernel_and_fails(slowed_trees):
    done = _gate("--base-tree", str(slowed_trees / "base"), "--head-tree", str(slowed_trees / "head"), *GATE_TINY)
    assert done.returncode == 1, done.stdout + done.stderr
    table, _, regressions = done.stdout.partition("regression(s)")
    assert SLOWED in regressions and "SLOWER (confirmed)" in regressions
    assert "bench_relu.Relu.time_backward('numba', 'float64', 'mlp_hidden_100x100')" in table  # compared too
    assert f"tree {slowed_trees / 'head'} vs BASE tree {slowed_trees / 'base'}" in done.stdout


def test_gate_report_only_names_it_and_exits_0(slowed_trees):
    done = _gate("--base-tree", str(slowed_trees / "base"), "--head-tree", str(slowed_trees / "head"),
                 *GATE_TINY, "--report-only")
    assert done.returncode == 0, done.stdout + done.stderr
    assert SLOWED in done.stdout.partition("regression(s)")[2]
    assert "--report-only: exit 0" in done.stdout


def test_gate_refuses_a_bad_base_and_a_bad_regex():
    done = _gate("no-such-revision-xyz", timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("perf_gate: error: BASE 'no-such-revision-xyz'")
    done = _gate("--bench", "(", timeout=60)
    assert done.returncode == 2 and "--bench '(': not a regular expression" in done.stderr


def test_compare_verdicts():
    base = {"a": [1.0, 1.0], "b": [1.0, 1.0], "c": [1.0, 1.0], "d": ["RuntimeError: x"], "e": [None, None],
            "f": [1.0, 1.0]}
    head = {"a": [2.0, 2.0], "b": [1.05, 1.0], "c": [0.5, 0.5], "d": [1.0], "e": [None, None],
            "f": ["ValueError: broke", "ValueError: broke"]}
    rows = {r["name"]: r for r in perf_gate.compare(base, head, 1.15)}
    assert rows["a"]["verdict"] == "slower" and rows["a"]["ratio"] == 2.0
    assert rows["b"]["verdict"] == ""
    assert rows["c"]["verdict"] == "faster"
    assert rows["d"]["verdict"] == "not compared (error on base)"
    assert rows["e"]["verdict"] == "skipped"
    assert rows["f"]["verdict"] == "error on head" and "broke" in rows["f"]["error"]
    # A noisy median alone is not a suspect: the best of the rounds must agree.
    noisy = perf_gate.compare({"g": [1.0, 1.0, 1.0]}, {"g": [1.0, 2.0, 2.0]}, 1.15)[0]
    assert noisy["ratio"] == 2.0 and noisy["verdict"] == ""
    text = perf_gate.format_rows(list(rows.values()))
    assert text.splitlines()[2].startswith("a ")  # slowest ratio first


# ----------------------------------------------------------------------------- zerodl bench --plot
def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture(scope="module")
def tiny_plot(tmp_path_factory):
    from zerodl import bench

    out = tmp_path_factory.mktemp("plot")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = bench.main(["--quick", "--size", "tiny", "--no-torch", "--rounds", "1", "--repeats", "1",
                           "--min-time", "0.001", "--dtype", "float32", "--json", str(out / "b.json"),
                           "--plot", str(out / "speed.png")])
    return code, out


def test_bench_plot_writes_a_png_of_the_table(tiny_plot):
    code, out = tiny_plot
    assert code == 0
    width, height = _png_size(out / "speed.png")
    assert width >= 800 and height >= 600
    assert (out / "speed.png").stat().st_size > 20_000
    results = json.loads((out / "b.json").read_text())
    assert results["date"] and set(results["step_titles"]) == {"two_layer", "mlp_adam", "simple_conv", "deep_conv",
                                                               "deep_conv_infer"}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_plots_bench_replots_saved_results_as_svg(tiny_plot, capsys):
    from zerodl import plots_bench

    _, out = tiny_plot
    assert plots_bench.main([str(out / "b.json"), str(out / "again.svg")]) == 0
    assert (out / "again.svg").read_text().lstrip().startswith(("<?xml", "<svg"))


def test_plot_has_a_bar_per_contender_present_whatever_they_are():
    from zerodl import plots_bench

    results = {"contenders": ["numpy", "numba", "torch", "torch_compile", "jax"],
               "medians": {"numpy": {"step/two_layer/book": 3e-3, "step/two_layer/fused": 2e-3},
                           "numba": {"step/two_layer/layers": 1e-3, "step/two_layer/fused": 5e-4,
                                     "kernel/relu_forward/float32": 1e-5},
                           "torch_compile": {"step/two_layer/torch_compile": 8e-4},
                           "jax": {"step/two_layer/jax": 7e-4, "step/new_net/jax": 1e-2}},
               "step_titles": {"two_layer": "TwoLayerNet 784-50-10, SGD, float64"}}
    groups = dict(plots_bench._step_groups(results))
    assert list(groups) == ["TwoLayerNet 784-50-10, SGD, float64", "new_net"]
    assert list(groups["TwoLayerNet 784-50-10, SGD, float64"]) == [
        "numpy book", "numpy fused", "numba layers", "numba fused", "torch_compile", "jax"]


def test_plot_draws_synthetic_results_with_new_contenders(tmp_path):
    from zerodl import plots_bench

    results = {"contenders": ["numba", "jax"], "config": {"threads": 2, "rounds": 3},
               "machine": {"cpu_count": 2, "loadavg_before": [0.1, 0.1, 0.1]}, "date": "2026-12-03",
               "medians": {"numba": {"step/a/fused": 1e-3}, "jax": {"step/a/jax": 2e-3}},
               "rows": [{"section": "kernel", "name": "relu_forward", "dtype": "float32", "speedup": 3.0}]}
    path = plots_bench.plot_bench(results, tmp_path / "p.png")
    assert _png_size(path)[0] >= 800
    with pytest.raises(ValueError, match="no training step or kernel timing"):
        plots_bench.plot_bench({"medians": {}}, tmp_path / "q.png")


@pytest.mark.parametrize("name, message", [
    ("missing-folder/speed.png", "does not exist"),
    ("speed.txt", "expected a picture file name ending in one of"),
    ("speed", "no suffix"),
])
def test_bench_plot_path_is_refused_before_measuring(tmp_path, monkeypatch, capsys, name, message):
    from zerodl import bench

    def no_run(*args, **kwargs):
        raise AssertionError("the benchmark ran before the --plot path was checked")

    monkeypatch.setattr(bench, "run_bench", no_run)
    assert bench.main(["--quick", "--size", "tiny", "--plot", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("zerodl bench: error: --plot ") and message in err and len(err.splitlines()) == 1


def test_bench_plot_does_not_replace_a_model(tmp_path, monkeypatch, capsys):
    from zerodl import bench

    monkeypatch.setattr(bench, "run_bench", lambda *a, **k: pytest.fail("ran"))
    json_path = tmp_path / "same.png"
    assert bench.main(["--quick", "--size", "tiny", "--json", str(json_path), "--plot", str(json_path)]) == 2
    assert "is the same file as --json" in capsys.readouterr().err

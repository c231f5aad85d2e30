"""``zerodl bench``: the whole machinery (worker processes, interleaved rounds, table, JSON) at toy size."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os

import numpy as np
import pytest

from zerodl import bench, kernels


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One tiny ``python -m zerodl.bench --quick`` run (numpy and numba workers, ch5 included)."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = bench.main(["--quick", "--size", "tiny", "--no-peers", "--min-time", "0.001", "--repeats", "2",
                           "--ch5", "--ch5-iters", "3", "--ch5-data", "random", "--json", str(path)])
    return code, out.getvalue(), json.loads(path.read_text())


def test_exit_code_and_json_structure(bench_run):
    code, _, results = bench_run
    assert code == 0
    assert results["contenders"] == ["numpy", "numba"]
    for key in ("config", "machine", "rounds", "medians", "rows", "runs", "blas_gflops"):
        assert key in results, key
    assert results["config"]["rounds"] == 2 and results["config"]["size"] == "tiny"
    assert results["machine"]["cpu_count"] >= 1
    # Every case has one median per round, in seconds per call.
    for contender in ("numpy", "numba"):
        for name, values in results["rounds"][contender].items():
            assert len(values) == 2 and all(0 < v < 5 for v in values), name


def test_the_blas_rate_is_numpys_own_library_alone(bench_run):
    # The rate behind GEMM % is NumPy's OpenBLAS (the library zerodl's kernels call), timed with no
    # other BLAS in the worker: SciPy's bundled OpenBLAS spins its own threads after each call and
    # halved the float64 product timed next to it.
    _, _, results = bench_run
    blas = sorted(name for name in results["medians"]["numba"] if name.startswith("blas/"))
    assert blas == ["blas/numpy/float32", "blas/numpy/float64"]
    for dt in ("float32", "float64"):
        seconds = results["medians"]["numba"][f"blas/numpy/{dt}"]
        assert results["blas_gflops"][dt] == pytest.approx(2 * 64**3 / seconds / 1e9)


def test_every_registered_op_is_measured_or_said_to_be_skipped(bench_run):
    _, _, results = bench_run
    measured = {r["name"] for r in results["rows"] if r["section"] == "kernel"}
    assert set(kernels.ops("numba")) == measured | set(results["skipped_ops"])
    for r in results["rows"]:
        if r["section"] == "kernel":
            assert r["numpy"] > 0 and r["numba"] > 0
            assert r["speedup"] == pytest.approx(r["numpy"] / r["numba"])


def test_step_rows_compare_the_paths(bench_run):
    _, _, results = bench_run
    steps = {r["name"]: r for r in results["rows"] if r["section"] == "step"}
    assert set(steps) == {s.title for s in bench.step_specs("tiny")}
    two = steps["TwoLayerNet 6-5-3 SGD"]
    for col in ("numpy_book", "numpy_fused", "numba_layers", "numba_fused", "blas_bound"):
        assert two[col] > 0, col
    assert two["speedup"] == pytest.approx(two["numpy_book"] / two["numba_fused"])
    assert two["x_bound"] == pytest.approx(two["numba_fused"] / two["blas_bound"])
    assert two["torch"] is None and two["vs_torch"] is None  # --no-peers
    assert two["gemm_fraction"] == pytest.approx(two["blas_bound"] / two["numba_fused"])
    for name in ("SimpleConvNet tiny SGD", "DeepConvNet tiny Adam"):  # conv nets: the fused path too
        conv = steps[name]
        assert conv["fused_path"] is True and conv["blas_bound"] > 0 and conv["numba_fused"] > 0
        assert conv["numpy_book"] > 0 and conv["numba_layers"] > 0
    infer = steps["DeepConvNet tiny inference"]
    assert infer["numpy_fused"] > 0 and infer["numba_fused"] > 0 and infer["numpy_book"] is None
    assert infer["speedup"] == pytest.approx(infer["numpy_fused"] / infer["numba_fused"])
    # The peak resident-set growth of a step is measured (Linux), for the fused step of each row.
    assert all(r["rss_numba"] is None or r["rss_numba"] >= 0 for r in steps.values())


def test_ch5_rows(bench_run):
    _, _, results = bench_run
    runs = [r for r in results["rows"] if r["section"] == "run"]
    assert [r["variant"] for r in runs] == ["fused", "fused+loss"]
    for r in runs:
        assert r["numpy_book"] > 0 and r["numba"] > 0
        assert 0 <= r["train_acc_numba"] <= 1
        assert "random" in r["data"]


def test_table_text(bench_run):
    _, text, results = bench_run
    lines = text.splitlines()
    assert lines[0].startswith("zerodl bench: numpy, numba, each in its own process")
    assert "load average" in lines[1]
    for header in ("Kernels (NumPy twin vs Numba twin)", "Training steps", "The book's chapter 5 run"):
        assert header in text
    kernel_header = next(i for i, line in enumerate(lines) if line.startswith("op "))
    assert lines[kernel_header].split() == ["op", "dtype", "shape", "numpy", "ms", "numba", "ms", "speedup"]
    # One table line per measured kernel row, each ending in a speedup like "1.23x".
    body = lines[kernel_header + 2: kernel_header + 2 + sum(r["section"] == "kernel" for r in results["rows"])]
    assert all(line.rstrip().endswith("x") for line in body)
    assert "affine_forward" in text and "softmax_loss_grad" in text and "gelu_bias_forward" in text


def test_format_table_is_pure(bench_run):
    _, text, results = bench_run
    assert bench.format_table(results) == text.rstrip("\n")


def test_the_table_says_how_the_convolutions_reach_blas(bench_run):
    from zerodl.kernels import _blas

    _, text, results = bench_run
    line = next(x for x in text.splitlines() if x.startswith("convolution products: "))
    if _blas.available():
        assert os.path.basename(_blas.library_path()) in line and "compiled code" in line
    else:
        assert "np.matmul from Python" in line
    assert results["machine"]["conv_blas"] in line
    from zerodl.kernels import _direct_c1

    route = next(x for x in text.splitlines() if x.startswith("single-channel conv + ReLU + pool layers: "))
    assert ("register tiles" in route) == _direct_c1.available()
    assert results["machine"]["conv_c1"] in route


def test_matmul_flops_counts_forward_dw_and_dx_except_first():
    spec = bench.step_specs("full")[0]  # TwoLayerNet 784-50-10, batch 100
    expected = 2 * (2 * 100 * 784 * 50) + 3 * (2 * 100 * 50 * 10)
    assert spec.matmul_flops() == expected


def test_deep_conv_flops_are_the_books_net():
    specs = {s.key: s for s in bench.step_specs("full")}
    forward = bench._weight_layer_flops(specs["deep_conv_float32"])
    assert len(forward) == 8  # six convolutions, two affines
    assert 17.0e6 < sum(forward) < 18.0e6  # 17.5 MFLOP per image forward
    train = specs["deep_conv_float32"].matmul_flops()
    assert train == pytest.approx(100 * (2 * forward[0] + 3 * sum(forward[1:])))
    assert specs["deep_conv_infer_float64"].matmul_flops() == pytest.approx(10000 * sum(forward))


def test_steps_draw_a_random_batch_from_the_pool_each_call():
    spec = next(s for s in bench.step_specs("tiny") if s.key == "two_layer")
    cases = bench._zerodl_step_cases(spec, "numpy", 0)
    losses = {float(cases["fused"]()) for _ in range(6)}
    assert len(losses) > 1  # not one batch reused: the losses of different batches differ
    x, _ = bench._pool_data(spec, 0)
    assert x.shape[0] == spec.pool > spec.batch


def test_input_builders_match_the_kernels():
    rng = np.random.default_rng(0)
    for op, build in bench.KERNEL_INPUTS.items():
        if (op, "numpy") not in kernels.REGISTRY:
            continue
        args, shape = build(rng, np.dtype(np.float32), "tiny")
        kernels.get(op, "numpy")(*args)  # the builder produces a valid call
        assert isinstance(shape, str) and shape


def test_torch_step_runs_when_torch_is_installed():
    pytest.importorskip("torch")
    import torch
    import torch.nn.functional as F

    spec = bench.step_specs("tiny")[0]
    step = bench._torch_step_case(spec, 0)
    x, t = (torch.from_numpy(a) for a in bench._pool_data(spec, 0))

    def pool_loss():
        with torch.no_grad():
            return float(F.cross_entropy(step.model(x), t))

    before = pool_loss()
    for _ in range(100):
        assert np.isfinite(float(step().detach()))
    assert pool_loss() < before  # it trains: the loss over the whole pool falls
    for spec in bench.step_specs("tiny")[2:]:  # the conv nets' torch twins build and run
        out = bench._torch_step_case(spec, 0)()
        assert np.isfinite(float(out.detach() if hasattr(out, "detach") else out))


@pytest.mark.parametrize("kwargs,match", [
    ({"size": "huge"}, "size"), ({"rounds": 0}, "rounds"), ({"min_time": 0}, "min_time"),
    ({"dtypes": ("float16",)}, "dtypes"), ({"contenders": ("mxnet",)}, "contenders"),
    ({"ch5_data": "cifar"}, "ch5_data"), ({"rows": ("resnet",)}, "rows"), ({"compile_mode": "fast"}, "compile_mode"),
])
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        bench.BenchConfig(**kwargs).validate()


def test_cli_registration_and_bad_arguments(capsys):
    parser = argparse.ArgumentParser(prog="zerodl")
    sub = parser.add_subparsers(dest="command")
    bench.add_subparsers(sub)
    args = parser.parse_args(["bench", "--quick", "--rounds", "0"])
    assert args.func is bench.run_cli
    assert args.func(args) == 2
    assert "rounds must be a positive integer" in capsys.readouterr().err
    cfg = bench.config_from_args(parser.parse_args(["bench", "--quick", "--dtype", "float32", "--no-torch"]))
    assert cfg.rounds == 2 and cfg.dtypes == ("float32",)
    assert cfg.contenders == ("numpy", "numba")  # --no-torch: neither eager nor torch.compile; quick: no jax
    assert bench.config_from_args(parser.parse_args(["bench", "--quick"])).contenders == ("numpy", "numba", "torch")
    cfg = bench.config_from_args(parser.parse_args(["bench", "--no-torch"]))
    assert cfg.contenders == ("numpy", "numba", "jax")
    cfg = bench.config_from_args(parser.parse_args(["bench", "--no-peers"]))
    assert cfg.contenders == ("numpy", "numba")
    cfg = bench.config_from_args(parser.parse_args(
        ["bench", "--contenders", "numba,jax", "--row", "deep_conv_float32", "--compile-mode",
         "max-autotune-no-cudagraphs"]))
    assert cfg.contenders == ("numba", "jax") and cfg.rows == ("deep_conv_float32",)
    assert cfg.compile_mode == "max-autotune-no-cudagraphs"
    args = parser.parse_args(["bench", "--contenders", "numba,caffe"])
    assert args.func(args) == 2
    assert "contenders must be among" in capsys.readouterr().err


def test_zerodl_cli_has_the_bench_command():
    cli = pytest.importorskip("zerodl.cli")
    args = cli.build_parser().parse_args(["bench", "--quick"])
    assert args.func is bench.run_cli


# ----------------------------------------------------------------------------- the compiling peers
def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install 'zerodl[peers]')")


@pytest.fixture(scope="module")
def peers_run(tmp_path_factory):
    """One tiny bench of the step rows with every peer: a tiny MLP (Adam) and a tiny conv net, the
    only rows the tests compile with torch.compile (Inductor takes 5-30 s per model)."""
    for package in ("torch", "jax"):
        _needs(package)
    path = tmp_path_factory.mktemp("peers") / "peers.json"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = bench.main(["--size", "tiny", "--only", "steps", "--contenders", "numba,torch,torch_compile,jax",
                           "--row", "mlp_adam", "--row", "simple_conv", "--rounds", "1", "--repeats", "2",
                           "--min-time", "0.001", "--threads", "1", "--json", str(path)])
    return code, out.getvalue(), json.loads(path.read_text())


@pytest.mark.slow
def test_peers_give_finite_timings_and_compile_times(peers_run):
    code, text, results = peers_run
    assert code == 0
    assert results["contenders"] == ["numba", "torch", "torch_compile", "jax"] and results["missing"] == {}
    assert results["errors"] == {}
    assert results["machine"]["torch"].startswith("2.") and results["machine"]["jax"]
    steps = {r["name"]: r for r in results["rows"] if r["section"] == "step"}
    assert set(steps) == {"MultiLayerNet 6-5x2-3 Adam", "SimpleConvNet tiny SGD"}  # --row
    for row in steps.values():
        for peer in ("torch", "torch_compile", "jax"):
            assert np.isfinite(row[peer]) and row[peer] > 0, peer
            assert row[f"vs_{peer}"] == pytest.approx(row[peer] / row["numba_fused"])
        for peer in ("torch_compile", "jax"):  # compiled once, timed apart, kept in the JSON
            assert np.isfinite(row[f"compile_{peer}"]) and row[f"compile_{peer}"] >= 0
            assert row[f"error_{peer}"] is None
    for peer in ("torch_compile", "jax"):
        assert set(results["compile"][peer]) == {f"step/mlp_adam/{peer}", f"step/simple_conv/{peer}"}
    assert results["compile"]["torch_compile"]["step/mlp_adam/torch_compile"] > 0.1  # Inductor did compile
    assert len(results["rounds"]["jax"]["step/mlp_adam/jax"]) == 1
    header = next(line for line in text.splitlines() if line.startswith("network "))
    for column in ("torch.compile", "jax", "vs torch.compile", "vs jax"):
        assert column in header
    assert "Compile time of the compiling peers" in text and "never inside a step time" in text


def _fake_broken_jax(tmp_path) -> str:
    fake = tmp_path / "fake_site"
    (fake / "jax").mkdir(parents=True)
    (fake / "jax" / "__init__.py").write_text('raise ImportError("jaxlib is not installed")\n')
    return str(fake)


def test_a_missing_peer_is_dropped_with_one_line(tmp_path, monkeypatch):
    # Found by the parent but not importable in its worker (a broken install): the worker says so.
    fake = _fake_broken_jax(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([fake, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(fake)  # the parent finds it too, installed or not: only the worker's import fails
    config = bench.BenchConfig(size="tiny", kernels=False, rows=("two_layer",), contenders=("numpy", "jax"),
                               rounds=1, repeats=1, min_time=0.001, pause=0.0)
    results = bench.run_bench(config)
    assert results["contenders"] == ["numpy"]
    line = results["missing"]["jax"]
    assert line.startswith("jax: not installed — pip install 'zerodl[peers]'") and "\n" not in line
    assert "jaxlib is not installed" in line
    text = bench.format_table(results)
    assert sum("not installed" in t for t in text.splitlines()) == 1
    row = next(r for r in results["rows"] if r["section"] == "step")
    assert row["numpy_fused"] > 0 and row["jax"] is None
    # Not found at all: dropped before any worker starts, with the line the CLI prints in its table.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "jax" else real_find_spec(name, *a))
    results = bench.run_bench(config)
    assert results["contenders"] == ["numpy"]
    assert results["missing"] == {"jax": "jax: not installed — pip install 'zerodl[peers]'"}


def test_step_row_medians_for_the_asv_ratio_benchmarks():
    _needs("jax")
    medians = bench.step_row_medians("two_layer", contenders=("numpy", "jax"), size="tiny", rounds=2,
                                     repeats=1, min_time=0.001, pause=0.0)
    assert set(medians["seconds"]) == {"numpy", "jax"}
    assert all(0 < v < 1 for v in medians["seconds"].values())
    assert medians["seconds"]["numpy"] == medians["cases"]["numpy"]["book"]
    assert set(medians["cases"]["numpy"]) == {"book", "fused"}
    assert medians["compile"]["jax"] >= 0 and medians["missing"] == {} and medians["errors"] == {}
    with pytest.raises(ValueError, match="rows must be among"):
        bench.step_row_medians("resnet", size="tiny")


def _tiny_spec(key: str):
    return next(s for s in bench.step_specs("tiny") if s.key == key)


def _zerodl_losses(spec, steps):
    step = bench._zerodl_step_cases(spec, "numba", 0)["fused"]
    return [float(step()) for _ in range(steps)]


def _jax_enabled():
    _needs("jax")
    import jax

    jax.config.update("jax_enable_x64", True)  # what the JAX worker does: float64 rows stay float64


@pytest.mark.parametrize("key", ["two_layer", "mlp_adam", "simple_conv"])
def test_jax_step_is_zerodls_step(key):
    """Same initial weights, same batches, same maths, same optimizer: the JAX step's losses (before
    each update, as train_step returns them) are zerodl's, and so are the parameters after them."""
    _jax_enabled()
    spec = _tiny_spec(key)  # TwoLayerNet SGD float64, MLP Adam float32, SimpleConvNet SGD float64
    steps = 3  # the third loss is taken after two updates
    zerodl_net = bench._zerodl_net(spec, 0)
    opt = bench._zerodl_optimizer(spec)
    x, t = bench._pool_data(spec, 0)
    rng = np.random.default_rng(1)  # the draws every contender makes (seed + 1)
    expected = []
    for _ in range(steps):
        idx = rng.choice(spec.pool, spec.batch)
        expected.append(float(zerodl_net.train_step(x[idx], t[idx], opt)))
    jax_step = bench._jax_step_case(spec, 0)
    got = [float(jax_step()) for _ in range(steps)]
    tol = 1e-12 if spec.dtype == "float64" else 1e-6
    np.testing.assert_allclose(got, expected, rtol=tol)
    params = [np.asarray(p) for p in jax_step.holder["params"]]
    assert all(p.dtype == np.dtype(spec.dtype) for p in params)
    count = len(params) // 2
    for p, name in zip(params, [f"{w}{i}" for i in range(1, count + 1) for w in ("W", "b")]):
        np.testing.assert_allclose(p, zerodl_net.params[name], rtol=tol * 10, atol=tol, err_msg=name)


def _torch_params(step):
    from torch import nn

    out = []
    for m in step.model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach().numpy()
            out += [w.T if isinstance(m, nn.Linear) else w, m.bias.detach().numpy()]
    return out


def test_torch_eager_step_is_zerodls_step():
    """PyTorch eager on the SGD MLP: zerodl's initial weights, the same batches, zerodl's losses and
    parameters to PyTorch's own rounding (its cross-entropy has no 1e-7)."""
    _needs("torch")
    import torch

    spec = _tiny_spec("two_layer")
    steps = 3
    expected = _zerodl_losses(spec, steps)
    step = bench._torch_step_case(spec, 0)
    got = [float(step().detach()) for _ in range(steps)]
    np.testing.assert_allclose(got, expected, rtol=2e-6)
    assert step.model.training and next(step.model.parameters()).dtype == torch.float64
    zerodl_net, zerodl_opt = bench._zerodl_net(spec, 0), bench._zerodl_optimizer(spec)
    x, t = bench._pool_data(spec, 0)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        idx = rng.choice(spec.pool, spec.batch)
        zerodl_net.train_step(x[idx], t[idx], zerodl_opt)
    for p, name in zip(_torch_params(step), ["W1", "b1", "W2", "b2"]):
        np.testing.assert_allclose(p, zerodl_net.params[name], rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("key", ["mlp_adam", "simple_conv"])
def test_every_worker_starts_with_zerodls_losses(peers_run, key):
    """In their own processes, after compiling: torch.compile (Adam MLP, SGD conv net) and JAX give
    zerodl's first losses (the third after two updates), so they train the same net the same way."""
    _, _, results = peers_run
    first = results["first_values"]
    expected = first["numba"][f"step/{key}/fused"]
    assert len(expected) == bench.FIRST_VALUES and all(np.isfinite(expected))
    spec = _tiny_spec(key)
    for peer in ("torch", "torch_compile", "jax"):
        got = first[peer][f"step/{key}/{peer}"]
        tol = (1e-12 if spec.dtype == "float64" else 1e-6) if peer == "jax" else 1e-5
        np.testing.assert_allclose(got, expected, rtol=tol, err_msg=peer)


def test_peer_inference_counts_what_zerodl_counts():
    _jax_enabled()
    _needs("torch")
    spec = _tiny_spec("deep_conv_infer")
    zerodl_acc = bench._zerodl_step_cases(spec, "numba", 0)["fused"]()
    assert bench._jax_step_case(spec, 0)() == pytest.approx(zerodl_acc)
    assert bench._torch_step_case(spec, 0)() == pytest.approx(zerodl_acc)


def test_peer_nets_have_zerodls_shapes():
    """Every row's peer networks take zerodl's initial weights, shape for shape (full size too)."""
    _needs("torch")
    for spec in bench.step_specs("full") + bench.step_specs("tiny"):
        model = bench._torch_model(spec)
        bench._load_torch_params(model, bench._zerodl_initial_params(spec, 0))  # raises on a mismatch
        plan = bench._jax_plan(spec)
        assert 2 * sum(op in ("conv", "affine") for op, _ in plan) == len(bench._zerodl_initial_params(spec, 0))


@pytest.mark.slow
def test_a_row_a_peer_cannot_compile_shows_its_error(peers_run):
    _, _, results = peers_run
    broken = json.loads(json.dumps(results))
    row = next(r for r in broken["rows"] if r["section"] == "step")
    row.update(jax=None, vs_jax=None, compile_jax=None, error_jax="RuntimeError: XLA refused the graph")
    text = bench.format_table(broken)
    assert f"jax, {row['name']} {row['dtype']}: RuntimeError: XLA refused the graph" in text.splitlines()
    compile_header = next(i for i, line in enumerate(text.splitlines()) if line.startswith("network ")
                          and "compile s" in line)
    assert "error" in text.splitlines()[compile_header + 2]  # the row's compile cell

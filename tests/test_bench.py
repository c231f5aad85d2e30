"""``zerodl bench``: the whole machinery (worker processes, interleaved rounds, table, JSON) at toy size."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from zerodl import bench, kernels


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One tiny ``python -m zerodl.bench --quick`` run (numpy and numba workers, ch5 included)."""
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = bench.main(["--quick", "--size", "tiny", "--no-torch", "--min-time", "0.001", "--repeats", "2",
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
    assert two["torch"] is None and two["vs_torch"] is None  # --no-torch
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
        if ("%s" % op, "numpy") not in kernels.REGISTRY:
            continue
        args, shape = build(rng, np.dtype(np.float32), "tiny")
        kernels.get(op, "numpy")(*args)  # the builder produces a valid call
        assert isinstance(shape, str) and shape


def test_torch_step_runs_when_torch_is_installed():
    pytest.importorskip("torch")
    spec = bench.step_specs("tiny")[0]
    step = bench._torch_step_case(spec, 0)
    first = float(step().detach())
    for _ in range(40):
        last = float(step().detach())
    assert np.isfinite(first) and last < first  # it trains
    for spec in bench.step_specs("tiny")[2:]:  # the conv nets' torch twins build and run
        out = bench._torch_step_case(spec, 0)()
        assert np.isfinite(float(out.detach() if hasattr(out, "detach") else out))


@pytest.mark.parametrize("kwargs,match", [
    ({"size": "huge"}, "size"), ({"rounds": 0}, "rounds"), ({"min_time": 0}, "min_time"),
    ({"dtypes": ("float16",)}, "dtypes"), ({"contenders": ("jax",)}, "contenders"),
    ({"ch5_data": "cifar"}, "ch5_data"),
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
    assert cfg.rounds == 2 and cfg.dtypes == ("float32",) and "torch" not in cfg.contenders


def test_zerodl_cli_has_the_bench_command():
    cli = pytest.importorskip("zerodl.cli")
    args = cli.build_parser().parse_args(["bench", "--quick"])
    assert args.func is bench.run_cli

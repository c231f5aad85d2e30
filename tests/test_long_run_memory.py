"""Long runs stay flat: 2,000 fused training steps do not grow the process's memory (issue 19).

``benchmarks_scripts/long_run_rss.py --small`` trains a small SimpleConvNet (1x12x12, 8 5x5 filters,
hidden 30, batch 32: the full chapter 7 network takes ~20 s for 2,000 steps, over this suite's
budget) and a MultiLayerNet 196-50x3-10 (batch 32), each in a fresh process of its own so that no
other test's allocations interfere, drawing a random batch from a pool every step as training does.
After 300 warm-up steps (buffers, kernels, allocator pools) the resident set must stay within
:data:`RSS_BOUND_MB` of its value, and the number of Python objects the garbage collector tracks
must not grow (beyond :data:`OBJECTS_BOUND`). zerodl's task-thread pool is filled before the
first step (it starts threads lazily, and a thread started late brings ≈ 1.5 MiB of stack and malloc
arena: bounded, not a leak, but it would read as growth; the script's ``start_task_threads``).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks_scripts" / "long_run_rss.py"
STEPS, WARMUP, EVERY = 2000, 300, 100
#: Allowed RSS growth after the warm-up. A leak of even 1 KiB per step would pass 1.7 MiB here;
#: measured growth is 0-0.2 MiB (allocator noise).
RSS_BOUND_MB = 1.5
#: Allowed growth of gc-tracked Python objects (measured: 0 or fewer); one object a step would be 1,700.
OBJECTS_BOUND = 100


def test_two_thousand_fused_steps_stay_flat(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SCRIPT.parents[1]), MPLBACKEND="Agg")
    out = tmp_path / "rss"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--steps", str(STEPS), "--warmup", str(WARMUP), "--every",
         str(EVERY), "--out", str(out), "--no-plot", "--quiet"],
        capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    runs = {run["net"]: run for run in json.loads(out.with_suffix(".json").read_text())["runs"]}
    assert set(runs) == {"simple-conv", "mlp"}
    for net, run in runs.items():
        assert run["step_path"] == "fused", net
        steps = [s["step"] for s in run["samples"]]
        assert steps[0] == 0 and steps[-1] == STEPS and WARMUP in steps
        summary = run["summary"]
        assert summary["rss_after_warmup_mb"] > 10  # a real reading of VmRSS, not a placeholder
        assert summary["max_growth_mb"] < RSS_BOUND_MB, (net, summary)
        assert summary["py_objects_growth"] < OBJECTS_BOUND, (net, summary)
        assert summary["threads_max"] == summary["threads_after_warmup"], (net, summary)
    rows = out.with_suffix(".csv").read_text().splitlines()
    assert rows[0] == "net,step,rss_mb,seconds,py_objects,threads" and len(rows) == 1 + sum(len(r["samples"]) for r in runs.values())

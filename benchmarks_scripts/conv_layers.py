"""Per-layer convolution and pooling speed of the book's conv nets: zerodl Numba, zerodl NumPy, PyTorch.

For every convolution of DeepConvNet (six 3x3 layers) and SimpleConvNet (30 filters 5x5) and every
2x2 max pooling, in float32 and float64, batch 100: the forward and the backward time (median and
minimum of ``--repeat`` calls, each on a batch drawn at random from a ``--pool``-image data set, so
the inputs come from memory as in training) and the rate in GFLOP/s (``2·N·FN·C·FH·FW·OH·OW`` for a
forward; twice that for a backward with ``dx``, once for the first layer, which needs no ``dx``).

Then the whole conv stack of each net (every conv + ReLU, the 2x2 poolings), forward and backward,
as a fused training step runs it (zerodl: ``conv_relu_pool`` / ``conv_relu``; PyTorch: autograd).

Each contender runs in its own subprocess (one thread pool per process, see NUMBA-NOTES "Threads"),
with ``--threads`` threads (default 2): zerodl through :func:`zerodl.set_num_threads`, PyTorch through
``torch.set_num_threads`` (``F.conv2d`` / ``F.max_pool2d`` forward, backward through autograd, as a
training step runs them). Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks_scripts/conv_layers.py [--repeat 20] [--dtype float32]
        [--contenders numba numpy torch] [--net deep simple]

On a shared machine run it twice; the minimum column is the less noisy one.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

BATCH = 100

#: (name, C, H, W, FN, F, pad, pool after) of the books' convolutions (MNIST 1x28x28 input).
LAYERS = {
    "deep": [
        ("deep.conv1", 1, 28, 28, 16, 3, 1, False),
        ("deep.conv2", 16, 28, 28, 16, 3, 1, True),
        ("deep.conv3", 16, 14, 14, 32, 3, 1, False),
        ("deep.conv4", 32, 14, 14, 32, 3, 2, True),
        ("deep.conv5", 32, 8, 8, 64, 3, 1, False),
        ("deep.conv6", 64, 8, 8, 64, 3, 1, True),
    ],
    "simple": [("simple.conv1", 1, 28, 28, 30, 5, 0, True)],
}


def _flops(c: int, h: int, w: int, fn: int, f: int, pad: int) -> float:
    oh, ow = h + 2 * pad - f + 1, w + 2 * pad - f + 1
    return 2.0 * BATCH * fn * c * f * f * oh * ow


def _time(fn, batches, repeat: int) -> tuple[float, float]:
    fn(batches[0])  # warm-up (JIT compile or cache load, buffers)
    times = []
    for i in range(repeat):
        b = batches[(i + 1) % len(batches)]
        t0 = time.perf_counter()
        fn(b)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def _layer_rows(contender: str, mods: dict, dtype: str, layer: tuple, repeat: int, pool: int,
                rng: np.random.Generator) -> list[dict]:
    """Forward and backward rows of one convolution (and of the pooling after it)."""
    name, c, h, w, fn, f, pad, pooled = layer
    rows = []
    data = rng.standard_normal((pool, c, h, w)).astype(dtype)
    Wt = (0.1 * rng.standard_normal((fn, c, f, f))).astype(dtype)
    b = (0.1 * rng.standard_normal(fn)).astype(dtype)
    oh, ow = h + 2 * pad - f + 1, w + 2 * pad - f + 1
    douts = rng.standard_normal((4, BATCH, fn, oh, ow)).astype(dtype)
    idx = [rng.choice(pool, BATCH, replace=False) for _ in range(8)]
    need_dx = c > 1  # a network's first layer computes no dx
    fl = _flops(c, h, w, fn, f, pad)
    if contender == "torch":
        torch, F = mods["torch"], mods["F"]
        Wt_t = torch.from_numpy(Wt).requires_grad_(True)
        b_t = torch.from_numpy(b).requires_grad_(True)

        def fwd(i):
            with torch.no_grad():
                F.conv2d(torch.from_numpy(data[i]), Wt_t, b_t, 1, pad)

        def bwd(i):
            xt = torch.from_numpy(data[i]).requires_grad_(need_dx)
            out = F.conv2d(xt, Wt_t, b_t, 1, pad)
            t0 = time.perf_counter()
            out.backward(torch.from_numpy(douts[i[0] % 4]))
            Wt_t.grad = None
            b_t.grad = None
            return time.perf_counter() - t0
    else:
        conv_f, conv_b = mods["conv_forward"], mods["conv_backward"]

        def fwd(i):
            conv_f(data[i], Wt, b, 1, pad)

        def bwd(i):
            x = data[i]
            _, keep = conv_f(x, Wt, b, 1, pad)
            t0 = time.perf_counter()
            conv_b(douts[i[0] % 4], x, Wt, keep, 1, pad, need_dx)
            return time.perf_counter() - t0

    med, mn = _time(fwd, idx, repeat)
    rows.append({"layer": name, "phase": "forward", "med": med, "min": mn, "flops": fl})
    bwd(idx[0])
    bt = [bwd(idx[(k + 1) % len(idx)]) for k in range(repeat)]
    rows.append({"layer": name, "phase": "backward", "med": 1e3 * float(np.median(bt)),
                 "min": 1e3 * float(np.min(bt)), "flops": fl * (2 if need_dx else 1)})
    if pooled:
        rows += _pool_rows(contender, mods, dtype, name, fn, oh, ow, repeat, pool, rng)
    return rows


def _pool_rows(contender: str, mods: dict, dtype: str, name: str, fn: int, oh: int, ow: int, repeat: int,
               pool: int, rng: np.random.Generator) -> list[dict]:
    """Forward and backward rows of the 2x2 max pooling of a convolution's output."""
    y = rng.standard_normal((pool // 4, fn, oh, ow)).astype(dtype)
    pidx = [rng.choice(len(y), BATCH, replace=False) for _ in range(8)]
    if contender == "torch":
        torch, F = mods["torch"], mods["F"]

        def pf(i):
            with torch.no_grad():
                F.max_pool2d(torch.from_numpy(y[i]), 2, 2)

        def pb(i):
            yt = torch.from_numpy(y[i]).requires_grad_(True)
            o = F.max_pool2d(yt, 2, 2)
            g = torch.ones_like(o)
            t0 = time.perf_counter()
            o.backward(g)
            return time.perf_counter() - t0
    else:
        pool_f, pool_b = mods["max_pool_forward"], mods["max_pool_backward"]

        def pf(i):
            pool_f(y[i], 2, 2, 2, 0)

        def pb(i):
            o, arg = pool_f(y[i], 2, 2, 2, 0)
            g = np.ones_like(o)
            t0 = time.perf_counter()
            pool_b(g, arg, y[i].shape, 2, 2, 2, 0)
            return time.perf_counter() - t0
    med, mn = _time(pf, pidx, repeat)
    rows = [{"layer": name + "+pool", "phase": "forward", "med": med, "min": mn, "flops": 0.0}]
    pb(pidx[0])
    bt = [pb(pidx[(k + 1) % len(pidx)]) for k in range(repeat)]
    rows.append({"layer": name + "+pool", "phase": "backward", "med": 1e3 * float(np.median(bt)),
                 "min": 1e3 * float(np.min(bt)), "flops": 0.0})
    return rows


def _stack_rows(contender: str, mods: dict, dtype: str, net: str, repeat: int, pool: int,
                rng: np.random.Generator) -> list[dict]:
    """The whole conv stack of ``net`` (every conv + ReLU, 2x2 pooling where the net pools), forward
    and backward, as a fused training step would run it: zerodl's ``conv_relu_pool`` for the pooled
    layers and ``conv_relu`` for the others (the first layer without dx); PyTorch's conv2d, relu and
    max_pool2d through autograd."""
    layers = LAYERS[net]
    data = rng.random((pool, *layers[0][1:4])).astype(dtype)
    params = [((0.1 * rng.standard_normal((fn, c, f, f))).astype(dtype), np.zeros(fn, dtype=dtype))
              for _, c, _, _, fn, f, _, _ in layers]
    idx = [rng.choice(pool, BATCH, replace=False) for _ in range(8)]
    flops = sum(_flops(c, h, w, fn, f, pad) for _, c, h, w, fn, f, pad, _ in layers)
    bwd_flops = sum(_flops(c, h, w, fn, f, pad) * (2 if c > 1 else 1) for _, c, h, w, fn, f, pad, _ in layers)
    if contender == "torch":
        torch, F = mods["torch"], mods["F"]
        tparams = [(torch.from_numpy(W).requires_grad_(True), torch.from_numpy(b).requires_grad_(True))
                   for W, b in params]

        def forward(x, grad):
            h = torch.from_numpy(x)
            with torch.set_grad_enabled(grad):
                for (_, _, _, _, _, _, pad, pooled), (W, b) in zip(layers, tparams):
                    h = F.relu(F.conv2d(h, W, b, 1, pad))
                    if pooled:
                        h = F.max_pool2d(h, 2, 2)
            return h

        def fwd(i):
            forward(data[i], False)

        def step(i):
            h = forward(data[i], True)
            t0 = time.perf_counter()
            h.backward(torch.ones_like(h))
            for W, b in tparams:
                W.grad = b.grad = None
            return time.perf_counter() - t0
    else:
        crp_f, crp_b = mods["conv_relu_pool_forward"], mods["conv_relu_pool_backward"]
        cr_f, cr_b = mods["conv_relu_forward"], mods["conv_relu_backward"]

        def forward(x):
            saved = []
            h = x
            for (_, _, _, _, _, _, pad, pooled), (W, b) in zip(layers, params):
                if pooled:
                    out, arg, keep = crp_f(h, W, b, 1, pad)
                    saved.append((h, out, arg, keep))
                else:
                    out, keep = cr_f(h, W, b, 1, pad)
                    saved.append((h, out, None, keep))
                h = out
            return h, saved

        def fwd(i):
            forward(data[i])

        def step(i):
            h, saved = forward(data[i])
            t0 = time.perf_counter()
            g = np.ones_like(h)
            for k in range(len(layers) - 1, -1, -1):
                (_, _, _, _, _, _, pad, pooled), (W, _) = layers[k], params[k]
                x, out, arg, keep = saved[k]
                if pooled:
                    g, _, _ = crp_b(g, out, arg, x, W, keep, 1, pad, k > 0)
                else:
                    g, _, _ = cr_b(g, out, x, W, keep, 1, pad, k > 0)
            return time.perf_counter() - t0

    med, mn = _time(fwd, idx, repeat)
    rows = [{"layer": f"{net} conv stack", "phase": "forward", "med": med, "min": mn, "flops": flops}]
    step(idx[0])
    bt = [step(idx[(k + 1) % len(idx)]) for k in range(repeat)]
    rows.append({"layer": f"{net} conv stack", "phase": "backward", "med": 1e3 * float(np.median(bt)),
                 "min": 1e3 * float(np.min(bt)), "flops": bwd_flops})
    return rows


def _worker(contender: str, dtype: str, nets: list[str], repeat: int, pool: int, threads: int) -> list[dict]:
    """Time every layer of ``nets`` with one contender; returns one dict per (layer, phase)."""
    rng = np.random.default_rng(0)
    if contender == "torch":
        import torch
        import torch.nn.functional as F

        torch.set_num_threads(threads)
        mods = {"torch": torch, "F": F}
    else:
        import zerodl
        from zerodl import kernels

        zerodl.set_num_threads(threads)
        mods = {op: kernels.get(op, contender)
                for op in ("conv_forward", "conv_backward", "max_pool_forward", "max_pool_backward",
                           "conv_relu_forward", "conv_relu_backward", "conv_relu_pool_forward",
                           "conv_relu_pool_backward")}
    rows = []
    for net in nets:
        for layer in LAYERS[net]:
            rows += _layer_rows(contender, mods, dtype, layer, repeat, pool, rng)
        rows += _stack_rows(contender, mods, dtype, net, repeat, pool, rng)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--pool", type=int, default=2000, help="images in the data set batches are drawn from")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    parser.add_argument("--net", nargs="+", default=["deep", "simple"], choices=sorted(LAYERS))
    parser.add_argument("--contenders", nargs="+", default=["numba", "numpy", "torch"])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        rows = _worker(args.worker, args.dtype[0], args.net, args.repeat, args.pool, args.threads)
        print(json.dumps(rows))
        return
    results: dict[tuple[str, str], dict] = {}
    for dtype in args.dtype:
        for contender in args.contenders:
            cmd = [sys.executable, __file__, "--worker", contender, "--dtype", dtype, "--repeat",
                   str(args.repeat), "--pool", str(args.pool), "--threads", str(args.threads), "--net", *args.net]
            # The workers import the zerodl of this checkout, not whichever one is installed.
            root = str(pathlib.Path(__file__).resolve().parents[1])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                print(f"# {contender} {dtype}: failed ({proc.stderr.strip().splitlines()[-1:]})")
                continue
            for row in json.loads(proc.stdout.strip().splitlines()[-1]):
                results[(dtype, contender, row["layer"], row["phase"])] = row
    print(f"batch {BATCH}, {args.threads} threads; ms median (min) per call; GFLOP/s from the min")
    print(f"{'dtype':8} {'layer':18} {'phase':8} " + " ".join(f"{c:>24}" for c in args.contenders))
    keys = sorted({k[2:] for k in results}, key=lambda k: (list(dict.fromkeys(r[2] for r in results)).index(k[0]),
                                                           k[1] != "forward"))
    for dtype in args.dtype:
        totals = dict.fromkeys(args.contenders, 0.0)
        for layer, phase in keys:
            cells = []
            for c in args.contenders:
                r = results.get((dtype, c, layer, phase))
                if r is None:
                    cells.append(f"{'-':>24}")
                    continue
                if "stack" not in layer:
                    totals[c] += r["med"]
                rate = f" {r['flops'] / r['min'] / 1e6:6.1f} GF/s" if r["flops"] else " " * 12
                cells.append(f"{r['med']:6.2f} ({r['min']:6.2f}){rate}")
            print(f"{dtype:8} {layer:18} {phase:8} " + " ".join(cells))
        print(f"{dtype:8} {'per-layer rows (medians)':27} "
              + " ".join(f"{totals[c]:21.1f} ms" for c in args.contenders))


if __name__ == "__main__":
    main()

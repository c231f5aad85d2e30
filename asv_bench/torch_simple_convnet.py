"""PyTorch eager reference for the SimpleConvNet training step, run in its own process.

Same network, batch, dtype and optimizer as ``bench_conv.SimpleConvNetStep``: conv 30×5×5 → ReLU →
max-pool 2×2/2 → Linear(4320, 100) → ReLU → Linear(100, 10), softmax cross-entropy, Adam
(lr 0.001), batch 100 of 1×28×28, float64. Kept out of ``benchmarks/`` so that asv never imports
torch (a second thread pool in the benchmark process). Usage::

    python asv_bench/torch_simple_convnet.py [--threads 2] [--steps 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dtype", default="float64")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    rng = np.random.default_rng(20240501)
    x = torch.tensor(rng.random((100, 1, 28, 28)), dtype=dtype)
    t = torch.tensor(rng.integers(0, 10, 100))
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 30, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2, 2), torch.nn.Flatten(),
        torch.nn.Linear(4320, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10),
    ).to(dtype)
    opt = torch.optim.Adam(net.parameters(), lr=0.001)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(x), t).backward()
        opt.step()

    for _ in range(3):
        step()
    medians = []
    for _ in range(args.rounds):
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
        medians.append(np.median(times))
    print(f"torch {torch.__version__} eager, {args.threads} threads, {args.dtype}: "
          f"SimpleConvNet step {1e3 * float(np.median(medians)):.1f} ms")


if __name__ == "__main__":
    main()

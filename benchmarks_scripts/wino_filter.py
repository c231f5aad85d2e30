"""Winograd's filter transform (``kernels/convolution._wino_filters``, W (FN, C, 3, 3) → U (16, FN, C)) on
the books' layer shapes: µs per transform, medians. DeepConvNet's step makes ten of them, serially (each
layer's forward, and the flipped filters of its dx); a plane of U that is a multiple of 4 KiB (FN·C = 1,024
float32, 512 float64) is the case the kernel's buffer is for.

Usage: ``python benchmarks_scripts/wino_filter.py [--repeats 300]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SHAPES = ((16, 1), (16, 16), (32, 16), (32, 32), (64, 32), (64, 64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per shape (default 300)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    from zerodl.kernels.convolution import _wino_filters

    print(f"{'FN x C':>8s} {'float32 µs':>11s} {'float64 µs':>11s}")
    for fn, c in SHAPES:
        row = []
        for dtype in (np.float32, np.float64):
            W = np.random.default_rng(fn * 100 + c).standard_normal((fn, c, 3, 3)).astype(dtype)
            _wino_filters(W)  # compile, or load from the cache
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                _wino_filters(W)
                times.append(time.perf_counter() - start)
            row.append(float(np.median(times)) * 1e6)
        print(f"{f'{fn}x{c}':>8s} {row[0]:>11.1f} {row[1]:>11.1f}")


if __name__ == "__main__":
    main()

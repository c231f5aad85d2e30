"""What the end-to-end DeepConvNet scripts of the peers print, in one format (and the peak RSS).

``torch_deepconv_train.py`` (PyTorch eager, or ``--compile``) and ``jax_deepconv_train.py`` print one line:

    <peer> <version> DeepConvNet <dtype>: <E> epochs (<S> steps) in <wall> s (<ms> ms/step); compile <c> s
    (before the loop, not in the wall time); test accuracy <acc> on <n> images; peak RSS <MB> MB

``peak RSS`` is the process's high-water resident set: ``VmHWM`` of /proc/self/status on Linux,
``ru_maxrss`` elsewhere (the same figure on Linux; kilobytes there, bytes on macOS).
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """The process's peak resident set so far, in MB (2**20 bytes)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def report_line(peer: str, dtype: str, epochs: int, steps: int, wall: float, compile_s: float,
                accuracy: float, n_test: int) -> str:
    """The one result line (see the module docstring)."""
    return (f"{peer} DeepConvNet {dtype}: {epochs} epochs ({steps} steps) in {wall:.1f} s "
            f"({wall / max(steps, 1) * 1e3:.1f} ms/step); compile {compile_s:.1f} s (before the loop, not in "
            f"the wall time); test accuracy {accuracy:.4f} on {n_test} images; peak RSS {peak_rss_mb():.0f} MB")


def peer_arguments(description: str) -> argparse.ArgumentParser:
    """The options every peer script shares with ``zerodl train --net deep-conv`` (a script adds its own)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-images", type=int, default=None, help="train on the first N images only")
    return p

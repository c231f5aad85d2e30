"""The speed table of ``zerodl bench`` as a picture: ``zerodl bench --plot FILE.png``.

One group of horizontal bars per training-step row of the table (time per step, log scale, one bar
per contender and path: NumPy book / fused, Numba layers / fused, PyTorch eager, and whatever other
contender the results hold), and, when kernels were measured, a second panel with each kernel's
Numba-over-NumPy speedup. The contenders are read from the results themselves (``medians``), so a
new contender of :mod:`zerodl.bench` gets its bars without a change here.

Re-plot saved results without measuring again::

    python -m zerodl.plots_bench RESULTS.json FILE.png

Like :mod:`zerodl.plots`: matplotlib imported inside the functions, a bare :class:`~matplotlib.figure.Figure`
with the Agg canvas (no pyplot), rendered into memory and written with
:func:`zerodl._fileio.atomic_write`.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zerodl._fileio import OutputPathError, atomic_write, check_output_paths, read_regular_file

PathLike = str | os.PathLike[str]

#: Picture formats ``--plot`` writes (matplotlib's Agg, vector and Pillow writers; not ``pgf``,
#: which needs LaTeX, nor the raw pixel dumps ``raw``/``rgba``).
IMAGE_FORMATS: tuple[str, ...] = ("png", "svg", "svgz", "pdf", "eps", "ps", "jpg", "jpeg", "tif", "tiff", "webp")

#: Bar colours of the usual contenders (others get the remaining tab10 colours in order).
_COLOURS = {"numpy book": "#9e9e9e", "numpy fused": "#616161", "numba layers": "#90caf9",
            "numba fused": "#1565c0", "torch": "#e65100"}
_VARIANT_ORDER = {"book": 0, "layers": 1, "fused": 2}


def check_plot_path(path: PathLike, label: str = "--plot") -> None:
    """Refuse, before any measuring, a picture path that cannot be written.

    Raises:
        OutputPathError: one line naming ``label`` and the path: the suffix is not a picture format
            matplotlib writes (:data:`IMAGE_FORMATS`), the folder does not exist, or
            :func:`zerodl._fileio.check_output_paths` refuses the path (a directory, not writable,
            an existing model or JSON file that would be lost).
    """
    text = os.fspath(path)
    suffix = Path(text).suffix.lower().lstrip(".")
    if suffix not in IMAGE_FORMATS:
        raise OutputPathError(f"{label} {text}: expected a picture file name ending in one of "
                              f"{', '.join('.' + s for s in IMAGE_FORMATS)}, got "
                              f"{'.' + suffix if suffix else 'no suffix'}")
    folder = os.path.dirname(os.path.abspath(text))
    if not os.path.isdir(folder):
        raise OutputPathError(f"{label} {text}: the folder {folder} does not exist")
    # A PNG is a kind _fileio recognises: an existing model or JSON file is not replaced by a picture.
    check_output_paths([(label, text, "png")] if suffix == "png" else [(label, text)])


def _step_groups(results: dict[str, Any]) -> list[tuple[str, dict[str, float]]]:
    """``[(row title, {bar label: seconds per step})]`` in the table's order, from ``medians``."""
    groups: dict[str, dict[str, float]] = {}
    contenders = list(results.get("contenders") or results["medians"])
    rank: dict[str, tuple[int, int, str]] = {}
    for contender, cases in results["medians"].items():
        for case, seconds in cases.items():
            parts = case.split("/")
            if len(parts) != 3 or parts[0] != "step" or not seconds:
                continue
            _, key, variant = parts
            bar = contender if variant == contender else f"{contender} {variant}"
            groups.setdefault(key, {})[bar] = float(seconds)
            position = contenders.index(contender) if contender in contenders else len(contenders)
            rank[bar] = (position, _VARIANT_ORDER.get(variant, 3), variant)
    # The table's titles and order (``zerodl bench`` stores them with the results); a key without a
    # title keeps its own name, after the others.
    titles: dict[str, str] = dict(results.get("step_titles") or {})
    order = [k for k in titles if k in groups] + sorted(k for k in groups if k not in titles)
    return [(titles.get(k, k), dict(sorted(groups[k].items(), key=lambda kv: rank[kv[0]]))) for k in order]


def _kernel_speedups(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{dtype: {op: numpy time / numba time}}`` of the kernel rows."""
    out: dict[str, dict[str, float]] = {}
    for row in results.get("rows", []):
        if row.get("section") == "kernel" and row.get("speedup"):
            out.setdefault(row["dtype"], {})[row["name"]] = float(row["speedup"])
    return out


def _ms_text(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1e3:.3g} s"


def _title(results: dict[str, Any]) -> str:
    m, cfg = results.get("machine", {}), results.get("config", {})
    load = m.get("loadavg_before")
    parts = [f"{m.get('cpu_count', '?')} CPUs", f"{cfg.get('threads', '?')} thread(s) per contender",
             f"{cfg.get('rounds', '?')} rounds, medians"]
    if load:
        parts.append(f"load {load[0]:.2f}")
    if results.get("date"):
        parts.append(str(results["date"]))
    return "zerodl bench: " + ", ".join(parts)


def plot_bench(results: dict[str, Any], path: PathLike) -> Path:
    """Draw :func:`zerodl.bench.run_bench`'s ``results`` into ``path`` (format from its suffix).

    Panel 1: one group per training-step row, one bar per contender/path, time per step (log scale,
    labelled). Panel 2 (when kernels were measured): Numba-over-NumPy speedup per kernel op and dtype.

    Raises:
        ValueError: ``results`` holds no step or kernel timing to draw (or not the structure of
            ``run_bench``'s results).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(results, dict) or not isinstance(results.get("medians"), dict):
        raise ValueError("bench results: expected zerodl bench's results (a 'medians' mapping)")  # noqa: TRY004
    groups = _step_groups(results)
    kernels = _kernel_speedups(results)
    if not groups and not kernels:
        raise ValueError("bench results: no training step or kernel timing to draw")
    bars = list(dict.fromkeys(bar for _, g in groups for bar in g))
    import matplotlib as mpl

    palette = [c for c in mpl.colormaps["tab10"].colors]
    colours = {bar: _COLOURS.get(bar) or palette[(i + 3) % len(palette)] for i, bar in enumerate(bars)}
    ops = sorted({op for d in kernels.values() for op in d})
    step_height = sum(0.22 * len(g) + 0.35 for _, g in groups)
    kernel_height = 0.2 * len(ops) * max(len(kernels), 1) + 0.8 if kernels else 0.0
    fig = Figure(figsize=(10, 1.4 + step_height + kernel_height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    panels = fig.subplots(2 if groups and kernels else 1, 1, squeeze=False,
                          height_ratios=[step_height, kernel_height] if groups and kernels else None)[:, 0]
    fig.suptitle(_title(results), fontsize=10)
    if groups:
        ax = panels[0]
        y, ticks, labels = 0.0, [], []
        drawn: set[str] = set()
        for title, g in groups:
            start = y
            for bar, seconds in g.items():
                ax.barh(y, seconds * 1e3, height=0.8, color=colours[bar],
                        label=None if bar in drawn else bar)
                ax.text(seconds * 1e3 * 1.04, y, _ms_text(seconds), va="center", fontsize=7)
                drawn.add(bar)
                y += 1
            ticks.append((start + y - 1) / 2)
            labels.append(title)
            y += 0.8
        ax.set_yticks(ticks, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        lo = min(s for _, g in groups for s in g.values()) * 1e3
        hi = max(s for _, g in groups for s in g.values()) * 1e3
        ax.set_xlim(lo / 2, hi * 4)  # room for the labels at the bars' ends
        ax.set_xlabel("ms per training step (log scale; shorter is faster)")
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title("Training steps and inference, each contender in its own process", fontsize=9)
    if kernels:
        ax = panels[-1]
        dtypes = sorted(kernels)
        width = 0.8 / len(dtypes)
        for j, dt in enumerate(dtypes):
            ys = [i + (j - (len(dtypes) - 1) / 2) * width for i in range(len(ops))]
            values = [kernels[dt].get(op, math.nan) for op in ops]
            ax.barh(ys, values, height=width, label=dt, color=("#1565c0", "#90caf9")[j % 2])
            for yy, v in zip(ys, values):
                if math.isfinite(v):
                    ax.text(v * 1.04, yy, f"{v:.2f}x" if v < 10 else f"{v:.0f}x", va="center", fontsize=6)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(range(len(ops)), ops, fontsize=7)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("Numba twin speedup over the NumPy twin (log scale; > 1: Numba faster)")
        ax.grid(axis="x", which="major", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title("Kernels", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lower().lstrip("."))
    with atomic_write(path, "wb") as f:
        f.write(buf.getbuffer())
    return Path(path)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m zerodl.plots_bench RESULTS.json FILE.png``: re-plot a ``zerodl bench --json`` file."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zerodl.plots_bench", description=main.__doc__)
    parser.add_argument("results", metavar="RESULTS.json", help="written by zerodl bench --json")
    parser.add_argument("plot", metavar="FILE.png", help="the picture to write")
    args = parser.parse_args(argv)
    try:
        check_plot_path(args.plot, "FILE.png")
        results = json.loads(read_regular_file(args.results, "bench results"))
        plot_bench(results, args.plot)
    except (OSError, ValueError) as exc:  # OutputPathError and json.JSONDecodeError are ValueErrors
        print(f"plots_bench: error: {exc}", file=sys.stderr)
        return 1
    print(f"saved {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

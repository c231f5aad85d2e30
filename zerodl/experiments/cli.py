"""``zerodl experiment NAME``: the chapter 6 experiments on the command line.

:func:`add_subparsers` registers the ``experiment`` command on the main ``zerodl`` parser (the
project's :mod:`zerodl.cli` calls it); :func:`main` runs the same parser standalone
(``python -m zerodl.experiments optimizers --quick``).

Every experiment prints its table on stdout, progress lines on stderr, and writes a PNG (``--out``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from zerodl.backend import BACKENDS

#: name → (module, one-line help)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "optimizers": ("optimizers", "SGD/Momentum/Nesterov/AdaGrad/RMSprop/Adam on x²/20 + y² and on digits"),
    "init": ("init", "weight init std 0.01 vs Xavier vs He: activation histograms and loss curves"),
    "batchnorm": ("batchnorm", "batch normalization vs none over several weight scales"),
    "overfit": ("overfit", "overfitting on a small subset, with/without weight decay and dropout"),
    "search": ("search", "hyperparameter random search (lr, weight decay) on a validation split"),
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def search_results_path(args: argparse.Namespace) -> str:
    """``zerodl experiment search``'s results file: ``--results``, else ``--out`` with ``.json``."""
    if getattr(args, "results", None):
        return str(args.results)
    out = getattr(args, "out", None) or "zerodl-search.png"
    return str(Path(out).with_suffix(".json"))


def _runner(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        module = importlib.import_module(f"zerodl.experiments.{EXPERIMENTS[name][0]}")
        kwargs: dict[str, Any] = {
            "quick": args.quick, "seed": args.seed, "backend": args.backend, "dataset": args.dataset,
            "data_dir": args.data_dir, "progress": not args.no_progress,
        }
        if name == "search":
            kwargs.update(trials=args.trials, workers=args.workers, executor=args.executor,
                          scheduler=args.scheduler)
            if args.scheduler and args.executor != "dask":
                kwargs["executor"] = "dask"  # an address only makes sense for Dask
        out = args.out or f"zerodl-{name}.png"
        outputs = [out]
        if name == "search":
            kwargs["results"] = search_results_path(args)
            kwargs["resume"] = args.resume
            outputs.append(kwargs["results"])
        from zerodl._runlock import OutputInUseError, hold_outputs
        from zerodl.experiments.search import SearchInterrupted

        try:
            # The run owns its outputs until it ends (already held when run by the zerodl command).
            with hold_outputs(outputs, command=f"zerodl experiment {name}"):
                result = module.run(out, **kwargs)
        except OutputInUseError as exc:
            print(f"zerodl experiment {name}: error: {exc}", file=sys.stderr)
            return 1
        except (ValueError, FileNotFoundError, RuntimeError) as exc:
            # One line, as every zerodl error (a loader's message may span several).
            message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            print(f"zerodl experiment {name}: error: {message}", file=sys.stderr)
            return 2
        except SearchInterrupted as exc:  # Ctrl-C / SIGTERM: what finished is kept, one line says where
            print(f"zerodl experiment {name}: {exc}", file=sys.stderr)
            return exc.exit_code
        print(result.table)
        print(f"\nwrote {result.figure} ({result.seconds:.1f}s)")
        return 0

    return run


def add_subparsers(subparsers: Any) -> None:
    """Register ``experiment`` (with sub-commands optimizers | init | batchnorm | overfit | search).

    ``subparsers`` is what ``parser.add_subparsers()`` returned; each leaf parser sets
    ``func=callable(args) -> int`` (the exit code) via ``set_defaults``.
    """
    exp = subparsers.add_parser(
        "experiment", help="run a chapter 6 experiment (table on stdout, PNG figure)",
        description="Experiments of the book's chapter 6. Each prints a table and writes a PNG.",
    )
    exp_sub = exp.add_subparsers(dest="experiment", metavar="NAME", required=True)
    for name, (_, help_text) in EXPERIMENTS.items():
        p = exp_sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--out", metavar="PNG", help=f"figure path (default zerodl-{name}.png)")
        p.add_argument("--quick", action="store_true", help="tiny sizes: seconds instead of a minute")
        p.add_argument("--seed", type=int, default=0, help="seed of data split, weights and batches (default 0)")
        p.add_argument("--backend", choices=BACKENDS, default=None, help="kernel backend (default: active)")
        p.add_argument("--dataset", choices=("digits", "mnist"), default="digits",
                       help="digits (8×8, always available) or mnist (local files, no download)")
        p.add_argument("--data-dir", default=None, help="directory of the MNIST files")
        p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
        if name == "search":
            p.add_argument("--trials", type=_positive_int, default=None, help="number of trials (default 100, quick 6)")
            p.add_argument("--workers", type=_positive_int, default=None, help="worker processes (default: CPU count)")
            p.add_argument("--executor", choices=("serial", "process", "dask"), default="process",
                           help="where trials run (default process)")
            p.add_argument("--scheduler", metavar="ADDRESS", default=None,
                           help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (implies --executor dask)")
            p.add_argument("--results", metavar="JSON", default=None,
                           help="results file, rewritten as each trial finishes (default: --out with .json)")
            p.add_argument("--resume", action="store_true",
                           help="continue the search in --results: its finished trials are not run again "
                                "(same --seed, --trials, --dataset, --quick, --backend, or it is refused)")
        p.set_defaults(func=_runner(name))


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point: ``python -m zerodl.experiments NAME [options]``."""
    parser = argparse.ArgumentParser(prog="python -m zerodl.experiments")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subparsers(sub)
    args = parser.parse_args(["experiment", *(argv if argv is not None else sys.argv[1:])])
    return int(args.func(args))

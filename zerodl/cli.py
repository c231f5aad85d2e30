"""The ``zerodl`` command: ``train``, ``evaluate``, ``gradcheck`` (and plug-in subcommands).

Run ``zerodl --help`` or ``python -m zerodl --help``. Exit codes: 0 success, 1 a user-facing failure
(missing dataset, unreadable model, full disk, failed gradient check), 2 bad usage (argparse's option
checks, and output paths or sizes refused before any work), 128 + the signal when ``train`` is stopped
by one (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP). Every error is one line on stderr,
``zerodl <command>: error: <what, naming the option, variable or file>`` (argparse prints its usage
line first); see :func:`main`.

Heavy modules (matplotlib, tqdm, scikit-learn, dask) are imported inside the commands, never at
import time, so the command starts quickly.

Adding a network to ``zerodl train``: add an entry to :data:`NET_BUILDERS`, e.g.::

    NET_BUILDERS["simple-conv"] = NetSpec(build=_build_simple_conv, input="image",
                                          help="SimpleConvNet (conv-relu-pool-affine-relu-affine)",
                                          add_arguments=_simple_conv_arguments)

``build(args, input_shape, n_classes)`` receives the parsed arguments, the shape of one sample
(``(D,)`` for ``input="flat"``, ``(C, H, W)`` for ``input="image"``) and the number of classes.

Plug-ins: each module named in :data:`PLUGINS` that exists is imported when the parser is built
and its ``add_subparsers(subparsers)`` adds subcommands whose parsers ``set_defaults(func=...)``;
``func(args)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import itertools
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zerodl.layers.base import ACTIVATIONS

#: Modules that may contribute subcommands (owned elsewhere; skipped when not installed).
PLUGINS: tuple[str, ...] = ("zerodl.experiments.cli", "zerodl.bench")

DATASET_CHOICES: tuple[str, ...] = ("digits", "mnist")

#: Defaults when ``--epochs`` / ``--lr`` are not given, measured with the default MLP (100-100) and
#: Adam: digits 30 epochs at 3e-3 (96.2-97.8 %, mean 97.2 %, over --seed 0..9); MNIST's t10k split
#: 20 epochs at 1e-3 (95.6-96.1 % over 3 seeds; 3e-3 is noisier there). Other optimizers get the
#: book's Trainer default lr (0.01).
DATASET_DEFAULTS: dict[str, dict[str, float]] = {
    "digits": {"epochs": 30, "adam_lr": 3e-3},
    "mnist": {"epochs": 20, "adam_lr": 1e-3},
}
BOOK_LR = 0.01


def default_lr(dataset: str, optimizer: str) -> float:
    """The learning rate ``zerodl train`` uses when ``--lr`` is not given."""
    if optimizer.lower() == "adam":
        return DATASET_DEFAULTS[dataset]["adam_lr"]
    return BOOK_LR


class CLIError(Exception):
    """A user-facing failure: printed as one ``zerodl <cmd>: error: ...`` message, exit code 1."""

    exit_code = 1


class CLIUsageError(CLIError):
    """An option value refused before any work (an output path, a size): one line, exit code 2."""

    exit_code = 2


# -- network builders ---------------------------------------------------------------------------
@dataclass(frozen=True)
class NetSpec:
    """How ``zerodl train --net NAME`` builds a network.

    Attributes:
        build: ``build(args, input_shape, n_classes) -> network``.
        input: ``"flat"`` (samples ``(D,)``, dataset loaded with ``flatten=True``) or ``"image"``
            (samples ``(C, H, W)``, ``flatten=False``).
        help: one line for ``zerodl train --help``.
        add_arguments: optional ``f(parser)`` adding this network's own options to ``train``.

    ``build`` finds the common options on ``args`` (``hidden``, ``activation``, ``weight_decay``,
    ``dtype``) and ``args.net_rng``, the :class:`numpy.random.Generator` to initialise the weights
    with (derived from ``--seed``).
    """

    build: Callable[[argparse.Namespace, tuple[int, ...], int], Any]
    input: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


def _flat_size(input_shape: tuple[int, ...]) -> int:
    return int(np.prod(input_shape))


def _build_two_layer(args: argparse.Namespace, input_shape: tuple[int, ...], n_classes: int) -> Any:
    from zerodl.networks import TwoLayerNet

    if len(args.hidden) != 1:
        raise CLIError(f"--net two-layer has one hidden layer: give one --hidden size, got {args.hidden}")
    if args.activation not in (None, "relu"):
        raise CLIError("--net two-layer is the book's Affine-ReLU-Affine net: --activation must be relu")
    if args.weight_decay:
        raise CLIError("--net two-layer has no weight decay (the book's TwoLayerNet); use --net mlp")
    return TwoLayerNet(_flat_size(input_shape), args.hidden[0], n_classes, dtype=args.dtype, seed=args.net_rng)


def _build_mlp(args: argparse.Namespace, input_shape: tuple[int, ...], n_classes: int) -> Any:
    from zerodl.networks import MultiLayerNet

    activation = args.activation or "relu"
    return MultiLayerNet(
        _flat_size(input_shape), list(args.hidden), n_classes, activation=activation,
        weight_init_std=activation, weight_decay_lambda=args.weight_decay,
        dtype=args.dtype, seed=args.net_rng,
    )


def _build_simple_conv(args: argparse.Namespace, input_shape: tuple[int, ...], n_classes: int) -> Any:
    from zerodl.networks import SimpleConvNet

    # The book's 5x5 filters on 28x28 MNIST; 3x3 on smaller images (digits 8x8: 8 → 6 → pool 3).
    size = args.filter_size or (5 if min(input_shape[1:]) >= 20 else 3)
    conv_param = {"filter_num": args.filters, "filter_size": size, "pad": 0, "stride": 1}
    try:
        return SimpleConvNet(input_dim=input_shape, conv_param=conv_param, hidden_size=args.conv_hidden or 100,
                             output_size=n_classes, dtype=args.dtype, seed=args.net_rng)
    except ValueError as exc:
        raise CLIError(f"--net simple-conv on images of shape {input_shape}: {exc}") from None


def _build_deep_conv(args: argparse.Namespace, input_shape: tuple[int, ...], n_classes: int) -> Any:
    from zerodl.networks import DeepConvNet

    if tuple(input_shape[1:]) != (28, 28):
        raise CLIError(f"--net deep-conv is the book's MNIST network and needs 28x28 images "
                       f"(--dataset mnist); got {input_shape[1]}x{input_shape[2]}")
    return DeepConvNet(input_dim=input_shape, hidden_size=args.conv_hidden or 50, output_size=n_classes,
                       dtype=args.dtype, seed=args.net_rng)


def _conv_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("convolutional nets (--net simple-conv, deep-conv)")
    g.add_argument("--filters", type=_positive_int, default=30,
                   help="simple-conv: number of filters (default 30, the book's)")
    g.add_argument("--filter-size", type=_positive_int, default=None,
                   help="simple-conv: filter size (default 5 on 28x28 images as the book, 3 on smaller ones)")
    g.add_argument("--conv-hidden", type=_positive_int, default=None,
                   help="size of the hidden affine layer (default 100 simple-conv, 50 deep-conv)")
    g.add_argument("--filters-png", metavar="FILTERS.png", default=None,
                   help="save the first-layer filters before and after training (conv nets)")
    g.add_argument("--misclassified-png", metavar="WRONG.png", default=None,
                   help="save a grid of misclassified test images after training")


class _ConvPictures:
    """``train --filters-png / --misclassified-png``: checked and W1 recorded before training."""

    def __init__(self, args: argparse.Namespace, net: Any) -> None:
        self.filters_png = getattr(args, "filters_png", None)
        self.misclassified_png = getattr(args, "misclassified_png", None)
        self.initial_W1 = None
        if self.filters_png:
            W1 = net.params.get("W1")
            if W1 is None or W1.ndim != 4:
                raise CLIError("--filters-png draws convolution filters: use --net simple-conv or deep-conv")
            self.initial_W1 = W1.copy()

    def write(self, net: Any, x_test: np.ndarray, t_test: np.ndarray, backend: str) -> None:
        import zerodl

        if self.filters_png:
            from zerodl.plots_conv import plot_filters

            path = plot_filters((self.initial_W1, net.params["W1"]), self.filters_png,
                                title=f"{type(net).__name__}: first-layer filters")
            print(f"saved filters: {path}")
        if self.misclassified_png:
            from zerodl.plots_conv import plot_misclassified
            from zerodl.trainer import predict_labels

            with zerodl.use_backend(backend):
                pred = predict_labels(net, x_test)
            wrong = plot_misclassified(x_test, t_test, pred, self.misclassified_png)
            print(f"saved misclassified images: {self.misclassified_png} ({wrong} of {len(x_test)} misclassified)")


#: ``--net`` name → how to build it. Others add entries (convolutional nets) with small edits.
NET_BUILDERS: dict[str, NetSpec] = {
    "mlp": NetSpec(_build_mlp, "flat", "MultiLayerNet: (Affine-activation) x len(--hidden), Affine"),
    "two-layer": NetSpec(_build_two_layer, "flat", "the book's chapter 5 TwoLayerNet (one --hidden size)"),
    "simple-conv": NetSpec(_build_simple_conv, "image", "the book's chapter 7 SimpleConvNet "
                           "(conv-relu-pool-affine-relu-affine)", add_arguments=_conv_arguments),
    "deep-conv": NetSpec(_build_deep_conv, "image", "the book's chapter 8 DeepConvNet (MNIST 28x28 only)"),
}


# -- argument types -----------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


#: Largest seed accepted (NumPy's SeedSequence takes any non-negative int; 2**63 keeps it an int64).
MAX_SEED = 2**63 - 1
#: Largest --threads accepted: more threads than this only oversubscribes the machine.
MAX_THREADS = 1024


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer below 2**63, got {text!r}")
    return value


def _thread_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"expected 1 to {MAX_THREADS} threads, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not (value >= 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


# -- up-front checks: outputs, sizes, memory ------------------------------------------------------
def _outputs_and_inputs(args: argparse.Namespace) -> tuple[list[tuple[Any, ...]], list[tuple[str, Any]]]:
    """``(outputs, inputs)`` of the parsed command, plug-ins included: outputs as ``(option, path,
    kind)`` (see :func:`zerodl._fileio.check_output_paths`), inputs as ``(option, path)``.

    A plug-in may declare its own with ``parser.set_defaults(output_options=(("dest", "--option"), ...))``;
    ``zerodl experiment`` writes ``--out`` (default ``zerodl-NAME.png``); ``zerodl bench`` checks its
    ``--json`` itself with the same function (it also runs standalone, ``python -m zerodl.bench``).
    With ``--dataset mnist`` the dataset's files are inputs too.
    """
    command = getattr(args, "command", None)
    outputs: list[tuple[str, Any]] = []
    inputs: list[tuple[str, Any]] = []
    if command == "train":
        outputs += [("--save", args.save, "model"), ("--plot", args.plot, "png")]
        outputs += [("--filters-png", getattr(args, "filters_png", None), "png"),
                    ("--misclassified-png", getattr(args, "misclassified_png", None), "png")]
        outputs.append(("--checkpoint", args.checkpoint, "checkpoint"))
    elif command == "evaluate":
        inputs.append(("MODEL", args.model))
        outputs += [("--plot", args.plot, "png"), ("--misclassified-png", args.misclassified_png, "png")]
    elif command == "experiment" and getattr(args, "experiment", None):
        outputs.append(("--out", getattr(args, "out", None) or f"zerodl-{args.experiment}.png", "png"))
        if args.experiment == "search":
            from zerodl.experiments.cli import search_results_path

            outputs.append(("--results", search_results_path(args), "json"))
    for dest, option, *kind in getattr(args, "output_options", ()) or ():
        outputs.append((option, getattr(args, dest, None), *kind))
    if getattr(args, "dataset", None) == "mnist":  # an output must not overwrite the data either
        from zerodl.datasets import MNIST_FILES, default_data_dir

        data_dir = getattr(args, "data_dir", None)
        directory = Path(data_dir).expanduser() if data_dir else default_data_dir("mnist")
        inputs += [(f"the MNIST file {spec.name}", directory / spec.name) for spec in MNIST_FILES.values()]
    return outputs, inputs


def check_command_paths(args: argparse.Namespace) -> None:
    """Every output of the command checked before any work (:func:`zerodl._fileio.check_output_paths`).

    Raises :class:`CLIError` (one line naming the option) when an output cannot be written, is a
    directory or device, has a name the file system refuses, or is the same file as an input or as
    another output.
    """
    from zerodl._fileio import OutputPathError, check_output_paths

    outputs, inputs = _outputs_and_inputs(args)
    try:
        check_output_paths(outputs, inputs)
    except OutputPathError as exc:
        raise CLIUsageError(str(exc)) from None


def _available_memory() -> int | None:
    """Bytes of memory this process may still use: ``MemAvailable``, capped by a cgroup limit; or None."""
    best: int | None = None

    def cap(value: int | None) -> None:
        nonlocal best
        if value is not None and value >= 0:
            best = value if best is None else min(best, value)

    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    cap(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        try:
            cap(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (OSError, ValueError, AttributeError):
            pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, encoding="ascii") as f:
                limit = f.read().strip()
            with open(usage_file, encoding="ascii") as f:
                usage = int(f.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            cap(int(limit) - usage)
    return best


#: Shape of one sample, classes and the largest training split of each built-in dataset (known
#: before loading it, so sizes are checked before any data is read).
DATASET_SHAPES: dict[str, dict[str, Any]] = {
    "digits": {"image": (1, 8, 8), "classes": 10, "max_train": 1347},
    "mnist": {"image": (1, 28, 28), "classes": 10, "max_train": 60000},
}

#: Optimizer state arrays per parameter (what ``update`` keeps beside the gradient).
_OPTIMIZER_STATES = {"sgd": 0, "momentum": 1, "nesterov": 1, "adagrad": 1, "rmsprop": 1, "adam": 2}


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB"


def estimate_training_bytes(args: argparse.Namespace) -> tuple[int, int, int]:
    """``(parameter bytes, activation bytes, elements per parameter set)`` of ``zerodl train``'s run.

    An estimate from the option values alone, before any data is read or array built: parameters,
    gradients and optimizer state; activations (forward values, masks, backward values, im2col
    columns for convolutions) of one batch and of one evaluation chunk (MLPs evaluate a whole split
    at once). Good to a small factor, which is all a "refuse before allocating" check needs.
    """
    shape = DATASET_SHAPES[args.dataset]
    c, h, w = shape["image"]
    classes, n_eval = shape["classes"], shape["max_train"]
    item = np.dtype(args.dtype).itemsize
    copies = 2 + _OPTIMIZER_STATES.get(args.optimizer, 2)  # parameter, gradient, optimizer state
    batch = args.batch_size
    if args.net in ("mlp", "two-layer"):
        sizes = [c * h * w, *args.hidden, classes]
        params = sum(a * b + b for a, b in itertools.pairwise(sizes))
        per_sample = sizes[0] + 3 * sum(sizes[1:])
        activations = (batch + n_eval) * per_sample
    elif args.net == "simple-conv":
        fs = args.filter_size or (5 if min(h, w) >= 20 else 3)
        oh, ow = max(h - fs + 1, 1), max(w - fs + 1, 1)
        hidden = args.conv_hidden or 100
        pooled = args.filters * (oh // 2) * (ow // 2)
        params = args.filters * c * fs * fs + args.filters + pooled * hidden + hidden + hidden * classes + classes
        per_sample = oh * ow * (2 * c * fs * fs + 5 * args.filters) + 3 * hidden + 3 * classes
        activations = (batch + 100) * per_sample
    else:  # deep-conv: the book's fixed conv stack on 28x28 images, then --conv-hidden
        hidden = args.conv_hidden or 50
        params = 300_000 + 64 * 4 * 4 * hidden + hidden * classes
        per_sample = 28 * 28 * (16 * 9 * 2 + 16 * 6) + 3 * hidden
        activations = (batch + 100) * per_sample
    return params * item * copies, activations * item, params


def check_train_sizes(args: argparse.Namespace) -> None:
    """``zerodl train``'s sizes against the data and the machine's memory, before any allocation.

    Raises :class:`CLIError` naming the option: a ``--batch-size`` larger than any training split
    of the dataset, or a network + batch whose estimated memory (:func:`estimate_training_bytes`)
    exceeds what is available (:func:`_available_memory`).
    """
    shape = DATASET_SHAPES.get(args.dataset)
    if shape is None:
        return
    if args.batch_size > shape["max_train"]:
        raise CLIUsageError(f"--batch-size {args.batch_size}: more than the {shape['max_train']:,} training "
                            f"samples of {args.dataset}")
    param_bytes, activation_bytes, n_params = estimate_training_bytes(args)
    available = _available_memory()
    if available is None or param_bytes + activation_bytes <= available:
        return
    # Blame the batch only if the network alone (a batch of one) would fit.
    alone = sum(estimate_training_bytes(argparse.Namespace(**{**vars(args), "batch_size": 1}))[:2])
    if alone <= available:
        option = f"--batch-size {args.batch_size}"
    elif args.net in ("mlp", "two-layer"):
        option = "--hidden " + " ".join(map(str, args.hidden))
    else:
        option = " / ".join(f"{o} {v}" for o, v in (("--filters", getattr(args, "filters", None)),
                                                    ("--conv-hidden", getattr(args, "conv_hidden", None)))
                            if v is not None) or f"--net {args.net}"
    raise CLIUsageError(
        f"{option}: training needs about {_gib(param_bytes + activation_bytes)} ({n_params:,} parameters "
        f"with their gradients and {args.optimizer} state, and the activations of a batch of "
        f"{args.batch_size}), more than the {_gib(available)} of memory available"
    )


#: ``zerodl gradcheck`` computes two losses per parameter: more parameters than this take minutes.
GRADCHECK_MAX_PARAMS = 100_000
#: ... and the whole check (2 * params losses of samples * params multiply-adds) at most this much.
GRADCHECK_MAX_WORK = 10**11


def check_gradcheck_sizes(args: argparse.Namespace) -> None:
    """``zerodl gradcheck``'s sizes against the data and a bounded amount of work."""
    shape = DATASET_SHAPES.get(args.dataset)
    if shape is None:
        return
    d = int(np.prod(shape["image"]))
    classes = shape["classes"]
    if args.samples > shape["max_train"]:
        raise CLIUsageError(f"--samples {args.samples}: more than the {shape['max_train']:,} training samples "
                       f"of {args.dataset}")
    params = d * args.hidden + args.hidden + args.hidden * classes + classes
    if params > GRADCHECK_MAX_PARAMS:
        most = (GRADCHECK_MAX_PARAMS - classes) // (d + 1 + classes)
        raise CLIUsageError(f"--hidden {args.hidden}: {params:,} parameters; the numerical gradient takes two "
                            f"losses per parameter, so the check is limited to {GRADCHECK_MAX_PARAMS:,} "
                            f"(--hidden {most} or less on {args.dataset})")
    # Each of the 2 * params losses costs about samples * params multiply-adds.
    work = 2 * params * params * args.samples
    if work > GRADCHECK_MAX_WORK:
        most = max(1, GRADCHECK_MAX_WORK // (2 * params * params))
        raise CLIUsageError(f"--samples {args.samples} with --hidden {args.hidden}: the numerical gradient takes "
                            f"two losses per parameter, about {work:.1e} multiply-adds in all; the check is "
                            f"limited to {GRADCHECK_MAX_WORK:.0e} (--samples {most} or less at this size)")


def _check_saved_metadata(meta: Any, model: str) -> dict[str, Any]:
    """The user metadata of a saved model, its dataset fields type-checked (a file may be edited)."""
    if not isinstance(meta, dict):
        raise CLIError(f"{model}: its metadata is a {type(meta).__name__}, expected an object")
    kinds: dict[str, tuple[type, ...]] = {
        "dataset": (str,), "input": (str,), "dataset_split": (str,), "data_dir": (str,),
        "dataset_test_size": (int, float), "dataset_seed": (int,),
    }
    for key, types in kinds.items():
        value = meta.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types) or (
                isinstance(value, float) and not np.isfinite(value)):
            raise CLIError(f"{model}: metadata field {key!r} is {value!r}, expected a "
                           f"{' or '.join(t.__name__ for t in types)}")
    if meta.get("dataset") is not None and meta["dataset"] not in DATASET_CHOICES:
        raise CLIError(f"{model}: metadata field 'dataset' is {meta['dataset']!r}, expected one of "
                       f"{', '.join(DATASET_CHOICES)} (or pass --dataset)")
    if meta.get("input") is not None and meta["input"] not in ("flat", "image"):
        raise CLIError(f"{model}: metadata field 'input' is {meta['input']!r}, expected 'flat' or 'image'")
    if meta.get("dataset_split") is not None and meta["dataset_split"] not in ("auto", "official", "t10k",
                                                                               "stratified"):
        raise CLIError(f"{model}: metadata field 'dataset_split' is {meta['dataset_split']!r}, expected "
                       "official, t10k or stratified")
    seed = meta.get("dataset_seed")
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise CLIError(f"{model}: metadata field 'dataset_seed' is {seed!r}, expected a non-negative integer")
    size = meta.get("dataset_test_size")
    if size is not None and not (0 < size < 1 if isinstance(size, float) else 1 <= size <= 10**9):
        raise CLIError(f"{model}: metadata field 'dataset_test_size' is {size!r}, expected a fraction in "
                       "(0, 1) or a count")
    return meta


# -- data ---------------------------------------------------------------------------------------
def _load_data(name: str, *, flatten: bool, data_dir: str | None, download: bool = True,
               split: str | None = None, test_size: float | None = None,
               seed: int | None = None, one_hot_label: bool = False) -> Any:
    """Load ``name`` through :func:`zerodl.datasets.load_dataset` with the CLI's options."""
    from zerodl.datasets import DatasetFallbackWarning, load_dataset

    kwargs: dict[str, Any] = {"normalize": True, "flatten": flatten, "one_hot_label": one_hot_label}
    if test_size is not None:
        kwargs["test_size"] = test_size
    if seed is not None:
        kwargs["seed"] = seed
    if name == "mnist":
        kwargs.update(data_dir=data_dir, download=download)
        if split is not None:
            kwargs["split"] = split
    elif data_dir is not None:
        raise CLIError(f"--data-dir applies to --dataset mnist only ({name} is built in)")
    with warnings.catch_warnings():
        # The fallback to the t10k split is reported by the description printed below.
        warnings.simplefilter("ignore", DatasetFallbackWarning)
        return load_dataset(name, **kwargs)


def _num_classes(data: Any) -> int:
    n = getattr(data, "num_classes", 0)
    if n:
        return int(n)
    t = np.asarray(data[0][1])
    return int(t.shape[1]) if t.ndim == 2 else int(t.max()) + 1


def _dataset_metadata(args: argparse.Namespace, data: Any, input_layout: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"dataset": args.dataset, "input": input_layout}
    for key in ("split", "test_size", "seed", "description"):
        value = getattr(data, key, None)
        if value is not None:
            meta[f"dataset_{key}"] = value
    if args.data_dir is not None:
        meta["data_dir"] = str(Path(args.data_dir).resolve())
    return meta


def _input_layout(net: Any, meta: dict[str, Any]) -> str:
    """``"flat"`` or ``"image"``: from the saved metadata, else from the first layer's kind."""
    layout = meta.get("input")
    if layout in ("flat", "image"):
        return layout
    first = next(iter(getattr(net, "layers", {}).values()), None)
    return "flat" if type(first).__name__ == "Affine" else "image"


# -- train --------------------------------------------------------------------------------------
#: ``zerodl train`` options that define a run (its network, data and batches): ``--resume`` needs
#: the values the checkpoint was written with. ``--epochs``, ``--lr`` (see :func:`cmd_train`),
#: ``--checkpoint-every``, ``--backend``, ``--threads`` and the outputs may change.
RESUME_FIXED: tuple[str, ...] = ("dataset", "split", "net", "hidden", "activation", "weight_decay", "dtype",
                                 "optimizer", "batch_size", "seed", "filters", "filter_size", "conv_hidden")


def _option(key: str) -> str:
    return "--" + key.replace("_", "-")


def _run_config(args: argparse.Namespace) -> dict[str, Any]:
    """The run-defining options as effective JSON values (stored in the checkpoint as ``run``)."""
    config: dict[str, Any] = {"command": "train"}
    for key in RESUME_FIXED:
        value = getattr(args, key, None)
        if key == "activation" and value is None:
            value = "relu"
        elif key == "split" and value is None and args.dataset == "mnist":
            value = "auto"
        elif key == "seed" and value is None:
            value = 0
        elif isinstance(value, (list, tuple)):
            value = list(value)
        config[key] = value
    return config


def _check_checkpoint_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``--checkpoint`` / ``--resume`` / ``--restart``, checked before any data is loaded.

    Returns the metadata of the checkpoint ``--resume`` continues (``None``: a fresh run). A run
    never replaces another run's checkpoint unasked, and a resume refuses options it cannot honour.
    """
    if args.checkpoint is None:
        for flag, given in (("--resume", args.resume), ("--restart", args.restart),
                            ("--checkpoint-every", args.checkpoint_every is not None)):
            if given:
                raise CLIError(f"{flag} needs --checkpoint FILE")
        return None
    if args.resume and args.restart:
        raise CLIError("--resume continues the checkpoint's run and --restart replaces it: give one of them")
    path = Path(args.checkpoint)
    if path.is_dir():
        raise CLIError(f"--checkpoint {path} is a directory; expected a file name")
    if not os.path.lexists(path) or args.restart:
        return None
    if not args.resume:
        raise CLIError(f"--checkpoint {path} already exists (another run's checkpoint): pass --resume to "
                       "continue that run or --restart to start over and replace it")
    from zerodl.checkpoint import read_checkpoint

    meta, _ = read_checkpoint(path)  # a damaged or foreign file: CheckpointError, one line
    saved = meta.get("run")
    if not isinstance(saved, dict) or saved.get("command") != "train":
        return meta  # written by the library or by an older zerodl: the Trainer checks what it can
    mine = _run_config(args)
    differ = [key for key in RESUME_FIXED
              if key in saved and mine[key] != saved[key] and not (key == "seed" and args.seed is None)]
    if differ:
        theirs = ", ".join(f"{_option(k)} {saved[k]!r}" for k in differ)
        ours = ", ".join(f"{_option(k)} {mine[k]!r}" for k in differ)
        raise CLIError(f"--resume: {path} was written with {theirs}, this command has {ours}; a resumed run "
                       "continues the same network, data and batches (repeat the run's options, or "
                       "--restart to start over)")
    if args.seed is None and isinstance(saved.get("seed"), int):
        args.seed = saved["seed"]  # the run's seed, so what is printed and recorded is what was used
    return meta


def _resume(args: argparse.Namespace, trainer: Any, saved_meta: dict[str, Any] | None) -> None:
    """``--resume``: continue from ``--checkpoint`` when it exists (a first run starts afresh)."""
    if not args.resume:
        return
    if saved_meta is None:
        print(f"no checkpoint at {args.checkpoint} yet: starting from iteration 0")
        return
    # --lr given: honoured for the rest of the run; not given: the checkpoint's (see cmd_train).
    trainer.resume(args.checkpoint, hyperparams="trainer" if args.lr is not None else "same")
    print(f"resumed from {args.checkpoint} at iteration {trainer.current_iter} of {trainer.max_iter} "
          f"(epoch {trainer.current_epoch})")
    old_lr = saved_meta["optimizer"]["hyperparams"].get("lr")
    if args.lr is not None and old_lr is not None and float(old_lr) != args.lr:
        print(f"learning rate {args.lr:g} (--lr) replaces the checkpoint's {float(old_lr):g} from here on")


def cmd_train(args: argparse.Namespace) -> int:
    """``zerodl train``: train a network, print the epoch table and the final accuracy.

    Stop signals (Ctrl-C, SIGTERM, SIGHUP) end the training after the current step; the final
    checkpoint, the model trained so far and the plots are then written (a second signal does not
    cut them short), one line says so, and the exit code is 128 + the signal (130, 143, 129).
    """
    import zerodl
    from zerodl.loop import StopSignals
    from zerodl.trainer import Trainer

    spec = NET_BUILDERS[args.net]
    saved_meta = _check_checkpoint_options(args)  # before loading any data: a wrong command fails at once
    # Up front, before any data is read (outputs were checked by main): the model format and sizes.
    if args.save and Path(args.save).suffix.lower() in (".pkl", ".pickle"):
        raise CLIUsageError(f"--save {args.save}: the command saves .npz models (what `zerodl evaluate` reads); "
                            "the book's .pkl format is written by net.save_params('name.pkl')")
    check_train_sizes(args)
    started = time.perf_counter()
    if args.seed is None:
        args.seed = 0
    net_seed, batch_seed = np.random.SeedSequence(args.seed).spawn(2)
    args.net_rng = np.random.default_rng(net_seed)
    if args.lr is not None:
        lr = args.lr
    elif saved_meta is not None and "lr" in saved_meta["optimizer"]["hyperparams"]:
        lr = float(saved_meta["optimizer"]["hyperparams"]["lr"])  # the resumed run's own
    else:
        lr = default_lr(args.dataset, args.optimizer)
    if args.epochs is None:
        args.epochs = int(DATASET_DEFAULTS[args.dataset]["epochs"])
    with zerodl.use_backend(args.backend):
        data = _load_data(args.dataset, flatten=spec.input == "flat", data_dir=args.data_dir,
                          download=args.download, split=args.split)
        (x_train, t_train), (x_test, t_test) = data
        print(f"dataset: {getattr(data, 'description', args.dataset)}")
        print(f"split: {getattr(data, 'split', '?')} ({len(x_train):,} train / {len(x_test):,} test)")
        net = spec.build(args, tuple(x_train.shape[1:]), _num_classes(data))
        shape = " -> ".join(f"{p.shape}" for k, p in net.params.items() if k.startswith("W"))
        print(f"network: {type(net).__name__} {shape}, dtype {net.dtype}, backend {args.backend}")
        print(f"training: {args.optimizer} lr={lr:g}, {args.epochs} epochs, batch {args.batch_size}, "
              f"seed {args.seed}")
        with StopSignals() as stop:
            trainer = Trainer(
                net, x_train, t_train, x_test, t_test, epochs=args.epochs,
                mini_batch_size=args.batch_size, optimizer=args.optimizer, optimizer_param={"lr": lr},
                verbose=True, report="table", seed=np.random.default_rng(batch_seed),
                checkpoint_path=args.checkpoint, checkpoint_every=args.checkpoint_every,
                overwrite_checkpoint=args.restart, run_config=_run_config(args), handle_signals=stop,
            )
            _resume(args, trainer, saved_meta)
            pictures = _ConvPictures(args, net)
            trainer.train()
            with stop.hold():  # the outputs below are written whole, whatever signal comes now
                code = _finish_train(args, trainer, data, spec, lr, started, pictures, stop)
    return code


def _finish_train(args: argparse.Namespace, trainer: Any, data: Any, spec: NetSpec, lr: float,
                  started: float, pictures: _ConvPictures, stop: Any) -> int:
    """After ``trainer.train()``: report, save the model and the pictures; returns the exit code."""
    from zerodl.io import save_network

    net = trainer.network
    (_, _), (x_test, t_test) = data
    elapsed = time.perf_counter() - started
    metadata = {**_dataset_metadata(args, data, spec.input), "net": args.net, "optimizer": args.optimizer,
                "lr": lr, "epochs": args.epochs, "batch_size": args.batch_size, "seed": args.seed,
                "iterations": trainer.current_iter, "interrupted": trainer.interrupted}
    if not trainer.interrupted:
        n_test = len(x_test)
        correct = round(trainer.final_test_acc * n_test)
        metadata["test_accuracy"] = trainer.final_test_acc
        print(f"test accuracy: {trainer.final_test_acc:.4f} ({correct}/{n_test})")
    print(f"throughput: {trainer.samples_per_sec:,.0f} samples/s in training steps; "
          f"wall time {elapsed:.1f} s")
    written = [f"checkpoint {args.checkpoint}"] if args.checkpoint else []
    if args.save:
        path = save_network(net, args.save, metadata=metadata)
        print(f"saved model: {path}" + (" (trained so far)" if trainer.interrupted else ""))
        written.append(f"model {path}")
    if args.plot and trainer.train_loss_list:
        from zerodl.plots import plot_trainer

        title = f"{type(net).__name__} on {args.dataset} ({args.optimizer}, lr={lr:g})"
        print(f"saved learning curves: {plot_trainer(trainer, args.plot, title=title)}")
    pictures.write(net, x_test, t_test, args.backend)
    if trainer.interrupted:
        how = f" ({stop.name})" if stop.requested else ""
        print(f"interrupted after {trainer.current_iter} of {trainer.max_iter} iterations{how}; "
              + (f"wrote {' and '.join(written)} (trained so far)" if written else "nothing saved (no --save)"),
              file=sys.stderr, flush=True)
        return stop.exit_code if stop.requested else 130
    if stop.requested:  # the signal came after the last step: everything is written anyway
        print(f"stopped by {stop.name} after the training finished; all outputs written",
              file=sys.stderr, flush=True)
        return stop.exit_code
    return 0


# -- evaluate -----------------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    """``zerodl evaluate MODEL``: accuracy, per-class accuracy and the confusion matrix."""
    import zerodl
    from zerodl.io import load_network
    from zerodl.trainer import confusion_matrix, predict_labels

    net = load_network(args.model)
    meta: dict[str, Any] = _check_saved_metadata(getattr(net, "metadata", {}) or {}, args.model)
    dataset = args.dataset or meta.get("dataset") or "digits"
    same_data = dataset == meta.get("dataset")
    data_dir = args.data_dir
    saved_dir = meta.get("data_dir")
    if data_dir is None and dataset == "mnist" and same_data and saved_dir and os.path.isdir(saved_dir):
        data_dir = saved_dir  # where the model was trained from, if it is still there
    layout = _input_layout(net, meta)
    with zerodl.use_backend(args.backend):
        data = _load_data(
            dataset, flatten=layout == "flat", data_dir=data_dir, download=args.download,
            # Reproduce the split the model was trained with, so its test set is the same.
            split=meta.get("dataset_split") if same_data and dataset == "mnist" else None,
            test_size=meta.get("dataset_test_size") if same_data else None,
            seed=meta.get("dataset_seed") if same_data else None,
        )
        x_test, t_test = data[1]
        expected = net.params[next(iter(net.params))].shape
        if layout == "flat" and x_test.shape[1] != expected[0]:
            raise CLIError(f"{args.model} expects {expected[0]} input features; dataset {dataset} "
                           f"has {x_test.shape[1]}")
        input_dim = (getattr(net, "config", None) or {}).get("input_dim")
        if layout == "image" and input_dim is not None and tuple(input_dim) != tuple(x_test.shape[1:]):
            raise CLIError(f"{args.model} expects images of shape {tuple(input_dim)}; dataset {dataset} "
                           f"has {tuple(x_test.shape[1:])}")
        started = time.perf_counter()
        pred = predict_labels(net, x_test)
        elapsed = time.perf_counter() - started
    t_true = np.asarray(t_test)
    if t_true.ndim == 2:
        t_true = np.argmax(t_true, axis=1)
    n_classes = max(_num_classes(data), int(net.params[[k for k in net.params if k.startswith("W")][-1]].shape[-1]))
    cm = confusion_matrix(t_true, pred, n_classes)
    correct = int(np.trace(cm))
    accuracy = correct / len(t_true)
    print(f"model: {args.model} ({type(net).__name__}, dtype {net.dtype}); backend {args.backend}")
    print(f"dataset: {getattr(data, 'description', dataset)}")
    print(f"split: {getattr(data, 'split', '?')} (evaluated on the {len(t_true):,} test samples)")
    print(f"test accuracy: {accuracy:.4f} ({correct}/{len(t_true)})")
    print(f"time: {elapsed:.3f} s ({len(t_true) / max(elapsed, 1e-9):,.0f} samples/s)")
    print("per-class accuracy:")
    for c in range(n_classes):
        total = int(cm[c].sum())
        acc = f"{cm[c, c] / total:.4f}" if total else "   n/a"
        print(f"  {c:>3}: {acc} ({int(cm[c, c])}/{total})")
    print("confusion matrix (rows: true class, columns: predicted):")
    width = max(3, len(str(int(cm.max()))) + 1)
    print("     " + "".join(f"{c:>{width}}" for c in range(n_classes)))
    for c in range(n_classes):
        print(f"  {c:>3}" + "".join(f"{v:>{width}}" for v in cm[c]))
    if args.plot:
        from zerodl.plots import plot_confusion_matrix

        title = f"{type(net).__name__} on {dataset}: accuracy {accuracy:.4f}"
        print(f"saved confusion matrix: {plot_confusion_matrix(cm, args.plot, title=title)}")
    if args.misclassified_png:
        from zerodl.plots_conv import plot_misclassified

        wrong = plot_misclassified(x_test, t_true, pred, args.misclassified_png)
        print(f"saved misclassified images: {args.misclassified_png} ({wrong} misclassified)")
    return 0


# -- gradcheck ----------------------------------------------------------------------------------
def cmd_gradcheck(args: argparse.Namespace) -> int:
    """``zerodl gradcheck``: the book's chapter 5 gradient check, per backend; exit 1 on failure."""
    import zerodl
    from zerodl.networks import TwoLayerNet

    check_gradcheck_sizes(args)
    data = _load_data(args.dataset, flatten=True, data_dir=args.data_dir, download=args.download,
                      one_hot_label=True)
    x_train, t_train = data[0]
    if args.samples > len(x_train):
        raise CLIError(f"--samples {args.samples} is more than the {len(x_train)} training samples")
    x = np.asarray(x_train[:args.samples], dtype=np.float64)
    t = np.asarray(t_train[:args.samples], dtype=np.float64)
    backends = [args.backend] if args.backend else list(zerodl.BACKENDS)
    print(f"gradient check: TwoLayerNet({x.shape[1]}, {args.hidden}, {t.shape[1]}), float64, "
          f"{args.samples} samples of {args.dataset}")
    print(f"pass: max|backprop - numerical| <= atol + rtol * max|numerical| (atol {args.atol:g}, "
          f"rtol {args.rtol:g}; the book's +1e-7 inside the log alone gives ~1e-6 relative)")
    failed = []
    for backend in backends:
        net = TwoLayerNet(x.shape[1], args.hidden, t.shape[1], seed=args.seed)
        with zerodl.use_backend(backend):
            grad_numerical = net.numerical_gradient(x, t)
            grad_backprop = net.gradient(x, t)
        print(f"backend {backend}:")
        print(f"  {'param':<6} {'mean |diff| (book)':>19} {'max |diff|':>11} {'tolerance':>11}  result")
        for key in grad_numerical:
            diff = np.abs(grad_backprop[key] - grad_numerical[key])
            tol = args.atol + args.rtol * float(np.abs(grad_numerical[key]).max())
            ok = bool(np.all(np.isfinite(diff))) and float(diff.max()) <= tol
            if not ok:
                failed.append(f"{backend}:{key}")
            print(f"  {key:<6} {float(diff.mean()):>19.3e} {float(diff.max()):>11.3e} "
                  f"{tol:>11.3e}  {'ok' if ok else 'FAIL'}")
    if failed:
        print(f"gradient check FAILED for {', '.join(failed)}", file=sys.stderr)
        return 1
    print("gradient check passed")
    return 0


# -- the parser ---------------------------------------------------------------------------------
def _add_data_arguments(p: argparse.ArgumentParser, dataset_default: str | None) -> None:
    p.add_argument("--dataset", choices=DATASET_CHOICES, default=dataset_default,
                   help="digits: scikit-learn's embedded 8x8 digits; mnist: MNIST from --data-dir"
                        + (f" (default {dataset_default})" if dataset_default else
                           " (default: the dataset the model was trained on)"))
    p.add_argument("--data-dir", metavar="DIR", default=None,
                   help="folder with the gzipped MNIST IDX files (default $ZERODL_DATA_DIR or the cache)")
    p.add_argument("--download", action=argparse.BooleanOptionalAction, default=True,
                   help="download missing MNIST files (default: yes)")


def _add_backend_argument(p: argparse.ArgumentParser, default: str | None) -> None:
    from zerodl.backend import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default=default,
                   help=f"kernel backend (default {default or 'every backend in turn'})")


def _add_threads_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=_thread_count, default=None, metavar="N",
                   help="limit BLAS and numba to N threads (default: the libraries' own; on a busy "
                        "machine 1 avoids thread pools fighting over the cores)")


def build_parser() -> argparse.ArgumentParser:
    """The ``zerodl`` argument parser, plug-in subcommands included."""
    from zerodl._version import __version__
    from zerodl.backend import get_backend
    from zerodl.optimizer import OPTIMIZERS

    parser = argparse.ArgumentParser(
        prog="zerodl",
        description="Deep Learning from Scratch, compiled with Numba: train, evaluate and check networks.",
    )
    parser.add_argument("--version", action="version",
                        version=f"zerodl {__version__} (numpy {np.__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("train", help="train a network and report its test accuracy",
                       description="Train a network (progress bar, per-epoch table, final test "
                                   "accuracy and throughput); optionally save it and plot its curves.")
    _add_data_arguments(p, "digits")
    p.add_argument("--split", choices=("auto", "official", "t10k"), default=None,
                   help="MNIST split: official 60k/10k, a split of t10k, or auto (official if present)")
    p.add_argument("--net", choices=tuple(NET_BUILDERS), default="mlp",
                   help="; ".join(f"{k}: {v.help}" for k, v in NET_BUILDERS.items()) + " (default mlp)")
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=[100, 100], metavar="N",
                   help="hidden layer sizes (default 100 100)")
    p.add_argument("--activation", choices=tuple(ACTIVATIONS), default=None, help="default relu")
    p.add_argument("--optimizer", type=str.lower, choices=tuple(OPTIMIZERS), default="adam",
                   help="optimizer (case-insensitive, default adam)")
    p.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default for adam: "
                        + ", ".join(f"{k} {v['adam_lr']:g}" for k, v in DATASET_DEFAULTS.items())
                        + f"; {BOOK_LR:g} for the other optimizers, as the book's Trainer)")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="epochs (default: " + ", ".join(f"{k} {int(v['epochs'])}"
                                                        for k, v in DATASET_DEFAULTS.items()) + ")")
    p.add_argument("--batch-size", type=_positive_int, default=100, help="mini-batch size (default 100)")
    p.add_argument("--weight-decay", type=_non_negative_float, default=0.0,
                   help="L2 weight decay lambda (mlp only, default 0)")
    _add_backend_argument(p, get_backend())
    _add_threads_argument(p)
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="parameter dtype (default float64, as the book)")
    p.add_argument("--seed", type=_seed, default=None,
                   help="seed of the weights and batches (default 0; with --resume, the run's)")
    p.add_argument("--save", metavar="MODEL.npz", default=None, help="save the trained model here")
    p.add_argument("--plot", metavar="CURVES.png", default=None, help="save learning curves here")
    p.add_argument("--checkpoint", metavar="FILE", default=None,
                   help="write the training state here (atomically) at every epoch, or every "
                        "--checkpoint-every iterations, and at the end or on Ctrl-C")
    p.add_argument("--checkpoint-every", type=_positive_int, default=None, metavar="N",
                   help="iterations between checkpoints (default: every epoch)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint if it exists (same data, net, optimizer, batch size "
                        "and seed, or it is refused; --lr, if given, applies from there on); the result "
                        "is bit-identical to an uninterrupted run")
    p.add_argument("--restart", action="store_true",
                   help="start over, replacing an existing --checkpoint (without --resume or --restart an "
                        "existing checkpoint is an error: it belongs to another run)")
    for spec in NET_BUILDERS.values():
        if spec.add_arguments is not None:
            spec.add_arguments(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy, per-class accuracy and confusion matrix of a saved model",
                       description="Evaluate a model saved by `zerodl train --save` on a test set.")
    p.add_argument("model", metavar="MODEL", help="a .npz file written by zerodl")
    _add_data_arguments(p, None)
    _add_backend_argument(p, get_backend())
    _add_threads_argument(p)
    p.add_argument("--plot", metavar="CONFUSION.png", default=None, help="save the confusion matrix here")
    p.add_argument("--misclassified-png", metavar="WRONG.png", default=None,
                   help="save a grid of misclassified test images (the book's ch. 8 picture)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("gradcheck", help="the book's chapter 5 gradient check (backprop vs numerical)",
                       description="Compare backprop gradients of a float64 TwoLayerNet with central "
                                   "differences on a few samples, per parameter; exit 1 when a "
                                   "difference exceeds atol + rtol * max|numerical gradient|.")
    _add_backend_argument(p, None)
    _add_threads_argument(p)
    _add_data_arguments(p, "digits")
    p.add_argument("--samples", type=_positive_int, default=3, help="samples in the batch (default 3)")
    p.add_argument("--hidden", type=_positive_int, default=50, help="hidden size (default 50)")
    p.add_argument("--rtol", type=_non_negative_float, default=1e-4,
                   help="relative tolerance, times the largest numerical gradient (default 1e-4)")
    p.add_argument("--atol", type=_non_negative_float, default=1e-7,
                   help="absolute tolerance (default 1e-7)")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the weights (default 0)")
    p.set_defaults(func=cmd_gradcheck)

    _add_plugins(sub)
    return parser


def _add_plugins(subparsers: Any, plugins: Sequence[str] | None = None) -> list[str]:
    """Import each plug-in module that exists and let it add its subcommands; return those added.

    A plug-in that is simply absent (``ModuleNotFoundError`` for the module itself or one of its
    parent packages) is skipped; any other error while importing it propagates, so a broken
    plug-in is seen rather than silently dropped.
    """
    added = []
    for name in PLUGINS if plugins is None else plugins:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            parts = name.split(".")
            if exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
                continue
            raise
        module.add_subparsers(subparsers)
        added.append(name)
    return added


def _user_errors() -> tuple[type[BaseException], ...]:
    from zerodl.checkpoint import NonFiniteError
    from zerodl.datasets import CorruptDatasetError, DatasetNotFoundError
    from zerodl.io import ModelFormatError

    # OSError covers FileNotFoundError, PermissionError, a full disk (ENOSPC), a symlink loop;
    # ValueError and TypeError are the library's documented answers to bad input.
    return (CLIError, DatasetNotFoundError, CorruptDatasetError, ModelFormatError, FileNotFoundError,
            NonFiniteError, OSError, ValueError, TypeError)


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)parser of the command that ``args`` came from, so its errors show its usage line."""
    current = parser
    for dest in ("command", "experiment"):
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, dest, None)
        if not actions or name not in actions[0].choices:
            break
        current = actions[0].choices[name]
    return current


def _one_line(text: str) -> str:
    """A message on one line: loaders explain over several lines; the command says it in one."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe_error(exc: BaseException) -> str:
    """The one-line text of a user-facing error (an OSError names its file and the OS's reason)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        where = f"{exc.filename}" + (f" -> {exc.filename2}" if exc.filename2 is not None else "")
        action = "cannot write" if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS) else "error"
        return _one_line(f"{where}: {action}: {exc.strerror}" if action != "error" else f"{where}: {exc.strerror}")
    if isinstance(exc, MemoryError):
        return _one_line(f"out of memory{': ' + str(exc) if str(exc) else ''}; try a smaller --batch-size "
                         "or a smaller network")
    return _one_line(str(exc) or type(exc).__name__)


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
    return f"zerodl: warning: {category.__name__}: {_one_line(str(message))}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``zerodl`` console script; returns the exit code.

    Errors are one line on stderr, ``zerodl <command>: error: <what, naming the option, variable or
    file>``. Exit codes: 0 success; 1 a failure at run time (missing or corrupt file, full disk, a
    failed gradient check, an output file another run holds — every output is locked for the
    command's life before any work, see :mod:`zerodl._runlock`); 2 bad usage (argparse's options,
    and output paths or sizes refused before any work — argparse prints its usage line first); 130 / 128 + signal when interrupted. An
    unexpected exception is reported on one line too (``internal error: ...``, exit 1); set
    ``ZERODL_TRACEBACK=1`` to see its traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    seed = getattr(args, "seed", None)
    if isinstance(seed, int) and not 0 <= seed <= MAX_SEED:
        # Plug-in commands (experiment) take --seed as a plain int: refuse it here, naming the option.
        _subparser(parser, args).error(f"argument --seed: expected a non-negative integer below 2**63, "
                                       f"got '{seed}'")
    command = " ".join(str(c) for c in (getattr(args, "command", None), getattr(args, "experiment", None)) if c)
    prefix = f"zerodl {command}: error:" if command else "zerodl: error:"
    old_format = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # type: ignore[assignment]
    try:
        try:
            check_command_paths(args)
        except CLIError as exc:
            print(f"{prefix} {describe_error(exc)}", file=sys.stderr)
            return 2
        if os.environ.get("ZERODL_TUNE_MALLOC", "1") != "0":
            from zerodl.allocator import tune_malloc

            tune_malloc()  # freed step-sized blocks are reused, not faulted in again (zerodl.allocator)
        # The run owns its outputs until it ends: a second run naming one of them is refused here,
        # before any work (zerodl._runlock; OutputInUseError is a ValueError: one line, exit 1).
        from zerodl._runlock import hold_outputs

        outputs, _ = _outputs_and_inputs(args)
        invocation = " ".join(["zerodl", *(sys.argv[1:] if argv is None else [str(a) for a in argv])])
        with hold_outputs([path for _, path, *_ in outputs], command=invocation):
            threads = getattr(args, "threads", None)
            if threads is None:
                return int(args.func(args) or 0)
            from zerodl.threads import num_threads

            with num_threads(threads):
                return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("\nzerodl: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout went to a reader that stopped (`zerodl evaluate m.npz | head`): not an error to
        # report; point stdout at devnull so the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except SystemExit:
        raise
    except Exception as exc:
        if os.environ.get("ZERODL_TRACEBACK", "") not in ("", "0"):
            raise
        if isinstance(exc, (*_user_errors(), MemoryError)):
            print(f"{prefix} {describe_error(exc)}", file=sys.stderr)
            return getattr(exc, "exit_code", 1)
        else:  # a bug, not the user's doing: still one line, and how to see more
            print(f"{prefix} internal error: {type(exc).__name__}: {describe_error(exc)} "
                  "(set ZERODL_TRACEBACK=1 for the traceback)", file=sys.stderr)
        return 1
    finally:
        warnings.formatwarning = old_format  # type: ignore[assignment]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

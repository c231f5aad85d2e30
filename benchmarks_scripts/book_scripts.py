"""Run the book's chapter scripts as the book has them and with only their imports changed; compare.

Usage (never part of the tests; needs a checkout of oreilly-japan/deep-learning-from-scratch)::

    python benchmarks_scripts/book_scripts.py /path/to/deep-learning-from-scratch \\
        [--out /work/scratch/run-book] [--mnist-dir ../shared/datasets/mnist] \\
        [--backends numpy,numba] [--only ch05/train_neuralnet.py ...] [--timeout 600]

What it does, for the 23 scripts of chapters 3–8 that use the book's library surface
(``common/``, ``dataset/``, the chapter networks):

1. copies the book's ``ch03``–``ch08``, ``common`` and ``dataset`` twice into ``--out`` (a folder
   outside this project): ``book/`` as the book has them and ``zerodl/`` with only the import lines
   rewritten by the README's map (:data:`IMPORT_MAP`);
2. edits both copies identically: ``np.random.seed(0)`` first, fewer iterations (:data:`EDITS`),
   a few ``print`` lines in scripts that otherwise print nothing, and other file names for the
   parameters the training scripts save (so they do not overwrite the book's shipped ``params.pkl``);
3. gives both the same data: the book's loader reads its ``dataset/mnist.pkl`` cache, which is
   written here from the 8,000/2,000 stratified split of the MNIST test files that
   ``zerodl.datasets.load_mnist`` makes from ``--mnist-dir`` (checked equal before anything runs);
4. runs every script in its chapter folder (book copy once, zerodl copy once per backend) and
   compares stdout: ``same`` (identical text), ``to rounding`` (the same text around the numbers, all
   numbers within rtol 1e-6) or ``differs`` (first differing line shown).

The table is printed and written to ``--out/report.md``; every run's stdout/stderr is kept beside it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]

#: The 23 scripts, in chapter order (ch03/mnist_show.py only opens an image viewer: left out).
SCRIPTS = (
    "ch03/neuralnet_mnist.py", "ch03/neuralnet_mnist_batch.py",
    "ch04/gradient_simplenet.py", "ch04/train_neuralnet.py",
    "ch05/buy_apple.py", "ch05/buy_apple_orange.py", "ch05/gradient_check.py", "ch05/train_neuralnet.py",
    "ch06/batch_norm_gradient_check.py", "ch06/batch_norm_test.py", "ch06/hyperparameter_optimization.py",
    "ch06/optimizer_compare_mnist.py", "ch06/optimizer_compare_naive.py", "ch06/overfit_dropout.py",
    "ch06/overfit_weight_decay.py", "ch06/weight_init_compare.py",
    "ch07/apply_filter.py", "ch07/gradient_check.py", "ch07/train_convnet.py", "ch07/visualize_filter.py",
    "ch08/half_float_network.py", "ch08/misclassified_mnist.py", "ch08/train_deepnet.py",
)

#: The README's map, "From the book to zerodl": (regex on one import line, replacement).
#: ``two_layer_net`` depends on the chapter (ch04: sigmoid, ch05: ReLU), handled in :func:`rewrite`.
IMPORT_MAP: tuple[tuple[str, str], ...] = (
    (r"^from common\.functions import (.+)$", r"from zerodl.functions import \1"),
    (r"^from common\.layers import (.+)$", r"from zerodl.layers import \1"),
    (r"^from common\.gradient import (.+)$", r"from zerodl.gradient import \1"),
    (r"^from common\.util import (.+)$", r"from zerodl.util import \1"),
    (r"^from common\.optimizer import (.+)$", r"from zerodl.optimizer import \1"),
    (r"^from common\.trainer import (.+)$", r"from zerodl.trainer import \1"),
    (r"^from common\.multi_layer_net import MultiLayerNet$", "from zerodl import MultiLayerNet"),
    (r"^from common\.multi_layer_net_extend import MultiLayerNetExtend$", "from zerodl import MultiLayerNetExtend"),
    (r"^from dataset\.mnist import (.+)$", r"from zerodl.datasets import \1"),
    (r"^from simple_convnet import SimpleConvNet$", "from zerodl import SimpleConvNet"),
    (r"^from deep_convnet import DeepConvNet$", "from zerodl import DeepConvNet"),
    (r"^from layer_naive import \*$", "from zerodl.layers import MulLayer, AddLayer"),
)
TWO_LAYER = {
    "ch04": "from zerodl.networks import TwoLayerNetCh4 as TwoLayerNet",
    "ch05": "from zerodl import TwoLayerNet",
}

#: Identical edits to both copies: (script, old text, new text); each old text must occur once.
EDITS: tuple[tuple[str, str, str], ...] = (
    ("ch04/train_neuralnet.py", "iters_num = 10000", "iters_num = 300"),
    ("ch05/train_neuralnet.py", "iters_num = 10000", "iters_num = 300"),
    ("ch06/batch_norm_test.py", "max_epochs = 20", "max_epochs = 2"),
    ("ch06/hyperparameter_optimization.py", "optimization_trial = 100", "optimization_trial = 3"),
    ("ch06/hyperparameter_optimization.py", "epocs=50", "epocs=2"),
    ("ch06/optimizer_compare_mnist.py", "max_iterations = 2000", "max_iterations = 201"),
    ("ch06/overfit_dropout.py", "epochs=301", "epochs=3"),
    ("ch06/overfit_weight_decay.py", "max_epochs = 201", "max_epochs = 5"),
    ("ch06/weight_init_compare.py", "max_iterations = 2000", "max_iterations = 201"),
    ("ch07/train_convnet.py", "max_epochs = 20", "max_epochs = 1"),
    ("ch07/train_convnet.py", 'network.save_params("params.pkl")', 'network.save_params("params_run.pkl")'),
    ("ch08/train_deepnet.py", "epochs=20", "epochs=1"),
    ("ch08/train_deepnet.py", 'network.save_params("deep_convnet_params.pkl")',
     'network.save_params("deep_convnet_params_run.pkl")'),
    # Scripts that only draw: print what they draw, the same way in both copies.
    ("ch06/optimizer_compare_naive.py", "    x = np.arange(-10, 10, 0.01)",
     "    print(key, x_history, y_history)\n    x = np.arange(-10, 10, 0.01)"),
    ("ch07/apply_filter.py", "    out = out.reshape(out.shape[2], out.shape[3])",
     "    out = out.reshape(out.shape[2], out.shape[3])\n    print(i, repr(float(out.sum())), out.shape)"),
    ("ch07/apply_filter.py", "filter_show(network.params['W1'], 16)",
     "filter_show(network.params['W1'], 16)\nprint(repr(float(network.params['W1'].sum())))"),
    ("ch07/visualize_filter.py", "network = SimpleConvNet()\n",
     "network = SimpleConvNet()\nprint(repr(float(network.params['W1'].sum())))\n"),
    ("ch07/visualize_filter.py", 'network.load_params("params.pkl")\n',
     'network.load_params("params.pkl")\nprint(repr(float(network.params[\'W1\'].sum())))\n'),
)

SEED_LINES = "import numpy as np\nnp.random.seed(0)\n"
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def rewrite(script: str, text: str, keep: tuple[str, ...] = ()) -> str:
    """The script with only its import lines rewritten by :data:`IMPORT_MAP`.

    ``keep``: book modules whose import lines stay (a diagnostic, e.g. ``("common.trainer",)`` runs
    zerodl's networks under the book's own Trainer to show which differences are the Trainer's).
    """
    chapter = script.split("/")[0]
    lines = []
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        end = line[len(body):]
        new = body
        if any(body.startswith(f"from {module} import") for module in keep):
            pass
        elif re.match(r"^from two_layer_net import TwoLayerNet\s*$", body):
            new = TWO_LAYER[chapter]
        else:
            for pattern, repl in IMPORT_MAP:
                if re.match(pattern, body):
                    new = re.sub(pattern, repl, body)
                    break
        lines.append(new + end)
    return "".join(lines)


def edit(script: str, text: str) -> str:
    """The identical edits of both copies: the seed first, then :data:`EDITS`."""
    for name, old, new in EDITS:
        if name != script:
            continue
        if text.count(old) != 1:
            raise SystemExit(f"{script}: expected {old!r} exactly once, found it {text.count(old)} times")
        text = text.replace(old, new)
    head, sep, rest = text.partition("\n")
    if head.startswith("#") and "coding" in head:
        return head + sep + SEED_LINES + rest
    return SEED_LINES + text


def copy_book(book: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    for part in ("ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "common", "dataset"):
        shutil.copytree(book / part, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def write_mnist_cache(dest: Path, mnist_dir: Path) -> None:
    """The book's ``dataset/mnist.pkl``: raw uint8 images and labels of the t10k 8,000/2,000 split."""
    sys.path.insert(0, str(PROJECT))
    from zerodl.datasets import load_mnist

    (x_tr, t_tr), (x_te, t_te) = load_mnist(normalize=False, flatten=True, one_hot_label=False,
                                            data_dir=mnist_dir, download=False, split="t10k",
                                            test_size=0.2, seed=0)
    data = {"train_img": x_tr, "train_label": t_tr, "test_img": x_te, "test_label": t_te}
    with open(dest / "dataset" / "mnist.pkl", "wb") as f:
        pickle.dump(data, f, -1)


def check_same_data(book_copy: Path, mnist_dir: Path) -> list[str]:
    """Both loaders, every argument combination the scripts use: the same arrays (values)."""
    import numpy as np

    from zerodl.datasets import load_mnist

    spec = importlib.util.spec_from_file_location("book_mnist", book_copy / "dataset" / "mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    notes = []
    os.environ["ZERODL_DATA_DIR"] = str(mnist_dir)
    for kw in ({"normalize": True}, {"normalize": True, "one_hot_label": True}, {"flatten": False},
               {"normalize": True, "flatten": True, "one_hot_label": False}):
        book = module.load_mnist(**kw)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = load_mnist(**kw, data_dir=mnist_dir, download=False)
        for (b, o), part in zip(((book[0][0], ours[0][0]), (book[0][1], ours[0][1]),
                                 (book[1][0], ours[1][0]), (book[1][1], ours[1][1])),
                                ("x_train", "t_train", "x_test", "t_test")):
            if b.shape != o.shape or not np.array_equal(b, o):
                raise SystemExit(f"data differ for load_mnist({kw}): {part} {b.shape} vs {o.shape}")
            if b.dtype != o.dtype:
                notes.append(f"load_mnist({kw}) {part}: book {b.dtype}, zerodl {o.dtype} (same values)")
    return sorted(set(notes))


def run(script_path: Path, env: dict[str, str], timeout: float) -> dict:
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, script_path.name], cwd=script_path.parent, env=env,
                              capture_output=True, text=True, timeout=timeout, check=False)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as exc:
        code = "timeout"
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    return {"code": code, "stdout": out, "stderr": err, "seconds": time.perf_counter() - start}


def compare(a: str, b: str) -> tuple[str, str]:
    """``('same'|'to rounding'|'differs', first difference)``."""
    if a == b:
        return "same", ""
    la, lb = a.splitlines(), b.splitlines()
    first = next((i for i in range(min(len(la), len(lb))) if la[i] != lb[i]), min(len(la), len(lb)))
    where = (f"line {first + 1}: book {la[first] if first < len(la) else '<end>'!r} | "
             f"zerodl {lb[first] if first < len(lb) else '<end>'!r}")
    if NUMBER.sub("#", a) == NUMBER.sub("#", b):
        na = [float(x) for x in NUMBER.findall(a)]
        nb = [float(x) for x in NUMBER.findall(b)]
        if all(abs(x - y) <= 1e-6 * max(abs(x), abs(y)) + 1e-12 for x, y in zip(na, nb)):
            return "to rounding", where
    return "differs", where


def last_error(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^\w+(\.\w+)*(Error|Exception)\b", line):
            return line[:160]
    return lines[-1][:160] if lines else ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("book", type=Path, help="checkout of oreilly-japan/deep-learning-from-scratch")
    p.add_argument("--out", type=Path, default=Path("/work/scratch/run-book"))
    p.add_argument("--mnist-dir", type=Path, default=PROJECT.parent / "shared" / "datasets" / "mnist")
    p.add_argument("--backends", default="numpy,numba", help="zerodl backends to run, comma-separated")
    p.add_argument("--only", nargs="*", help="run only these scripts (e.g. ch05/train_neuralnet.py)")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per run")
    p.add_argument("--keep-book", nargs="*", default=[], metavar="MODULE",
                   help="diagnostic: leave these book imports as they are in the zerodl copy "
                        "(e.g. common.trainer: zerodl's networks under the book's Trainer)")
    args = p.parse_args(argv)
    book, out = args.book.resolve(), args.out.resolve()
    if not (book / "common" / "layers.py").is_file():
        p.error(f"{book} is not a checkout of the book's repository (no common/layers.py)")
    if out == PROJECT or PROJECT in out.parents:
        p.error(f"--out {out} is inside the project; use a scratch folder outside it")
    backends = [b for b in args.backends.split(",") if b]
    scripts = list(args.only or SCRIPTS)
    unknown = sorted(set(scripts) - set(SCRIPTS))
    if unknown:
        p.error(f"unknown scripts {unknown}; known: {', '.join(SCRIPTS)}")

    out.mkdir(parents=True, exist_ok=True)
    copies = {"book": out / "book", "zerodl": out / "zerodl"}
    for copy in copies.values():
        copy_book(book, copy)
        write_mnist_cache(copy, args.mnist_dir)
    for script in SCRIPTS:
        original = (book / script).read_text(encoding="utf-8")
        (copies["book"] / script).write_text(edit(script, original), encoding="utf-8")
        (copies["zerodl"] / script).write_text(edit(script, rewrite(script, original, tuple(args.keep_book))),
                                              encoding="utf-8")
    notes = check_same_data(copies["book"], args.mnist_dir)

    base = {k: v for k, v in os.environ.items() if not k.startswith("ZERODL_")}
    base.update(MPLBACKEND="Agg", OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONHASHSEED="0")
    book_env = dict(base)
    book_env.pop("PYTHONPATH", None)
    # The zerodl copy's chapter folder is first on sys.path, so a kept book import still resolves
    # (``sys.path.append(os.pardir)`` stays in the scripts).
    zerodl_env = dict(base, PYTHONPATH=str(PROJECT), ZERODL_DATA_DIR=str(args.mnist_dir))
    if "NUMBA_CACHE_DIR" not in zerodl_env:
        zerodl_env["NUMBA_CACHE_DIR"] = str(out / "numba_cache")

    logs = out / "logs"
    logs.mkdir(exist_ok=True)
    rows = []
    for script in scripts:
        tag = script.replace("/", "_").removesuffix(".py")
        ref = run(copies["book"] / script, book_env, args.timeout)
        (logs / f"{tag}.book.out").write_text(ref["stdout"])
        (logs / f"{tag}.book.err").write_text(ref["stderr"])
        row = {"script": script, "book": ref["code"], "book_s": round(ref["seconds"], 1)}
        for backend in backends:
            got = run(copies["zerodl"] / script, dict(zerodl_env, ZERODL_BACKEND=backend), args.timeout)
            (logs / f"{tag}.{backend}.out").write_text(got["stdout"])
            (logs / f"{tag}.{backend}.err").write_text(got["stderr"])
            runs = got["code"] == 0
            verdict, where = compare(ref["stdout"], got["stdout"]) if runs else ("-", last_error(got["stderr"]))
            row[backend] = {"runs": runs, "code": got["code"], "verdict": verdict, "detail": where,
                            "seconds": round(got["seconds"], 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)

    header = "| script | book runs | " + " | ".join(f"{b}: runs? | {b}: same numbers?" for b in backends) + " |"
    lines = [header, "|" + " --- |" * (2 + 2 * len(backends))]
    for row in rows:
        cells = [row["script"], "yes" if row["book"] == 0 else f"no ({row['book']})"]
        for b in backends:
            r = row[b]
            cells += ["yes" if r["runs"] else f"no: {r['detail']}", r["verdict"] if r["runs"] else "-"]
        lines.append("| " + " | ".join(cells) + " |")
    summary = []
    for b in backends:
        ran = sum(row[b]["runs"] for row in rows)
        same = sum(row[b]["verdict"] == "same" for row in rows)
        rounding = sum(row[b]["verdict"] == "to rounding" for row in rows)
        summary.append(f"{b}: {ran}/{len(rows)} run, {same} print the same text, {rounding} the same to rounding")
    details = [f"- {row['script']} ({b}): {row[b]['detail']}" for row in rows for b in backends
               if row[b]["runs"] and row[b]["verdict"] != "same"]
    report = "\n".join(lines + [""] + summary + ["", "Data notes:"] + [f"- {n}" for n in notes]
                       + ["", "First differences:"] + details) + "\n"
    (out / "report.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

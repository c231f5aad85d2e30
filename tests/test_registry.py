"""The registry: both backends register the same ops with identical signatures; nothing compiles
at import; compile flags live in one place."""

import inspect
import pathlib
import re
import subprocess
import sys

import pytest

from zerodl import kernels
from zerodl.backend import BACKENDS

ROOT = pathlib.Path(__file__).resolve().parents[1] / "zerodl"


def test_both_backends_register_the_same_ops():
    assert kernels.ops("numpy") == kernels.ops("numba")
    assert len(kernels.ops("numba")) >= 12


@pytest.mark.parametrize("op", kernels.ops("numba"))
def test_twins_share_signature_and_document_themselves(op):
    numpy_fn, numba_fn = kernels.get(op, "numpy"), kernels.get(op, "numba")
    assert inspect.signature(numpy_fn) == inspect.signature(numba_fn), op
    assert numpy_fn.__name__ == f"{op}_numpy" and numba_fn.__name__ == f"{op}_numba"
    assert numpy_fn.__doc__ and numba_fn.__doc__


def test_unknown_op_names_the_known_ones():
    with pytest.raises(KeyError, match="no kernel 'conv9' .*known ops: .*affine_forward"):
        kernels.get("conv9")


def test_import_compiles_nothing():
    code = (
        "import numba, zerodl, zerodl.kernels as k\n"
        "from numba.core.registry import CPUDispatcher\n"
        "compiled = [n for m in k.MODULES for n, f in vars(m).items()\n"
        "            if isinstance(f, CPUDispatcher) and f.signatures]\n"
        "print(len([f for m in k.MODULES for f in vars(m).values() if isinstance(f, CPUDispatcher)]), compiled)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    count, compiled = out.stdout.split(" ", 1)
    assert int(count) > 10 and compiled.strip() == "[]"


def test_jit_flags_only_in_one_place():
    offenders = []
    for path in ROOT.rglob("*.py"):
        if path.name == "_jit.py":
            continue
        text = path.read_text()
        if re.search(r"numba\.(njit|jit)\(|@njit|fastmath\s*=|cache\s*=\s*True", text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], f"compile flags outside kernels/_jit.py: {offenders}"


def test_backends_constant():
    assert BACKENDS == ("numba", "numpy")

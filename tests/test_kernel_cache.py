"""No stale compiled code: numba's on-disk cache only notices edits to a kernel's *own* file.

So every njit function calls only njit helpers defined in its own file (checked statically over every
kernel module), and an edit to such a helper is seen by the next process (checked by editing a
helper in a temporary copy of the package and running it twice with one cache directory).
"""

from __future__ import annotations

import ast
import importlib
import os
import pathlib
import shutil
import subprocess
import sys

import numba

import zerodl.kernels

KERNELS = pathlib.Path(zerodl.kernels.__file__).parent


def _jit_functions(tree: ast.Module) -> list[ast.FunctionDef]:
    def is_jit(dec: ast.expr) -> bool:
        target = dec.func if isinstance(dec, ast.Call) else dec
        return isinstance(target, ast.Name) and target.id in {"jit", "njit"} or (
            isinstance(target, ast.Attribute) and target.attr in {"jit", "njit"})

    return [n for n in tree.body if isinstance(n, ast.FunctionDef) and any(is_jit(d) for d in n.decorator_list)]


def _is_declaration(module: str, name: str) -> bool:
    # An external function's declaration (``_blas.SGEMM``) holds no compiled code of its own: the
    # caller compiles a call to a symbol that is bound when the caller is loaded, so it cannot go stale.
    package = "zerodl.kernels" if module == "__init__" else f"zerodl.kernels.{module}"
    obj = getattr(importlib.import_module(package), name, None)
    return isinstance(obj, numba.types.ExternalFunction)


def test_compiled_functions_call_only_helpers_of_their_own_file():
    offenders = []
    for path in sorted(KERNELS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {alias.asname or alias.name for node in tree.body if isinstance(node, ast.ImportFrom)
                    and (node.module or "").startswith("zerodl") for alias in node.names}
        imported = {n for n in imported if not _is_declaration(path.stem, n)}
        for fn in _jit_functions(tree):
            # The body only: the decorator (``jit(contract=True)``) is the one allowed import call.
            for node in (n for stmt in fn.body for n in ast.walk(stmt)):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in imported:
                    offenders.append(f"{path.name}:{fn.name} calls {node.func.id} from another file")
    assert not offenders, offenders


def test_an_edited_helper_is_recompiled(tmp_path):
    pkg = tmp_path / "src"
    shutil.copytree(KERNELS.parent, pkg / "zerodl", ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    script = ("import numpy as np; from zerodl import kernels; z = np.array([[0.5, -1.0]]); "
              "out = np.empty_like(z); kernels.get('sigmoid_bias_forward', 'numba')(z, np.zeros(2), out); "
              "print(repr(float(out[0, 0])))")
    env = {**os.environ, "PYTHONPATH": str(pkg), "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_DISABLE_JIT": "0"}

    def run() -> float:
        done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return float(done.stdout.strip())

    first = run()
    assert abs(first - 1 / (1 + 2.718281828459045 ** -0.5)) < 1e-12
    assert any((tmp_path / "cache").rglob("*.nbi")), "the kernel was not cached"
    source = pkg / "zerodl" / "kernels" / "sigmoid.py"
    text = source.read_text(encoding="utf-8")
    helper_line = "            os[j] = 1.0 / (1.0 + e[j])"  # the last line of _sigmoid_into (float64)
    assert text.count(helper_line) == 1, "the helper _sigmoid_into changed; update this test"
    source.write_text(text.replace(helper_line, "            os[j] = 2.0 / (1.0 + e[j])"), encoding="utf-8")
    assert run() == 2 * first  # the caller, cached before the edit, was recompiled

"""The floors of the package, read from its own source (ast, imports inside functions included):
no import circle, and no module imports from a floor above its own.

    kernels (+ backend)  →  basics  →  files (io, datasets)  →  layers, optimizer  →  networks
    →  training and the package's public names (__init__)  →  tools (CLI, bench, experiments, plots)

A new module must be given a floor here: the test names any module it does not know.
"""

from __future__ import annotations

import ast
import pathlib

import zerodl

ROOT = pathlib.Path(zerodl.__file__).parent

#: Module-name prefix → floor (the longest matching prefix wins).
FLOORS = {
    "zerodl._version": 0,
    "zerodl._numba_env": 0,
    "zerodl.backend": 0,
    "zerodl.kernels": 0,
    "zerodl._validate": 1,
    "zerodl._fileio": 1,
    "zerodl._runlock": 1,
    "zerodl._random": 1,
    "zerodl._npz": 1,
    "zerodl.util": 1,
    "zerodl.functions": 1,
    "zerodl.gradient": 1,
    "zerodl.threads": 1,
    "zerodl.allocator": 1,
    "zerodl.io": 2,
    "zerodl.datasets": 2,
    "zerodl.layers": 3,
    "zerodl.optimizer": 3,
    "zerodl.networks": 4,
    "zerodl.training": 5,
    "zerodl.trainer": 5,
    "zerodl.checkpoint": 5,
    "zerodl.callbacks": 5,
    "zerodl.loop": 5,
    "zerodl.tools": 6,
    "zerodl.cli": 6,
    "zerodl.bench": 6,
    "zerodl.experiments": 6,
    "zerodl.plots": 6,
    "zerodl.plots_conv": 6,
    "zerodl.plots_bench": 6,
    "zerodl.__main__": 6,
    "zerodl": 5,
}


def _modules() -> dict[str, pathlib.Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        name = ".".join(rel.parts)
        mods[name[: -len(".__init__")] if name.endswith(".__init__") else name] = path
    return mods


def _resolve(name: str, mods: dict[str, pathlib.Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def _edges(mods: dict[str, pathlib.Path]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    parts = parts[: len(parts) - (node.level - 1)]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == "zerodl":
                    resolved = _resolve(target, mods)
                    if resolved and resolved != mod:
                        edges[mod].add(resolved)
    return edges


def _floor(mod: str) -> int | None:
    if mod == "zerodl":  # the package's __init__ (not a prefix: every module must be placed)
        return FLOORS[mod]
    best = max((p for p in FLOORS if p != "zerodl" and (mod == p or mod.startswith(p + "."))), key=len,
               default=None)
    return None if best is None else FLOORS[best]


def test_every_module_has_a_floor():
    assert [m for m in _modules() if _floor(m) is None] == []


def test_nothing_imports_from_a_floor_above_its_own():
    edges = _edges(_modules())
    upward = sorted(f"{m} (floor {_floor(m)}) imports {t} (floor {_floor(t)})"
                    for m, targets in edges.items() for t in targets
                    if _floor(t) is not None and _floor(m) is not None and _floor(t) > _floor(m))
    assert upward == []


def test_kernels_import_nothing_but_kernels_and_the_backend():
    edges = _edges(_modules())
    bad = sorted((m, t) for m, targets in edges.items() if m.startswith("zerodl.kernels")
                 for t in targets if not (t.startswith("zerodl.kernels") or t == "zerodl.backend"))
    assert bad == []


def test_no_import_circle():
    edges = _edges(_modules())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert circles == []

"""The layout tells where each behaviour lives (issue 18), checked without importing anything.

The import graph of the three packages is read with `ast` (every `import`, also the lazy ones
inside functions, since a cycle through a lazy import is still a cycle in the design):
- no cycle between modules;
- imports go one way: nothing in `scaling/` imports `sweeps/` or `analysis/`, except the one
  entry point above all three, `scaling/cli.py` (the `scaling` dispatcher), which no package
  module imports;
- `analysis/` never imports JAX or the rest of the engine's stack, not even through a module of
  `scaling/`;
- no module is imported by a string (`importlib.import_module("scaling...")`, `__import__`).
And the size rule of the design: no module over 400 lines, no function over 80.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("scaling", "sweeps", "analysis")
ENTRY = "scaling.cli"
ENGINE_STACK = ("jax", "jaxlib", "flax", "optax", "orbax", "tensorflow", "tensorflow_datasets")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The innermost module of ours that `import name` loads (None: not ours)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(name: str, path: Path) -> tuple[set[str], set[str], list[str]]:
    """(our modules it imports, top-level third-party names, imports by string)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    ours: set[str] = set()
    external: set[str] = set()
    by_string: list[str] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    if arg.value.split(".")[0] in PACKAGES:
                        by_string.append(f"{path.relative_to(ROOT)}:{node.lineno} {arg.value}")
        for target in targets:
            mod = _resolve(target)
            if mod is not None:
                if mod != name:
                    ours.add(mod)
            else:
                external.add(target.split(".")[0])
    return ours, external, by_string


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, it = work[-1]
            nxt = next(it, None)
            if nxt is not None:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_graph_was_read():
    """Guards the checks below against reading nothing (a moved root, a parse that finds no
    edges): the engine, sweeps and analysis are all there and import each other as expected."""
    assert {
        "scaling.train",
        "sweeps.grid",
        "analysis.laws.fit",
        "analysis.emergence.flagger",
    } <= set(MODULES)
    assert "analysis.laws.core" in GRAPH["analysis.laws.fit"][0]
    assert "numpy" in GRAPH["analysis.laws.fit"][1]
    assert "jax" in GRAPH["scaling.model"][1]


def test_no_import_cycles():
    cycles = _cycles({name: g[0] for name, g in GRAPH.items()})
    assert not cycles, f"import cycles (break them by moving the shared part down): {cycles}"


def test_imports_go_one_way():
    upward = [
        f"{name} -> {dep}"
        for name, (ours, _, _) in GRAPH.items()
        if name.startswith("scaling") and name != ENTRY
        for dep in sorted(ours)
        if dep.split(".")[0] in ("sweeps", "analysis")
    ]
    assert not upward, f"the engine imports upwards: {upward}"
    into_entry = [name for name, (ours, _, _) in GRAPH.items() if ENTRY in ours]
    assert not into_entry, f"{ENTRY} is the entry point; nothing may import it: {into_entry}"


def _reach(name: str) -> set[str]:
    """Every module of ours that importing `name` can load (also through lazy imports)."""
    seen, todo = {name}, [name]
    while todo:
        for dep in GRAPH[todo.pop()][0]:
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def test_analysis_never_imports_the_engine_stack():
    """Not directly, and not through a module of ours (analysis imports only the engine's
    stdlib-only modules: errors, fileio, results, fmt)."""
    bad = [
        f"{name} -> {' / '.join(sorted(via))} -> {ext}"
        for name in sorted(GRAPH)
        if name.split(".")[0] == "analysis"
        for ext in ENGINE_STACK
        if (via := {m for m in _reach(name) if ext in GRAPH[m][1]})
    ]
    assert not bad, f"analysis/ is numpy/scipy/matplotlib only: {bad}"


def test_no_imports_by_string():
    strings = [s for g in GRAPH.values() for s in g[2]]
    assert not strings, f"import these normally, so the graph shows them: {strings}"


def _sizes() -> tuple[list[str], list[str]]:
    long_modules, long_functions = [], []
    for path in [*MODULES.values(), *sorted((ROOT / "scripts").glob("*.py"))]:
        text = path.read_text()
        rel = path.relative_to(ROOT)
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{rel} ({text.count(chr(10))} lines)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long_functions.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    return long_modules, long_functions


@pytest.mark.parametrize("kind", ["modules", "functions"])
def test_sizes(kind):
    long_modules, long_functions = _sizes()
    found = long_modules if kind == "modules" else long_functions
    limit = MAX_MODULE_LINES if kind == "modules" else MAX_FUNCTION_LINES
    assert not found, f"split these by what they do (limit {limit} lines): {found}"

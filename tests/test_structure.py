"""The package's import structure, read from the source with ``ast`` (nothing is imported):
no module imports in a circle, ``train/`` reaches layers only through ``flows/`` or the
protocol, and no private name (``_x``) is imported from another module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "flowjax_res"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module named by ``from ... import`` in ``module`` (file ``path``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path):
    """``(target module, imported name or None, line)`` for every import in the file, at
    module level and inside functions alike."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            for alias in node.names:
                yield target, alias.name, node.lineno


def _internal(target: str, name: str | None) -> str | None:
    """The package module an import depends on (``from pkg import mod`` is the module
    ``pkg.mod`` when that is a module), or ``None`` outside the package."""
    if not (target == PACKAGE or target.startswith(PACKAGE + ".")):
        return None
    if name is not None and f"{target}.{name}" in MODULES:
        return f"{target}.{name}"
    return target if target in MODULES else None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for target, name, _ in _imports(module, path):
            dep = _internal(target, name)
            if dep is not None and dep != module:
                graph[module].add(dep)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_is_found():
    assert f"{PACKAGE}.protocol" in MODULES and f"{PACKAGE}.train.step" in MODULES


def test_no_import_cycles():
    """A package ``__init__`` that re-exports its modules is part of the graph too, so a
    module importing its own package's ``__init__`` from below shows up as a cycle."""
    assert _cycles(_graph()) == []


def test_train_does_not_import_layers():
    bad = [f"{m}:{line} imports {target}" for m, path in MODULES.items() if m.startswith(f"{PACKAGE}.train")
           for target, name, line in _imports(m, path)
           if (_internal(target, name) or "").startswith(f"{PACKAGE}.layers")]
    assert bad == []


def test_no_private_names_imported_across_modules():
    bad = [f"{m}:{line} imports {name} from {target}" for m, path in MODULES.items()
           for target, name, line in _imports(m, path)
           if name is not None and name.startswith("_") and not name.startswith("__")
           and _internal(target, None) is not None and target != m]
    assert bad == []


def test_cycle_finder_on_a_small_graph():
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []

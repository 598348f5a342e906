"""The package's layering, checked on the source with ``ast`` (no imports run).

Every module of ``tiler/`` belongs to a *unit*: a sub-package (``tiler.engine``) or a module
directly under ``tiler/`` (``tiler.api``). :data:`LAYERS` orders the units from the bottom up; a
unit may import only units of its own layer or below — lazy imports inside functions and
``TYPE_CHECKING`` imports count too. So the graph of units has no cycle and no upward edge.
A new sub-package fails here until it is given a layer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tiler"

#: Units from the bottom up; units in one tuple are one layer (they must still not form a cycle).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "version", "malloc", "cores"),
    ("geo",),
    ("sources",),
    ("plan",),
    ("masks",),
    ("models",),
    ("runners",),
    ("config",),
    ("store",),
    ("engine",),
    ("distributed",),
    ("results",),
    ("objects",),
    ("api",),
    ("calibrate",),
    ("cli",),
    ("__init__",),  # ``tiler`` itself: the public names
)
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str | None:
    """``tiler.engine.job`` -> ``engine``; ``tiler`` -> ``__init__``; not tiler -> None."""
    parts = module.split(".")
    if parts[0] != "tiler":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


def imports_of(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (``from . import x`` gives the package.x)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names if (PACKAGE.parent / f"{name}.{a.name}".replace(
                ".", "/")).is_dir() or (PACKAGE.parent / (f"{name}.{a.name}".replace(".", "/") + ".py")).is_file())
    return found


def unit_graph() -> dict[str, dict[str, list[str]]]:
    """``{unit: {imported unit: [modules making that import]}}`` over all of ``tiler/``."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        src = _unit(_module(path))
        assert src is not None
        edges = graph.setdefault(src, {})
        for name in imports_of(path):
            dst = _unit(name)
            if dst is not None and dst != src and not (src == "__init__" and name == "tiler"):
                edges.setdefault(dst, []).append(_module(path))
    return graph


def test_every_unit_has_a_layer():
    missing = sorted(set(unit_graph()) - set(RANK))
    assert not missing, f"give these a place in LAYERS: {missing}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    upward = [f"{src} -> {dst} (in {', '.join(sorted(set(where)))})"
              for src, edges in unit_graph().items() for dst, where in edges.items() if RANK[dst] > RANK[src]]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle_between_units():
    graph = {src: set(edges) for src, edges in unit_graph().items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(unit: str, path: list[str]) -> list[str] | None:
        state[unit] = 1
        for nxt in sorted(graph.get(unit, ())):
            if state.get(nxt) == 1:
                return path + [unit, nxt]
            if nxt not in state and (cycle := visit(nxt, path + [unit])):
                return cycle
        state[unit] = 2
        return None

    for unit in sorted(graph):
        if unit not in state:
            cycle = visit(unit, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]):])


def test_the_graph_is_seen():
    """The walk finds the edges it should (guards the checks above against seeing nothing)."""
    graph = unit_graph()
    assert "runners" in graph["engine"] and "models" in graph["runners"] and "engine" in graph["api"]


def test_no_private_module_directly_under_tiler():
    private = [p.name for p in PACKAGE.iterdir() if p.name.startswith("_") and p.name != "__init__.py"
               and p.name != "__pycache__"]
    assert not private


@pytest.mark.parametrize("package", sorted(p.parent.relative_to(ROOT).as_posix()
                                           for p in PACKAGE.rglob("__init__.py")))
def test_every_sub_package_says_what_it_owns_and_may_import(package):
    doc = ast.get_docstring(ast.parse((ROOT / package / "__init__.py").read_text()))
    assert doc, f"{package}/__init__.py has no docstring"
    if package != "tiler":
        assert "May import:" in doc, f"{package}/__init__.py: say what it may import ('May import: ...')"


def test_tools_and_exporters_stay_outside_the_runtime():
    """``tools/`` (demo, training) is never imported by tiler; ``exporters/`` only by ``tiler export``."""
    for path in PACKAGE.rglob("*.py"):
        names = imports_of(path)
        assert not any(n == "tools" or n.startswith("tools.") for n in names), path
        if any(n == "exporters" or n.startswith("exporters.") for n in names):
            assert path == PACKAGE / "cli" / "export.py", path


def test_each_sub_package_imports_only_what_its_docstring_allows():
    """The ``May import:`` line of each sub-package's docstring is the truth (``anything``: no limit)."""
    graph = unit_graph()
    wrong = []
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        unit = init.parent.name
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        line = " ".join(doc.split("May import:", 1)[1].split("\n\n", 1)[0].split()) if "May import:" in doc else ""
        if line.startswith("anything"):
            continue
        allowed = set(re.findall(r"[a-z_]+", line)) & set(RANK)
        extra = sorted(set(graph.get(unit, {})) - allowed)
        if extra:
            wrong.append(f"{unit} imports {extra}, which its docstring does not allow ({line!r})")
    assert not wrong, "\n".join(wrong)

"""The layer order of docs/architecture.md ("Layers"), enforced on the source: every import of every module under
src/dard, read with :mod:`ast` (top-level, function-level and ``if TYPE_CHECKING:`` imports alike; relative ones
resolved), goes to the importer's own layer or one below it, and no modules import each other in a cycle (a package
``__init__`` that imports its own submodules while one of them imports from that ``__init__`` counts). Also: no
source file over :data:`MAX_LINES` lines and no function over :data:`MAX_FUNCTION_LINES` unless :data:`LONG_FILES` or
:data:`LONG_FUNCTIONS` states why.

A failure lists every offending import as ``file:line``. No module is imported or executed.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "dard"

#: The layers, lowest first (docs/architecture.md says the same). A module belongs to the entry naming it or its
#: nearest enclosing package; it may import from its own layer and the ones below, never from one above. ``dard``
#: alone is the package face (dard/__init__.py), which re-exports the public API and so sits on top.
LAYERS: list[tuple[str, ...]] = [
    # the foundation: one job each, no model or tensor knowledge
    (
        "dard.errors",
        "dard._version",
        "dard._git",
        "dard.registry",
        "dard.io",
        "dard.reading",
        "dard.yaml_files",
        "dard.names",
        "dard.validate",
        "dard.module_utils",
        "dard.progress",
        "dard.packaged",
        "dard.durations",
        "dard.runtime",
        "dard.crash",
        "dard.interrupts",
        "dard.user_code",
    ),
    ("dard.models", "dard.data", "dard.model_checks", "dard.weights"),
    ("dard.attacks",),
    ("dard.methods", "dard.evaluation"),  # losses and the measuring core, side by side on the attacks
    ("dard.config",),
    ("dard.run_dir",),
    ("dard.checkpoint", "dard.model_fit"),
    ("dard.training", "dard.report"),
    ("dard.experiment",),
    ("dard.cli", "dard.__main__", "dard"),
]

#: Imports that break the rules today, each fixed by issue 22's work in another branch (importer, imported). They
#: are left out of both checks; the lead empties this set when the branches are merged, and
#: test_known_violations_are_still_there says which entries a merge has made stale.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()

#: the longest source file (lines) without a stated reason
MAX_LINES = 350
#: the longest function (lines, decorators aside) without a stated reason
MAX_FUNCTION_LINES = 80
#: functions allowed over MAX_FUNCTION_LINES ("path under src/dard:name" -> why)
LONG_FUNCTIONS: dict[str, str] = {}
#: files allowed over MAX_LINES (path under src/dard -> why)
LONG_FILES: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    """One import of a dard module by another: where it is written and which module it reaches."""

    importer: str
    imported: str
    path: Path
    line: int

    def where(self) -> str:
        return f"{self.path.relative_to(SRC.parent)}:{self.line}"


def module_name(path: Path) -> str:
    """``src/dard/cli/app.py`` -> ``dard.cli.app``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    """Every module under src/dard, by name."""
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _target(name: str) -> str | None:
    """The dard module an imported name reaches: the name itself, or its longest prefix that is a module."""
    while name:
        if name in modules():
            return name
        name = name.rpartition(".")[0]
    return None


def _imported_names(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """The dotted names one import statement reaches: ``from a import b`` reaches ``a``, and ``a.b`` when that is a
    module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: resolved against the importer's package
        package = importer if is_package else importer.rpartition(".")[0]
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        source = ".".join([*base, *([node.module] if node.module else [])])
    else:
        source = node.module or ""
    # `from a import b` reads a's namespace (a's __init__) even when b is a submodule, so it reaches a as well
    return [source, *(f"{source}.{a.name}" for a in node.names if f"{source}.{a.name}" in modules())]


@cache
def imports() -> list[Import]:
    """Every import of a dard module written anywhere in a module under src/dard (a module's own name aside)."""
    found: dict[tuple[str, str, int], Import] = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for dotted in _imported_names(node, name, path.name == "__init__.py"):
                target = _target(dotted) if dotted.split(".")[0] == "dard" else None
                if target is not None and target != name:
                    found.setdefault((name, target, node.lineno), Import(name, target, path, node.lineno))
    return list(found.values())


def layer_of(module: str) -> int:
    """The index in LAYERS of ``module``'s nearest listed name (``dard`` itself only for the package face)."""
    name = module
    while name:
        for index, members in enumerate(LAYERS):
            if name in members and (name != "dard" or module == "dard"):
                return index
        name = name.rpartition(".")[0]
    raise AssertionError(f"{module} is in no layer of tests/test_layers.py LAYERS (and docs/architecture.md)")


def _checked() -> list[Import]:
    return [i for i in imports() if (i.importer, i.imported) not in KNOWN_VIOLATIONS]


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)


def test_no_import_goes_up_the_layers():
    upward = [i for i in _checked() if layer_of(i.imported) > layer_of(i.importer)]
    lines = [
        f"{i.where()}: {i.importer} (layer {layer_of(i.importer)}) imports {i.imported} (layer {layer_of(i.imported)})"
        for i in upward
    ]
    assert not lines, "imports up the layer order of docs/architecture.md:\n" + "\n".join(lines)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycle():
    edges = _checked()
    report = []
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for i in edges:
        graph[i.importer].add(i.imported)
    for component in _cycles(graph):
        members = set(component)
        report.append("cycle between " + ", ".join(component) + ":")
        inside = [i for i in edges if i.importer in members and i.imported in members]
        report += [f"  {i.where()}: {i.importer} imports {i.imported}" for i in inside]
    assert not report, "import cycles (function-level and TYPE_CHECKING imports count):\n" + "\n".join(report)


def test_known_violations_are_still_there():
    """An entry of KNOWN_VIOLATIONS that no import matches any more is fixed: take it out of the set."""
    present = {(i.importer, i.imported) for i in imports()}
    stale = sorted(KNOWN_VIOLATIONS - present)
    assert not stale, f"fixed, remove from KNOWN_VIOLATIONS: {stale}"


def test_no_source_file_is_long_without_a_reason():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in modules().values()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    unexplained = [f"src/dard/{p}: {n} lines" for p, n in sorted(long.items()) if p not in LONG_FILES]
    assert not unexplained, f"over {MAX_LINES} lines, with no reason in LONG_FILES:\n" + "\n".join(unexplained)
    stale = sorted(set(LONG_FILES) - set(long))
    assert not stale, f"no longer over {MAX_LINES} lines, remove from LONG_FILES: {stale}"


def test_no_function_is_long_without_a_reason():
    long = {
        f"{p.relative_to(PACKAGE)}:{node.name}": n
        for p in modules().values()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES
    }
    unexplained = [f"src/dard/{f}: {n} lines" for f, n in sorted(long.items()) if f not in LONG_FUNCTIONS]
    assert not unexplained, f"over {MAX_FUNCTION_LINES} lines, no reason in LONG_FUNCTIONS:\n" + "\n".join(unexplained)
    stale = sorted(set(LONG_FUNCTIONS) - set(long))
    assert not stale, f"no longer over {MAX_FUNCTION_LINES} lines, remove from LONG_FUNCTIONS: {stale}"


def test_the_reader_resolves_imports_as_python_does():
    """``from . import x`` reaches the package and its submodule x; ``from .m import name`` reaches m alone."""
    package_import = ast.parse("from . import app").body[0]
    assert _imported_names(package_import, "dard.cli", is_package=True) == ["dard.cli", "dard.cli.app"]
    module_import = ast.parse("from .common import stderr_line").body[0]
    assert _imported_names(module_import, "dard.cli.train", is_package=False) == ["dard.cli.common"]
    function_level = [i for i in imports() if i.importer == "dard.cli.report" and i.imported == "dard.report"]
    assert function_level, "an import inside a function counts"


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [["a", "b", "c"]]

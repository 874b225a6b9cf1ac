"""The import rules of docs/architecture.md, checked on the source: every module under
src/still is parsed (nothing is imported) and each of its imports, at the top, inside a
function or under TYPE_CHECKING, must

1. enter another package through its front door: `still.X._y` only from inside `still.X`;
2. point down the layers, or across one: interface -> stages -> nouns -> vocabulary;
3. leave the nouns without a cycle: no two of them import each other, however indirectly.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: dict[str, set[str]] = {
    # what a user runs: the CLI, `python -m still`, and the `import still` facade
    "interface": {"still", "still.__main__", "still.cli"},
    # stages on a Run: what a command does, in order
    "stages": {"still.pipeline"},
    # the things stages work with; each imports only nouns below it and the vocabulary
    "nouns": {
        "still.bench",
        "still.capture",
        "still.capture_ray",
        "still.cost",
        "still.curate",
        "still.gguf",
        "still.graders",
        "still.models",
        "still.monitor",
        "still.preference",
        "still.proxy",
        "still.report",
        "still.route",
        "still.serve",
        "still.shadow",
        "still.store",
        "still.tasks",
        "still.testing",
        "still.tokens",
        "still.train",
    },
    # words every layer shares; imports nothing above it
    "vocabulary": {
        "still.errors",
        "still.plugins",
        "still.prices",
        "still.settings",
        "still.types",
    },
}
RANK = {unit: rank for rank, layer in enumerate(reversed(LAYERS)) for unit in LAYERS[layer]}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exists(module: str) -> bool:
    base = SRC.joinpath(*module.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path, text: str | None = None) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every still import in `path` (or in `text`, read as
    if it were that file): `from a import b` counts as `a.b` when that is a module, else
    as `a`."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(text if text is not None else path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [
                f"{base}.{a.name}" if _exists(f"{base}.{a.name}") else base for a in node.names
            ]
        else:
            continue
        for name in names:
            if name == "still" or name.startswith("still."):
                yield name, node.lineno


def _unit(module: str) -> str:
    """The layer unit a module belongs to: `still` itself or the top-level `still.X`."""
    return ".".join(module.split(".")[:2])


def _private_owner(module: str) -> str | None:
    """`still.X` for `still.X._y[...]` (the package whose private module it is), else None."""
    parts = module.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


Edge = tuple[str, str, int, Path]
"""(importing module, imported module, line, file)."""


def _edges(path: Path, text: str | None = None) -> list[Edge]:
    return [(_module_name(path), target, line, path) for target, line in _imports(path, text)]


def _private_violations(edges: list[Edge]) -> list[str]:
    bad = []
    for importer, target, line, path in edges:
        owner = _private_owner(target)
        if owner is not None and importer != owner and not importer.startswith(owner + "."):
            bad.append(f"{path.relative_to(SRC)}:{line}: {target} (import it from {owner})")
    return bad


def _layer_violations(edges: list[Edge]) -> list[str]:
    bad = []
    for importer, target, line, path in edges:
        src, dst = _unit(importer), _unit(target)
        if RANK[dst] > RANK[src]:
            bad.append(f"{path.relative_to(SRC)}:{line}: {importer} ({src}) imports {target}")
    return bad


MODULES = sorted(SRC.joinpath("still").rglob("*.py"))
EDGES = [edge for p in MODULES for edge in _edges(p)]


def test_the_source_is_found() -> None:
    assert len(MODULES) > 50 and len(EDGES) > 200


def test_every_module_has_a_layer() -> None:
    missing = sorted({_unit(_module_name(p)) for p in MODULES} - set(RANK))
    assert not missing, f"add to a layer in tests/test_architecture.py: {missing}"


def test_no_package_reaches_into_another_ones_private_modules() -> None:
    bad = _private_violations(EDGES)
    assert not bad, "\n".join(bad)


def test_imports_run_down_the_layers() -> None:
    bad = _layer_violations(EDGES)
    assert not bad, "imports running up the layers:\n" + "\n".join(bad)


def test_the_nouns_import_each_other_without_a_cycle() -> None:
    graph: dict[str, set[str]] = defaultdict(set)
    for importer, target, _, _ in EDGES:
        src, dst = _unit(importer), _unit(target)
        if src != dst and src in LAYERS["nouns"] and dst in LAYERS["nouns"]:
            graph[src].add(dst)
    done: set[str] = set()

    def visit(unit: str, path: list[str]) -> None:
        if unit in path:
            cycle = path[path.index(unit) :] + [unit]
            pytest.fail("a cycle between packages: " + " -> ".join(cycle))
        if unit in done:
            return
        for nxt in sorted(graph[unit]):
            visit(nxt, [*path, unit])
        done.add(unit)

    for unit in sorted(graph):
        visit(unit, [])


ROOT = SRC.parent
OUTSIDE = sorted(p for d in ("benchmarks", "scripts") for p in ROOT.joinpath(d).glob("*.py"))
"""Code that uses still from outside the package, as a user's code would."""


def _outside_violations(path: Path, text: str | None = None) -> list[str]:
    """Imports of a private still module (`still.X._y`) in a script or benchmark."""
    tree = ast.parse(text if text is not None else path.read_text(encoding="utf-8"))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        private = [n for n in names if n.startswith("still.") and _private_owner(n)]
        if private:  # one line per import statement
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            bad.append(f"{where}: {private[0]} (import from {_private_owner(private[0])})")
    return bad


def test_scripts_and_benchmarks_use_only_public_names() -> None:
    assert len(OUTSIDE) >= 5
    bad = [v for p in OUTSIDE for v in _outside_violations(p)]
    assert not bad, "export what they need from the package's __init__:\n" + "\n".join(bad)
    planted = "def f():\n    from still.models._local import LocalProvider\n"
    assert _outside_violations(OUTSIDE[0], planted)
    assert _outside_violations(OUTSIDE[0], "from still.models import _local\n")
    assert not _outside_violations(OUTSIDE[0], "from still.models import LocalProvider\n")


TOKENS = SRC / "still" / "tokens.py"
PIPELINE = SRC / "still" / "pipeline" / "_train.py"


def test_the_checks_catch_what_they_forbid() -> None:
    """Bad imports planted in the text of real modules fail the matching check."""
    private = "from still.models._local import local_path\n"
    assert _private_violations(_edges(TOKENS, private))
    assert not _private_violations(_edges(SRC / "still" / "models" / "_bundled.py", private))
    lazy_upward = "def f():\n    from still.pipeline import Run\n"
    assert _layer_violations(_edges(TOKENS, lazy_upward))
    assert not _layer_violations(_edges(PIPELINE, lazy_upward))
    typed_upward = "if TYPE_CHECKING:\n    from still.cli import main\n"
    assert _layer_violations(_edges(PIPELINE, typed_upward))
    relative = "from ..pipeline import Run\n"  # from still/report/x.py: still.pipeline
    assert _layer_violations(_edges(SRC / "still" / "report" / "_x.py", relative))

"""The package's import graph: no cycles, and every import points down the layers that
docs/ARCHITECTURE.md names (read from its ```layers block, so the doc and the rule stay one)."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "vinstruct"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """Every vinstruct module `path` imports, at the top or inside a function."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in known:  # `from vinstruct.model import io` names a module
                    found.add(f"{base}.{alias.name}")
                elif base in known:
                    found.add(base)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    """Module -> the vinstruct modules it imports."""
    names = module_names()
    return {name: imported_modules(name, path, set(names)) for name, path in names.items()}


def layers() -> dict[str, int]:
    """Top-level package (or module) -> its layer, 0 at the bottom."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("```layers\n", 1)[1].split("```", 1)[0]
    lines = [line.split() for line in block.splitlines() if line.strip()]
    return {unit: len(lines) - 1 - i for i, line in enumerate(lines) for unit in line}


def unit_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_package_has_no_import_cycle():
    try:
        graphlib.TopologicalSorter(import_graph()).prepare()
    except graphlib.CycleError as err:
        raise AssertionError("import cycle: " + " -> ".join(err.args[1])) from None


def test_every_top_level_package_has_a_layer():
    assert {unit_of(m) for m in module_names()} - set(layers()) == set()


def test_imports_point_down_the_layers():
    rank = layers()
    wrong = [f"{source} -> {target} ({a} is {'below' if rank[a] < rank[b] else 'beside'} {b})"
             for source, targets in import_graph().items() for target in targets
             if (a := unit_of(source)) != (b := unit_of(target)) and rank[a] <= rank[b]]
    assert not wrong, "imports that do not point down the layers:\n" + "\n".join(sorted(wrong))

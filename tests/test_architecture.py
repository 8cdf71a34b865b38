"""The package's shape: imports run one way, down the layout table of CONTRIBUTING.md.

Each module of ``siro_data/`` is a row of that table, top (the faces users call)
to bottom (what everything rests on). A module may import only modules below
it, so there is no cycle and nothing reaches up to its caller; no module takes
another's private names; the emulator stands apart (only the CLI starts it).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "siro_data"
EMULATOR = "emulator"
MAX_LINES = 500


def layout() -> list[str]:
    """The modules of the layout table, top to bottom (``emulator`` for the package)."""
    text = (ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    names = re.findall(r"^\| `siro_data/([\w/]+?)(?:\.py|/)` \|", section, flags=re.MULTILINE)
    return [name.removesuffix("/") for name in names]


def module_of(path: Path) -> str:
    """``core`` for siro_data/core.py; ``emulator`` for anything inside the emulator."""
    relative = path.relative_to(PACKAGE)
    return EMULATOR if relative.parts[0] == EMULATOR else relative.stem


def modules() -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        found.setdefault(module_of(path), []).append(path)
    return found


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names taken from it, line) for every import of the package in ``path``,
    lazy ones inside functions included.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    inside_emulator = module_of(path) == EMULATOR
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "siro_data" and len(parts) > 1:
                    found.append((parts[1], [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] != "siro_data":
                    continue
                parts = parts[1:]
            elif inside_emulator and node.level == 1:
                continue  # within the emulator package
            else:
                parts = (node.module or "").split(".") if node.module else []
            if parts and parts[0]:
                found.append((parts[0], names, node.lineno))
            else:  # from . import core, dask
                found.extend((name, [], node.lineno) for name in names)
    return found


def test_the_layout_table_lists_every_module_once():
    table = layout()
    assert len(table) == len(set(table)), "a module appears twice in the layout table"
    assert sorted(table) == sorted(modules()), "the layout table and siro_data/ differ"


@pytest.mark.parametrize("module", sorted(modules()))
def test_imports_run_down_the_layout(module):
    table = layout()
    rank = {name: position for position, name in enumerate(table)}
    for path in modules()[module]:
        for target, _, line in imports(path):
            if target == module:
                continue
            where = f"{path.relative_to(ROOT)}:{line} imports siro_data.{target}"
            assert target in rank, f"{where}, which the layout table does not list"
            assert rank[target] > rank[module], f"{where}, which stands above it in the layout"


def test_no_cycle():
    """Follows from the layout rule; checked on its own so a broken table cannot hide one."""
    graph = {
        module: {target for path in paths for target, _, _ in imports(path)} - {module}
        for module, paths in modules().items()
    }
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in done:
            return
        assert node not in visiting, f"import cycle: {' -> '.join([*trail, node])}"
        visiting.add(node)
        for target in sorted(graph.get(node, ())):
            visit(target, [*trail, node])
        visiting.discard(node)
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_no_module_takes_another_modules_private_names():
    for module, paths in modules().items():
        for path in paths:
            for target, names, line in imports(path):
                private = [name for name in names if _private(name) and target != module]
                assert not private, f"{path.relative_to(ROOT)}:{line} takes {private} of {target}"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_only_the_cli_starts_the_emulator():
    users = {
        module
        for module, paths in modules().items()
        for path in paths
        for target, _, _ in imports(path)
        if target == EMULATOR and module != EMULATOR
    }
    assert users <= {"cli"}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda path: path.name)
def test_no_module_is_over_500_lines(path):
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split its concerns"

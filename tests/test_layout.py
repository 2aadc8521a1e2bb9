"""The layering the docs promise: the floors of docs/concepts.md hold for every import,
functions and modules stay short, and the config and analysis rooms load without torch."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

TORCH_FREE = [
    "tiedharness.analysis",
    "tiedharness.analysis.plots",
    "tiedharness.analysis.report",
    "tiedharness.analysis.aggregate",
    "tiedharness.atomic",
    "tiedharness.config",
    "tiedharness.interrupt",
    "tiedharness.model.labels",
    "tiedharness.model.names",
    "tiedharness.schema",
    "tiedharness.sweep.summary",
    "tiedharness.tasks",
    "tiedharness.tracking.record",
    "tiedharness.vocab",
]


@pytest.mark.parametrize("module", TORCH_FREE)
def test_module_imports_without_torch(module):
    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", f"{module} imports torch"


def test_torch_is_loaded_where_it_is_needed():
    """The check above can fail: the training loop does load torch."""
    code = "import sys, tiedharness.training.loop; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "True"


# ---------------------------------------------------------------------------- the floors

PACKAGE = Path(__file__).resolve().parent.parent / "tiedharness"
CONCEPTS = PACKAGE.parent / "docs" / "concepts.md"


def floors_in_the_docs() -> dict[str, int]:
    """Room → floor, from the table in docs/concepts.md (`| 2 | `training`, `tracking` | …`)."""
    floors = {}
    for line in CONCEPTS.read_text().splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if match:
            for room in re.findall(r"`(\w+)`", match.group(2)):
                floors[room] = int(match.group(1))
    return floors


def room_of(module: str) -> str:
    """tiedharness.training.loop → training; tiedharness.job → job."""
    return module.split(".")[1]


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every tiedharness import in a file, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "tiedharness":  # from tiedharness import search
                found += [(node.lineno, f"tiedharness.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return [(line, m) for line, m in found if m.startswith("tiedharness.")]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def upward_imports(floors: dict[str, int]) -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if module == "tiedharness":
            continue
        mine = floors[room_of(module)]
        for line, imported in imports_of(path):
            room = room_of(imported)
            if room != room_of(module) and floors[room] >= mine:
                problems.append(
                    f"{path.name}:{line} ({room_of(module)}, floor {mine}) imports "
                    f"{imported} ({room}, floor {floors[room]})"
                )
    return problems


def test_every_room_of_the_package_has_a_floor_in_the_docs():
    floors = floors_in_the_docs()
    rooms = {
        room_of(module_name(p))
        for p in PACKAGE.rglob("*.py")
        if p.parent != PACKAGE or p.name != "__init__.py"
    }
    assert rooms and not rooms - floors.keys(), rooms - floors.keys()
    assert not floors.keys() - rooms, "the docs name a room the package does not have"


def test_no_module_imports_a_room_of_its_own_floor_or_above():
    assert upward_imports(floors_in_the_docs()) == []


def test_the_floor_check_sees_an_upward_import():
    """The check above can fail: with training raised above job, job's imports of
    training are upward."""
    floors = {**floors_in_the_docs(), "training": 9}
    problems = upward_imports(floors)
    assert any(p.startswith("job.py:") and "tiedharness.training." in p for p in problems)


def test_functions_and_modules_stay_short():
    """Each function fits on a screen (≤ 60 lines), each module in one sitting (≤ 420)."""
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if len(source.splitlines()) > 420:
            long.append(f"{path}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{path}:{node.lineno} {node.name}: {lines} lines")
    assert long == []

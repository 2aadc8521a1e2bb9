"""The layering the docs promise: the floors of docs/concepts.md hold for every import of
the package, the Hydra plugin and the benchmarks; no room's modules import each other in a
cycle; functions and modules stay short; and the config and analysis rooms load without
torch."""

from __future__ import annotations

import ast
import itertools
import re
import subprocess
import sys
from collections.abc import Container
from pathlib import Path

import pytest

TORCH_FREE = [
    "tiedharness.analysis",
    "tiedharness.analysis.plots",
    "tiedharness.analysis.report",
    "tiedharness.analysis.aggregate",
    "tiedharness.analysis.runs",
    "tiedharness.atomic",
    "tiedharness.config",
    "tiedharness.interrupt",
    "tiedharness.model.labels",
    "tiedharness.model.names",
    "tiedharness.model.variants",
    "tiedharness.schema",
    "tiedharness.sweep.grid",
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

ROOT = Path(__file__).resolve().parent.parent
CONCEPTS = ROOT / "docs" / "concepts.md"
# The code the floors and the size caps cover: the package, Hydra's entry point to its
# search sweeper, and the benchmarks. The last two are one room each.
CODE = ("tiedharness", "hydra_plugins", "benchmarks")


def floors_in_the_docs() -> dict[str, int]:
    """Room → floor, from the table in docs/concepts.md (`| 2 | `training`, `tracking` | …`)."""
    floors = {}
    for line in CONCEPTS.read_text().splitlines():
        match = re.match(r"\|\s*(\d+)\s*\|([^|]*)\|", line)
        if match:
            for room in re.findall(r"`(\w+)`", match.group(2)):
                floors[room] = int(match.group(1))
    return floors


def code_files(root: Path = ROOT) -> list[Path]:
    return sorted(path for top in CODE for path in (root / top).rglob("*.py"))


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str | None:
    """tiedharness.training.loop → training; tiedharness.job → job; benchmarks.x →
    benchmarks; the package itself (its __init__) → None."""
    top, _, rest = module.partition(".")
    return (rest.split(".")[0] or None) if top == "tiedharness" else top


def imports_of(path: Path, modules: Container[str], root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, module) of every import of our code in a file: inside functions and `if
    TYPE_CHECKING:` blocks too, relative ones resolved. `from pkg import name` imports
    pkg.name where that is one of `modules`, else pkg."""
    here = module_name(path, root)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..model import y
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                named = f"{base}.{alias.name}"
                found.append((node.lineno, named if named in modules else base))
    return [(line, m) for line, m in found if m.partition(".")[0] in CODE]


def code_modules(root: Path = ROOT) -> dict[str, Path]:
    return {module_name(path, root): path for path in code_files(root)}


def upward_imports(floors: dict[str, int]) -> list[str]:
    problems = []
    modules = code_modules()
    for module, path in modules.items():
        mine = room_of(module)
        if mine is None:
            continue
        for line, imported in imports_of(path, modules):
            room = room_of(imported)
            if room not in (None, mine) and floors[room] >= floors[mine]:
                problems.append(
                    f"{path.relative_to(ROOT)}:{line} ({mine}, floor {floors[mine]}) imports "
                    f"{imported} ({room}, floor {floors[room]})"
                )
    return problems


def test_every_room_has_a_floor_in_the_docs():
    floors = floors_in_the_docs()
    rooms = {room_of(module) for module in code_modules()} - {None}
    assert {"hydra_plugins", "benchmarks"} <= rooms
    assert not rooms - floors.keys(), rooms - floors.keys()
    assert not floors.keys() - rooms, "the docs name a room the code does not have"


def test_no_module_imports_a_room_of_its_own_floor_or_above():
    assert upward_imports(floors_in_the_docs()) == []


def test_the_floor_check_sees_an_upward_import():
    """The check above can fail: with training raised above job, job's imports of
    training are upward; with cli raised to the top, the plugin's and the benchmarks'
    imports of it are."""
    floors = {**floors_in_the_docs(), "training": 9}
    problems = upward_imports(floors)
    assert any(
        p.startswith("tiedharness/job.py:") and "tiedharness.training." in p for p in problems
    )
    problems = upward_imports({**floors_in_the_docs(), "cli": 99})
    for folder in ("hydra_plugins/", "benchmarks/"):
        assert any(p.startswith(folder) and "tiedharness.cli" in p for p in problems), folder


# ---------------------------------------------------------------------------- cycles in a room


def room_graph(root: Path = ROOT) -> dict[str, dict[str, int]]:
    """Module → {module of its own room it imports: line of the first such import}.
    Every import counts, those a cycle hides behind a function or TYPE_CHECKING too:
    each is a dependency, and a cycle means neither module can be read on its own."""
    modules = code_modules(root)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        edges = graph.setdefault(module, {})
        for line, imported in imports_of(path, modules, root):
            if imported != module and imported in modules and room_of(imported) == room_of(module):
                edges.setdefault(imported, line)
    return graph


def import_cycles(graph: dict[str, dict[str, int]]) -> list[str]:
    """One cycle through each group of modules that import each other, however long:
    `a:12 → b:30 → a` (each module with the line of its import of the next)."""
    cycles = []
    for group in strongly_connected(graph):
        if len(group) < 2:
            continue
        start = min(group)
        path = shortest_cycle(graph, start, group)
        steps = [f"{a}:{graph[a][b]}" for a, b in itertools.pairwise(path)]
        cycles.append(" → ".join([*steps, start]))
    return cycles


def strongly_connected(graph: dict[str, dict[str, int]]) -> list[set[str]]:
    """Tarjan's strongly connected components: the groups of modules that reach each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = {stack.pop()}
            while node not in group:
                group.add(stack.pop())
            groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def shortest_cycle(graph: dict[str, dict[str, int]], start: str, group: set[str]) -> list[str]:
    """[start, …, start] within the group, breadth first."""
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [*reversed(path), start]
                if nxt in group and nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    raise AssertionError(f"{start} is on no cycle of {group}")


def test_no_room_has_an_import_cycle():
    assert import_cycles(room_graph()) == []


def test_the_cycle_check_sees_a_hidden_cycle(tmp_path):
    """The check above can fail: a cycle of three made of a TYPE_CHECKING import, an
    import inside a function and a relative one; imports between rooms are no cycle."""
    room = tmp_path / "tiedharness" / "room"
    other = tmp_path / "tiedharness" / "other"
    for folder in (room, other):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
    (room / "a.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from tiedharness.room.b import B\n"
    )
    (room / "b.py").write_text("def f():\n    from tiedharness.room import c\n")
    (room / "c.py").write_text("from .a import A\nfrom tiedharness.other import d\n")
    (room / "d.py").write_text("from tiedharness.room.a import A\n")
    (other / "d.py").write_text("from tiedharness.room.c import C\n")
    assert import_cycles(room_graph(tmp_path)) == [
        "tiedharness.room.a:4 → tiedharness.room.b:2 → tiedharness.room.c:1 → tiedharness.room.a"
    ]


def test_the_cycle_check_sees_one_more_import_in_the_real_graph():
    graph = room_graph()
    graph["tiedharness.model.names"]["tiedharness.model.config"] = 1
    line = graph["tiedharness.model.config"]["tiedharness.model.names"]
    assert (
        f"tiedharness.model.config:{line} → tiedharness.model.names:1 → tiedharness.model.config"
        in import_cycles(graph)
    )


# ---------------------------------------------------------------------------- sizes

MAX_MODULE_LINES = 380  # a module read in one sitting
MAX_FUNCTION_LINES = 60  # a function on one screen


def test_functions_and_modules_stay_short():
    long = []
    for path in code_files():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{path}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path}:{node.lineno} {node.name}: {lines} lines")
    assert long == []

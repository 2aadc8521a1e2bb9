"""One owner of a run's folder: no module but tracking/run_folder.py names a file of it.

The run folder's files (its record, history, checkpoint, decoded and evaluation outputs,
lock and torchrun marker) are named in tiedharness/tracking/run_folder.py alone; every
other module asks a RunFolder for the path. The check reads every string constant of the
package's code (f-strings with their holes as `{}`); docstrings and comments may name the
files."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OWNER = ROOT / "tiedharness" / "tracking" / "run_folder.py"
# the names, exactly as run_folder.py spells them (a test below checks they still do)
RUN_FOLDER_FILE = re.compile(
    r"run\.json|history\.jsonl|checkpoint\.pt|decoded-(\{\}|valid|test)"
    r"|eval-(\{\}|valid|test)|^\.lock$|\.torchrun"
)


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (of a module, class or function)."""
    found = set()
    for node in ast.walk(tree):
        kinds = ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        if isinstance(node, kinds) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def strings(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every string in the code that is not a docstring; an f-string as
    one text with `{}` for each hole."""
    skip = docstrings(tree)
    inside_fstrings = {
        id(part)
        for node in ast.walk(tree)
        if isinstance(node, ast.JoinedStr)
        for part in node.values
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(
                part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
            out.append((node.lineno, text))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in skip or id(node) in inside_fstrings:
                continue
            out.append((node.lineno, node.value))
    return out


def files_named(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    return [
        f"{path.relative_to(path.parents[1])}:{line}: {text!r}"
        for line, text in sorted(strings(tree))
        if RUN_FOLDER_FILE.search(text)
    ]


def outside_the_owner(paths: list[Path]) -> list[str]:
    return [hit for path in paths if path != OWNER for hit in files_named(path)]


def code() -> list[Path]:
    return sorted([*(ROOT / "tiedharness").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")])


def test_no_module_but_the_run_folder_names_its_files():
    assert outside_the_owner(code()) == []


def test_the_owner_names_every_file_the_check_looks_for():
    """The check follows the owner's spelling: each name it looks for is in run_folder.py."""
    named = " ".join(text for _, text in strings(ast.parse(OWNER.read_text())))
    for name in ("run.json", "history.jsonl", "checkpoint.pt", ".torchrun"):
        assert name in named
    assert re.search(r"decoded-\{\}", named) and re.search(r"eval-\{\}", named)
    assert len(files_named(OWNER)) >= 7


def test_a_planted_file_name_fails_the_check(tmp_path):
    """The check can fail: a module that opens a run folder's files itself is caught, in a
    plain string and in an f-string; the same names in its docstrings are not."""
    planted = tmp_path / "room" / "planted.py"
    planted.parent.mkdir()
    planted.write_text(
        '"""Reads run.json and history.jsonl (docstrings may say so)."""\n'
        "def history(folder):\n"
        '    """The history.jsonl of `folder`."""\n'
        '    return folder / "history.jsonl"\n'
        "def decoded(folder, split):\n"
        '    return folder / f"decoded-{split}.jsonl"\n'
        "LOCK = '.lock'\n"
    )
    hits = outside_the_owner([planted])
    assert len(hits) == 3, hits
    assert "'history.jsonl'" in hits[0] and "'decoded-{}.jsonl'" in hits[1]
    assert "'.lock'" in hits[2]

"""What the Hydra commands check and print before Hydra runs: every key a command takes,
its default and its meaning, grouped by config group (`--help`), and the command line's
overrides checked against those keys, so that a misspelt key or a schema node chosen as a
group option stops the command, with or without `+`, naming the closest real keys.

A field's meaning has one source: the `# comment` after the field in its dataclass (or the
comment lines right above it), read from the source with `tokenize`.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import difflib
import functools
import inspect
import io
import itertools
import sys
import tokenize
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from tiedharness.cli import CONF_DIR, fail
from tiedharness.config import GROUP_SCHEMAS, DataConfig, ParamsConfig
from tiedharness.tasks import TASKS, task_schema

HELP_FLAGS = ("--help", "-h")
# Hydra's flags that take the next word as their value (which may hold a "=")
VALUED_FLAGS = {"-sc", "--shell-completion", "-cn", "--config-name", "-cp", "--config-path"}
VALUED_FLAGS |= {"-cd", "--config-dir", "-c", "--cfg", "-p", "--package", "--info", "-i"}
VALUED_FLAGS |= {"--experimental-rerun"}
OPEN_GROUPS = ("hydra", "scale")  # free-form: Hydra's own, and the sizes cells read


@functools.cache
def field_meanings(schema: type) -> dict[str, str]:
    """Field name → its meaning: the comment after it, else the comment lines above it."""
    lines, _ = inspect.getsourcelines(schema)
    comments: dict[int, str] = {}
    tokens = tokenize.generate_tokens(io.StringIO("".join(lines)).readline)
    for tok in tokens:
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    body = ast.parse(_dedent(lines)).body[0]
    out = {}
    for base in reversed(schema.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            out.update(field_meanings(base))
    for node in body.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = comments.get(node.end_lineno, "")
            above, line = [], node.lineno - 1
            while not text and line in comments and lines[line - 1].strip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            out[node.target.id] = text or " ".join(above)
    return out


def _dedent(lines: list[str]) -> str:
    indent = len(lines[0]) - len(lines[0].lstrip())
    return "".join(line[indent:] if line.strip() else "\n" for line in lines)


def schema_fields(schema: Any, prefix: str = "") -> dict[str, tuple[Any, str]]:
    """Dotted key → (default, meaning) of every leaf field; nested dataclasses flattened."""
    out: dict[str, tuple[Any, str]] = {}
    kind = schema if isinstance(schema, type) else type(schema)
    meanings = field_meanings(kind)
    defaults = OmegaConf.structured(schema)
    for f in dataclasses.fields(kind):
        key = f"{prefix}{f.name}"
        nested = _dataclass_of(kind, f.name)
        if nested is not None:
            out.update(schema_fields(nested, f"{key}."))
            continue
        value = OmegaConf.select(defaults, f.name, throw_on_missing=False)
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value)
        out[key] = (value, meanings.get(f.name, ""))
    return out


def _dataclass_of(schema: type, name: str) -> type | None:
    """The dataclass a field holds (an optional one too), else None."""
    hint = typing.get_type_hints(schema)[name]
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and dataclasses.is_dataclass(candidate):
            return candidate
    return None


@functools.cache
def group_options(group: str, extra_dirs: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The real options of a config group: its files in conf/ (never a schema node), and
    in the user's own config folders (`extra_dirs`: --config-dir, hydra.searchpath)."""
    folders = [Path(CONF_DIR) / group, *(Path(d) / group for d in extra_dirs)]
    return tuple(sorted({p.stem for folder in folders for p in folder.glob("*.yaml")}))


def user_config_dirs(argv: list[str]) -> tuple[str, ...]:
    """The folders a command line adds to Hydra's search path: `--config-dir DIR` (`-cd`)
    and the `file://` entries of `hydra.searchpath=[…]`."""
    pairs = itertools.pairwise(argv)
    dirs = [value for flag, value in pairs if flag in ("-cd", "--config-dir")]
    for word in argv:
        if word.lstrip("+").startswith("hydra.searchpath="):
            entries = word.split("=", 1)[1].strip("[]").split(",")
            dirs += [
                e.strip().removeprefix("file://")
                for e in entries
                if e.strip().startswith("file://")
            ]
    return tuple(dirs)


def _task_fields() -> dict[str, tuple[Any, str]]:
    out: dict[str, tuple[Any, str]] = {}
    for name in TASKS:
        for key, value in schema_fields(task_schema(name)).items():
            out.setdefault(key, value)
    return out


@functools.cache
def app_keys(app: str) -> dict[str, dict[str, tuple[Any, str]]]:
    """Group (or "" for the root) → dotted key → (default, meaning), for one command."""
    if app == "params":
        fields = schema_fields(ParamsConfig)
        groups = {"": {k: v for k, v in fields.items() if "." not in k}}
        for group in ("model", "sharing"):
            groups[group] = {k: v for k, v in fields.items() if k.startswith(f"{group}.")}
        return groups
    if app == "data":
        fields = schema_fields(DataConfig)
        root = {k: v for k, v in fields.items() if k != "task"}
        return {"": root, "task": {f"task.{k}": v for k, v in _task_fields().items()}}
    groups = {"": _root_keys(Path(CONF_DIR) / "train.yaml")}
    groups["task"] = {f"task.{k}": v for k, v in _task_fields().items()}
    for group, schema in GROUP_SCHEMAS.items():
        groups[group] = {f"{group}.{k}": v for k, v in schema_fields(schema).items()}
    return groups


def _root_keys(path: Path) -> dict[str, tuple[Any, str]]:
    """The root keys of a primary config, each with the comment after or above it."""
    lines = path.read_text().splitlines()
    values = OmegaConf.load(path)
    out = {}
    for i, line in enumerate(lines):
        key = line.split(":")[0]
        if not key.isidentifier() or key in ("defaults", "hydra") or line.startswith(" "):
            continue
        text = line.split("#", 1)[1].strip() if "#" in line else ""
        above, j = [], i - 1
        while not text and j >= 0 and lines[j].startswith("#"):
            above.insert(0, lines[j].lstrip("#").strip())
            j -= 1
        out[key] = (values[key], text or " ".join(above))
    return out


def command_groups(app: str) -> tuple[str, ...]:
    """The config groups a command's primary config lets one choose."""
    if app == "params":
        return ("model", "sharing")
    if app == "data":
        return ("task",)
    return ("task", "model", "sharing", "trainer", "logger", "task_variant", "scale")


def choosable(app: str) -> tuple[str, ...]:
    extra = ("experiment", "cell", "hparams_search") if app == "train" else ()
    return command_groups(app) + extra


def override_words(argv: list[str]) -> list[str]:
    """The key=value words of a command line (flags and their values left out)."""
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in VALUED_FLAGS
        elif "=" in word:
            words.append(word)
    return words


def check_overrides(app: str, argv: list[str]) -> str | None:
    """Why the command line names a key or option the command does not have, else None."""
    keys = {k for group in app_keys(app).values() for k in group}
    nodes = {k.rsplit(".", n)[0] for k in keys for n in range(1, k.count(".") + 1)}
    groups = choosable(app)
    for word in override_words(argv):
        key, value = word.split("=", 1)
        key = key.lstrip("+~")
        if key.split(".")[0].split("/")[0] in OPEN_GROUPS or "/" in key or "@" in key:
            continue
        if key in groups:
            problem = _bad_option(key, value, user_config_dirs(argv))
        elif key in keys or key in nodes or (key in groups and "." not in key):
            problem = None
        else:
            pool = keys if "." in key else keys | set(groups)
            close = difflib.get_close_matches(key, sorted(pool), n=3, cutoff=0.6)
            others = f" (or {', '.join(close[1:])})" if close[1:] else ""
            hint = f": did you mean {close[0]}?{others}" if close else ""
            problem = f"unknown key {key!r} in {word!r}{hint} (`--help` lists every key)"
        if problem:
            return problem
    return None


def _bad_option(group: str, value: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    """A group choice that is not one of the group's files (a schema node, a typo)."""
    if "(" in value or value.strip() in ("null", "", "None"):
        return None
    options = group_options(group, extra_dirs)
    for choice in (v.strip() for v in value.split(",")):
        if choice not in options:
            close = difflib.get_close_matches(choice, options, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return (
                f"Could not find '{group}/{choice}': {group}={choice} is not an option of "
                f"{group}{hint}; choose one of {', '.join(options)}"
            )
    return None


def unknown_in(cfg: Any, app: str = "train") -> list[str]:
    """Keys of a composed config's groups that their schema lacks (added with `+`), each
    with the closest real keys."""
    known = {k for group in app_keys(app).values() for k in group}
    if "task" in cfg and app == "train":
        task = {f"task.{k}" for k in schema_fields(task_schema(cfg.task.name))}
        known = {k for k in known if not k.startswith("task.")} | task
    out = []
    for group in app_keys(app):
        if group and group in cfg and OmegaConf.is_dict(cfg[group]):
            out += _unknown(cfg[group], group, known)
    return [_with_hint(key, known) for key in out]


def _with_hint(key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"{key} (did you mean {close[0]}?)" if close else key


def _unknown(node: Any, prefix: str, known: set[str]) -> list[str]:
    out = []
    for name in node:
        key = f"{prefix}.{name}"
        if key in known:
            continue
        child = node._get_node(name)
        if OmegaConf.is_dict(child) and any(k.startswith(f"{key}.") for k in known):
            out += _unknown(child, key, known)
        else:
            out.append(key)
    return out


def render_help(app: str, header: str) -> str:
    """Every key of the command with its default and meaning, grouped by config group."""
    lines = [header, ""]
    for group, fields in app_keys(app).items():
        title = "root keys" if not group else f"{group}: (choose with {group}=…)"
        lines.append(title)
        if group in choosable(app):
            lines.append(f"  options: {', '.join(group_options(group))}")
        width = max((len(k) for k in fields), default=0)
        for key, (default, meaning) in fields.items():
            shown = _show(default)
            lines.append(f"  {key:<{width}}  = {shown:<10}  {meaning}")
        lines.append("")
    for group in choosable(app):
        if group not in app_keys(app):
            lines.append(f"{group}: options {', '.join(group_options(group))}")
    lines += [
        "",
        "Unknown keys are refused, with or without `+`. The group defaults shown are the",
        "schema's; an option file (e.g. model=small) may set some of them otherwise.",
        "Use --hydra-help for Hydra's own options (launchers, sweepers, logging).",
    ]
    return "\n".join(lines)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    return str(value)


def header_of(app: str) -> str:
    """The `hydra.help.header` of the command's primary config."""
    help_cfg = OmegaConf.load(Path(CONF_DIR) / f"{app}.yaml").hydra.help
    return str(help_cfg.header)


def guard(app: str, argv: list[str] | None = None) -> None:
    """Before Hydra: print the help for --help, or stop on an unknown key or option."""
    argv = sys.argv[1:] if argv is None else argv
    if any(flag in argv for flag in HELP_FLAGS):
        try:
            print(render_help(app, header_of(app)))
        except BrokenPipeError:  # `--help | head`
            sys.stderr.close()
        sys.exit(0)
    problem = check_overrides(app, argv)
    if problem:
        fail(problem)


def run_app(app: str, hydra_app: Callable[[], Any]) -> Any:
    """The command: `guard`, then its Hydra app; a tab-completion query's answer with the
    schema nodes (`sharing=schema`, `task=schema_copy`) left out."""
    argv = sys.argv[1:]
    guard(app, argv)
    query = any(w in ("-sc", "--shell-completion") for w in argv) and any(
        w.startswith("query=") for w in argv
    )
    if not query:
        return hydra_app()
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            hydra_app()
    finally:
        words = buffer.getvalue().split(" ")
        kept = [w for w in words if not w.split("=", 1)[-1].strip().startswith("schema")]
        print(" ".join(kept), end="")
    return None

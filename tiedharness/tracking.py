"""Where metrics go. Computing them is `train.py`'s job; this only records them.

One `Trackers` container per run fans each `log(...)` out to its backends:
- local (always on): `history.jsonl`, one JSON object per log call, appended as training
  goes, and `run.json`, the run's record (DESIGN.md's contract), rewritten atomically;
- W&B (`logger=wandb`), imported only when used; online when an API key is configured,
  offline otherwise, `logger.wandb.mode` decides when set;
- none (`logger=none`): local files only.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
RUN_IDENTITY = ("run_id", "experiment", "sweep_id", "task", "sharing", "model", "seed")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary file in the same folder, then rename: a reader sees the old
    file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_finite(data), f, indent=2, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(value: Any) -> Any:
    """JSON has no NaN/inf: store them as null (a diverged run's last loss, say)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class LocalTracker:
    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        self.history = run_dir / "history.jsonl"

    def start(self, record: dict) -> None:
        self.write(record)

    def log(self, row: dict) -> None:
        with self.history.open("a") as f:
            f.write(json.dumps(_finite(row)) + "\n")

    def write(self, record: dict) -> None:
        write_json_atomic(self.run_dir / "run.json", record)

    def finish(self, record: dict) -> None:
        self.write(record)


def wandb_api_key_configured() -> bool:
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", "~/.netrc")).expanduser()
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_mode(configured: str | None) -> str:
    mode = configured or os.environ.get("WANDB_MODE")
    if mode is None:
        mode = "online" if wandb_api_key_configured() else "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode={mode!r} is not one of online, offline, disabled")
    return mode


class WandbTracker:
    """One W&B run: grouped by sweep, typed by task, tagged with task, strategy and model."""

    def __init__(self, options: dict, run_dir: Path, quiet: bool) -> None:
        self.options = options
        self.run_dir = run_dir
        self.quiet = quiet  # in sweeps: no console capture, no chatter
        self.mode = wandb_mode(options.get("mode"))
        self.run = None

    def start(self, record: dict) -> None:
        import wandb  # lazily: runs without W&B never import it

        tags = [record["task"], record["sharing"], record["model"], *self.options.get("tags", [])]
        self.run = wandb.init(
            project=self.options.get("project") or "tiedharness",
            entity=self.options.get("entity"),
            group=record["sweep_id"],
            job_type=record["task"],
            name=record["run_id"],
            tags=[t for t in tags if t],
            # the resolved config, plus who this run is (read back by aggregate.py)
            config={**record["config"], "run": {k: record[k] for k in RUN_IDENTITY}},
            dir=str(self.run_dir),
            mode=self.mode,
            reinit="finish_previous",
            settings=wandb.Settings(silent=self.quiet, console="off" if self.quiet else "auto"),
        )
        # the dashboard plots everything against steps; tokens are logged alongside
        self.run.define_metric("step")
        self.run.define_metric("tokens")
        self.run.define_metric("*", step_metric="step")
        record["wandb"] = {"mode": self.mode, "id": self.run.id, "dir": str(self.run_dir / "wandb")}

    def log(self, row: dict) -> None:
        if self.run is not None:
            self.run.log(_finite(row))

    def finish(self, record: dict) -> None:
        if self.run is None:
            return
        params = record["params"]
        summary = {f"params/{k}": v for k, v in params.items() if not isinstance(v, dict)}
        for component, n in (params.get("by_component") or {}).items():
            summary[f"params/by_component/{component}"] = n
        summary.update(_finite(record.get("metrics", {})))
        overlap = (record.get("data") or {}).get("overlap")
        if overlap is not None:
            summary["data/overlap"] = overlap
        summary["status"] = record["status"]
        self.run.summary.update(summary)
        self.run.finish(exit_code=0 if record["status"] in ("completed", "diverged") else 1)
        self.run = None


class Trackers:
    """The run's trackers behind one interface; local first, so its files exist even when
    W&B fails to start."""

    def __init__(self, run_dir: Path, wandb_options: dict | None, quiet: bool = False) -> None:
        self.local = LocalTracker(run_dir)
        self.backends: list = [self.local]
        if wandb_options is not None:
            self.backends.append(WandbTracker(wandb_options, run_dir, quiet))

    def start(self, record: dict) -> None:
        for backend in self.backends:
            backend.start(record)
        self.local.write(record)  # now with the W&B run id

    def log(self, row: dict) -> None:
        for backend in self.backends:
            backend.log(row)

    def finish(self, record: dict) -> None:
        """Close every backend, even if one of them raises; run.json is written last."""
        errors = []
        for backend in reversed(self.backends):
            try:
                backend.finish(record)
            except Exception as err:  # recorded, re-raised once all are closed
                errors.append(err)
        if errors:
            raise errors[0]

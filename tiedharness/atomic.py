"""Files replaced whole: written to a temporary file beside the target, flushed to disk,
then renamed over it, so a reader (or a resumed run after a kill) sees the old file or the
new one, never half of one. run.json, history cuts, checkpoints and the cost cache all go
through it."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def write_atomic(path: Path, write: Callable[[IO], None], binary: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # on a cluster file system, durable before the rename
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a cluster's other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON (NaN and infinity as null), replacing `path` whole."""

    def write(f) -> None:
        json.dump(finite(data), f, indent=2, default=str)
        f.write("\n")

    write_atomic(path, write)


def finite(value: Any) -> Any:
    """JSON has no NaN/inf: store them as null (a diverged run's last loss, say)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value

"""Files replaced whole: written to a temporary file beside the target, flushed to disk,
then renamed over it, so a reader (or a resumed run after a kill) sees the old file or the
new one, never half of one. run.json, history cuts and checkpoints all go through it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO


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

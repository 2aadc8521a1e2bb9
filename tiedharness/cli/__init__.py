"""Entry points, one module each: `tiedharness-params`, `-data`, `-train`, `-eval`,
`-report`.

They are the only code that sees a command's whole config and chooses exit codes: each
turns its arguments into the schema objects (tiedharness/config.py) and hands them to
library code, which raises errors that name the fix; so everything below the CLI is
usable without Hydra.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

# tokenizers' thread pool must not be live when launchers fork worker processes
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _conf_dir() -> str:
    """The config tree: inside the package in a wheel, ./conf in a source checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "conf", package.parent / "conf"):
        if candidate.is_dir():
            return str(candidate)
    raise FileNotFoundError(f"no conf/ directory next to {package}: reinstall tiedharness")


CONF_DIR = _conf_dir()


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)

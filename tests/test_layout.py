"""The layering the docs promise: the config and analysis layers load without torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

TORCH_FREE = [
    "tiedharness.analysis.plots",
    "tiedharness.analysis.report",
    "tiedharness.analysis.aggregate",
    "tiedharness.config",
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

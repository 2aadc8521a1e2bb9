"""The run record: one class types it, the run folder writes and reads it; a record of
another schema version is refused, naming its version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tiedharness.analysis.aggregate import load_runs
from tiedharness.tracking.record import SCHEMA_VERSION, RunRecord, RunStatus
from tiedharness.tracking.run_folder import RunFolder

SCHEMA_1 = Path(__file__).parent / "data" / "run-schema1.json"  # written by tiedharness 0.1.0


def test_a_schema_1_record_is_refused_naming_its_version_and_the_fix():
    with pytest.raises(ValueError) as err:
        RunRecord.read(SCHEMA_1)
    message = str(err.value)
    assert str(SCHEMA_1) in message
    assert "schema 1" in message and f"reads schema {SCHEMA_VERSION} only" in message
    assert "train the run again" in message and "release that wrote it" in message


def test_the_aggregator_names_an_old_record_and_reads_the_rest(tmp_path):
    old = tmp_path / "sweep" / "0"
    old.mkdir(parents=True)
    shutil.copy(SCHEMA_1, old / "run.json")
    current = {**json.loads(SCHEMA_1.read_text()), "schema": SCHEMA_VERSION, "run_id": "smoke-x-1"}
    RunFolder(tmp_path / "sweep" / "1").write_record(RunRecord.from_dict(current))
    runs = load_runs(tmp_path / "sweep")
    assert list(runs.frame["run_id"]) == ["smoke-x-1"]
    (warning,) = runs.warnings
    assert "schema 1" in warning and str(old / "run.json") in warning


def test_write_then_read_gives_the_same_record(tmp_path):
    record = RunRecord(run_id="s-0", task="copy", sharing="qkv", seed=3, metrics={"val_loss": 1.5})
    record.status = RunStatus.failed
    folder = RunFolder(tmp_path)
    folder.write_record(record)
    assert json.loads(folder.record.read_text())["status"] == "failed"
    assert folder.read_record() == record


def test_non_finite_numbers_are_stored_as_null(tmp_path):
    record = RunRecord(run_id="s-0", metrics={"train_loss": float("nan"), "val_loss": float("inf")})
    RunFolder(tmp_path).write_record(record)
    saved = json.loads(RunFolder(tmp_path).record.read_text())
    assert saved["metrics"] == {"train_loss": None, "val_loss": None}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable run record"),
        ('{"run_id": "x"}', "no run_id or status"),
        ('{"run_id": "x", "status": "exploded", "schema": 5}', "'exploded' is not a valid"),
        ('{"run_id": "x", "status": "completed", "schema": 9}', "schema 9: this tiedharness"),
    ],
)
def test_a_bad_record_is_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "run.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        RunFolder(tmp_path).read_record()
    assert str(path) in str(err.value)

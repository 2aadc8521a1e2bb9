"""The run record: one class writes and reads run.json, old files included."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tiedharness.analysis.aggregate import load_runs
from tiedharness.tracking.record import IDENTITY, RunRecord, RunStatus

SCHEMA_1 = Path(__file__).parent / "data" / "run-schema1.json"  # written by tiedharness 0.1.0


def test_a_schema_1_record_still_loads():
    record = RunRecord.read(SCHEMA_1)
    assert record.schema == 1
    assert record.status is RunStatus.completed
    assert (record.task, record.sharing, record.model, record.seed) == (
        "synth_translation",
        "embed_output",
        "tiny",
        0,
    )
    assert record.params["total"] == 66176
    assert record.metrics["val_loss"] == 5.840405909038984
    assert record.wandb is None and record.finished_at is not None


def test_the_aggregator_reads_schema_1_and_2_side_by_side(tmp_path):
    old = tmp_path / "sweep" / "0"
    old.mkdir(parents=True)
    shutil.copy(SCHEMA_1, old / "run.json")
    new = RunRecord.read(SCHEMA_1)
    new.schema, new.run_id, new.status = 2, "smoke-x-1", RunStatus.interrupted
    new.write(tmp_path / "sweep" / "1")
    runs = load_runs(tmp_path / "sweep")
    assert runs.warnings == []
    assert list(runs.frame["status"]) == ["completed", "interrupted"]
    assert list(runs.frame.columns[: len(IDENTITY)]) == list(IDENTITY)


def test_write_then_read_gives_the_same_record(tmp_path):
    record = RunRecord(run_id="s-0", task="copy", sharing="qkv", seed=3, metrics={"val_loss": 1.5})
    record.status = RunStatus.failed
    path = record.write(tmp_path)
    assert json.loads(path.read_text())["status"] == "failed"
    assert RunRecord.read(path) == record


def test_non_finite_numbers_are_stored_as_null(tmp_path):
    record = RunRecord(run_id="s-0", metrics={"train_loss": float("nan"), "val_loss": float("inf")})
    saved = json.loads(record.write(tmp_path).read_text())
    assert saved["metrics"] == {"train_loss": None, "val_loss": None}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "unreadable run record"),
        ('{"run_id": "x"}', "no run_id or status"),
        ('{"run_id": "x", "status": "exploded"}', "'exploded' is not a valid RunStatus"),
        ('{"run_id": "x", "status": "completed", "schema": 9}', "schema 9 is newer"),
    ],
)
def test_a_bad_record_is_refused_naming_the_file(tmp_path, content, message):
    path = tmp_path / "run.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as err:
        RunRecord.read(path)
    assert str(path) in str(err.value)

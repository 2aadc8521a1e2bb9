"""Read an offline W&B run file (`run-*.wandb`) without W&B's servers or its Go core.

The file is a LevelDB-style log: a 7-byte header (":W&B", magic 0xBEE1, version 0), then
32 KiB blocks of chunks, each with a 7-byte header (CRC-32, length, type: full, first,
middle, last); the chunks of one record carry one serialized `wandb_internal_pb2.Record`.
Used by the tests to check what was logged, and by anyone auditing an offline run.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _chunks(data: bytes) -> Iterator[bytes]:
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    if ident != b":W&B" or magic != 0xBEE1 or version != 0:
        raise ValueError("not a W&B run file (bad header)")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0 and length == 0:
            break
        chunk = data[pos + 7 : pos + 7 + length]
        if zlib.crc32(chunk, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            raise ValueError(f"W&B run file corrupt at byte {pos} (checksum)")
        pos += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk


def read_records(path: Path | str):
    """Every `Record` in the file, in order."""
    from wandb.proto import wandb_internal_pb2

    for chunk in _chunks(Path(path).read_bytes()):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(chunk)
        yield record


def _items(items) -> dict:
    return {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in items}


def summary(path: Path | str) -> dict:
    """The run's final summary: every summary update, later values winning."""
    merged: dict = {}
    for record in read_records(path):
        if record.WhichOneof("record_type") == "summary":
            merged.update(_items(record.summary.update))
    return merged


def history(path: Path | str) -> list[dict]:
    return [
        _items(r.history.item)
        for r in read_records(path)
        if r.WhichOneof("record_type") == "history"
    ]


def run_info(path: Path | str) -> dict:
    """Group, job type, tags, name and config of the run, as W&B recorded them."""
    for record in read_records(path):
        if record.WhichOneof("record_type") == "run":
            run = record.run
            return {
                "group": run.run_group,
                "job_type": run.job_type,
                "tags": list(run.tags),
                "name": run.display_name,
                "config": _items(run.config.update),
            }
    raise ValueError(f"{path} holds no run record")


def artifacts(path: Path | str) -> list[dict]:
    """Artifacts the run logged: type, name, metadata and the files of their manifests."""
    return [
        {
            "type": r.artifact.type,
            "name": r.artifact.name,
            "metadata": json.loads(r.artifact.metadata or "{}"),
            "files": {e.path: e.digest for e in r.artifact.manifest.contents},
        }
        for r in read_records(path)
        if r.WhichOneof("record_type") == "artifact"
    ]


def saved_files(path: Path | str) -> list[str]:
    """Paths (relative to the run's files/) the run asked W&B to upload."""
    return [
        f.path
        for r in read_records(path)
        if r.WhichOneof("record_type") == "files"
        for f in r.files.files
    ]

"""Reading an offline wandb run's transaction log (run-<id>.wandb) without a server: wandb 0.31 ships no Python
reader (its internal DataStore went with the Go core), so the log framing is read here and each record parsed with
wandb's own protobuf (wandb.proto.wandb_internal_pb2.Record).

The framing is LevelDB's log format, as wandb writes it: a 7-byte file header (':W&B', version u16, ident u8), then
32 KiB blocks of chunks, each a 7-byte header (crc32 u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)
and its bytes; a block's tail shorter than a header is padding."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

BLOCK = 32 * 1024
HEADER = struct.Struct("<IHB")


def raw_records(path: Path) -> Iterator[bytes]:
    """The serialized records of a .wandb file, chunks joined."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a wandb transaction log"
    pos, pending = 7, b""
    while pos + HEADER.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER.size:
            pos += left
            continue
        _crc, length, kind = HEADER.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left
            continue
        chunk = data[pos + HEADER.size:pos + HEADER.size + length]
        pos += HEADER.size + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
            pending = b""


def records(path: Path) -> list[Any]:
    """The run's records as wandb_internal_pb2.Record messages."""
    from wandb.proto import wandb_internal_pb2

    parsed = []
    for raw in raw_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        parsed.append(record)
    return parsed


def referenced_files(path: Path) -> tuple[set[str], list[str]]:
    """(paths relative to the run's files/ folder that the records name: saved files and logged media; the local
    paths of artifact manifest entries, which wandb names absolutely)."""
    relative: set[str] = set()
    artifact_paths: list[str] = []
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "files":
            relative.update(f.path for f in record.files.files)
        elif kind in ("history", "summary"):
            items = record.history.item if kind == "history" else record.summary.update
            for item in items:
                _media_paths(_value(item.value_json), relative)
        elif kind == "artifact":
            artifact_paths += [entry.local_path for entry in record.artifact.manifest.contents]
    return relative, artifact_paths


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _media_paths(value: Any, found: set[str]) -> None:
    """The `path` and `filenames` a logged media value names (an image, a table, a list of images)."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str):
            found.add(value["path"])
        found.update(f for f in value.get("filenames") or [] if isinstance(f, str))
        for inner in value.values():
            _media_paths(inner, found)
    elif isinstance(value, list):
        for inner in value:
            _media_paths(inner, found)

"""Files of events (JSONL, one event a line; or CSV, one column per event field with `item.*`
flattened and optional cells blank) as messages keyed by their user, the way the live
producer must key them. Replay and training on the platform's own history read files here.

Files carry no message keys: the key is the event's own `user_id` (the live contract), so a
valid line is never a `key_mismatch`; a malformed line is a message the validation rejects.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from streams.core.raw_message import RawMessage

# CSV cells that must become numbers for `ShopEvent` (strict: "3" is not a rating).
_INT_FIELDS = frozenset({"rating"})
_FLOAT_FIELDS = frozenset({"item.price", "duration_s"})


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def jsonl_lines(path: Path) -> Iterator[bytes]:
    """Non-blank lines, as raw bytes: a malformed line is dead-lettered, not fatal."""
    with path.open("rb") as handle:
        for line in handle:
            if line.strip():
                yield line.rstrip(b"\r\n")


def csv_events(path: Path) -> Iterator[dict[str, Any]]:
    """CSV rows of event fields (`item.id`, `item.title`, … flattened) as event dicts."""
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            yield csv_row_event(row)


def csv_row_event(row: Mapping[str, str | None]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for column, cell in row.items():
        if column is None or cell is None or cell == "":
            continue  # an empty cell is an absent field
        value: Any = _number(column, cell)
        if column.startswith("item."):
            doc.setdefault("item", {})[column.removeprefix("item.")] = value
        else:
            doc[column] = value
    return doc


def _number(column: str, cell: str) -> Any:
    """Numbers where the schema wants them; a bad cell stays text and is rejected as invalid."""
    try:
        if column == "ts" and cell.lstrip("-").isdigit():
            return int(cell)  # epoch ms; anything else is read as ISO-8601 by the schema
        if column in _INT_FIELDS:
            return int(cell)
        if column in _FLOAT_FIELDS:
            return float(cell)
    except ValueError:
        pass
    return cell


def file_message(doc: dict[str, Any] | bytes, name: str, n: int) -> RawMessage:
    """A file record as a message keyed by its user, as the live producer must key it."""
    if isinstance(doc, bytes):
        value = doc
        try:
            parsed = orjson.loads(doc)
        except orjson.JSONDecodeError:
            parsed = None
    else:
        value, parsed = orjson.dumps(doc), doc
    user = parsed.get("user_id") if isinstance(parsed, dict) else None
    key = user.encode() if isinstance(user, str) else None
    return RawMessage(key=key, value=value, topic=f"file:{name}", partition=0, offset=n,
                      timestamp_ms=None)


def read_events(path: Path) -> tuple[list[RawMessage], dict[str, Any]]:
    """A JSONL or CSV file of events as messages, and its description (stable across runs: no
    directory, the content's digest). FileNotFoundError when there is no such file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    description: dict[str, Any] = {"type": "file", "name": path.name, "sha256": file_digest(path)}
    if path.suffix.lower() == ".csv":
        docs: Iterator[dict[str, Any] | bytes] = csv_events(path)
        description["format"] = "csv"
    else:
        docs = jsonl_lines(path)
        description["format"] = "jsonl"
    return [file_message(doc, path.name, n) for n, doc in enumerate(docs)], description

"""Where replayed events come from: files of our events (`training.data.event_files`, the
reader training uses), the UCI Online Shoppers CSV, or a Kafka topic read by time range with
no consumer group (`streams.runtime.topic_reader`). Every source yields
`streams.core.raw_message.RawMessage`s, the shape the live worker's micro-batch takes, so the
engine runs the worker's code on them unchanged.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.core.raw_message import RawMessage
from training.data import uci
from training.data.event_files import file_digest, file_message, read_events

# A CSV whose header has these columns is the UCI Online Shoppers data, not our events.
UCI_COLUMNS = frozenset({"Revenue", "ProductRelated_Duration", "PageValues"})


@dataclass(frozen=True, slots=True)
class UciRows:
    """What the UCI evaluation needs beside the events: labels and the tabular columns."""

    revenue: tuple[bool, ...]  # by row index
    users: tuple[str, ...]  # by row index: the user id `training.data.uci.row_events` gave the row
    rows: tuple[dict[str, str], ...]  # the raw CSV rows, for the tabular peer


@dataclass
class Source:
    """Messages to replay plus a description that is stable across runs (no paths, no ports)."""

    messages: list[RawMessage]
    description: dict[str, Any]
    uci: UciRows | None = None
    skipped: dict[str, int] = field(default_factory=dict)


def read_file(path: Path, limit_rows: int | None = None) -> Source:
    """A JSONL or CSV file of our events, or the UCI CSV (recognised by its header)."""
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".csv" and set(_csv_header(path)) >= UCI_COLUMNS:
        return _uci_source(path, {"type": "file", "name": path.name,
                                  "sha256": file_digest(path)}, limit_rows)
    messages, description = read_events(path)
    if limit_rows is not None:
        messages = messages[:limit_rows]
        description["limit_rows"] = limit_rows
    return Source(messages, description)


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def _uci_source(path: Path, description: dict[str, Any], limit_rows: int | None) -> Source:
    """UCI rows → events of user `uci-<row>` via `training.data.uci` (as training converts them)."""
    sessions, rows = uci.load_sessions(path), uci.read_rows(path)
    if limit_rows is not None:
        sessions, rows = sessions[:limit_rows], rows[:limit_rows]
        description["limit_rows"] = limit_rows
    description["format"] = "uci_online_shoppers"
    events = [e for session in sessions for e in session.events]
    messages = [file_message(e, path.name, n) for n, e in enumerate(events)]
    data = UciRows(
        revenue=tuple(s.revenue for s in sessions),
        users=tuple(s.events[0]["user_id"] for s in sessions),  # every row has an event
        rows=tuple(rows),
    )
    return Source(messages, description, uci=data)

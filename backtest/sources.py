"""Where replayed events come from: files of our events, the UCI Online Shoppers CSV, or a
Kafka topic read by time range. Every source yields `streams.core.batching.RawMessage`s, the shape
the live worker's micro-batch takes, so the engine runs the worker's code on them unchanged.

Files carry no message keys: the key is the event's own `user_id` (the live contract), so a
valid line is never a `key_mismatch`.

Kafka is read with **no consumer group**: partitions are assigned by hand and nothing is ever
committed, so live consumer groups (the worker's, the feedback sidecar's) never see this reader
join, rebalance or move. Nothing is produced. The reader takes the worker's SASL/TLS settings
(`Settings.kafka_client_kwargs`), so a backtest reads the same secured cluster.
"""

from __future__ import annotations

import csv
import hashlib
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndTimestamp

from streams.core.raw_message import RawMessage
from training import uci

# A CSV whose header has these columns is the UCI Online Shoppers data, not our events.
UCI_COLUMNS = frozenset({"Revenue", "ProductRelated_Duration", "PageValues"})
# CSV cells that must become numbers for `ShopEvent` (strict: "3" is not a rating).
_INT_FIELDS = frozenset({"rating"})
_FLOAT_FIELDS = frozenset({"item.price", "duration_s"})


@dataclass(frozen=True, slots=True)
class UciRows:
    """What the UCI evaluation needs beside the events: labels and the tabular columns."""

    revenue: tuple[bool, ...]  # by row index
    users: tuple[str, ...]  # by row index: the user id `training.uci.row_events` gave the row
    rows: tuple[dict[str, str], ...]  # the raw CSV rows, for the tabular peer


@dataclass
class Source:
    """Messages to replay plus a description that is stable across runs (no paths, no ports)."""

    messages: list[RawMessage]
    description: dict[str, Any]
    uci: UciRows | None = None
    skipped: dict[str, int] = field(default_factory=dict)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_file(path: Path, limit_rows: int | None = None) -> Source:
    """A JSONL or CSV file of our events, or the UCI CSV (recognised by its header)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    description: dict[str, Any] = {"type": "file", "name": path.name, "sha256": file_digest(path)}
    if path.suffix.lower() == ".csv":
        header = _csv_header(path)
        if set(header) >= UCI_COLUMNS:
            return _uci_source(path, description, limit_rows)
        docs: Iterator[dict[str, Any] | bytes] = csv_events(path)
        description["format"] = "csv"
    else:
        docs = jsonl_lines(path)
        description["format"] = "jsonl"
    messages = [file_message(doc, path.name, n) for n, doc in enumerate(docs)]
    if limit_rows is not None:
        messages = messages[:limit_rows]
        description["limit_rows"] = limit_rows
    return Source(messages, description)


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


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


def _uci_source(path: Path, description: dict[str, Any], limit_rows: int | None) -> Source:
    """UCI rows → events of user `uci-<row>` via `training.uci` (the conversion training uses)."""
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


# --- Kafka, by time range ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KafkaRange:
    bootstrap: Sequence[str]
    topic: str
    from_ms: int  # record timestamp to start at (event-time start minus producer clock skew)
    until_ms: int | None  # record timestamp to stop at; None: the end as of now
    idle_s: float = 1.0  # a partition with nothing new for this long is at its end
    # aiokafka's SASL/TLS keyword arguments; None: the worker's (`Settings.kafka_client_kwargs`)
    client_kwargs: Mapping[str, Any] | None = None

    def security(self) -> dict[str, Any]:
        if self.client_kwargs is not None:
            return dict(self.client_kwargs)
        from streams.settings import get_settings

        return get_settings().kafka_client_kwargs()


async def read_kafka(spec: KafkaRange) -> list[RawMessage]:
    """Every record of the topic stamped in [from_ms, until_ms), partition by partition.

    Start: `offsets_for_times(from_ms)`, the earliest offset stamped at or after it. Stop, per
    partition, at the first record stamped at or after `min(until_ms, now)`: the record the
    same lookup would name, read rather than looked up, because Tansu answers by-time lookups
    by append time, not by the record timestamps producers set. Or at the end: the high
    watermark seen at the start and then nothing new for `idle_s` (Tansu reports the start of
    the last batch + 1 as the end, so the end offset alone could drop the last batch).
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=list(spec.bootstrap),
        group_id=None,  # no group: nothing to join, rebalance or commit
        enable_auto_commit=False,
        auto_offset_reset="none",
        client_id="intentstream-backtest",
        **spec.security(),
    )
    try:
        await consumer.start()  # inside: a start that fails half-way is stopped too
        partitions = await _partitions(consumer, spec.topic)
        stop_ms = int(time.time() * 1000)  # records produced from now on are not in the run
        if spec.until_ms is not None:
            stop_ms = min(stop_ms, spec.until_ms)
        starts = await consumer.offsets_for_times({tp: spec.from_ms for tp in partitions})
        ends = await consumer.end_offsets(partitions)
        seeks = {tp: offset for tp in partitions if (offset := found(starts[tp])) is not None}
        if not seeks:
            return []
        consumer.assign(list(seeks))
        for tp, offset in seeks.items():
            consumer.seek(tp, offset)
        return await _drain(consumer, {tp: ends[tp] for tp in seeks}, stop_ms, spec.idle_s)
    finally:
        await consumer.stop()


def found(answer: OffsetAndTimestamp | None) -> int | None:
    """The offset a by-time lookup names, or None where it names none. Kafka answers -1
    (None in aiokafka); Tansu answers offset 0 with timestamp -1."""
    if answer is None or answer.timestamp < 0:
        return None
    return int(answer.offset)


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    if topic not in await consumer.topics():
        raise LookupError(f"topic {topic!r} does not exist")
    numbers = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(numbers)]


async def _drain(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], stop_ms: int, idle_s: float
) -> list[RawMessage]:
    """Fetch every partition up to its stop (see `read_kafka`); pause each as it finishes."""
    messages: list[RawMessage] = []
    active = dict(ends)
    last_seen = dict.fromkeys(active, time.monotonic())
    while active:
        batch = await consumer.getmany(*active, timeout_ms=200)
        now = time.monotonic()
        for tp, records in batch.items():
            last_seen[tp] = now
            for record in records:
                if record.timestamp is not None and record.timestamp >= stop_ms:
                    active.pop(tp, None)
                    break
                messages.append(RawMessage(
                    key=record.key, value=record.value, topic=record.topic,
                    partition=record.partition, offset=record.offset,
                    timestamp_ms=record.timestamp,
                ))
        for tp in list(active):
            at_end = await consumer.position(tp) >= active[tp]
            if at_end and now - last_seen[tp] >= idle_s:
                active.pop(tp)
        consumer.pause(*(tp for tp in ends if tp not in active))
    return messages

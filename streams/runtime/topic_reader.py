"""One group-less reader of a topic, by record time range or to its end: backtests, training on
the events topic and retraining from the feedback topic all read through it.

**No consumer group**: partitions are assigned by hand and nothing is ever committed, so live
consumer groups (the worker's, the feedback sidecar's) never see this reader join, rebalance or
move. Nothing is produced. The reader takes the worker's SASL/TLS settings
(`Settings.kafka_client_kwargs`) unless given others, so it reads the same secured cluster.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndTimestamp

from streams.core.raw_message import RawMessage


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
    # A group-less consumer tracks no topic yet, and Apache Kafka answers a metadata request
    # naming none with none (Tansu with all): ask for this one by name.
    await consumer._client.add_topic(topic)  # aiokafka's own way to track a topic's metadata
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

"""What a backtest must leave alone on the broker: a snapshot of groups, topics and records."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError


async def produce_events(bootstrap: str, topic: str, events: Sequence[dict],
                         encode) -> Counter[int]:
    """Produce events keyed by user, stamped with their event time; records per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=e["user_id"].encode(), value=encode(e),
                                       timestamp_ms=e["ts"]) for e in events]
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return Counter(meta.partition for meta in sent)


async def committed(bootstrap: str, group: str, topic: str, partitions: int,
                    timeout_s: float = 60.0) -> dict[int, int]:
    """The group's committed offsets on the topic (partitions named: Tansu needs them). On a
    fresh Apache Kafka the offsets topic is created at the first group request, and until its
    leader is elected the coordinator is "not available": asked again until it is."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group, partitions=tps)
                break
            except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        return {tp.partition: meta.offset for tp, meta in sorted(offsets.items())
                if meta is not None and meta.offset >= 0}
    finally:
        await admin.close()


async def wait_committed(bootstrap: str, group: str, topic: str, expected: dict[int, int],
                         timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if await committed(bootstrap, group, topic, max(expected) + 1) == expected:
            return
        await asyncio.sleep(0.5)
    found = await committed(bootstrap, group, topic, max(expected) + 1)
    raise AssertionError(f"group {group} committed {found}, expected {expected}")


async def topic_records(bootstrap: str, topic: str, idle_s: float = 1.5) -> list[tuple]:
    """Every record of a topic as (partition, offset, key, value), read with no group."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[tuple] = []
    try:
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < idle_s:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                out.extend((r.partition, r.offset, r.key, r.value) for r in records)
                idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return sorted(out)


async def names(bootstrap: str) -> tuple[frozenset[str], frozenset[str]]:
    """Every topic and every consumer group the broker knows."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = frozenset(await admin.list_topics())
        groups = frozenset(group for group, _ in await admin.list_consumer_groups())
        return topics, groups
    finally:
        await admin.close()


@dataclass(frozen=True)
class Snapshot:
    topics: frozenset[str]
    groups: frozenset[str]
    committed: dict[str, dict[int, int]]  # group -> partition -> offset
    outputs: dict[str, list[tuple]]  # topic -> every record


async def snapshot(bootstrap: str, groups: Sequence[str], source_topic: str, partitions: int,
                   outputs: Sequence[str]) -> Snapshot:
    topics, all_groups = await names(bootstrap)
    return Snapshot(
        topics=topics,
        groups=all_groups,
        committed={g: await committed(bootstrap, g, source_topic, partitions) for g in groups},
        outputs={t: await topic_records(bootstrap, t) for t in outputs},
    )

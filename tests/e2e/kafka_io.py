"""Plain aiokafka helpers for end-to-end tests: produce, read a topic until a condition or to
its end, and read a consumer group's committed offsets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError
from aiokafka.structs import ConsumerRecord, RecordMetadata

MAX_REQUEST_BYTES = 4 * 1024 * 1024  # lets poison tests produce ~1 MB values


async def produce(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]],
    **producer_options: Any,
) -> list[RecordMetadata]:
    """Produce in order; each record's partition and offset, in the same order
    (`producer_options`: aiokafka's, e.g. acks="all", enable_idempotence=True)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5,
                                max_request_size=MAX_REQUEST_BYTES, **producer_options)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


async def read_until(
    bootstrap: str,
    topics: Sequence[str],
    done: Callable[[dict[str, list[ConsumerRecord]]], bool],
    timeout_s: float,
    alive: Callable[[], bool] = lambda: True,
) -> dict[str, list[ConsumerRecord]]:
    """Read topics from the beginning until `done(records_by_topic)` or the timeout.

    `alive` is polled too, so a test fails at once when the process it waits on has died."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None, fetch_max_bytes=MAX_REQUEST_BYTES * 4,
        max_partition_fetch_bytes=MAX_REQUEST_BYTES,
    )
    await consumer.start()
    seen: dict[str, list[ConsumerRecord]] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                seen[tp.topic].extend(records)
            if done(seen):
                break
            if not alive():
                raise AssertionError("the process under test died")
    finally:
        await consumer.stop()
    return seen


async def read_to_end(
    bootstrap: str, topics: Sequence[str], partitions: int, timeout_s: float = 30.0
) -> dict[str, list[ConsumerRecord]]:
    """Everything on `topics` now: from the beginning up to each partition's end, taken as the
    highwater of the first fetch answer for it (or the end offset asked for at start, if that
    is higher).

    Not the end offset alone: Tansu answers ListOffsets "latest" with the start of the last
    batch + 1, short of the end wherever a batch held several records (the worker's outputs
    do); its fetch answers carry the true highwater (docs/broker.md)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
        auto_offset_reset="earliest", max_partition_fetch_bytes=MAX_REQUEST_BYTES,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        asked = await consumer.end_offsets(tps)
        ends: dict[TopicPartition, int] = {}
        seen: dict[str, list[ConsumerRecord]] = {t: [] for t in topics}
        async with asyncio.timeout(timeout_s):
            while len(ends) < len(tps) or any(
                    [await consumer.position(tp) < end for tp, end in ends.items()]):
                fetched = await consumer.getmany(timeout_ms=500)
                for tp in tps:
                    highwater = consumer.highwater(tp)
                    if tp not in ends and highwater is not None:
                        ends[tp] = max(highwater, asked[tp])
                for tp, records in fetched.items():
                    seen[tp.topic].extend(
                        r for r in records if tp not in ends or r.offset < ends[tp])
        return seen
    finally:
        await consumer.stop()


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int]:
    """partition -> the group's committed offset (-1: none yet, or no coordinator yet: Kafka
    answers so while its offsets topic loads).

    Partitions are always named: on Tansu, asking for all of a group's offsets (no partitions
    listed) breaks the connection."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        try:
            found = await admin.list_consumer_group_offsets(group, partitions=tps)
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            found = {}
        return {tp.partition: (found[tp].offset if tp in found else -1) for tp in tps}
    finally:
        await admin.close()


def run(coro):  # tests are sync; each helper call gets its own short-lived loop
    return asyncio.run(coro)

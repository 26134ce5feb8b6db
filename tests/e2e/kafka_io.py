"""Plain aiokafka helpers for end-to-end tests: produce, and read a topic until a condition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord


async def produce(
    bootstrap: str, topic: str, records: Sequence[tuple[bytes | None, bytes]]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in records]
        await asyncio.gather(*futures)
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
        enable_auto_commit=False, group_id=None,
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


def run(coro):  # tests are sync; each helper call gets its own short-lived loop
    return asyncio.run(coro)

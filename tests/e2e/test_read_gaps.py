"""The re-read of skipped input (streams.runtime.agent_io.read_gaps) on the real broker: two
gaps in one partition are both read, and nothing between or around them."""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.core.offsets import Gap
from streams.runtime.agent_io import read_gaps

from .kafka_io import produce, run

TOPIC = "read-gaps"


async def create_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, 2, 1)])
    finally:
        await admin.close()


def test_two_gaps_of_one_partition_are_both_re_read(broker):
    run(create_topic(broker.bootstrap))
    records = [(f"k{i % 2}".encode(), f"v{i}".encode()) for i in range(60)]
    placed = run(produce(broker.bootstrap, TOPIC, records))
    by_partition = {m.partition for m in placed}
    p = min(by_partition)
    gaps = [Gap(TOPIC, p, 3, 6), Gap(TOPIC, p, 12, 15)]
    got = asyncio.run(read_gaps([broker.bootstrap], gaps))
    assert sorted((m.partition, m.offset) for m in got) == [
        (p, o) for o in (3, 4, 5, 12, 13, 14)]

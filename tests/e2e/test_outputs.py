"""The worker's output producer (streams.runtime.outputs) on the real broker: records batched
many to a request all arrive where they were sent, and a reader to the end sees every one,
although the broker's end offset for such batches is short (Tansu, docs/broker.md)."""

from __future__ import annotations

import asyncio

import pytest

from streams.runtime.outputs import OutputProducer

from .kafka_io import create_topic, read_to_end, run

pytestmark = pytest.mark.e2e
TOPIC = "outputs-batched"
PARTITIONS = 3


async def send_all(bootstrap: str, n: int) -> list[tuple[int, int]]:
    outputs = OutputProducer([bootstrap], max_batch_bytes=262_144)
    await outputs.start()
    try:
        topic = outputs.topic(TOPIC)
        sends = [topic.send(key=f"u{i}".encode(), value=f"v{i}".encode(),
                            partition=i % PARTITIONS) for i in range(n)]
        futures = [await s for s in sends]
        placed = await asyncio.gather(*futures)
        return [(m.partition, m.offset) for m in placed]
    finally:
        await outputs.stop()


def test_batched_outputs_are_all_read_back_to_the_end(either_broker):
    broker = either_broker
    run(create_topic(broker.bootstrap, TOPIC, PARTITIONS))
    placed = run(send_all(broker.bootstrap, 600))
    assert sorted(placed) == [(p, o) for p in range(PARTITIONS) for o in range(200)]
    got = run(read_to_end(broker.bootstrap, [TOPIC], PARTITIONS))[TOPIC]
    assert sorted((r.partition, r.value) for r in got) == sorted(
        (i % PARTITIONS, f"v{i}".encode()) for i in range(600))


def test_a_send_before_start_is_refused():
    outputs = OutputProducer(["127.0.0.1:1"], max_batch_bytes=1024)
    with pytest.raises(RuntimeError, match="not started"):
        run(outputs.topic(TOPIC).send(key=None, value=b"x"))

"""The worker's outputs (scores, alerts, dead letters) through their own aiokafka producer.

Faust's producer also carries the tables' changelogs, and the embedded profile holds it to one
record per batch: Tansu answers ListOffsets "latest" with the start of the last batch + 1, and
Faust's changelog recovery stops at that answer (docs/broker.md). aiokafka keeps one request in
flight per broker, so behind that limit a micro-batch's ~100 scores took ~27 round trips after
the changelog writes. Output topics need no such limit (their readers stop at the fetch
highwater, which is exact on Tansu too), so they get a producer of their own, with normal
batching and the same durability as Faust's (acks from every in-sync replica), on every broker.

Delivery is still awaited record by record (`agent_io.produce_all`) before a batch is acked, so
at-least-once does not depend on which producer carried a record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

REQUEST_TIMEOUT_MS = 1_200_000


class OutputProducer:
    """One aiokafka producer, started and stopped by the agent that sends through it."""

    def __init__(self, bootstrap: list[str], *, max_batch_bytes: int,
                 client_kwargs: Mapping[str, Any] | None = None) -> None:
        self._config: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "max_batch_size": max_batch_bytes,
            # As Faust's producer (producer_request_timeout): a broker outage stalls the batch
            # until the broker is back instead of failing it (aiokafka's default is 40 s).
            "request_timeout_ms": REQUEST_TIMEOUT_MS,
            "client_id": "intentstream-outputs",
            **(client_kwargs or {}),
        }
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        # Created here, not in __init__: aiokafka binds to the running loop.
        producer = AIOKafkaProducer(**self._config)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # flushes what is queued first

    async def send(self, topic: str, key: bytes | None, value: bytes,
                   partition: int | None = None) -> asyncio.Future:
        """Queue one record; the future resolves on the broker's ack."""
        if self._producer is None:
            raise RuntimeError("the output producer is not started")
        return await self._producer.send(topic, value=value, key=key, partition=partition)

    def topic(self, name: str) -> OutputTopic:
        return OutputTopic(self, name)


@dataclass(frozen=True)
class OutputTopic:
    """An output topic's `send`, shaped like a Faust topic's (key, value, partition)."""

    producer: OutputProducer
    name: str

    async def send(self, key: bytes | None, value: bytes,
                   partition: int | None = None) -> asyncio.Future:
        return await self.producer.send(self.name, key, value, partition)

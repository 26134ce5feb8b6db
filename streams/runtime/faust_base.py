"""The base of our Faust apps: faust.App with the consumer's fetch wait as a setting, and the
watch for input Faust dropped at a partition's end (`streams.core.tail_watch`).

Faust creates its aiokafka consumer with `fetch_max_wait_ms=1500` hard-coded. On Apache Kafka
that costs nothing: a waiting fetch returns as soon as data arrives. A broker that does not
wake waiting fetches (the embedded Tansu does not, docs/broker.md) holds every fetch for the
full wait, which adds up to 1.5 s to each hop while traffic trickles. `fetch_max_wait_ms`
(from `Settings.faust_settings()`, set by the embedded profile) replaces the constant; None
keeps Faust's.
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TransportT

from streams.core.tail_watch import TailWatch


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Read by aiokafka when start() builds its fetcher, which happens after this.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class IntentstreamFaustApp(faust.App):
    def __init__(self, id: str, *, fetch_max_wait_ms: int | None = None, **conf: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(id, **conf)
        # Idle longer than a few commit intervals below the end: nothing will deliver the rest
        # (streams.runtime.agent_io.redeliver_dropped_tails).
        self.tail_watch = TailWatch(idle_s=3 * self.conf.broker_commit_interval)

    def on_rebalance_start(self) -> None:
        self.tail_watch.reset()  # Faust rewinds to the commit itself; judge afresh afterwards
        super().on_rebalance_start()

    def _new_transport(self) -> TransportT:
        if self.fetch_max_wait_ms is None:
            return super()._new_transport()
        return _Transport(self.conf.broker_consumer, self)

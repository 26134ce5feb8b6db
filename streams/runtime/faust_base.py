"""The base of our Faust apps: faust.App with the consumer's fetch wait as a setting, a commit
that is not slowed by Faust's own gap bookkeeping, and the watch for input Faust dropped at a
partition's end (`streams.core.tail_watch`).

Faust creates its aiokafka consumer with `fetch_max_wait_ms=1500` hard-coded. On Apache Kafka
that costs nothing: a waiting fetch returns as soon as data arrives. A broker that does not
wake waiting fetches (the embedded Tansu does not, docs/broker.md) holds every fetch for the
full wait, which adds up to 1.5 s to each hop while traffic trickles. `fetch_max_wait_ms`
(from `Settings.faust_settings()`, set by the embedded profile) replaces the constant; None
keeps Faust's.

Faust (0.15) commits the first unbroken run of acked offsets (`Consumer._new_offset`); before
that it appends the offsets of its log gaps (`_gap`: a fetched offset that jumped past its read
offset) to the acked list without checking whether they were acked too. Each such duplicate
ends the run, so the commit passed one offset per commit interval: after a rebalance Faust's
read offset went back to the commit while it still delivered records it had fetched, the next
one looked like a jump, and a 74-offset false gap over delivered and acked input held a
partition's commit below its end for 3.5 minutes (tests/regression/
test_commit_after_false_log_gap.py). Our consumer merges the gaps without duplicates first, and
only up to the highest acked offset, so the commit gets at once to where Faust's would crawl,
and never past input still being processed. It is used on every aiokafka broker URL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiokafka
import faust
from faust import transport
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, TransportT

from streams.core.tail_watch import TailWatch

if TYPE_CHECKING:
    from intervaltree import IntervalTree  # Faust's


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        if self.app.fetch_max_wait_ms is not None:
            # Read by aiokafka when start() builds its fetcher, which happens after this.
            consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms
        return consumer


def merge_log_gaps(acked: list[int], gaps: IntervalTree, committed: int | None) -> None:
    """Put the log gaps up to the highest acked offset into `acked`, in place, sorted and
    without duplicates or offsets below `committed` (what Faust's merge leaves in: each
    duplicate, or a stale run below the commit, costs one commit interval). Faust takes whole
    intervals, so it could commit past the offset that revealed a gap before that offset was
    processed; the part above the highest acked offset stays a gap here until it is passed."""
    if not acked:
        return
    top = max(acked)
    offsets = set(acked)
    if gaps:
        for interval in gaps.overlap(0, top + 1):
            offsets.update(range(interval.begin, min(interval.end, top + 1)))
        gaps.chop(0, top + 1)
    acked[:] = sorted(o for o in offsets if committed is None or o >= committed)


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> int | None:
        # Faust's own merge then finds no gap below the acked maximum and only sorts.
        merge_log_gaps(self._acked[tp], self._gap[tp], self._committed_offset[tp])
        return super()._new_offset(tp)


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
        if transport.by_url(self.conf.broker_consumer[0]) is not faust_aiokafka.Transport:
            return super()._new_transport()  # another driver: Faust's, unchanged
        return _Transport(self.conf.broker_consumer, self)

"""I/O helpers shared by the Faust agents (the scoring worker and the feedback sidecar).

- `raw_message`: a Faust event as the pure pipeline's `RawMessage`;
- `as_current`: tie a table write to an event, so it lands in that partition's changelog;
- `produce_all`: await the broker's ack of every record before a batch is acked;
- `with_skipped`: the batch plus any input Faust skipped (see `streams.offsets`), re-read with
  a plain consumer (no group, no commits) so live consumer groups are never disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.streams import _current_event
from faust.types import AppT, EventT, StreamT, TableT

from streams.batching import RawMessage
from streams.offsets import Gap, next_offsets, offset_gaps, splice

log = structlog.get_logger("intentstream.agent_io")


def raw_message(event: EventT) -> RawMessage:
    msg = event.message
    return RawMessage(
        key=msg.key,
        value=msg.value,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=int(msg.timestamp * 1000) if msg.timestamp is not None else None,
    )


@contextlib.contextmanager
def as_current(event: EventT) -> Iterator[None]:
    """Make `event` Faust's current event, so a table write goes to its partition's changelog.

    Faust derives the changelog partition from the event being processed; in a micro-batch
    there is none, so each write is tied to an event of the partition it belongs to.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def produce_all(sends: Sequence) -> None:
    """Await delivery of every record (send() returns a future of the broker's ack)."""
    futures = [await s for s in sends]
    await asyncio.gather(*futures)


async def read_gaps(
    bootstrap: list[str], gaps: Sequence[Gap], timeout_s: float = 30.0
) -> list[RawMessage]:
    """Re-read skipped offset ranges with a plain consumer (no group, no commits)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        ends = {TopicPartition(g.topic, g.partition): g.end for g in gaps}
        consumer.assign(list(ends))
        for g in gaps:
            consumer.seek(TopicPartition(g.topic, g.partition), g.start)
        out: list[RawMessage] = []
        async with asyncio.timeout(timeout_s):  # on timeout: crash, retry after a restart
            while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    out += [RawMessage(key=r.key, value=r.value, topic=r.topic,
                                       partition=r.partition, offset=r.offset,
                                       timestamp_ms=r.timestamp)
                            for r in records if r.offset < ends[tp]]
        return out
    finally:
        await consumer.stop()


def next_offset_reader(progress: TableT) -> Callable[[str, int], int | None]:
    """`next_offset(topic, partition)` from a progress table: str(partition) -> {"next": …}."""
    def next_offset(topic: str, partition: int) -> int | None:
        return ((progress.get(str(partition)) or {}).get("next") or {}).get(topic)
    return next_offset


async def with_skipped(
    events: Sequence[EventT], next_offset: Callable[[str, int], int | None],
    bootstrap: list[str],
) -> list[RawMessage]:
    """The batch as raw messages, plus any earlier input Faust skipped without processing."""
    messages = [raw_message(e) for e in events]
    gaps = offset_gaps(messages, next_offset)
    if not gaps:
        return messages
    recovered = await read_gaps(bootstrap, gaps)
    log.warning("input.skipped_reread", gaps=[f"{g.topic}[{g.partition}]:{g.start}-{g.end}"
                                              for g in gaps], messages=len(recovered))
    return splice(messages, recovered)


def partition_anchors(events: Sequence[EventT]) -> dict[int, EventT]:
    """One event per partition number in the batch (inputs are co-partitioned by user)."""
    return {e.message.partition: e for e in events}


def save_progress(progress: TableT, messages: Sequence[RawMessage], events: Sequence[EventT],
                  extra: Callable[[int, dict], dict] | None = None) -> None:
    """Record, per partition, the offset after the batch's last message of each topic."""
    offsets = next_offsets(messages)
    for partition, event in partition_anchors(events).items():
        before = progress.get(str(partition)) or {"next": {}}
        after = {**before, "next": {**before.get("next", {}), **{
            topic: n for (topic, p), n in offsets.items() if p == partition}}}
        if extra is not None:
            after = extra(partition, after)
        with as_current(event):
            progress[str(partition)] = after


async def run_acked_batches(
    app: AppT,
    stream: StreamT,
    max_events: int,
    within_s: float,
    process: Callable[[Sequence[EventT]], Awaitable[object]],
    failure: str,
) -> None:
    """The at-least-once loop: a micro-batch is acked only after `process` returned.

    `noack_take` leaves acking to us, so a batch that failed or was cancelled mid-way stays
    unacked and Faust commits nothing past it. An exception is a bug, not bad input (that is
    dead-lettered or counted): stop with a non-zero exit rather than idle with a dead agent;
    a restarted process handles the unacked batch again.
    """
    async for events in stream.noack_take(max_events, within_s):
        try:
            await process(events)
        except Exception as exc:
            log.exception(failure, events=len(events))
            await app.crash(exc)
            raise
        for event in events:
            await stream.ack(event)

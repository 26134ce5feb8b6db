"""I/O helpers shared by the Faust agents (the scoring worker and the feedback sidecar).

- `raw_message`: a Faust event as the pure pipeline's `RawMessage`;
- `as_current`: tie a table write to an event, so it lands in that partition's changelog;
- `produce_all`: await the broker's ack of every record before a batch is acked;
- `with_skipped`: the batch plus any input Faust skipped (see `streams.core.offsets`), re-read with
  a plain consumer (no group, no commits) so live consumer groups are never disturbed; gaps are
  found against the progress table and against Faust's delivery in this generation
  (`DeliveryCursor`, started at Faust's committed offset);
- `fill_gaps`: ack re-read offsets in Faust's own bookkeeping, so its commit moves past them;
- `catching_up`: micro-batches that grow under backlog, so coalescing keeps pace with it;
- `run_acked_batches`: the at-least-once batch loop, which also counts what it takes;
- `redeliver_dropped_tails`: send Faust back over input it dropped at a partition's end;
- `report_lag`: consumer lag per assigned input partition, for the metrics; a stall (input
  waiting, no batch completing) is logged once with Faust's consumer state (`report_stall`);
- `scan_json_table`: a JSON table's entries, for a scan that runs beside the table's writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import weakref
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.exceptions import ConsumerNotStarted
from faust.stores.rocksdb import Store as RocksDBStore
from faust.streams import _current_event
from faust.types import TP, AppT, ConsumerT, EventT, StreamT, TableT
from faust.types.tuples import ConsumerMessage

from streams.core.offsets import (
    DeliveryCursor,
    Gap,
    lower_known,
    next_offsets,
    offset_gaps,
    splice,
)
from streams.core.raw_message import RawMessage
from streams.core.tail_watch import TailWatch, tail_position
from streams.runtime.metrics import AgentMetrics, consumer_lag, tally

log = structlog.get_logger("intentstream.agent_io")


def scan_json_table(table: TableT) -> Iterator[tuple[Any, Any]]:
    """Every (key, value) of a table with JSON keys and values on this worker's active
    partitions, safe to read in chunks while the table is written: RocksDB's own iterators
    over the active partitions' databases as they are now (each sees its data as of its
    start; a database Faust opens meanwhile, e.g. a standby's, is not read), decoded here with
    orjson rather than through Faust's serializer registry per item; the memory store's dict,
    copied first (a dict cannot change while iterated; its values are decoded already)."""
    store = table.data
    if isinstance(store, RocksDBStore):
        databases = list(store._dbs_for_actives())
        return ((orjson.loads(key), orjson.loads(value))
                for db in databases for key, value in store._visible_items(db))
    return iter(list(store.items()))


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
    bootstrap: list[str], gaps: Sequence[Gap], timeout_s: float = 30.0,
    client_kwargs: Mapping[str, Any] | None = None,
) -> list[RawMessage]:
    """Re-read skipped offset ranges with a plain consumer (no group, no commits).

    `client_kwargs`: aiokafka security settings (`Settings.kafka_client_kwargs()`)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", **(client_kwargs or {}))
    await consumer.start()
    try:
        # One partition can have several gaps in a batch: read from the first start to the
        # last end and keep what falls inside one of them.
        spans: dict[TopicPartition, list[Gap]] = {}
        for g in gaps:
            spans.setdefault(TopicPartition(g.topic, g.partition), []).append(g)
        ends = {tp: max(g.end for g in gs) for tp, gs in spans.items()}
        consumer.assign(list(spans))
        for tp, gs in spans.items():
            consumer.seek(tp, min(g.start for g in gs))
        out: list[RawMessage] = []
        async with asyncio.timeout(timeout_s):  # on timeout: crash, retry after a restart
            while any([await consumer.position(tp) < end for tp, end in ends.items()]):
                for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                    out += [RawMessage(key=r.key, value=r.value, topic=r.topic,
                                       partition=r.partition, offset=r.offset,
                                       timestamp_ms=r.timestamp)
                            for r in records
                            if any(g.start <= r.offset < g.end for g in spans[tp])]
        return out
    finally:
        await consumer.stop()


def next_offset_reader(progress: TableT) -> Callable[[str, int], int | None]:
    """`next_offset(topic, partition)` from a progress table: str(partition) -> {"next": …}."""
    def next_offset(topic: str, partition: int) -> int | None:
        return ((progress.get(str(partition)) or {}).get("next") or {}).get(topic)
    return next_offset


@dataclass(frozen=True)
class SkippedInput:
    """How an agent finds and re-reads input Faust skipped: its own progress, the brokers."""

    next_offset: Callable[[str, int], int | None]
    bootstrap: list[str]
    client_kwargs: Mapping[str, Any] = field(default_factory=dict)  # aiokafka security


def committed_offset(consumer: ConsumerT, tp: TP) -> int | None:
    """Faust's committed offset of `tp` as its commit bookkeeping holds it (None: unknown).

    Private in faust-streaming 0.15 (no public reader); it is the offset `_new_offset` measures
    holes from, so it is the one that matters here (tests/regression pins the behaviour)."""
    committed = getattr(consumer, "_committed_offset", None)
    offset = committed.get(tp) if committed is not None else None
    return offset if offset is not None and offset >= 0 else None  # no commit yet


async def with_skipped(
    events: Sequence[EventT], skipped: SkippedInput, metrics: AgentMetrics,
    delivery_next: Callable[[str, int], int | None] = lambda topic, partition: None,
) -> tuple[list[RawMessage], list[Gap]]:
    """The batch as raw messages, plus any earlier input Faust skipped without processing,
    and the gaps that input filled (for `fill_gaps` once the batch is processed).

    `delivery_next`: where Faust's delivery of a partition must go on (`DeliveryCursor`)."""
    messages = [raw_message(e) for e in events]
    gaps = offset_gaps(messages, lambda topic, partition: lower_known(
        skipped.next_offset(topic, partition), delivery_next(topic, partition)))
    if not gaps:
        return messages, []
    recovered = await read_gaps(skipped.bootstrap, gaps, client_kwargs=skipped.client_kwargs)
    log.warning("input.skipped_reread", gaps=[f"{g.topic}[{g.partition}]:{g.start}-{g.end}"
                                              for g in gaps], messages=len(recovered))
    for topic, n in tally(m.topic for m in recovered).items():
        metrics.reread.labels(topic).inc(n)
    return splice(messages, recovered), gaps


def fill_gaps(consumer: ConsumerT, gaps: Sequence[Gap]) -> None:
    """Ack every offset of processed gaps in Faust's bookkeeping.

    Faust commits the first unbroken run of acked offsets from its committed one; offsets it
    read and dropped unacked (during a rebalance) leave a hole there that nothing fills, and
    the partition's commit froze for good (docs/feedback.md, "Input skipped by Faust"). Acking the
    whole range, not only the records returned, also covers offsets that hold no record
    (transaction markers). Offsets below the commit or already acked are ignored by Faust;
    a partition no longer assigned is skipped (its new owner redelivers from the commit). A
    range Faust also logged as a gap would be counted twice by its own merge, each duplicate
    costing a commit interval; our consumer merges without them (streams.runtime.faust_base).
    """
    assigned = consumer.assignment()
    for gap in gaps:
        tp = TP(gap.topic, gap.partition)
        if tp not in assigned:
            continue
        for offset in range(gap.start, gap.end):
            consumer.ack(ConsumerMessage(
                topic=gap.topic, partition=gap.partition, offset=offset, timestamp=0.0,
                timestamp_type=0, headers=None, key=None, value=None, checksum=None, tp=tp))


def delivery_reader(app: AppT, cursor: DeliveryCursor,
                    generation: int) -> Callable[[str, int], int | None]:
    """`delivery_next(topic, partition)` for `with_skipped`, in the batch's generation."""
    def delivery_next(topic: str, partition: int) -> int | None:
        return cursor.expected(generation, topic, partition,
                               committed_offset(app.consumer, TP(topic, partition)))
    return delivery_next


def delivered_next(events: Sequence[EventT], gaps: Sequence[Gap],
                   generation: int) -> dict[tuple[str, int], int]:
    """Where delivery goes on after this batch, from its events of `generation` (stale ones
    say nothing about it) and the gaps it filled."""
    out: dict[tuple[str, int], int] = {}
    for e in events:  # from the Faust messages directly: no second RawMessage per event
        msg = e.message
        if msg.generation_id == generation:
            tp = (msg.topic, msg.partition)
            out[tp] = max(out.get(tp, 0), msg.offset + 1)
    for g in gaps:
        out[(g.topic, g.partition)] = max(out.get((g.topic, g.partition), g.end), g.end)
    return out


def partition_anchors(events: Sequence[EventT]) -> dict[int, EventT]:
    """One event per partition number in the batch (inputs are co-partitioned by user)."""
    return {e.message.partition: e for e in events}


def save_progress(progress: TableT, messages: Sequence[RawMessage], events: Sequence[EventT],
                  extra: Callable[[int, dict], dict] | None = None) -> None:
    """Record, per partition, the offset after the last message processed of each topic.

    Monotonic: after a rebalance Faust redelivers from its commit, and that redelivered input
    was processed already; what lies below the highest processed offset was all processed."""
    offsets = next_offsets(messages)
    for partition, event in partition_anchors(events).items():
        before = progress.get(str(partition)) or {"next": {}}
        done = before.get("next", {})
        after = {**before, "next": {**done, **{
            topic: max(n, done.get(topic, n)) for (topic, p), n in offsets.items()
            if p == partition}}}
        if extra is not None:
            after = extra(partition, after)
        with as_current(event):
            progress[str(partition)] = after


async def catching_up(
    batches: AsyncIterator[list[EventT]], max_events: int, catch_up: int, wait_s: float
) -> AsyncIterator[list[EventT]]:
    """Micro-batches merged while the input is behind: a full batch (the consumer's queue had
    `max_events` ready) takes the next one too, up to `catch_up` × `max_events` events, while it
    holds at most `max_events / 2` users. The text scored per user is one per micro-batch, so a
    deeper backlog then costs fewer texts per event; the users bound keeps a batch's texts (its
    scoring time, and how long a rebalance waits for it) near what one full batch costs.

    A merge waits at most `wait_s` for the next batch (still taken, for the next round): one that
    is not ready by then means the input is not behind, or has stopped. A rebalance stops it and
    then waits for the events in hand to be acked, so holding them for more would never end."""
    taking: asyncio.Task | None = None

    async def take() -> list[EventT] | None:
        try:
            return await anext(batches)
        except StopAsyncIteration:
            return None

    try:
        while True:
            taking = taking or asyncio.ensure_future(take())
            events = await taking
            taking = None
            if events is None:
                return
            last: list[EventT] | None = events
            while (last is not None and len(last) >= max_events
                   and len(events) < catch_up * max_events
                   and len({e.message.key for e in events}) <= max_events // 2):
                taking = asyncio.ensure_future(take())
                done, _ = await asyncio.wait({taking}, timeout=wait_s)
                if not done:
                    break
                last, taking = taking.result(), None
                events = [*events, *(last or [])]
            yield events
    finally:
        if taking is not None:
            taking.cancel()


async def run_acked_batches(
    app: AppT,
    stream: StreamT,
    max_events: int,
    within_s: float,
    skipped: SkippedInput,
    process: Callable[[Sequence[EventT], list[RawMessage]], Awaitable[object]],
    failure: str,
    metrics: AgentMetrics,
    catch_up: int = 1,
    tail_watch: TailWatch | None = None,
    catch_up_wait_s: float | None = None,
) -> None:
    """The at-least-once loop: a micro-batch is acked only after `process` returned.

    `process` gets the batch's events and its raw messages, with any input Faust skipped put
    back in place (`with_skipped`). `noack_take` leaves acking to us, so a batch that failed
    or was cancelled mid-way stays unacked and Faust commits nothing past it; once processed,
    its events and the re-read offsets are acked, so the commit reaches the end of processed
    input whatever delivered it. An exception is a bug, not bad input (that is dead-lettered
    or counted): stop with a non-zero exit rather than idle with a dead agent; a restarted
    process handles the unacked batch again. Every log line of a batch carries its sequence
    number and size. Under backlog batches grow up to `catch_up` × `max_events` (`catching_up`),
    each merge waiting up to `catch_up_wait_s` (default `within_s`) for the next full batch.
    `tail_watch` learns which partitions each batch processed (`redeliver_dropped_tails`).
    """
    numbers = itertools.count(1)
    cursor = DeliveryCursor()
    batches = catching_up(stream.noack_take(max_events, within_s), max_events, catch_up,
                          wait_s=within_s if catch_up_wait_s is None else catch_up_wait_s)
    async for events in batches:
        started = time.perf_counter()
        generation = app.consumer_generation_id
        if tail_watch is not None:
            tail_watch.started()
        with structlog.contextvars.bound_contextvars(batch=next(numbers),
                                                     batch_events=len(events)):
            try:
                messages, gaps = await with_skipped(
                    events, skipped, metrics, delivery_reader(app, cursor, generation))
                await process(events, messages)
            except Exception as exc:
                log.exception(failure)
                await app.crash(exc)
                raise
        for event in events:
            await stream.ack(event)
        fill_gaps(app.consumer, gaps)
        cursor.advance(generation, delivered_next(events, gaps, generation))
        if tail_watch is not None:
            tail_watch.processed({(m.topic, m.partition) for m in messages}, time.monotonic())
        metrics.count_batch((e.message.topic for e in events), time.perf_counter() - started)


TAIL_CHECK_S = 1.0  # how often partitions stuck below their end are looked for


async def redeliver_dropped_tails(
    app: AppT, watch: TailWatch, topics: Collection[str],
    next_offset: Callable[[str, int], int | None],
) -> None:
    """Send Faust back to where processed input ends on a partition stuck below its end.

    `with_skipped` finds input Faust dropped only when a later message of the partition is
    delivered; at a partition's end none is (streams.core.tail_watch). Seen on a feedback
    sidecar restarted after a SIGKILL: the rest of `intent.scores`, already on the broker, was
    read and dropped, and those predictions were never labelled; a worker would leave the
    last events of a partition unscored until more traffic came. Faust's own seek, on its
    consumer thread, so its read offsets follow; redelivered input is idempotent downstream.
    Never takes the agent down: a failed seek (say, a rebalance began) is logged."""
    if app.rebalancing or app.in_recovery:
        watch.reset()  # Faust rewinds to the commit itself; judge afresh afterwards
        return
    try:
        highwaters = assigned_highwaters(app, topics)
    except LookupError:
        return
    positions = {(t, p): tail_position(committed_offset(app.consumer, TP(t, p)),
                                       next_offset(t, p)) for t, p in highwaters}
    stalled = watch.stalled(positions, highwaters, time.monotonic())
    for (topic, partition), offset in stalled.items():
        log.warning("input.tail_redelivered", tp=f"{topic}[{partition}]", offset=offset,
                    highwater=highwaters[(topic, partition)])
    if not stalled:
        return
    try:
        await app.consumer.seek_wait({TP(t, p): offset for (t, p), offset in stalled.items()})
    except Exception:
        log.warning("input.tail_redeliver_failed", exc_info=True)
        watch.reset()


def assigned_highwaters(app: AppT, topics: Collection[str]) -> dict[tuple[str, int], int | None]:
    """Highwater of each input partition assigned to this process, as of its last fetch.

    Raises LookupError while there is no consistent answer (consumer not started, or a
    rebalance changed the assignment between the two calls)."""
    consumer = app.consumer
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic in topics]
        return {(tp.topic, tp.partition): consumer.highwater(tp) for tp in assigned}
    except (ConsumerNotStarted, AssertionError, AttributeError) as exc:
        # aiokafka asserts the partition is assigned; its assignment can be None mid-rebalance
        raise LookupError("no consistent assignment") from exc


async def report_lag(
    app: AppT, topics: Collection[str], next_offset: Callable[[str, int], int | None],
    metrics: AgentMetrics,
) -> None:
    """Refresh the lag gauges; skipped (kept as they were) while a rebalance is under way.

    Partitions with nothing processed yet count from their log start (one ListOffsets call);
    metrics never take the agent down, so any failure here is only logged."""
    try:
        highwaters = assigned_highwaters(app, topics)
        fresh = [TP(t, p) for (t, p), hw in highwaters.items()
                 if hw is not None and next_offset(t, p) is None]
        starts = await app.consumer.earliest_offsets(*fresh) if fresh else {}
    except LookupError:
        return
    except Exception:
        log.warning("lag.unavailable", exc_info=True)
        return
    lags = consumer_lag(highwaters, next_offset,
                        {(tp.topic, tp.partition): offset for tp, offset in starts.items()})
    metrics.set_lag(highwaters, lags)
    report_stall(app, metrics, lags, next_offset)


STALL_REPORT_S = 30.0  # input waiting this long with no batch completed is logged, once
_STALLS_REPORTED: set[int] = set()  # id(metrics) of agents whose current stall was logged


def report_stall(
    app: AppT, metrics: AgentMetrics, lags: Mapping[tuple[str, int], int],
    next_offset: Callable[[str, int], int | None],
) -> None:
    """Log, once per stall, what Faust's consumer holds while input waits and no batch
    completes (the /health stall, seen from inside): a stalled worker otherwise says nothing
    at Faust's warn level, so its state is the only clue to which wait it is in."""
    progress = metrics.progress
    since = time.monotonic() - (progress.last_batch or progress.started)
    behind = {tp: n for tp, n in lags.items() if n > 0}
    if not behind or since < STALL_REPORT_S:
        _STALLS_REPORTED.discard(id(metrics))
        return
    if id(metrics) in _STALLS_REPORTED:
        return
    _STALLS_REPORTED.add(id(metrics))
    log.warning("input.stalled", since_batch_s=round(since), **consumer_state(app, behind,
                                                                             next_offset))


def consumer_state(app: AppT, behind: Mapping[tuple[str, int], int],
                   next_offset: Callable[[str, int], int | None]) -> dict[str, Any]:
    """Faust's view of the partitions behind (private attributes, read defensively)."""
    consumer = app.consumer
    paused = getattr(consumer, "_paused_partitions", set())
    read = getattr(consumer, "_read_offset", {})
    acked = getattr(consumer, "_acked", {})
    recovery = getattr(app.tables, "recovery", None)
    return {
        "rebalancing": app.rebalancing, "in_recovery": app.in_recovery,
        "flow_active": getattr(app.flow_control, "is_active", lambda: None)(),
        "unacked": len(getattr(consumer, "_unacked_messages", ())),
        "recovery_remaining": getattr(recovery, "active_remaining_total", lambda: None)(),
        "partitions": {
            f"{t}[{p}]": {"lag": n, "next": next_offset(t, p), "paused": TP(t, p) in paused,
                          "committed": committed_offset(consumer, TP(t, p)),
                          "read": read.get(TP(t, p)), "acked_held": len(acked.get(TP(t, p), ()))}
            for (t, p), n in sorted(behind.items())},
    }

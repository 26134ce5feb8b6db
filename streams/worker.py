"""The scoring agent: micro-batches of events → session table → Triton → `intent.scores`.

At-least-once, end to end: a batch's offsets are acked only after its dead letters, table
updates and scores have been produced (Faust commits only contiguous acked offsets, and
flushes the producer before committing). A Triton outage stalls the batch with backoff instead
of dropping it; the consumer's buffer then applies back-pressure.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Iterator, Sequence

import structlog
from faust.streams import _current_event
from faust.types import EventT, StreamT

from inference.client import TritonScorer
from streams.alerts import Alert
from streams.app import (
    alert_state_table,
    alert_topics,
    app,
    dlq_topic,
    events_topic,
    scores_topic,
    sessions_table,
    settings,
)
from streams.batching import BatchPlan, RawMessage, plan_batch
from streams.records import IntentScore, encode
from streams.scoring import decide_alerts, score_plan

log = structlog.get_logger("intentstream.worker")

POLICY = settings.session_policy()
ALERT_POLICY = settings.alert_policy()


def raw_message(event: EventT) -> RawMessage:
    msg = event.message
    ts = msg.timestamp
    return RawMessage(
        key=msg.key,
        value=msg.value,
        topic=msg.topic,
        partition=msg.partition,
        offset=msg.offset,
        timestamp_ms=int(ts * 1000) if ts is not None else None,
    )


async def produce_all(sends: Sequence) -> None:
    """Await delivery of every record (send() returns a future of the broker's ack)."""
    futures = [await s for s in sends]
    await asyncio.gather(*futures)


@contextlib.contextmanager
def as_current(event: EventT) -> Iterator[None]:
    """Make `event` Faust's current event, so a table write goes to its partition's changelog.

    Faust derives the changelog partition from the event being processed; in a micro-batch
    there is none, so each user's write is tied to that user's latest event.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def write_states(plan: BatchPlan, events: Sequence[EventT], only_pending: bool = False) -> None:
    for user_id, state in plan.states.items():
        if only_pending:
            if not state["pending"]:
                continue
            state = {"current": state["current"], "pending": []}
        with as_current(events[plan.last_message[user_id]]):
            sessions_table[user_id] = state


async def raise_alerts(
    plan: BatchPlan, events: Sequence[EventT], records: Sequence[IntentScore]
) -> list[Alert]:
    """Alerts for a batch's scores; alert state is saved only after delivery."""
    alerts, changed = decide_alerts(plan, records, alert_state_table.get, ALERT_POLICY)
    await produce_all(
        [alert_topics[a.head].send(key=a.user_id.encode(), value=encode(a)) for a in alerts]
    )
    for user, state in changed.items():
        with as_current(events[plan.last_message[user]]):
            alert_state_table[user] = state
    return alerts


async def process_batch(scorer: TritonScorer, events: Sequence[EventT]) -> BatchPlan:
    plan = plan_batch(
        (raw_message(e) for e in events), sessions_table.get, POLICY, settings.max_event_bytes
    )
    await produce_all(
        [dlq_topic.send(key=d.source.topic.encode(), value=encode(d)) for d in plan.dead_letters]
    )
    write_states(plan, events)
    records = await score_plan(
        scorer, plan, POLICY.max_chars, settings.score_retry_max_s
    )
    if records:
        await produce_all(
            [scores_topic.send(key=r.user_id.encode(), value=encode(r)) for r in records]
        )
        await raise_alerts(plan, events, records)
    # Closed sessions leave the table only once their final score is on the topic.
    write_states(plan, events, only_pending=True)
    return plan


@app.agent(events_topic)
async def score_sessions(stream: StreamT) -> None:
    scorer = TritonScorer(
        settings.triton_url,
        model_name=settings.triton_model,
        max_batch=settings.score_max_batch,
        timeout_s=settings.score_timeout_s,
    )
    try:
        async for batch in stream.noack_take(settings.batch_max_events, settings.batch_within_s):
            try:
                plan = await process_batch(scorer, batch)
            except Exception as exc:
                # A bug, not bad input (that is dead-lettered): stop the worker with a non-zero
                # exit rather than idle with a dead agent. The batch was not acked, so a
                # restarted worker processes it again.
                log.exception("batch.failed", events=len(batch))
                await app.crash(exc)
                raise
            for event in batch:
                await stream.ack(event)
            log.info(
                "batch.done",
                events=len(batch),
                valid=plan.n_valid,
                dead_letters=len(plan.dead_letters),
                scored=len(plan.to_score),
            )
    finally:
        await scorer.close()

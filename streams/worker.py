"""The scoring agent: micro-batches of events → session table → Triton → `intent.scores`.

At-least-once, end to end: a batch's offsets are acked only after its dead letters, table
updates and scores have been produced (Faust commits only contiguous acked offsets, and
flushes the producer before committing). A Triton outage stalls the batch with backoff instead
of dropping it; the consumer's buffer then applies back-pressure. Input Faust skipped during a
rebalance (faust-streaming/faust#527) is noticed by offset and re-read (streams/offsets.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from faust.types import EventT, StreamT

from inference.client import TritonScorer
from streams.agent_io import (
    as_current,
    next_offset_reader,
    partition_anchors,
    produce_all,
    run_acked_batches,
    save_progress,
    with_skipped,
)
from streams.alerts import Alert
from streams.app import (
    alert_state_table,
    alert_topics,
    app,
    dlq_topic,
    events_topic,
    progress_table,
    scores_topic,
    sessions_table,
    settings,
)
from streams.batching import BatchPlan, RawMessage, plan_batch
from streams.records import IntentScore, encode
from streams.scoring import decide_alerts, score_plan
from streams.topics import bootstrap_servers

log = structlog.get_logger("intentstream.worker")

POLICY = settings.session_policy()
ALERT_POLICY = settings.alert_policy()
PRIVACY = settings.privacy_policy()


def write_states(
    plan: BatchPlan, messages: Sequence[RawMessage], anchors: dict[int, EventT],
    only_pending: bool = False,
) -> None:
    # Each user's entry goes to the changelog partition of the user's latest message.
    for user_id, state in plan.states.items():
        if only_pending:
            if not state["pending"]:
                continue
            state = {"current": state["current"], "pending": []}
        with as_current(anchors[messages[plan.last_message[user_id]].partition]):
            sessions_table[user_id] = state


async def raise_alerts(
    plan: BatchPlan, messages: Sequence[RawMessage], anchors: dict[int, EventT],
    records: Sequence[IntentScore],
) -> list[Alert]:
    """Alerts for a batch's scores; alert state is saved only after delivery."""
    alerts, changed = decide_alerts(plan, records, alert_state_table.get, ALERT_POLICY)
    await produce_all(
        [alert_topics[a.head].send(key=a.user_id.encode(), value=encode(a)) for a in alerts]
    )
    for user, state in changed.items():
        with as_current(anchors[messages[plan.last_message[user]].partition]):
            alert_state_table[user] = state
    return alerts


async def process_batch(scorer: TritonScorer, events: Sequence[EventT]) -> BatchPlan:
    messages = await with_skipped(
        events, next_offset_reader(progress_table), bootstrap_servers(settings.broker_url)
    )
    anchors = partition_anchors(events)
    plan = plan_batch(messages, sessions_table.get, POLICY, settings.max_event_bytes,
                      PRIVACY)
    await produce_all(
        [dlq_topic.send(key=d.source.topic.encode(), value=encode(d)) for d in plan.dead_letters]
    )
    write_states(plan, messages, anchors)
    records = await score_plan(
        scorer, plan, POLICY.max_chars, settings.score_retry_max_s
    )
    if records:
        await produce_all(
            [scores_topic.send(key=r.user_id.encode(), value=encode(r)) for r in records]
        )
        await raise_alerts(plan, messages, anchors, records)
    # Closed sessions leave the table only once their final score is on the topic.
    write_states(plan, messages, anchors, only_pending=True)
    save_progress(progress_table, messages, events)
    log.info("batch.done", events=len(events), valid=plan.n_valid,
             dead_letters=len(plan.dead_letters), scored=len(plan.to_score))
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
        await run_acked_batches(
            app, stream, settings.batch_max_events, settings.batch_within_s,
            lambda events: process_batch(scorer, events), failure="batch.failed",
        )
    finally:
        await scorer.close()

"""The scoring agent: micro-batches of events → session table → Triton → `intent.scores`.

At-least-once, end to end: a batch's offsets are acked only after its dead letters, table
updates and scores have been produced (Faust commits only contiguous acked offsets, and
flushes its producer, which carries the table changelogs, before committing; the outputs go
through their own producer, streams/runtime/outputs.py, and each one's ack is awaited).
A Triton outage stalls the batch with backoff instead of dropping it; the consumer's buffer
then applies back-pressure. Input Faust skipped during a rebalance (faust-streaming/faust#527)
is noticed by offset and re-read (streams/core/offsets.py).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence

import structlog
from aiokafka.errors import KafkaError
from faust.types import EventT, StreamT

from inference.client import ScoringError, TritonScorer
from streams.core.alerts import Alert
from streams.core.batching import BatchPlan, ToScore, plan_batch
from streams.core.raw_message import RawMessage
from streams.core.records import DeadLetter, DeadLetterSource, IntentScore, encode, scoring_failed
from streams.core.sessions import render
from streams.runtime import metrics
from streams.runtime.agent_io import (
    TAIL_CHECK_S,
    SkippedInput,
    as_current,
    next_offset_reader,
    partition_anchors,
    produce_all,
    redeliver_dropped_tails,
    report_lag,
    run_acked_batches,
    save_progress,
)
from streams.runtime.topics import bootstrap_servers
from streams.worker.app import (
    alert_state_table,
    alert_topics,
    app,
    dlq_topic,
    events_topic,
    outputs,
    progress_table,
    scores_topic,
    sessions_table,
    settings,
)
from streams.worker.scoring import ScoredPlan, ScoringMetrics, decide_alerts, score_plan

log = structlog.get_logger("intentstream.worker")

SESSION_POLICY = settings.session_policy()
ALERT_POLICY = settings.alert_policy()
PRIVACY = settings.privacy_policy()
SCORING_METRICS = ScoringMetrics(
    texts=metrics.BATCH_TEXTS.observe,
    triton_seconds=metrics.TRITON_SECONDS.observe,
    retry=metrics.TRITON_RETRIES.inc,
)


class StartupError(Exception):
    """The configuration cannot work against what is deployed (the worker exits non-zero)."""


def write_states(
    plan: BatchPlan, messages: Sequence[RawMessage], anchors: dict[int, EventT],
    only_pending: bool = False,
) -> None:
    # Each user's entry goes to the changelog partition of the user's latest message.
    for user_id, state in plan.states.items():
        if only_pending:
            if not state["pending"]:
                continue
            state = {**state, "pending": []}
        with as_current(anchors[messages[plan.last_message[user_id]].partition]):
            sessions_table[user_id] = state


async def raise_alerts(
    plan: BatchPlan, messages: Sequence[RawMessage], anchors: dict[int, EventT],
    scored: ScoredPlan,
) -> list[Alert]:
    """Alerts for a batch's scores; alert state is saved only after delivery."""
    alerts, changed = decide_alerts(scored.scored, scored.records, alert_state_table.get,
                                    ALERT_POLICY)
    await produce_all(
        [alert_topics[a.head].send(key=a.user_id.encode(), value=encode(a),
                                   partition=input_partition(plan, messages, a.user_id))
         for a in alerts]
    )
    for user, state in changed.items():
        with as_current(anchors[messages[plan.last_message[user]].partition]):
            alert_state_table[user] = state
    report_alerts(alerts)
    return alerts


def report_alerts(alerts: Sequence[Alert]) -> None:
    for alert in alerts:
        # `reason` is the decision, not Alert.reason: that one quotes session text (privacy).
        log.info("alert.raised", user_id=alert.user_id, prediction_id=alert.prediction_id,
                 alert_id=alert.alert_id, head=alert.head,
                 reason="explore" if alert.explored else "threshold",
                 probability=alert.probability, threshold=alert.threshold)
    for (head, explored), n in metrics.tally((a.head, a.explored) for a in alerts).items():
        metrics.ALERTS.labels(head, "true" if explored else "false").inc(n)


async def send_dead_letters(letters: Sequence[DeadLetter]) -> None:
    """Dead letters keyed like their input (by user, pseudonymised when user ids are), so they
    spread over the DLQ's partitions in per-user order. The log names the reason and where the
    input was, never its bytes or text: those are on the DLQ topic only."""
    await produce_all([dlq_topic.send(key=d.message_key(), value=encode(d)) for d in letters])
    for d in letters:
        log.warning("dead_letter", reason=d.reason, topic=d.source.topic,
                    partition=d.source.partition, offset=d.source.offset)
    for reason, n in metrics.tally(d.reason for d in letters).items():
        metrics.DEAD_LETTERS.labels(reason).inc(n)


def unscored_letters(
    plan: BatchPlan, messages: Sequence[RawMessage], failed: Sequence[tuple[ToScore, str]]
) -> list[DeadLetter]:
    """`scoring_failed` dead letters for the sessions the model could not score, each pointing
    at its user's latest input record in the batch."""
    letters = []
    for item, error in failed:
        msg = messages[plan.last_message[item.session["user_id"]]]
        source = DeadLetterSource(topic=msg.topic, partition=msg.partition, offset=msg.offset,
                                  timestamp=msg.timestamp_ms)
        text = render(item.session, SESSION_POLICY.max_chars)
        letters.append(scoring_failed(item.session, text, error, source))
    return letters


def input_partition(plan: BatchPlan, messages: Sequence[RawMessage], user_id: str) -> int:
    """The partition a user's events came in on. Outputs go to the same partition number, so
    they stay co-partitioned with the input (the sidecar joins them per partition) even when
    their key is a pseudonym, which hashes elsewhere than the raw user id."""
    return messages[plan.last_message[user_id]].partition


async def send_scores(
    plan: BatchPlan, messages: Sequence[RawMessage], records: Sequence[IntentScore]
) -> None:
    await produce_all(
        [scores_topic.send(key=r.user_id.encode(), value=encode(r),
                           partition=input_partition(plan, messages, r.user_id))
         for r in records]
    )
    closed = sum(1 for r in records if r.closed)
    metrics.SCORES.labels("closed").inc(closed)
    metrics.SCORES.labels("open").inc(len(records) - closed)
    if log.is_enabled_for(logging.DEBUG):  # thousands a second: skip the loop unless wanted
        for r in records:
            log.debug("score", user_id=r.user_id, prediction_id=r.prediction_id,
                      session_id=r.session_id, closed=r.closed, n_events=r.window.n_events,
                      model_version=r.model.version, strength=r.strength.label,
                      churn=round(r.churn, 4))


async def process_batch(
    scorer: TritonScorer, events: Sequence[EventT], messages: Sequence[RawMessage]
) -> BatchPlan:
    anchors = partition_anchors(events)
    plan = plan_batch(messages, sessions_table.get, SESSION_POLICY, settings.max_event_bytes,
                      PRIVACY)
    await send_dead_letters(plan.dead_letters)
    write_states(plan, messages, anchors)
    scored = await score_plan(
        scorer, plan, SESSION_POLICY.max_chars, settings.score_retry_max_s,
        max_attempts=settings.score_max_attempts, observe=SCORING_METRICS,
    )
    if scored.failed:  # a closed one leaves `pending` below: dead-lettered is done
        await send_dead_letters(unscored_letters(plan, messages, scored.failed))
    if scored.records:
        await send_scores(plan, messages, scored.records)
        await raise_alerts(plan, messages, anchors, scored)
    # Closed sessions leave the table only once their final score is on the topic.
    write_states(plan, messages, anchors, only_pending=True)
    save_progress(progress_table, messages, events)
    for kind, n in (("redelivered", plan.n_redelivered), ("duplicate", plan.n_duplicates)):
        if n:
            metrics.SKIPPED.labels(kind).inc(n)
    log.info("batch.done", valid=plan.n_valid, dead_letters=len(plan.dead_letters),
             redelivered=plan.n_redelivered, duplicates=plan.n_duplicates,
             scored=len(scored.records), scoring_failed=len(scored.failed))
    return plan


async def check_served_batch_size(scorer: TritonScorer) -> None:
    """SCORE_MAX_BATCH above what the served model takes would fail every large batch."""
    try:
        served = await scorer.served_max_batch()
    except ScoringError as exc:  # checked when it can be; scoring retries until Triton is up
        log.warning("triton.unreachable_at_start", error=str(exc)[:300])
        return
    if served and settings.score_max_batch > served:
        raise StartupError(
            f"INTENTSTREAM_SCORE_MAX_BATCH={settings.score_max_batch} is above the served "
            f"model {settings.triton_model!r}'s max_batch_size {served}")
    with contextlib.suppress(ScoringError):  # else asked again at the first batch
        log.info("scoring.split", requests_per_batch_at_least=await scorer.concurrency(),
                 texts_per_request_at_most=settings.score_max_batch)


@app.agent(events_topic)
async def score_sessions(stream: StreamT) -> None:
    scorer = TritonScorer(
        settings.triton_url,
        model_name=settings.triton_model,
        max_batch=settings.score_max_batch,
        timeout_s=settings.score_timeout_s,
        concurrency=settings.score_concurrency,
        **settings.triton_client_kwargs(),
    )
    try:
        try:
            await outputs.start()
            await check_served_batch_size(scorer)
        except (StartupError, KafkaError) as exc:  # the worker exits non-zero, with the reason
            log.error("startup.failed", error=str(exc))
            await app.crash(exc)
            raise
        await run_acked_batches(
            app, stream, settings.batch_max_events, settings.batch_within_s,
            SkippedInput(next_offset_reader(progress_table),
                         bootstrap_servers(settings.broker_url),
                         settings.kafka_client_kwargs()),
            lambda events, messages: process_batch(scorer, events, messages),
            failure="batch.failed", metrics=metrics.WORKER, catch_up=settings.batch_catch_up,
            catch_up_wait_s=settings.batch_catch_up_wait_s,
            tail_watch=app.tail_watch,
        )
    finally:
        await outputs.stop()
        await scorer.close()


@app.timer(interval=TAIL_CHECK_S)
async def redeliver_tails() -> None:
    await redeliver_dropped_tails(app, app.tail_watch, {settings.events_topic},
                                  next_offset_reader(progress_table))


@app.timer(interval=metrics.LAG_REFRESH_S)
async def report_consumer_lag() -> None:
    await report_lag(app, {settings.events_topic}, next_offset_reader(progress_table),
                     metrics.WORKER)

"""The scoring agent: micro-batches of events → session table → Triton → `intent.scores`.

At-least-once, end to end: a batch's offsets are acked only after its dead letters, table
updates and scores have been produced (Faust commits only contiguous acked offsets, and
flushes its producer, which carries the table changelogs, before committing; the outputs go
through their own producer, streams/runtime/outputs.py, and each one's ack is awaited).
A Triton outage stalls the batch with backoff instead of dropping it; the consumer's buffer
then applies back-pressure. Input Faust skipped during a rebalance (faust-streaming/faust#527)
is noticed by offset and re-read (streams/core/offsets.py).

Timers (docs/silence.md): each input partition has an event-time clock, saved in the progress
table; each user's next timer (session close, silence milestone) is derived from the user's
state, and rebuilt from the session table after an assignment in steps beside the batches
(`rebuild_timers`), so a restart scores at once whatever the number of users. A batch
chooses its own partitions' due timers (users the batch itself touched wait for the next
round: their timer is set again from their new state) and scores them with its own
sessions in one Triton round, before it is acked; `fire_timers` runs every TIMER_TICK_S for
quiet partitions. Both take `TIMER_LOCK`, so a timer's state writes never interleave with a
batch's. Timer work has no input to ack: it is idempotent from state. The fired states are
written, and flushed to the changelog, before the round is scored and any output exists; they
are marked delivered (closed sessions leave, the milestone counts as scored, the network's
outputs for a final score are kept) only after the scores and alerts are on their topics. A
crash anywhere in between re-scores exactly the same things (same ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import structlog
from aiokafka.errors import KafkaError
from faust.types import EventT, StreamT

from inference.client import ScoringError, TritonScorer
from streams.core.alerts import Alert
from streams.core.batching import BatchPlan, ToScore, delivered, plan_batch
from streams.core.raw_message import RawMessage
from streams.core.records import DeadLetter, DeadLetterSource, IntentScore, encode, scoring_failed
from streams.core.sessions import UserState, render
from streams.core.silence import TimerPlan, has_undelivered, plan_timers
from streams.runtime import metrics
from streams.runtime.agent_io import (
    TAIL_CHECK_S,
    SkippedInput,
    as_current,
    assigned_highwaters,
    next_offset_reader,
    partition_anchors,
    produce_all,
    redeliver_dropped_tails,
    report_lag,
    run_acked_batches,
    save_progress,
    scan_json_table,
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
from streams.worker.lookup import remember_latest
from streams.worker.scoring import (
    ScoredPlan,
    ScoringMetrics,
    decide_alerts,
    keep_outputs,
    score_plan,
)
from streams.worker.timers import PartitionAnchor, WorkerTimers, user_partition

log = structlog.get_logger("intentstream.worker")

SESSION_POLICY = settings.session_policy()
ALERT_POLICY = settings.alert_policy()
PRIVACY = settings.privacy_policy()
SCORING_METRICS = ScoringMetrics(
    texts=metrics.BATCH_TEXTS.observe,
    triton_seconds=metrics.TRITON_SECONDS.observe,
    retry=metrics.TRITON_RETRIES.inc,
    by_trigger=lambda trigger, n: metrics.TRITON_TEXTS.labels(trigger).inc(n),
    stacker_only=lambda trigger, n: metrics.STACKER_ONLY.labels(trigger).inc(n),
    route=lambda name, n: metrics.CASCADE_ROUTES.labels(name).inc(n),
)
TIMERS = WorkerTimers(settings.clock_policy(), settings.timer_policy())
TIMER_LOCK = asyncio.Lock()  # a batch and a timer run never interleave their state writes


class ScorerHolder:
    """The agent's Triton client, once its outputs are started: the periodic timer scores
    through it (None before, and after the agent stopped)."""

    scorer: TritonScorer | None = None


SCORER = ScorerHolder()


class StartupError(Exception):
    """The configuration cannot work against what is deployed (the worker exits non-zero)."""


def write_states(
    plan: BatchPlan, messages: Sequence[RawMessage], anchors: dict[int, EventT],
    only_pending: bool = False, kept: Collection[str] = frozenset(),
) -> None:
    """The batch's user states; `only_pending`: once their outputs are delivered, the states
    that held undelivered work (closed sessions, a chosen milestone), and those that keep new
    network outputs (`kept`: the cascade's, streams/core/cascade.py), marked delivered."""
    # Each user's entry goes to the changelog partition of the user's latest message.
    for user_id, state in plan.states.items():
        if only_pending:
            if not has_undelivered(state) and user_id not in kept:
                continue
            state = delivered(state)
        with as_current(anchors[messages[plan.last_message[user_id]].partition]):
            sessions_table[user_id] = state


async def raise_alerts_at(
    partition_of: Callable[[str], int], anchor_of: Callable[[int], Any], scored: ScoredPlan,
) -> list[Alert]:
    """Alerts for scores, each to its user's input partition; alert state saved after
    delivery, to the changelog partition `anchor_of` ties it to."""
    alerts, changed = decide_alerts(scored.scored, scored.records, alert_state_table.get,
                                    ALERT_POLICY)
    await produce_all(
        [alert_topics[a.head].send(key=a.user_id.encode(), value=encode(a),
                                   partition=partition_of(a.user_id))
         for a in alerts]
    )
    for user, state in changed.items():
        with as_current(anchor_of(partition_of(user))):
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
    await send_scores_at(lambda user: input_partition(plan, messages, user), records)


async def send_scores_at(
    partition_of: Callable[[str], int], records: Sequence[IntentScore]
) -> list[bytes]:
    """The records onto `intent.scores`, each at its input's partition number; returns them
    as sent."""
    values = [encode(r) for r in records]
    await produce_all(
        [scores_topic.send(key=r.user_id.encode(), value=value,
                           partition=partition_of(r.user_id))
         for r, value in zip(records, values, strict=True)]
    )
    closed = sum(1 for r in records if r.closed)
    metrics.SCORES.labels("closed").inc(closed)
    metrics.SCORES.labels("open").inc(len(records) - closed)
    if log.is_enabled_for(logging.DEBUG):  # thousands a second: skip the loop unless wanted
        for r in records:
            log.debug("score", user_id=r.user_id, prediction_id=r.prediction_id,
                      session_id=r.session_id, closed=r.closed, trigger=r.trigger,
                      as_of=r.as_of, n_events=r.window.n_events,
                      model_version=r.model.version, strength=r.strength.label,
                      churn=round(r.churn, 4))
    return values


async def process_batch(
    scorer: TritonScorer, events: Sequence[EventT], messages: Sequence[RawMessage]
) -> BatchPlan:
    async with TIMER_LOCK:
        return await _process_batch(scorer, events, messages)


async def _process_batch(
    scorer: TritonScorer, events: Sequence[EventT], messages: Sequence[RawMessage]
) -> BatchPlan:
    anchors = partition_anchors(events)
    ensure_timers()
    plan = plan_batch(messages, sessions_table.get, SESSION_POLICY, settings.max_event_bytes,
                      PRIVACY)
    await send_dead_letters(plan.dead_letters)
    # The clock moves with the batch's event times; its partitions' due timers are chosen now
    # and scored with the batch's own sessions, before the batch is acked (their outputs are
    # as acked as the batch's own).
    wall_ms = int(time.time() * 1000)
    partitions = sorted({m.partition for m in messages})
    for partition in partitions:
        TIMERS.observe(partition, plan.newest_ts.get(partition), wall_ms)

    def anchor_of(partition: int) -> Any:
        return anchors.get(partition) or _anchor(partition)

    fired = choose_timers(partitions, skip=plan.states)
    # Only the timers' choice is flushed before scoring (it has no input to re-read); the
    # batch's own states, like before timers existed, travel while Triton scores.
    await write_fired(fired, anchor_of)
    write_states(plan, messages, anchors)
    scored = await score_plan(
        scorer, BatchPlan(to_score=plan.to_score + fired.plan.to_score),
        SESSION_POLICY.max_chars, settings.score_retry_max_s,
        max_attempts=settings.score_max_attempts, observe=SCORING_METRICS,
        cascade=settings.score_cascade,
    )

    def partition_of(user: str) -> int:
        owner = fired.owner.get(user)
        return input_partition(plan, messages, user) if owner is None else owner

    failed_batch = [f for f in scored.failed if f[0].session["user_id"] not in fired.owner]
    failed_timers = [f for f in scored.failed if f[0].session["user_id"] in fired.owner]
    if scored.failed:  # a closed one leaves `pending` below: dead-lettered is done
        await send_dead_letters(unscored_letters(plan, messages, failed_batch)
                                + timer_unscored_letters(fired.plan.states, failed_timers))
    if scored.records:
        sent = await send_scores_at(partition_of, scored.records)
        await remember_latest(scored.records, sent, partition_of, anchor_of)
        await raise_alerts_at(partition_of, anchor_of, scored)
    kept = keep_outputs(scored, plan.states | fired.plan.states)
    # Closed sessions leave the table only once their final score is on the topic; network
    # outputs kept for an open session are written with it.
    write_states(plan, messages, anchors, only_pending=True, kept=kept)
    for user, state in plan.states.items():
        TIMERS.set(user, delivered(state))
    finish_timers(fired, anchor_of, scored, failed_timers)
    save_progress(progress_table, messages, events, extra=_with_clock)
    for partition in partitions:
        TIMERS.saved(partition)
    for kind, n in (("redelivered", plan.n_redelivered), ("duplicate", plan.n_duplicates)):
        if n:
            metrics.SKIPPED.labels(kind).inc(n)
    log.info("batch.done", valid=plan.n_valid, dead_letters=len(plan.dead_letters),
             redelivered=plan.n_redelivered, duplicates=plan.n_duplicates,
             scored=len(scored.records) - len(fired.users_scored(scored)),
             scoring_failed=len(failed_batch))
    return plan


# --- timers -------------------------------------------------------------------------------------


def _anchor(partition: int) -> PartitionAnchor:
    return PartitionAnchor.of(settings.events_topic, partition)


def _with_clock(partition: int, progress: dict) -> dict:
    clock = TIMERS.clock_doc(partition)
    return progress if clock is None else {**progress, "clock": clock}


def assigned_partitions() -> set[int]:
    return {tp.partition for tp in app.consumer.assignment()
            if tp.topic == settings.events_topic}


@dataclass
class TimerRebuild:
    """The session table's scan that rebuilds the timers after an assignment, in chunks
    (`rebuild_timers_chunk`) beside the batches: a restarted worker scores at once instead
    of first reading every user's state (streams/worker/timers.py)."""

    users: Iterator[tuple[str, UserState | None]] | None = None
    started: float = 0.0
    read: int = 0


REBUILD = TimerRebuild()
REBUILD_CHUNK = 500  # users read per chunk: ~35 ms at the ~70 µs a user measured at 1M users
REBUILD_STEP_S = 0.05  # the most one run of steps holds TIMER_LOCK (a batch waits that long)
REBUILD_IDLE_S = 0.2  # how soon an assignment's rebuild starts if no batch starts it first


def ensure_timers() -> None:
    """After an assignment, start rebuilding the timers from the session table (derived
    state): the clocks are restored now, the users' timers come in chunks."""
    if not TIMERS.stale:
        return
    owned = assigned_partitions()
    TIMERS.begin_rebuild(owned, lambda p: (progress_table.get(str(p)) or {}).get("clock"))
    REBUILD.users, REBUILD.started, REBUILD.read = scan_json_table(sessions_table), \
        time.monotonic(), 0
    log.info("timers.rebuilding", partitions=sorted(owned))


def rebuild_timers_chunk() -> bool:
    """Read the next users of the rebuild for up to REBUILD_STEP_S (under TIMER_LOCK);
    False when there is nothing left to read."""
    users = REBUILD.users
    if users is None:
        return False
    deadline = time.monotonic() + REBUILD_STEP_S
    while time.monotonic() < deadline:
        chunk = list(islice(users, REBUILD_CHUNK))
        TIMERS.add_rebuilt(chunk)
        REBUILD.read += len(chunk)
        if len(chunk) < REBUILD_CHUNK:
            pending = TIMERS.finish_rebuild()
            REBUILD.users = None
            log.info("timers.rebuilt", partitions=sorted(TIMERS.clocks), users=REBUILD.read,
                     pending=pending, seconds=round(time.monotonic() - REBUILD.started, 3))
            return False
    return True


@app.on_partitions_assigned.connect
async def _timers_stale_after_assignment(sender: object, assigned: object, **_: object) -> None:
    TIMERS.stale = True


@app.on_partitions_revoked.connect
async def _drop_timer_scan_on_revoke(sender: object, revoked: object, **_: object) -> None:
    """A rebuild's scan holds its RocksDB databases open; Faust reopens each partition's
    database after the rebalance, and RocksDB refuses a second handle in one process (Faust
    would retry for 30 s, then stop the worker). The next assignment starts a new scan."""
    REBUILD.users = None
    TIMERS.stale = True


@dataclass
class FiredTimers:
    """Timers chosen at their partitions' watermarks: the states they changed, what to score,
    and each fired user's partition."""

    plan: TimerPlan = field(default_factory=TimerPlan)
    owner: dict[str, int] = field(default_factory=dict)

    def users_scored(self, scored: ScoredPlan) -> list[IntentScore]:
        return [r for r in scored.records if r.user_id in self.owner]


def choose_timers(partitions: Collection[int], skip: Collection[str] = ()) -> FiredTimers:
    """Pop and apply the due timers of `partitions` at their watermarks. Users in `skip` (a
    batch's own, whose states it is about to write) are left for the next round: the batch
    sets their timers again from their new states."""
    fired = FiredTimers()
    for partition in partitions:
        due = [user for user in TIMERS.pop_due(partition) if user not in skip]
        mark = TIMERS.watermark(partition)
        if not due or mark is None:
            continue
        chosen = plan_timers(due, sessions_table.get, mark, TIMERS.policy)
        for user in due:
            fired.owner[user] = partition
            if user not in chosen.states:  # stale: re-armed from the state as it stands
                TIMERS.set(user, sessions_table.get(user))
        fired.plan.states.update(chosen.states)
        fired.plan.to_score.extend(chosen.to_score)
        fired.plan.closed += chosen.closed
        fired.plan.milestones += chosen.milestones
    fired.owner = {user: p for user, p in fired.owner.items() if user in fired.plan.states}
    return fired


async def write_fired(fired: FiredTimers, anchor_of: Callable[[int], Any]) -> None:
    """The timers' choice goes to the changelog, flushed, before any of its outputs exist."""
    if fired.plan.states:
        write_owned(fired.plan.states, fired.owner, anchor_of)
        await app.producer.flush()


def finish_timers(fired: FiredTimers, anchor_of: Callable[[int], Any], scored: ScoredPlan,
                  failed: Sequence[tuple[ToScore, str]]) -> None:
    """Once the timers' scores and alerts are delivered: their states marked delivered."""
    if not fired.plan.states:
        return
    done = {user: delivered(state) for user, state in fired.plan.states.items()}
    write_owned(done, fired.owner, anchor_of)
    for user, state in done.items():
        TIMERS.set(user, state)
    metrics.TIMERS_FIRED.labels("close").inc(fired.plan.closed)
    metrics.TIMERS_FIRED.labels("silence").inc(fired.plan.milestones)
    log.info("timers.fired", users=len(fired.plan.states), closed=fired.plan.closed,
             silence=fired.plan.milestones, scored=len(fired.users_scored(scored)),
             scoring_failed=len(failed))


async def fire_timers(
    scorer: TritonScorer, partitions: Collection[int], anchor_of: Callable[[int], Any],
) -> TimerPlan:
    """Fire the due timers of quiet `partitions` at their watermarks (a batch fires its own
    with its sessions): close sessions, choose silence milestones, score them, deliver
    scores and alerts, then mark the states delivered (idempotent from state, as a batch)."""
    fired = choose_timers(partitions)
    if not fired.plan.states:
        return fired.plan
    await write_fired(fired, anchor_of)
    scored = await score_plan(
        scorer, fired.plan, SESSION_POLICY.max_chars, settings.score_retry_max_s,
        max_attempts=settings.score_max_attempts, observe=SCORING_METRICS,
        cascade=settings.score_cascade,
    )
    if scored.failed:
        await send_dead_letters(timer_unscored_letters(fired.plan.states, scored.failed))
    if scored.records:
        sent = await send_scores_at(fired.owner.__getitem__, scored.records)
        await remember_latest(scored.records, sent, fired.owner.__getitem__, anchor_of)
        await raise_alerts_at(fired.owner.__getitem__, anchor_of, scored)
    keep_outputs(scored, fired.plan.states)
    finish_timers(fired, anchor_of, scored, scored.failed)
    return fired.plan


def write_owned(states: Mapping[str, UserState], owner: Mapping[str, int],
                anchor_of: Callable[[int], Any]) -> None:
    """Write timer-fired states to their partitions' changelogs, skipping partitions a
    rebalance took meanwhile: their new owner fires the same timers from the last state it
    restored (the same ids)."""
    owned = assigned_partitions()
    for user, state in states.items():
        if owner[user] in owned:
            with as_current(anchor_of(owner[user])):
                sessions_table[user] = state


def timer_unscored_letters(
    states: Mapping[str, UserState], failed: Sequence[tuple[ToScore, str]]
) -> list[DeadLetter]:
    """`scoring_failed` dead letters for timer scorings, pointing at each user's last input."""
    letters = []
    for item, error in failed:
        state = states[item.session["user_id"]]
        position = state.get("position") or [user_partition(state) or 0, -1]
        source = DeadLetterSource(topic=settings.events_topic, partition=position[0],
                                  offset=position[1])
        text = render(item.session, SESSION_POLICY.max_chars)
        letters.append(scoring_failed(item.session, text, error, source))
    return letters


def partitions_with_lag() -> dict[int, bool]:
    """Each assigned input partition: whether input is waiting (highwater past what was
    processed). Empty while there is no consistent answer (mid-rebalance)."""
    try:
        highwaters = assigned_highwaters(app, {settings.events_topic})
    except LookupError:
        return {}
    next_offset = next_offset_reader(progress_table)
    out = {}
    for (topic, partition), highwater in highwaters.items():
        done = next_offset(topic, partition)
        out[partition] = highwater is None or (highwater > (done or 0))
    return out


async def tick_timers(scorer: TritonScorer) -> None:
    """Advance quiet partitions' clocks by wall time and fire what they reached; save the
    clocks that moved. Skipped during a rebalance (the batch loop is stopped then too)."""
    if app.rebalancing or app.in_recovery:
        return
    async with TIMER_LOCK:
        if app.rebalancing or app.in_recovery:
            return
        ensure_timers()
        lags = partitions_with_lag()
        wall_ms = int(time.time() * 1000)
        for partition, has_lag in lags.items():
            TIMERS.tick(partition, wall_ms, has_lag)
        owned = [p for p in lags if p in TIMERS.clocks]
        await fire_timers(scorer, owned, _anchor)
        for partition in TIMERS.unsaved():
            if partition not in lags:
                continue
            with as_current(_anchor(partition)):
                progress_table[str(partition)] = _with_clock(
                    partition, progress_table.get(str(partition)) or {"next": {}})
            TIMERS.saved(partition)


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
        refresh_s=settings.triton_refresh_s,
        **settings.triton_client_kwargs(),
    )
    scorer.on_request = lambda model: metrics.TRITON_REQUESTS.labels(model).inc()
    try:
        try:
            await outputs.start()
            await check_served_batch_size(scorer)
        except (StartupError, KafkaError) as exc:  # the worker exits non-zero, with the reason
            log.error("startup.failed", error=str(exc))
            await app.crash(exc)
            raise
        SCORER.scorer = scorer
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
        SCORER.scorer = None
        async with TIMER_LOCK:  # a timer run in flight finishes with the outputs still up
            await outputs.stop()
        await scorer.close()


@app.timer(interval=settings.timer_tick_s)
async def run_timers() -> None:
    """Quiet partitions' clocks advance by wall time (after WATERMARK_IDLE_S, no lag) and
    their due timers fire. A bug stops the worker, as in the batch loop."""
    scorer = SCORER.scorer
    if scorer is None:
        return
    try:
        await tick_timers(scorer)
    except Exception as exc:
        log.exception("timers.failed")
        await app.crash(exc)
        raise


@app.task
async def rebuild_timers() -> None:
    """Drive the timers' rebuild after each assignment, in steps that let batches run
    between them; idle between rebuilds, before the agent runs, and during a rebalance (its
    recovery is filling the tables). A bug stops the worker, as in the batch loop."""
    while True:
        try:
            busy = False
            wanted = TIMERS.stale or REBUILD.users is not None  # else: nothing to lock for
            if wanted and SCORER.scorer is not None \
                    and not (app.rebalancing or app.in_recovery):
                async with TIMER_LOCK:
                    if not (app.rebalancing or app.in_recovery):
                        ensure_timers()
                        busy = rebuild_timers_chunk()
        except Exception as exc:
            log.exception("timers.rebuild_failed")
            await app.crash(exc)
            raise
        await asyncio.sleep(0 if busy else REBUILD_IDLE_S)


@app.timer(interval=TAIL_CHECK_S)
async def redeliver_tails() -> None:
    await redeliver_dropped_tails(app, app.tail_watch, {settings.events_topic},
                                  next_offset_reader(progress_table))


@app.timer(interval=metrics.LAG_REFRESH_S)
async def report_consumer_lag() -> None:
    await report_lag(app, {settings.events_topic}, next_offset_reader(progress_table),
                     metrics.WORKER)

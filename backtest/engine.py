"""The replay engine: ordered events → the live worker's batch functions → scores, alerts, labels.

Nothing here decides anything the live system decides. Per micro-batch it calls what the Faust
worker calls (`streams.worker.agent.process_batch`): `plan_batch` (validation, sessions,
coalescing), `score_plan` (render, Triton, score records) and `decide_alerts`; user states
live in dicts instead of changelog-backed tables. Labels come from the feedback sidecar's
batch function (`backtest.labels`).

## Determinism

Results are a function of (the events, the model version, the settings, the tick) only: not
of partitions, offsets, arrival order, the source (Kafka or file) or the wall clock.

- **Order**: valid events are sorted by (event time, user, event id, raw bytes); malformed
  ones, which have no event time, by their position in the source, and are dead-lettered in
  one batch of their own before the rest.
- **Batches**: the live worker coalesces what arrives within `BATCH_WITHIN_S` of wall clock.
  Replay coalesces by event time: a micro-batch is one tick, the events with
  `ts // tick_ms` equal (default tick = `BATCH_WITHIN_S`; `tick_ms=None` makes the whole
  range one tick, so each session is scored once, at its end). Which windows get scored
  depends on the tick and nothing else.
- **Scores**: probabilities depend, in the last float bits, on which texts share a Triton
  batch (padding). The texts of consecutive ticks are scored in rounds of at least
  `ROUND_TEXTS`, in order, and `OrderedScorer` sends one chunk at a time; a chunk's split
  over the served instances (`length_chunks`) depends on its texts only, and `intent_bert`
  has no dynamic batcher to merge those requests again (the tokenizer's merges are trimmed
  back per request): the batches are the same on every run. A deployment that turns the
  batcher on, or another client on the same server, could still share a batch with ours; the
  embedded server (the default) has neither.
- **Wall clock**: `scored_at` is pinned to 0 and `latency_ms` is never reported.
- **Timers** (docs/silence.md): one event-time clock over the whole replay (the newest event
  time so far, less `WATERMARK_LATENESS_S`: the live rule, without partitions or the wall-time
  idle advance), and the live worker's timer functions (`silence.plan_timers`) fire after
  each tick, so sessions close on time and silent users get their milestone scores as live.
  At the end of the range (`score_until`, when given) the clock reaches its end. The UCI
  replay runs without timers: its rows are finished sessions, scored once each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import groupby

from inference.client import ScoringError, TritonScorer
from inference.heads import Prediction
from streams.core.alerts import Alert, AlertPolicy, AlertState
from streams.core.batching import BatchPlan, delivered, plan_batch
from streams.core.clock import ClockPolicy, PartitionClock, TimerIndex
from streams.core.events import Rejection, ShopEvent, parse_event
from streams.core.feedback import FeedbackPolicy
from streams.core.labelling import LabelPolicy
from streams.core.privacy import DEFAULT_PRIVACY, PrivacyPolicy
from streams.core.raw_message import RawMessage
from streams.core.records import IntentScore
from streams.core.sessions import SessionPolicy, UserState
from streams.core.silence import TimerPolicy, due_at, plan_timers
from streams.worker.scoring import decide_alerts, keep_outputs, score_plan

from .labels import Labeller, Labelling, Outcomes

ROUND_TEXTS = 256  # a fixed constant, not an option: it decides which texts share a batch


def no_clock() -> float:
    """The clock `score_plan` stamps `scored_at` with: replay results carry no wall clock."""
    return 0.0


@dataclass(frozen=True, slots=True)
class EngineConfig:
    session: SessionPolicy
    alerts: AlertPolicy
    labels: LabelPolicy
    max_event_bytes: int
    retry_max_s: float
    lateness_ms: int  # the sidecar's watermark slack
    tick_ms: int | None  # None: the whole range is one tick
    score_from: int | None = None  # event-time range to score, [from, until); None: open
    score_until: int | None = None
    label_until: int | None = None  # events up to here (exclusive) feed labels; None: until
    label: bool = True  # False: scores and alerts only (the UCI replay has its own labels)
    privacy: PrivacyPolicy = DEFAULT_PRIVACY  # as live: texts are scored scrubbed
    timers: TimerPolicy | None = None  # None: sessions close only on the user's next event
    watermark_lateness_ms: int = 0  # the worker's WATERMARK_LATENESS_S (its clock, not labels')
    cascade: bool = True  # the worker's SCORE_CASCADE (streams/core/cascade.py)


class OrderedScorer(TritonScorer):
    """A `TritonScorer` that sends its chunks one after another instead of all at once, so
    the server batches exactly the requests we send (see Determinism above).

    `alive` (the embedded server's liveness) turns a dead server into an error instead of the
    retry loop live workers want; `on_scored` reports progress."""

    def __init__(
        self,
        url: str,
        *,
        model_name: str,
        max_batch: int,
        timeout_s: float,
        alive: Callable[[], bool] = lambda: True,
        on_scored: Callable[[int], None] = lambda n: None,
    ) -> None:
        super().__init__(url, model_name=model_name, max_batch=max_batch, timeout_s=timeout_s)
        self.alive = alive
        self.on_scored = on_scored

    async def score(
        self, texts: Sequence[str], features: Sequence[Sequence[float]] | None = None
    ) -> list[Prediction]:
        out: list[Prediction] = []
        for i in range(0, len(texts), self.max_batch):
            rows = None if features is None else features[i : i + self.max_batch]
            try:
                out.extend(await super().score(texts[i : i + self.max_batch], rows))
            except ScoringError as error:
                if not self.alive():
                    raise RuntimeError(f"the Triton server has exited: {error}") from error
                raise
            self.on_scored(min(self.max_batch, len(texts) - i))
        return out


# (message, parsed event) in replay order
Tick = list[tuple[RawMessage, ShopEvent]]


@dataclass
class Ordered:
    malformed: list[RawMessage] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)  # to score, in order
    label_ticks: list[Tick] = field(default_factory=list)  # after the scoring range: labels only
    outside: int = 0  # valid events outside [score_from, label_until)
    first_ts: int | None = None
    last_ts: int | None = None


def order_messages(messages: Iterable[RawMessage], config: EngineConfig) -> Ordered:
    """Parse once, keep the range, sort, cut into ticks (see Determinism)."""
    out = Ordered()
    keyed: list[tuple[tuple[int, str, str, bytes], RawMessage, ShopEvent]] = []
    label_until = config.label_until if config.label_until is not None else config.score_until
    for msg in messages:
        parsed = parse_event(msg.value, msg.key, config.max_event_bytes, config.privacy)
        if isinstance(parsed, Rejection):
            out.malformed.append(msg)
            continue
        too_early = config.score_from is not None and parsed.ts < config.score_from
        if too_early or (label_until is not None and parsed.ts >= label_until):
            out.outside += 1
            continue
        keyed.append(((parsed.ts, parsed.user_id, parsed.event_id, msg.value or b""), msg,
                      parsed))
    keyed.sort(key=lambda item: item[0])
    out.malformed.sort(key=lambda m: (m.topic, m.partition, m.offset))
    if keyed:
        out.first_ts, out.last_ts = keyed[0][2].ts, keyed[-1][2].ts
    # The replay's input log is this order: number each partition's records in it, so the
    # user state's input position (redelivery is recognised by it) follows replay order, not
    # the file's or the topic's.
    sequence: Counter[int] = Counter()
    replayed = []
    for key, msg, event in keyed:
        replayed.append((key, replace(msg, offset=sequence[msg.partition]), event))
        sequence[msg.partition] += 1
    for (labels_only, _), group in groupby(replayed, key=lambda item: _tick(item[2].ts, config)):
        (out.label_ticks if labels_only else out.ticks).append([(m, e) for _, m, e in group])
    return out


def _tick(ts: int, config: EngineConfig) -> tuple[bool, int]:
    """(after the scoring range: labels only, tick number)."""
    labels_only = config.score_until is not None and ts >= config.score_until
    return labels_only, ts // config.tick_ms if config.tick_ms else 0


@dataclass
class Run:
    """One replay: every score and alert in order, dead letters, and labels."""

    records: list[IntentScore] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    dead_letters: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    labelling: Labelling | None = None
    score_from: int | None = None
    score_until: int | None = None
    label_until: int | None = None


@dataclass
class _Round:
    ticks: list[tuple[Tick, BatchPlan]] = field(default_factory=list)
    texts: int = 0

    def add(self, tick: Tick, plan: BatchPlan) -> None:
        self.ticks.append((tick, plan))
        self.texts += len(plan.to_score)


class Engine:
    """Runs the live batch functions over ordered ticks with in-memory state."""

    def __init__(self, scorer: TritonScorer, config: EngineConfig,
                 on_events: Callable[[int], None] = lambda n: None) -> None:
        self.scorer = scorer
        self.config = config
        self.on_events = on_events
        self.sessions: dict[str, UserState] = {}
        self.alert_states: dict[str, AlertState] = {}
        self.timers = TimerIndex()  # one partition (0): replay has no partitions
        self.clock = PartitionClock()
        self.clock_policy = ClockPolicy(lateness_ms=config.watermark_lateness_ms)
        self.run = Run()
        self.labeller = Labeller(FeedbackPolicy(
            label=config.labels, alert=config.alerts, lateness_ms=config.lateness_ms,
            max_event_bytes=config.max_event_bytes, privacy=config.privacy,
            max_future_ms=config.session.max_future_ms,
        )) if config.label else None

    async def replay(self, ordered: Ordered) -> Run:
        run = self.run
        run.counts.update(events_in_range=sum(len(t) for t in ordered.ticks),
                          events_for_labels_only=sum(len(t) for t in ordered.label_ticks),
                          events_outside_range=ordered.outside, malformed=len(ordered.malformed))
        self.on_events(ordered.outside)  # read, and nothing more to do with them
        if ordered.malformed:
            plan = self._plan(list(ordered.malformed))
            self.on_events(len(ordered.malformed))
            assert not plan.to_score  # nothing in it parses, so no user state is touched
        pending = _Round()
        for tick in ordered.ticks:
            plan = self._plan([msg for msg, _ in tick])
            self._fire_timers(plan, max(event.ts for _, event in tick))
            pending.add(tick, plan)
            if pending.texts >= ROUND_TEXTS:
                await self._score_round(pending)
                pending = _Round()
        if self.config.score_until is not None:  # the clock reaches the range's end
            plan = BatchPlan()
            self._fire_timers(plan, self.config.score_until - 1)
            pending.add([], plan)
        await self._score_round(pending)
        for tick in ordered.label_ticks:
            if self.labeller:
                self.labeller.add(tick, [])
            self.on_events(len(tick))
        self._finish_range(ordered)
        return run

    def _plan(self, messages: list[RawMessage]) -> BatchPlan:
        """`plan_batch` as the worker calls it. A closed session waits in `pending` only until
        its score is delivered; here the round scores it from the plan, so state drops it now."""
        plan = plan_batch(messages, self.sessions.get, self.config.session,
                          self.config.max_event_bytes, self.config.privacy)
        self.run.dead_letters.update(d.reason for d in plan.dead_letters)
        for user_id, state in plan.states.items():
            self.sessions[user_id] = {**state, "pending": []}
        return plan

    def _fire_timers(self, plan: BatchPlan, newest_ms: int) -> None:
        """After a tick: re-arm the timers of the users it touched, move the clock to its
        newest event time, and add what the timers due by then ask to score to `plan` (as the
        worker scores a batch's fired timers with the batch). Fired states are stored as
        delivered: the round scores them."""
        policy = self.config.timers
        if policy is None:
            return
        for user in plan.states:
            self.timers.set(user, 0, due_at(self.sessions[user], policy))
        self.clock = self.clock.observe(newest_ms, None, self.clock_policy)
        mark = self.clock.watermark_ms
        if mark is None:
            return
        due = self.timers.pop_due(0, mark)
        fired = plan_timers(due, self.sessions.get, mark, policy)
        for user in due:
            if user in fired.states:
                self.sessions[user] = delivered(fired.states[user])
            self.timers.set(user, 0, due_at(self.sessions[user], policy))
        plan.to_score.extend(fired.to_score)
        self.run.counts.update(timer_closes=fired.closed, silence_milestones=fired.milestones)

    async def _score_round(self, pending: _Round) -> None:
        """Score a round's sessions in one `score_plan` call, then alerts and labels per tick
        in order, exactly as if each tick had been scored alone."""
        if not pending.ticks:
            return
        combined = BatchPlan(to_score=[item for _, plan in pending.ticks for item in plan.to_score])
        scored = await score_plan(self.scorer, combined, self.config.session.max_chars,
                                  self.config.retry_max_s, clock=no_clock,
                                  cascade=self.config.cascade)
        self.run.dead_letters.update("scoring_failed" for _ in scored.failed)
        keep_outputs(scored, self.sessions)  # for later silence re-scores, as the worker does
        by_item = {id(item): record for item, record in zip(scored.scored, scored.records,
                                                             strict=True)}
        for tick, plan in pending.ticks:
            items = [item for item in plan.to_score if id(item) in by_item]
            mine = [by_item[id(item)] for item in items]
            alerts, changed = decide_alerts(items, mine, self.alert_states.get,
                                            self.config.alerts)
            self.alert_states.update(changed)
            self.run.records.extend(mine)
            self.run.alerts.extend(alerts)
            if self.labeller:
                self.labeller.add(tick, mine)
            self.on_events(len(tick))

    def _finish_range(self, ordered: Ordered) -> None:
        run, config = self.run, self.config
        run.score_from = config.score_from if config.score_from is not None else ordered.first_ts
        last = ordered.last_ts + 1 if ordered.last_ts is not None else None
        run.score_until = config.score_until if config.score_until is not None else last
        run.label_until = (config.label_until if config.label_until is not None
                           else run.score_until)
        run.counts.update(scores=len(run.records), alerts=len(run.alerts),
                          predictions=len({r.prediction_id for r in run.records}))
        if self.labeller is None:
            return
        if run.score_from is None or run.score_until is None or run.label_until is None:
            run.labelling = Labelling(predictions=[], outcomes=Outcomes(), expired=0)  # no events
            return
        # An outcome counts for recall if a whole lookback (H) of scoring preceded it.
        run.labelling = self.labeller.finish(
            run.label_until, run.score_from + config.labels.horizon_ms, run.score_until)


async def replay(messages: Iterable[RawMessage], scorer: TritonScorer, config: EngineConfig,
                 on_events: Callable[[int], None] = lambda n: None) -> Run:
    """Order the messages and replay them through the live worker's batch functions."""
    ordered = order_messages(messages, config)
    return await Engine(scorer, config, on_events).replay(ordered)

"""The pure feedback core: joins, event-time resolution, idempotency, alert replay."""

from __future__ import annotations

import dataclasses
import hashlib
import random

import orjson
import pytest

from streams.core.alerts import AlertPolicy, alert_id, alerts_for
from streams.core.events import ShopEvent
from streams.core.feedback import (
    MAX_KEPT_EVENTS,
    Applied,
    FeedbackPolicy,
    InputTopics,
    TimerIndex,
    UserFeedback,
    due_at,
    empty_state,
    on_event,
    on_score,
    plan_feedback,
    resolve,
)
from streams.core.labelling import LabelPolicy
from streams.core.offsets import Gap, next_offsets, offset_gaps, splice
from streams.core.raw_message import RawMessage
from streams.core.records import HeadScore, IntentScore, ModelRef, Window, prediction_id
from streams.core.sessions import SessionPolicy, absorb
from streams.core.sessions import empty_state as empty_sessions
from streams.core.timeunits import DAY_MS, HOUR_MS
from training.data.simulator import SimConfig, known_labels, simulate

T0 = 1_767_225_600_000
LABELS = LabelPolicy(horizon_ms=12 * HOUR_MS, churn_after_ms=DAY_MS)
SETTLES = LABELS.settles_after_ms
ALERTS = AlertPolicy(intent_threshold=0.6, churn_threshold=0.6, cooldown_ms=6 * HOUR_MS,
                     explore_rate=0.1, explore_band=0.1)
TOPICS = InputTopics(events="ev", scores="sc", responses="re")
POLICY = FeedbackPolicy(label=LABELS, alert=ALERTS, lateness_ms=60_000, max_event_bytes=16_384)
WORKER_SESSIONS = SessionPolicy(gap_ms=30 * 60_000, max_span_ms=4 * HOUR_MS, max_events=64,
                                max_chars=1200)


def event(kind: str, ts: int, user: str = "u1", **extra) -> ShopEvent:
    fields = {"item": {"id": "sku-1", "title": "Trail shoe"}} if kind in (
        "view", "click", "add_to_cart", "remove_from_cart", "purchase") else {}
    if kind == "search":
        fields = {"query": "trail shoes"}
    if kind == "support_message":
        fields = {"text": "Where is my order?"}
    return ShopEvent.model_validate({"event_id": f"{user}-{kind}-{ts}", "user_id": user,
                                     "ts": ts, "type": kind, **fields, **extra})


def score(start: int, end: int, user: str = "u1", p_strong: float = 0.2, churn: float = 0.1,
          n: int = 2, pid: str | None = None) -> IntentScore:
    return IntentScore(
        prediction_id=pid or f"p-{user}-{end}",
        user_id=user, session_id=f"s-{user}-{start}", closed=False,
        window=Window(start=start, end=end, n_events=n, last_event_id=f"{user}-last-{end}"),
        text="view: Trail shoe", model=ModelRef(name="intent_bert", version=3),
        strength=HeadScore(label="weak", probs={"strong": p_strong, "medium": 0.0,
                                                "weak": 1 - p_strong}),
        intent_type=HeadScore(label="query", probs={"query": 1.0}),
        churn=churn, latency_ms=1.0, scored_at=0,
    )


WINDOW = [event("search", T0), event("view", T0 + 60_000)]
END = T0 + 60_000


def run(state: UserFeedback, items: list[ShopEvent | IntentScore], wm: int):
    for item in items:
        if isinstance(item, ShopEvent):
            on_event(state, item)
        else:
            on_score(state, item, ALERTS)
    return resolve(state, wm, LABELS)


@pytest.mark.parametrize(
    ("later", "strength", "churn"),
    [
        ([event("purchase", END + 2 * HOUR_MS)], "strong", False),
        ([event("add_to_cart", END + HOUR_MS)], "medium", False),
        ([event("add_to_cart", END + HOUR_MS), event("purchase", END + 11 * HOUR_MS)],
         "strong", False),
        ([event("purchase", END + 13 * HOUR_MS)], "weak", False),  # after the horizon
        ([], "weak", True),  # silence for D
        ([event("view", END + 2 * DAY_MS)], "weak", True),  # back, but after D
        ([event("view", END + 20 * HOUR_MS)], "weak", False),
    ],
)
@pytest.mark.parametrize("score_first", [True, False])
def test_labels_from_what_happened_next(later, strength, churn, score_first):
    items = [score(T0, END), *later] if score_first else [*later, score(T0, END)]
    result = run(empty_state("u1", 0), [*WINDOW, *items], END + SETTLES)
    [example] = result.examples
    assert (example.labels.strength, example.labels.churn) == (strength, churn)
    assert example.labels.intent_type == "query"
    assert example.resolved_at == END + SETTLES
    assert example.example_id == f"p-u1-{END}"


def test_watermark_not_reached_leaves_it_pending():
    state = empty_state("u1", 0)
    result = run(state, [*WINDOW, score(T0, END), event("purchase", END + HOUR_MS)],
                 END + SETTLES - 1)
    assert result.examples == []  # the purchase alone settles strength, but not churn
    assert due_at(state, LABELS) == END + SETTLES
    assert [e.labels.strength for e in resolve(state, END + SETTLES, LABELS).examples] == [
        "strong"]
    assert due_at(state, LABELS) is None


def test_redelivered_events_and_scores_change_nothing():
    state = empty_state("u1", 0)
    assert on_event(state, WINDOW[0]) is Applied.ADDED
    assert on_event(state, WINDOW[0]) is Applied.DUPLICATE
    assert on_score(state, score(T0, END), ALERTS) is Applied.ADDED
    assert on_score(state, score(T0, END), ALERTS) is Applied.DUPLICATE
    assert len(state["events"]) == 1 and len(state["pending"]) == 1
    assert len(resolve(state, END + SETTLES, LABELS).examples) == 1
    # After resolution too: a redelivery (or the session's final `closed` scoring, which
    # repeats the id of its last open one) yields no second example.
    assert on_score(state, score(T0, END), ALERTS) is Applied.DUPLICATE
    assert resolve(state, END + 10 * SETTLES, LABELS).examples == []


def test_window_takes_only_its_own_events_for_the_intent_type():
    before = event("support_message", T0 - HOUR_MS)  # an earlier session's complaint
    state = empty_state("u1", 0)
    [example] = run(state, [before, *WINDOW, score(T0, END)], END + SETTLES).examples
    assert example.labels.intent_type == "query"


def test_events_no_window_can_need_are_forgotten():
    state = empty_state("u1", 0)
    old = [event("view", T0 - DAY_MS + i * 60_000) for i in range(5)]
    run(state, [*old, *WINDOW, score(T0, END)], END)
    assert [e["ts"] for e in state["events"]] == [T0, END]  # only the scored window is kept
    later = score(END + DAY_MS, END + DAY_MS, pid="p2")
    run(state, [event("view", END + DAY_MS), later], END + SETTLES)
    assert [e["ts"] for e in state["events"]] == [END + DAY_MS]
    # An old score (not a redelivery) reaching before the kept events cannot be labelled.
    assert on_score(state, score(T0, END, pid="p-old"), ALERTS) is Applied.EXPIRED


def test_kept_events_are_capped_and_capped_windows_are_not_mislabelled():
    state = empty_state("u1", 0)
    on_score(state, score(T0, T0), ALERTS)
    for i in range(MAX_KEPT_EVENTS + 10):
        on_event(state, event("view", T0 + i * 1000))
    assert len(state["events"]) == MAX_KEPT_EVENTS
    result = resolve(state, T0 + SETTLES, LABELS)
    assert result.examples == [] and result.expired == [f"p-u1-{T0}"]


def test_alert_replay_matches_the_worker_decisions():
    rng = random.Random(3)
    worker_state: dict = {}
    state = empty_state("u1", 0)
    sent: set[str] = set()
    replayed: set[str] = set()
    for i in range(300):
        end = T0 + i * HOUR_MS
        s = score(end, end, p_strong=rng.uniform(0.3, 0.9), churn=rng.uniform(0.3, 0.9),
                  pid=f"p{i}")
        alerts, worker_state = alerts_for(s.model_dump(mode="json"), {"events": []},
                                          worker_state, ALERTS)
        sent.update(a.alert_id for a in alerts)
        on_score(state, s, ALERTS)
        if i % 3 == 0:
            on_score(state, s, ALERTS)  # redelivered: decided once
    for example in resolve(state, T0 + 400 * HOUR_MS, LABELS).examples:
        replayed.update(h.alert_id for h in example.heads.values() if h.alert_id)
        assert all(h.cooldown or not h.alerted or h.propensity > 0
                   for h in example.heads.values())
    assert len(sent) > 50 and replayed == sent


# --- one micro-batch: per-partition watermarks, timers, bad input -----------------------------


def msg(topic: str, doc: dict | bytes, partition: int, key: str | None = None,
        offset: int = 0) -> RawMessage:
    value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    key = key if key is not None else (doc.get("user_id", "") if isinstance(doc, dict) else "")
    return RawMessage(key=key.encode(), value=value, topic=topic, partition=partition,
                      offset=offset, timestamp_ms=None)


def ev_msg(e: ShopEvent, partition: int) -> RawMessage:
    return msg("ev", e.model_dump(mode="json", exclude_none=True), partition)


def sc_msg(s: IntentScore, partition: int) -> RawMessage:
    return msg("sc", s.model_dump(mode="json"), partition)


class Tables:
    """What the Faust tables hold between batches."""

    def __init__(self) -> None:
        self.users: dict[str, UserFeedback] = {}
        self.max_ts: dict[int, int] = {}
        self.timers = TimerIndex()

    def apply(self, messages: list[RawMessage]):
        batch = plan_feedback(messages, TOPICS, self.users.get, self.max_ts.get, self.timers,
                              POLICY)
        self.users.update(batch.states)
        self.max_ts.update(batch.max_ts)
        return batch


def test_each_partition_resolves_on_its_own_event_time():
    t = Tables()
    t.apply([ev_msg(e, 0) for e in WINDOW] + [sc_msg(score(T0, END), 0)]
            + [ev_msg(event("view", T0, user="u2"), 1), sc_msg(score(T0, T0, user="u2"), 1)])
    # Far-future traffic on partition 1 only: u1 (partition 0) must not resolve.
    batch = t.apply([ev_msg(event("view", END + 3 * DAY_MS, user="u3"), 1)])
    assert [e.user_id for e in batch.examples] == ["u2"]
    assert batch.states.keys() == {"u2", "u3"}  # u2 resolved by its timer, untouched
    batch = t.apply([ev_msg(event("view", END + 3 * DAY_MS, user="u4"), 0)])
    assert [(e.user_id, e.labels.churn) for e in batch.examples] == [("u1", True)]


def test_a_late_score_resolves_at_once_when_its_future_is_known():
    t = Tables()
    t.apply([ev_msg(e, 0) for e in [*WINDOW, event("purchase", END + HOUR_MS),
                                    event("view", END + 3 * DAY_MS, user="u9")]])
    batch = t.apply([sc_msg(score(T0, END), 0)])
    assert [(e.labels.strength, e.labels.churn) for e in batch.examples] == [("strong", False)]


def test_bad_input_is_counted_and_skipped():
    t = Tables()
    batch = t.apply([
        msg("ev", b"{not json", 0, key="u1"),
        msg("ev", {"event_id": "x", "user_id": "u1", "ts": T0, "type": "teleport"}, 0),
        msg("sc", b"[1, 2]", 0, key="u1"),
        msg("sc", {"prediction_id": "p"}, 0, key="u1"),
        msg("re", {"response_id": "r", "alert_id": "a", "user_id": "u1", "status": "opened",
                   "ts": T0}, 0),
        msg("re", {"response_id": "r", "alert_id": "a", "user_id": "u1", "status": "clicked",
                   "ts": T0}, 0),
        msg("other", b"{}", 0, key="u1"),
    ])
    assert dict(batch.invalid) == {"events:not_json": 1, "events:unknown_type": 1,
                                   "scores:invalid_field": 2, "responses:invalid_field": 1,
                                   "other:unexpected_topic": 1}
    assert [r.status for r in batch.responses] == ["clicked"]
    assert batch.states == {}


def test_an_event_dated_far_after_its_message_is_rejected_as_the_worker_rejects_it():
    # Absorbed, its event time would move the partition's watermark past every pending
    # prediction and resolve them all as silence (churn).
    t = Tables()
    t.apply([ev_msg(e, 0) for e in WINDOW] + [sc_msg(score(T0, END), 0)])
    future = dataclasses.replace(ev_msg(event("view", END + 30 * DAY_MS, user="u5"), 0),
                                 timestamp_ms=END)
    batch = t.apply([future])
    assert dict(batch.invalid) == {"events:future_timestamp": 1}
    assert batch.examples == [] and t.max_ts[0] < END + DAY_MS


# --- against the simulator's ground truth ------------------------------------------------------


def worker_like_scores(history_events: list[dict]) -> list[tuple[int, IntentScore]]:
    """(position in the event stream, score): each event's session scored right after it,
    as a worker with one-event batches would."""
    states: dict = {}
    out = []
    for i, doc in enumerate(history_events):
        e = ShopEvent.model_validate(doc)
        state = states.setdefault(e.user_id, empty_sessions())
        absorb(state, e, WORKER_SESSIONS)
        s = state["current"]
        out.append((i, IntentScore(
            prediction_id=prediction_id(s, 1), user_id=e.user_id, session_id=s["session_id"],
            closed=False, window=Window(start=s["start"], end=s["end"], n_events=s["n_events"],
                                        last_event_id=s["last_event_id"]),
            text="x", model=ModelRef(name="intent_bert", version=1),
            strength=HeadScore(label="weak", probs={"strong": 0.5, "medium": 0.2, "weak": 0.3}),
            intent_type=HeadScore(label="query", probs={"query": 1.0}),
            churn=0.55, latency_ms=0, scored_at=0)))
    return out


def partition_of(user_id: str) -> int:
    return int(hashlib.md5(user_id.encode()).hexdigest(), 16) % 3


@pytest.mark.parametrize(("lag", "batch_size"), [(0, 1), (40, 17), (10_000, 250)])
def test_labels_agree_with_the_simulators_ground_truth(lag, batch_size):
    """Scores lagging the events by `lag` messages (10,000: every score after every event),
    batched arbitrarily: every settled prediction is labelled once, exactly as the simulator's
    full history labels it."""
    histories = {h.user_id: h for h in simulate(40, SimConfig(seed=5, days=5))}
    stream = sorted((e for h in histories.values() for e in h.events),
                    key=lambda e: (e["ts"], e["event_id"]))
    scores = worker_like_scores(stream)
    # Each score `lag` events after its own event, scores in the order they were made.
    merged = [(i, 0, ev_msg(ShopEvent.model_validate(e), partition_of(e["user_id"])))
              for i, e in enumerate(stream)]
    merged += [(pos + lag, 1, sc_msg(s, partition_of(s.user_id))) for pos, s in scores]
    messages = [m for *_, m in sorted(merged, key=lambda x: x[:2])]
    t = Tables()
    examples = []
    for i in range(0, len(messages), batch_size):
        examples += t.apply(messages[i : i + batch_size]).examples
    ids = [e.example_id for e in examples]
    assert len(ids) == len(set(ids))
    last_ts = {p: ts - POLICY.lateness_ms for p, ts in t.max_ts.items()}
    settled = {s.prediction_id for _, s in scores
               if s.window.end + SETTLES <= last_ts[partition_of(s.user_id)]}
    assert set(ids) == settled and len(settled) > 200
    for example in examples:
        truth = known_labels(histories[example.user_id], example.window.end, LABELS)
        assert (example.labels.strength, example.labels.intent_type, example.labels.churn) == (
            truth.strength, truth.intent_type, truth.churn), example.example_id
    labels = {(e.labels.strength, e.labels.churn) for e in examples}
    assert {("strong", False), ("weak", True), ("medium", False)} <= labels


def test_alert_ids_of_examples_are_the_alert_ids():
    state = empty_state("u1", 0)
    [example] = run(state, [*WINDOW, score(T0, END, p_strong=0.95)], END + SETTLES).examples
    assert example.heads["intent"].alerted
    # The id the worker's alert carries: the user's first intent alert in this session.
    assert example.heads["intent"].alert_id == alert_id("u1", f"s-u1-{T0}", "intent", 0)
    assert example.heads["churn"].alert_id is None and example.heads["churn"].propensity == 0


# --- input offsets Faust skipped ---------------------------------------------------------------


def at(topic: str, partition: int, offset: int) -> RawMessage:
    return RawMessage(key=b"u", value=b"{}", topic=topic, partition=partition, offset=offset,
                      timestamp_ms=None)


def test_offset_gaps_before_and_inside_a_batch_and_none_for_redeliveries():
    known = {("ev", 0): 10, ("sc", 0): 5}
    batch = [at("ev", 0, 12), at("sc", 0, 3), at("sc", 0, 5), at("ev", 0, 13), at("ev", 0, 16),
             at("ev", 1, 40)]
    assert offset_gaps(batch, lambda t, p: known.get((t, p))) == [
        Gap("ev", 0, 10, 12), Gap("ev", 0, 14, 16)]  # sc 3: redelivered; ev 1: nothing known
    assert next_offsets(batch) == {("ev", 0): 17, ("sc", 0): 6, ("ev", 1): 41}


def test_reread_messages_go_back_in_offset_order_within_their_partition():
    batch = [at("sc", 0, 7), at("ev", 0, 12), at("ev", 0, 16)]
    recovered = [at("ev", 0, 15), at("ev", 0, 10), at("ev", 0, 11), at("ev", 0, 14)]
    assert [(m.topic, m.offset) for m in splice(batch, recovered)] == [
        ("sc", 7), ("ev", 10), ("ev", 11), ("ev", 12), ("ev", 14), ("ev", 15), ("ev", 16)]

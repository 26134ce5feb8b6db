"""Feedback: every prediction joined to what its user did next, in event time. Pure.

Per user, a JSON-able state (it lives in a changelog-backed table) holds:

- `events`: the user's recent events, compacted to what labelling reads, sorted by
  (ts, event_id). A score may arrive long after the events that follow its window (scoring
  lags), and a window's own events are not in its score, so events are kept until no window
  can need them: everything from the start of the newest scored window and of the oldest
  pending one. A window's events are the kept events with `window.start ≤ ts ≤ window.end`.
- `pending`: predictions whose outcome is not yet known, oldest window end first.
- `resolved`: ids of the latest resolved predictions, so a redelivered score (or a session's
  final `closed` scoring, which repeats the id of its last open one) is not labelled twice.
- `alert_last`: a replica of the worker's alert cooldown state. `streams.core.alerts.decide` is
  deterministic, so replaying it over the user's scores in topic order gives exactly the
  worker's decisions: which predictions were alerted, and with which propensity.

Timers run on event time: a prediction resolves once the watermark of its user's partition
(max event time seen there minus the allowed lateness) passes `window.end + settles_after`.
Labels are computed as of that instant (`observed_until = window.end + settles_after`), never
as of "now", so a replay yields exactly the same examples, however it is batched.
Labels come from `streams.core.labelling.label_window`, the definition training uses.
The Faust wiring is `streams/sidecar/app.py`; topics, schemas and guarantees: docs/feedback.md.
"""

from __future__ import annotations

import bisect
import heapq
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, TypedDict, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.core.alerts import (
    ALERT_HEADS,
    AlertPolicy,
    Head,
    HeadAlertState,
    alert_event_time,
    alerts_for,
    decide,
    head_probability,
)
from streams.core.events import (
    DEFAULT_TS_BOUNDS,
    Rejection,
    ShopEvent,
    not_from_the_future,
    parse_event,
)
from streams.core.labelling import LabelPolicy, label_window
from streams.core.privacy import DEFAULT_PRIVACY, PrivacyPolicy
from streams.core.raw_message import RawMessage
from streams.core.records import HeadScore, IntentScore, Window
from streams.core.timeunits import HOUR_MS

FEEDBACK_SCHEMA_VERSION = 1
RESPONSE_SCHEMA_VERSION = 1
# Safety valve for a user whose scores stop arriving (worker down): beyond this many kept
# events the oldest go, and predictions whose window reached into them are dropped, not
# mislabelled.
MAX_KEPT_EVENTS = 5000
RESOLVED_IDS_KEPT = 32
# The event fields labelling reads (`streams.core.labelling`): type and time, and for the window's
# intent type the text of messages and reviews, review ratings and search queries.
LABEL_FIELDS = ("event_id", "ts", "type", "text", "rating", "query")

ResponseStatus = Literal["delivered", "clicked", "converted"]
_M = TypeVar("_M", bound=BaseModel)


# --- records ------------------------------------------------------------------------------------


class AlertResponse(BaseModel):
    """What marketing automation reports about one alert (topic `alerts.responses`, key =
    user_id). Several per alert as it progresses: delivered, then clicked, then converted."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = RESPONSE_SCHEMA_VERSION
    response_id: str = Field(min_length=1, max_length=128,
                             description="unique per report; a redelivered report keeps it")
    alert_id: str = Field(min_length=1, max_length=128, description="the alert it is about")
    user_id: str = Field(min_length=1, max_length=128)
    status: ResponseStatus
    ts: int = Field(description="event time of the response, epoch ms")


class Labels(BaseModel):
    model_config = ConfigDict(frozen=True)

    strength: Literal["strong", "medium", "weak"] = Field(
        description="purchase within the horizon / cart activity only / neither")
    intent_type: str = Field(description="the window's dominant need (streams.core.labelling)")
    churn: bool = Field(description="no event at all within churn_after_ms after the window")


class LabelPolicyRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    horizon_ms: int
    churn_after_ms: int


class HeadFeedback(BaseModel):
    """One alert head (intent, churn) of one prediction: what the policy did and what followed."""

    model_config = ConfigDict(frozen=True)

    probability: float = Field(description="p(strong intent) or p(churn), as the policy read it")
    propensity: float = Field(description="P(alert | score) under the policy (as in alerts)")
    cooldown: bool = Field(description="the user's cooldown was running: P(alert) was 0")
    alerted: bool
    explored: bool = Field(description="the exploration coin flipped the decision")
    alert_id: str | None = Field(description="set when alerted")
    responses: list[ResponseStatus] = Field(
        description="statuses reported for the alert (topic: as of resolution; store: now)")


class FeedbackExample(BaseModel):
    """One labelled prediction (topic `feedback.examples`, key = user_id)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = FEEDBACK_SCHEMA_VERSION
    example_id: str = Field(description="= prediction_id: redelivery yields the same id")
    user_id: str
    session_id: str
    model_name: str
    model_version: int
    window: Window
    text: str = Field(description="the session text the model saw")
    labels: Labels
    predicted: dict[str, HeadScore] = Field(description="the model's strength and intent_type")
    predicted_churn: float
    heads: dict[Head, HeadFeedback] = Field(description="alert heads: intent, churn")
    label_policy: LabelPolicyRef
    resolved_at: int = Field(description="event time the labels are final at: window end + "
                                         "max(horizon, churn_after), epoch ms")


# --- per-user state ----------------------------------------------------------------------------


class PendingHead(TypedDict):
    probability: float
    propensity: float
    cooldown: bool
    alerted: bool
    explored: bool
    alert_id: str | None  # the id the worker's alert carries, when alerted


class Pending(TypedDict):
    prediction_id: str
    session_id: str
    window: dict[str, Any]  # records.Window as JSON
    text: str
    model_name: str
    model_version: int
    strength: dict[str, Any]  # records.HeadScore as JSON
    intent_type: dict[str, Any]
    churn: float
    heads: dict[str, PendingHead]


class UserFeedback(TypedDict):
    user_id: str
    partition: int  # of the user's input partitions: its watermark is the one that applies
    events: list[dict[str, Any]]  # compact, sorted by (ts, event_id)
    complete_from: int | None  # every event with ts >= this is kept (None: all ever seen)
    scored_from: int | None  # start of the newest window scored: no later window starts before
    pending: list[Pending]  # sorted by window end
    resolved: list[str]  # most recent last
    alert_last: dict[str, HeadAlertState]  # head -> the user's last alert


def empty_state(user_id: str, partition: int) -> UserFeedback:
    return {
        "user_id": user_id, "partition": partition, "events": [], "complete_from": None,
        "scored_from": None, "pending": [], "resolved": [], "alert_last": {},
    }


def copy_state(state: UserFeedback) -> UserFeedback:
    """Copy deep enough for the in-place updates below (lists and the alert dict)."""
    return {
        **state,
        "events": list(state["events"]),
        "pending": list(state["pending"]),
        "resolved": list(state["resolved"]),
        "alert_last": dict(state["alert_last"]),
    }


class Applied(Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"  # redelivered (or a closed session's repeat of its last scoring)
    EXPIRED = "expired"  # its window reaches back before the kept events: cannot be labelled


def _event_key(doc: dict[str, Any]) -> tuple[int, str]:
    return doc["ts"], doc["event_id"]


def label_event(event: ShopEvent) -> dict[str, Any]:
    return event.model_dump(include=set(LABEL_FIELDS), exclude_none=True)


def on_event(state: UserFeedback, event: ShopEvent) -> Applied:
    """Keep one of the user's events (in place). Idempotent by (ts, event_id)."""
    doc = label_event(event)
    events = state["events"]
    key = _event_key(doc)
    i = bisect.bisect_left(events, key, key=_event_key)
    if i < len(events) and _event_key(events[i]) == key:
        return Applied.DUPLICATE
    events.insert(i, doc)
    _enforce_cap(state)
    return Applied.ADDED


def _enforce_cap(state: UserFeedback) -> None:
    events = state["events"]
    if len(events) > MAX_KEPT_EVENTS:
        del events[: len(events) - MAX_KEPT_EVENTS]
        state["complete_from"] = events[0]["ts"]


def on_score(state: UserFeedback, score: IntentScore, policy: AlertPolicy) -> Applied:
    """Register a prediction as pending (in place), with the alert decisions it got."""
    pid = score.prediction_id
    if pid in state["resolved"] or any(p["prediction_id"] == pid for p in state["pending"]):
        return Applied.DUPLICATE
    complete_from = state["complete_from"]
    if complete_from is not None and score.window.start < complete_from:
        return Applied.EXPIRED
    pending: Pending = {
        "prediction_id": pid,
        "session_id": score.session_id,
        "window": score.window.model_dump(mode="json"),
        "text": score.text,
        "model_name": score.model.name,
        "model_version": score.model.version,
        "strength": score.strength.model_dump(mode="json"),
        "intent_type": score.intent_type.model_dump(mode="json"),
        "churn": score.churn,
        "heads": replay_alerts(state, score, policy),
    }
    ends = [p["window"]["end"] for p in state["pending"]]
    state["pending"].insert(bisect.bisect_right(ends, score.window.end), pending)
    state["scored_from"] = max(state["scored_from"] or score.window.start, score.window.start)
    return Applied.ADDED


def replay_alerts(
    state: UserFeedback, score: IntentScore, policy: AlertPolicy
) -> dict[str, PendingHead]:
    """The worker's alert decision per head for this score, updating the cooldown replica.

    The worker's own `streams.core.alerts.alerts_for` on the score record (FEATURES included:
    it decides from nothing else), over the user's scores in topic order, each id once: the
    same decisions, silence scores (event time = `as_of`) and abandoned carts included; the
    end-to-end test checks them against the alert topics."""
    doc = score.model_dump(mode="json")
    features = score.features.values if score.features is not None else None
    alerts, after = alerts_for(doc, {"events": []}, state["alert_last"], policy, features)
    sent = {a.head: a for a in alerts}
    at = alert_event_time(doc)
    heads: dict[str, PendingHead] = {}
    for head in ALERT_HEADS:
        last = state["alert_last"].get(head)
        probability = head_probability(doc, head)
        decision = decide(head, probability, score.prediction_id, at, last, policy)
        alert = sent.get(head)
        heads[head] = {
            "probability": probability,
            "propensity": alert.propensity if alert else decision.propensity,
            "cooldown": last is not None and at - last["at"] < policy.cooldown_ms,
            "alerted": alert is not None,
            "explored": alert.explored if alert else decision.explored,
            "alert_id": None if alert is None else alert.alert_id,
        }
    state["alert_last"] = after
    return heads


# --- resolution ---------------------------------------------------------------------------------


def watermark(max_event_ts: int, lateness_ms: int) -> int:
    """Event time up to which a partition's events are taken to be complete."""
    return max_event_ts - lateness_ms


def due_at(state: UserFeedback, policy: LabelPolicy) -> int | None:
    """The watermark at which the user's next pending prediction resolves (None: nothing)."""
    if not state["pending"]:
        return None
    return state["pending"][0]["window"]["end"] + policy.settles_after_ms


@dataclass
class Resolution:
    examples: list[FeedbackExample] = field(default_factory=list)
    expired: list[str] = field(default_factory=list)  # ids dropped: their events were capped


def resolve(state: UserFeedback, wm: int, policy: LabelPolicy) -> Resolution:
    """Label every pending prediction the watermark has settled (in place), then drop the
    events no window can need any more."""
    out = Resolution()
    while (due := due_at(state, policy)) is not None and due <= wm:
        pending = state["pending"].pop(0)
        complete_from = state["complete_from"]
        if complete_from is not None and pending["window"]["start"] < complete_from:
            out.expired.append(pending["prediction_id"])
        else:
            out.examples.append(_example(state, pending, policy))
        state["resolved"] = [*state["resolved"], pending["prediction_id"]][-RESOLVED_IDS_KEPT:]
    _forget_unneeded_events(state)
    return out


def _example(state: UserFeedback, pending: Pending, policy: LabelPolicy) -> FeedbackExample:
    window = Window.model_validate(pending["window"])
    settled_at = window.end + policy.settles_after_ms
    own = [e for e in state["events"] if window.start <= e["ts"] <= window.end]
    labels = label_window(own, window.end, state["events"], settled_at, policy)
    assert labels.strength is not None and labels.churn is not None  # settled by construction
    return FeedbackExample(
        example_id=pending["prediction_id"],
        user_id=state["user_id"],
        session_id=pending["session_id"],
        model_name=pending["model_name"],
        model_version=pending["model_version"],
        window=window,
        text=pending["text"],
        labels=Labels(strength=labels.strength, intent_type=labels.intent_type,
                      churn=labels.churn),
        predicted={
            "strength": HeadScore.model_validate(pending["strength"]),
            "intent_type": HeadScore.model_validate(pending["intent_type"]),
        },
        predicted_churn=pending["churn"],
        heads={
            head: HeadFeedback(
                **h, responses=[],
            )
            for head, h in pending["heads"].items()
        },
        label_policy=LabelPolicyRef(horizon_ms=policy.horizon_ms,
                                    churn_after_ms=policy.churn_after_ms),
        resolved_at=settled_at,
    )


def _forget_unneeded_events(state: UserFeedback) -> None:
    """Drop events older than every window that is pending or may still be scored."""
    starts = [p["window"]["start"] for p in state["pending"]]
    if state["scored_from"] is not None:
        starts.append(state["scored_from"])
    if not starts:
        return  # nothing scored yet: a first score may reach back to any kept event
    floor = min(starts)
    events = state["events"]
    cut = bisect.bisect_left(events, floor, key=lambda e: e["ts"])
    if cut:
        del events[:cut]
        state["complete_from"] = max(state["complete_from"] or floor, floor)


def with_responses(
    example: FeedbackExample, statuses: dict[str, list[ResponseStatus]]
) -> FeedbackExample:
    """The example with the response statuses known for its alerts (alert_id -> statuses)."""
    heads = {
        head: h.model_copy(update={"responses": statuses.get(h.alert_id, [])})
        if h.alert_id else h
        for head, h in example.heads.items()
    }
    return example.model_copy(update={"heads": heads})


# --- timers -------------------------------------------------------------------------------------


class TimerIndex:
    """Which users are due at which watermark, per partition: derived from the user table (a
    min-heap per partition, stale entries skipped), rebuilt after a restart or rebalance."""

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        self._heaps: dict[int, list[tuple[int, str]]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self._due)

    def set(self, user_id: str, partition: int, due: int | None) -> None:
        if due is None:
            self._due.pop(user_id, None)
        elif self._due.get(user_id) != due:
            self._due[user_id] = due
            heapq.heappush(self._heaps[partition], (due, user_id))

    def pop_due(self, partition: int, wm: int) -> list[str]:
        heap = self._heaps[partition]
        users = []
        while heap and heap[0][0] <= wm:
            due, user_id = heapq.heappop(heap)
            if self._due.get(user_id) == due:
                del self._due[user_id]
                users.append(user_id)
        return users


_BEFORE_ALL_TIME = -(2**62)  # a watermark that resolves nothing


# --- one micro-batch ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FeedbackPolicy:
    label: LabelPolicy
    alert: AlertPolicy
    lateness_ms: int
    max_event_bytes: int
    privacy: PrivacyPolicy = DEFAULT_PRIVACY
    max_future_ms: int = HOUR_MS  # as the worker's SessionPolicy: same events rejected
    ts_bounds: tuple[int, int] = DEFAULT_TS_BOUNDS  # as the worker's SessionPolicy


@dataclass(frozen=True, slots=True)
class InputTopics:
    events: str
    scores: str
    responses: str


@dataclass
class FeedbackBatch:
    states: dict[str, UserFeedback] = field(default_factory=dict)  # users whose state changed
    max_ts: dict[int, int] = field(default_factory=dict)  # partitions whose event time advanced
    examples: list[FeedbackExample] = field(default_factory=list)
    responses: list[AlertResponse] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)  # what happened, for logs/metrics
    invalid: Counter[str] = field(default_factory=Counter)  # "topic:reason"
    # user / partition -> index of its latest message in the batch (for a user resolved by a
    # timer: of its partition's): that message's partition is the changelog partition its
    # table write must go to (the inputs are co-partitioned).
    last_for_user: dict[str, int] = field(default_factory=dict)
    last_for_partition: dict[int, int] = field(default_factory=dict)


def plan_feedback(
    messages: Sequence[RawMessage],
    topics: InputTopics,
    load_state: Callable[[str], UserFeedback | None],
    load_max_ts: Callable[[int], int | None],
    timers: TimerIndex,
    policy: FeedbackPolicy,
) -> FeedbackBatch:
    """Apply a micro-batch of input messages; resolve every prediction it settles.

    Updates `timers` (derived, in-memory); everything to persist is in the returned batch."""
    batch = FeedbackBatch()

    def state_of(user_id: str, partition: int) -> UserFeedback:
        if user_id not in batch.states:
            loaded = load_state(user_id)
            batch.states[user_id] = (
                empty_state(user_id, partition) if loaded is None else copy_state(loaded))
        return batch.states[user_id]

    for index, msg in enumerate(messages):
        batch.last_for_partition[msg.partition] = index
        user_id = _apply(batch, msg, topics, state_of, load_max_ts, policy)
        if user_id is not None:
            batch.last_for_user[user_id] = index

    for partition in sorted(batch.last_for_partition):
        max_ts = batch.max_ts.get(partition, load_max_ts(partition))
        wm = watermark(max_ts, policy.lateness_ms) if max_ts is not None else None
        touched = [u for u, s in batch.states.items() if s["partition"] == partition]
        due = timers.pop_due(partition, wm) if wm is not None else []
        for user_id in dict.fromkeys(touched + due):
            state = state_of(user_id, partition)
            batch.last_for_user.setdefault(user_id, batch.last_for_partition[partition])
            # No watermark yet (no event seen on the partition): only drop unneeded events.
            resolution = resolve(state, wm if wm is not None else _BEFORE_ALL_TIME, policy.label)
            batch.examples.extend(resolution.examples)
            batch.counts["expired"] += len(resolution.expired)
            timers.set(user_id, partition, due_at(state, policy.label))
    batch.counts["examples"] = len(batch.examples)
    return batch


def _apply(
    batch: FeedbackBatch,
    msg: RawMessage,
    topics: InputTopics,
    state_of: Callable[[str, int], UserFeedback],
    load_max_ts: Callable[[int], int | None],
    policy: FeedbackPolicy,
) -> str | None:
    """Apply one input message; return the user whose state it touched, if any."""
    if msg.topic == topics.events:
        event = parse_event(msg.value, msg.key, policy.max_event_bytes, policy.privacy,
                            policy.ts_bounds)
        if not isinstance(event, Rejection):
            event = not_from_the_future(event, msg.timestamp_ms, policy.max_future_ms)
        if isinstance(event, Rejection):
            batch.invalid[f"events:{event.reason}"] += 1
            return None
        outcome = on_event(state_of(event.user_id, msg.partition), event)
        batch.counts[f"event_{outcome.value}"] += 1
        previous = batch.max_ts.get(msg.partition, load_max_ts(msg.partition))
        if previous is None or event.ts > previous:
            batch.max_ts[msg.partition] = event.ts
        return event.user_id
    if msg.topic == topics.scores:
        score = _decode(IntentScore, msg.value)
        if isinstance(score, Rejection):
            batch.invalid[f"scores:{score.reason}"] += 1
            return None
        outcome = on_score(state_of(score.user_id, msg.partition), score, policy.alert)
        batch.counts[f"score_{outcome.value}"] += 1
        return score.user_id
    if msg.topic == topics.responses:
        response = _decode(AlertResponse, msg.value)
        if isinstance(response, Rejection):
            batch.invalid[f"responses:{response.reason}"] += 1
            return None
        batch.responses.append(response)
        return None
    batch.invalid[f"{msg.topic}:unexpected_topic"] += 1
    return None


def _decode(model: type[_M], raw: bytes | None) -> _M | Rejection:
    if not raw:
        return Rejection("empty", "message has no value")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        reason = "not_json" if first.get("type") == "json_invalid" else "invalid_field"
        return Rejection(reason, str(exc)[:300])

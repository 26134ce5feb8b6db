"""Labels for replayed predictions, by the live feedback sidecar's own code.

Each tick's events and then its scores go through `streams.core.feedback.plan_feedback`, the
function the sidecar runs on every micro-batch, so a prediction settled by the end of the
labelled range gets exactly the `FeedbackExample` the sidecar would publish. The replay is one
ordered stream, so the sidecar's per-partition watermarks become one (partition 0).

At the end, everything settled by `label_until` is resolved. A prediction not yet settled for
all heads (its window ended less than max(H, D) before `label_until`) may still be settled for
one: strength after H. Those heads are labelled with `streams.core.labelling.label_window`, the
definition the sidecar uses, and only once that head's own horizon has passed; labelling a head
earlier (a purchase seen before H ran out) would keep only the positives and bias the metrics.

Outcomes for alert recall and lead time come from the same events: purchases, and churn
onsets (a user's last event before a silence of at least D).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from streams.core.events import ShopEvent
from streams.core.feedback import (
    FeedbackExample,
    FeedbackPolicy,
    InputTopics,
    Pending,
    TimerIndex,
    UserFeedback,
    copy_state,
    plan_feedback,
    resolve,
)
from streams.core.labelling import LabelPolicy, label_window
from streams.core.raw_message import RawMessage
from streams.core.records import IntentScore, encode

TOPICS = InputTopics(events="replay.events", scores="replay.scores", responses="replay.responses")
PARTITION = 0


@dataclass(frozen=True, slots=True)
class Labelled:
    """One prediction (unique prediction id) with what is known of its outcome."""

    prediction_id: str
    user_id: str
    window_end: int
    strength: dict[str, float]
    intent_type: dict[str, float]
    churn: float
    alerted: dict[str, bool]  # alert head -> the live policy alerted it
    label_strength: str | None  # None: H had not passed by label_until
    label_intent_type: str
    label_churn: bool | None  # None: D had not passed by label_until
    settled: bool  # all heads settled: the sidecar would have published this example


@dataclass
class Outcomes:
    """What users did, for alert recall and lead time (event time, ms)."""

    purchases: dict[str, list[int]] = field(default_factory=dict)
    churn_onsets: dict[str, list[int]] = field(default_factory=dict)


@dataclass
class Labelling:
    predictions: list[Labelled]
    outcomes: Outcomes
    expired: int  # predictions the sidecar would drop (their events exceeded its cap)


class Labeller:
    """Feeds the sidecar's batch function tick by tick; `finish` labels what is settled."""

    def __init__(self, policy: FeedbackPolicy) -> None:
        self.policy = policy
        self.users: dict[str, UserFeedback] = {}
        self.max_ts: dict[int, int] = {}
        self.timers = TimerIndex()
        self.examples: list[FeedbackExample] = []
        self.activity: dict[str, set[tuple[int, str, str]]] = defaultdict(set)
        self.expired = 0
        self._offset = 0

    def add(self, events: Sequence[tuple[RawMessage, ShopEvent]],
            records: Sequence[IntentScore]) -> None:
        """One tick: its events, then its scores (the order the sidecar sees them live)."""
        messages = [self._message(msg.key, msg.value, TOPICS.events) for msg, _ in events]
        messages += [self._message(r.user_id.encode(), encode(r), TOPICS.scores)
                     for r in records]
        for _, event in events:
            self.activity[event.user_id].add((event.ts, event.event_id, event.type))
        batch = plan_feedback(messages, TOPICS, self.users.get, self.max_ts.get, self.timers,
                              self.policy)
        self.users.update(batch.states)
        self.max_ts.update(batch.max_ts)
        self.examples.extend(batch.examples)
        self.expired += batch.counts["expired"]

    def _message(self, key: bytes | None, value: bytes | None, topic: str) -> RawMessage:
        self._offset += 1
        return RawMessage(key=key, value=value, topic=topic, partition=PARTITION,
                          offset=self._offset, timestamp_ms=None)

    def finish(self, label_until: int, lookback_from: int, lookback_until: int) -> Labelling:
        """Resolve everything settled before `label_until` (the end, exclusive, of the events
        read); label single heads that have settled.

        Outcomes count only where an alert could have preceded them: at or after
        `lookback_from` and before `lookback_until` (see `outcomes_of`)."""
        label = self.policy.label
        observed = label_until - 1  # every event with ts <= this has been fed
        predictions = [from_example(e) for e in self.examples]
        for user_id in sorted(self.users):
            state = copy_state(self.users[user_id])
            resolution = resolve(state, observed, label)
            self.expired += len(resolution.expired)
            predictions.extend(from_example(e) for e in resolution.examples)
            predictions.extend(from_pending(state, p, observed, label)
                               for p in state["pending"])
        outcomes = outcomes_of(self.activity, label, observed, lookback_from, lookback_until)
        return Labelling(predictions, outcomes, self.expired)


def from_example(example: FeedbackExample) -> Labelled:
    return Labelled(
        prediction_id=example.example_id,
        user_id=example.user_id,
        window_end=example.window.end,
        strength=dict(example.predicted["strength"].probs),
        intent_type=dict(example.predicted["intent_type"].probs),
        churn=example.predicted_churn,
        alerted={head: h.alerted for head, h in example.heads.items()},
        label_strength=example.labels.strength,
        label_intent_type=example.labels.intent_type,
        label_churn=example.labels.churn,
        settled=True,
    )


def from_pending(
    state: UserFeedback, pending: Pending, observed_until: int, policy: LabelPolicy
) -> Labelled:
    """A prediction not settled for every head: label those whose horizon has passed."""
    start, end = pending["window"]["start"], pending["window"]["end"]
    own = [e for e in state["events"] if start <= e["ts"] <= end]
    labels = label_window(own, end, state["events"], observed_until, policy)
    strength_due = end + policy.horizon_ms <= observed_until
    churn_due = end + policy.churn_after_ms <= observed_until
    return Labelled(
        prediction_id=pending["prediction_id"],
        user_id=state["user_id"],
        window_end=end,
        strength=dict(pending["strength"]["probs"]),
        intent_type=dict(pending["intent_type"]["probs"]),
        churn=pending["churn"],
        alerted={head: h["alerted"] for head, h in pending["heads"].items()},
        label_strength=labels.strength if strength_due else None,
        label_intent_type=labels.intent_type,
        label_churn=labels.churn if churn_due else None,
        settled=False,
    )


def outcomes_of(
    activity: dict[str, set[tuple[int, str, str]]],
    policy: LabelPolicy,
    observed_until: int,
    lookback_from: int,
    lookback_until: int,
) -> Outcomes:
    """Purchases, and churn onsets (a last event before >= D of silence, known by
    `observed_until`), that happened at or after `lookback_from` and before `lookback_until`."""
    outcomes = Outcomes()
    for user_id in sorted(activity):
        events = sorted(activity[user_id])
        times = [ts for ts, _, _ in events]
        purchases = sorted({ts for ts, _, kind in events if kind == "purchase"
                            and lookback_from <= ts < lookback_until})
        onsets = []
        for i, ts in enumerate(times):
            if not lookback_from <= ts < lookback_until or (
                    ts + policy.churn_after_ms > observed_until):
                continue
            j = bisect.bisect_right(times, ts, lo=i)
            if j == len(times) or times[j] > ts + policy.churn_after_ms:
                onsets.append(ts)
        if purchases:
            outcomes.purchases[user_id] = purchases
        if onsets:
            outcomes.churn_onsets[user_id] = sorted(set(onsets))
    return outcomes

"""Alert policy: which scores become alerts for marketing automation. Pure and deterministic.

Per head (`intent`: p(strong purchase intent); `churn`: p(churn)) a score alerts when it
crosses the head's threshold, unless the user was alerted for that head less than `cooldown`
ago in **event time** (so replays decide exactly as live did).

Exploration: scores within `explore_band` of a threshold flip with probability `explore_rate`
(alerted just below, held back just above). The coin is a hash of the prediction id, so the
same prediction always gets the same decision (redelivery, replay), and every alert carries its
propensity P(alert | score). The feedback store keeps the propensity of every prediction, so
retraining can weight outcomes by inverse propensity (IPS, docs/feedback.md) instead of
learning only from the model's own confident picks.

Ids: `alert_id = H(user, session, head, n)`, n counting the head's alerts within the session
(0 unless the cooldown is shorter than a session). Not the prediction: after a crash the
redelivered events may be cut into other micro-batches, so the alert can come from another
scoring of the same session, and consumers must still see the same id. Once the first alert's
state is recorded, the event-time cooldown suppresses the repeat.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field

from streams.core.sessions import Session, render_event
from streams.core.timeunits import HOUR_MS

Head = Literal["intent", "churn"]
ALERT_HEADS: tuple[Head, ...] = ("intent", "churn")  # alert heads, not the model's output heads
ALERT_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    intent_threshold: float = 0.6
    churn_threshold: float = 0.6
    cooldown_ms: int = 6 * HOUR_MS
    explore_rate: float = 0.05
    explore_band: float = 0.1
    seed: str = "intentstream"

    def threshold(self, head: Head) -> float:
        return self.intent_threshold if head == "intent" else self.churn_threshold


class HeadAlertState(TypedDict, total=False):
    at: int  # event time (window end) of the last alert
    alert_id: str
    session_id: str  # the session it was about
    n: int  # its number among the head's alerts in that session (0: the first)


# head -> last alert; per user, in a changelog-backed table
AlertState = dict[str, HeadAlertState]


@dataclass(frozen=True, slots=True)
class Decision:
    send: bool
    propensity: float  # P(send | this score) under the policy
    explored: bool  # the exploration coin changed the outcome
    why: str  # "threshold", "explore", "below", "held_back", "cooldown"


class Alert(BaseModel):
    """One alert (topics `alerts.intent` and `alerts.churn`, key = user_id)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = ALERT_SCHEMA_VERSION
    alert_id: str = Field(description="stable per user, session, head and alert number: a "
                                      "redelivered alert repeats it")
    head: Head
    user_id: str
    session_id: str
    prediction_id: str
    model_name: str
    model_version: int
    probability: float = Field(description="p(strong intent) or p(churn)")
    threshold: float
    propensity: float = Field(description="P(alert | score) under the policy, for IPS")
    explored: bool = Field(description="sent only because of exploration")
    event_time: int = Field(description="window end: when the evidence was complete, ms")
    reason: str = Field(description="human-readable: the score and the events that drove it")
    signals: list[str] = Field(description="the session events behind the reason, newest first")


def unit_coin(prediction_id: str, head: str, seed: str) -> float:
    """A uniform number in [0, 1) fixed by its inputs."""
    digest = hashlib.blake2b(f"{seed}\x00{prediction_id}\x00{head}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big") / 2**64


def decide(
    head: Head, probability: float, prediction_id: str, event_time: int,
    last: HeadAlertState | None, policy: AlertPolicy,
) -> Decision:
    threshold = policy.threshold(head)
    above = probability >= threshold
    near = abs(probability - threshold) <= policy.explore_band
    flip = near and unit_coin(prediction_id, head, policy.seed) < policy.explore_rate
    if not near:
        propensity = 1.0 if above else 0.0
    else:
        propensity = 1.0 - policy.explore_rate if above else policy.explore_rate
    send = above != flip
    if send and last is not None and event_time - last["at"] < policy.cooldown_ms:
        return Decision(False, propensity, flip, "cooldown")
    if send:
        return Decision(True, propensity, flip, "explore" if flip else "threshold")
    return Decision(False, propensity, flip, "held_back" if flip else "below")


def alert_id(user_id: str, session_id: str, head: Head, n: int) -> str:
    text = f"{user_id}\x00{session_id}\x00{head}\x00{n}"
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def next_alert(
    user_id: str, session_id: str, head: Head, event_time: int, last: HeadAlertState | None
) -> HeadAlertState:
    """The state of a new alert: its id numbers it within the session (see the module notes)."""
    same_session = last is not None and last.get("session_id") == session_id
    n = last.get("n", 0) + 1 if same_session and last is not None else 0
    return {"at": event_time, "alert_id": alert_id(user_id, session_id, head, n),
            "session_id": session_id, "n": n}


# Which events explain which head, strongest first. Rendering reuses the session text so a
# reason reads like the text the model saw.
_SIGNAL_RANK: dict[Head, dict[str, int]] = {
    "intent": {"purchase": 0, "add_to_cart": 1, "search": 2, "click": 3, "view": 4},
    "churn": {"support_message": 0, "review": 1, "remove_from_cart": 2, "search": 3},
}


def signals(session: Session, head: Head, limit: int = 3) -> list[str]:
    """The session's most telling events for a head, newest first within a rank."""
    rank = _SIGNAL_RANK[head]
    ranked = [
        (rank[e["type"]], -i, render_event(e))
        for i, e in enumerate(session["events"])
        if e["type"] in rank and not (head == "churn" and e["type"] == "review"
                                      and (e.get("rating") or 5) > 2)
    ]
    seen: list[str] = []
    for _, _, text in sorted(ranked):
        if text not in seen:
            seen.append(text)
        if len(seen) == limit:
            break
    return seen


def reason_text(head: Head, probability: float, decision: Decision, threshold: float,
                evidence: list[str]) -> str:
    label = "p(strong purchase intent)" if head == "intent" else "p(churn)"
    why = (f"{label}={probability:.2f} ≥ {threshold:.2f}" if decision.why == "threshold"
           else f"{label}={probability:.2f} near {threshold:.2f}, sent to explore "
                f"(propensity {decision.propensity:.2f})")
    return f"{why}; " + ("; ".join(evidence) if evidence else "no telling events in window")


def head_probability(score: dict[str, Any], head: Head) -> float:
    return float(score["strength"]["probs"]["strong"]) if head == "intent" else float(
        score["churn"])


def alerts_for(
    score: dict[str, Any], session: Session, state: AlertState, policy: AlertPolicy
) -> tuple[list[Alert], AlertState]:
    """The alerts one score triggers, and the user's alert state after them."""
    alerts: list[Alert] = []
    new_state: AlertState = dict(state)
    event_time = score["window"]["end"]
    for head in ALERT_HEADS:
        probability = head_probability(score, head)
        decision = decide(head, probability, score["prediction_id"], event_time,
                          state.get(head), policy)
        if not decision.send:
            continue
        evidence = signals(session, head)
        new_state[head] = next_alert(score["user_id"], score["session_id"], head, event_time,
                                     state.get(head))
        alert = Alert(
            alert_id=new_state[head]["alert_id"],
            head=head,
            user_id=score["user_id"],
            session_id=score["session_id"],
            prediction_id=score["prediction_id"],
            model_name=score["model"]["name"],
            model_version=score["model"]["version"],
            probability=round(probability, 6),
            threshold=policy.threshold(head),
            propensity=decision.propensity,
            explored=decision.explored,
            event_time=event_time,
            reason=reason_text(head, probability, decision, policy.threshold(head), evidence),
            signals=evidence,
        )
        alerts.append(alert)
    return alerts, new_state

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

Silence (schema 2): a silence score (`trigger` "silence") goes through the same rules, with
its `as_of` (the milestone) as the event time the cooldown measures, and a reason that names
the silence and the profile facts behind it ("silent for 14 days; 3 orders, the last 40 days
ago; …"). A session that closes with items still in its cart and no purchase is an abandoned
cart: its final score's intent alert is of kind `abandoned_cart`, with the cart in the reason,
once per session. By default it follows the intent head's rules (threshold, exploration,
cooldown), so an in-session intent alert within the cooldown holds it back; with
`cart_past_cooldown` it is sent whenever p(strong) reaches the threshold, cooldown or not (a
reminder is a different action from an in-session nudge). Every decision is
taken from the score record and its FEATURES row alone, so the feedback sidecar's replica can
take the same ones (`session` only words the reasons).

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

from streams.core.features import FEATURE_NAMES
from streams.core.sessions import Session, render_event
from streams.core.timeunits import HOUR_MS

Head = Literal["intent", "churn"]
ALERT_HEADS: tuple[Head, ...] = ("intent", "churn")  # alert heads, not the model's output heads
ALERT_SCHEMA_VERSION = 2  # 2: kind, trigger, customer value (optional)
AlertKind = Literal["score", "silence", "abandoned_cart"]
ABANDONED_CART = "abandoned_cart"  # alert state key: the last abandoned-cart alert


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    intent_threshold: float = 0.6
    churn_threshold: float = 0.6
    cooldown_ms: int = 6 * HOUR_MS
    explore_rate: float = 0.05
    explore_band: float = 0.1
    seed: str = "intentstream"
    # An abandoned cart alerts once per session even within the intent cooldown (off: it is
    # the session's final intent alert when the usual rules send one, labelled as such).
    cart_past_cooldown: bool = False

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

    schema_version: Literal[1, 2] = ALERT_SCHEMA_VERSION
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
    kind: AlertKind | None = Field(
        None, description="score: a score crossed the head's threshold; silence: a silence "
                          "milestone's score did; abandoned_cart: a session closed with items "
                          "in its cart (absent before v2)")
    p_alive: float | None = Field(None, description="churn alerts: the customer's P(alive)")
    expected_orders: float | None = Field(
        None, description="churn alerts: expected purchases in the next period")
    expected_value: float | None = Field(
        None, description="churn alerts: expected value of those purchases (value at risk)")


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


def alert_event_time(score: dict[str, Any]) -> int:
    """The event time an alert is at: the score's as-of time (a silence milestone), else its
    window's end (scores before v2)."""
    as_of = score.get("as_of")
    return int(as_of) if as_of is not None else int(score["window"]["end"])


def alerts_for(
    score: dict[str, Any], session: Session, state: AlertState, policy: AlertPolicy,
    features: list[float] | None = None,
) -> tuple[list[Alert], AlertState]:
    """The alerts one score triggers (at most one per head), and the user's alert state after
    them. `features`: the FEATURES row scored (a silence alert's profile facts; whether a
    closed session left its cart). `session` only words the reasons, so a replica with the
    score record alone (`{"events": []}`) takes the same decisions."""
    alerts: list[Alert] = []
    new_state: AlertState = dict(state)
    event_time = alert_event_time(score)
    silent = score.get("trigger") == "silence"
    for head in ALERT_HEADS:
        probability = head_probability(score, head)
        decision = decide(head, probability, score["prediction_id"], event_time,
                          state.get(head), policy)
        cart = head == "intent" and abandons_cart(score, features, session, state, policy)
        if cart and policy.cart_past_cooldown:
            decision = Decision(True, 1.0, False, "threshold")
        if not decision.send:
            continue
        kind: AlertKind = "abandoned_cart" if cart else "silence" if silent else "score"
        evidence = signals(session, head)
        if kind == "silence":
            evidence = [silence_text(score.get("silence_days")),
                        *profile_facts(features), *evidence]
        reason = reason_text(head, probability, decision, policy.threshold(head), evidence)
        if kind == "abandoned_cart":
            evidence = [_item_line(item) for item in cart_items(session)]
            reason = "abandoned cart: " + reason_text(
                head, probability, decision, policy.threshold(head),
                [f"left in cart: {'; '.join(evidence) if evidence else 'items not kept'}",
                 *cart_value(features)])
        new_state[head] = next_alert(score["user_id"], score["session_id"], head, event_time,
                                     state.get(head))
        if kind == "abandoned_cart":
            new_state[ABANDONED_CART] = {**new_state[head]}
        alerts.append(_alert(score, new_state[head]["alert_id"], head, probability, decision,
                             policy, event_time, reason, evidence, kind))
    return alerts, new_state


def _alert(score: dict[str, Any], alert_id_: str, head: Head, probability: float,
           decision: Decision, policy: AlertPolicy, event_time: int, reason: str,
           evidence: list[str], kind: AlertKind) -> Alert:
    value = {name: score.get(name) for name in ("p_alive", "expected_orders", "expected_value")}
    return Alert(
        alert_id=alert_id_,
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
        reason=reason,
        signals=evidence,
        kind=kind,
        **(value if head == "churn" else {}),
    )


# --- silence and abandoned carts ----------------------------------------------------------------


def silence_text(days: float | None) -> str:
    if days is None:
        return "silent since the session"
    return f"silent for {days:g} day" + ("" if days == 1 else "s")


_FEATURE_AT = {name: i for i, name in enumerate(FEATURE_NAMES)}


def profile_facts(features: list[float] | None) -> list[str]:
    """The profile facts a churn alert on a silent user names, read from the FEATURES row
    the model was given (so the reason quotes what the model saw, as of the milestone)."""
    if features is None or len(features) != len(FEATURE_NAMES):
        return []

    def at(name: str) -> float:
        return features[_FEATURE_AT[name]]

    orders = int(at("profile_orders"))
    facts = ["no order yet" if orders == 0 else
             f"{orders} order{'s' if orders != 1 else ''}, the last "
             f"{at('profile_days_since_last_order'):.0f} days ago"]
    carts = int(at("profile_abandoned_carts"))
    if carts:
        facts.append(f"{carts} abandoned cart{'s' if carts != 1 else ''}")
    complaints = int(at("profile_complaints"))
    if complaints:
        facts.append(f"{complaints} support message{'s' if complaints != 1 else ''}")
    return facts


def cart_items(session: Session) -> list[dict[str, Any]]:
    """Items left in the session's cart: added, not removed, not bought (its kept events)."""
    cart: dict[str, dict[str, Any]] = {}
    for event in session["events"]:
        item = event.get("item")
        if event["type"] == "purchase":
            cart.clear()
        elif item and event["type"] == "add_to_cart":
            cart[item["id"]] = item
        elif item and event["type"] == "remove_from_cart":
            cart.pop(item["id"], None)
    return list(cart.values())


def left_cart(features: list[float] | None, session: Session) -> bool:
    """A closed session left something in its cart and bought nothing. From the FEATURES row
    when given (what the score record carries: no purchase, and a cart value above 0 or more
    adds than removes), else from the session's kept events."""
    if features is not None and len(features) == len(FEATURE_NAMES):
        if features[_FEATURE_AT["n_purchase"]] > 0:
            return False
        return (features[_FEATURE_AT["cart_value"]] > 0
                or features[_FEATURE_AT["n_add_to_cart"]]
                > features[_FEATURE_AT["n_remove_from_cart"]])
    stats = session.get("stats")
    if stats is not None and stats["kinds"].get("purchase"):
        return False
    return bool(cart_items(session))


def abandons_cart(score: dict[str, Any], features: list[float] | None, session: Session,
                  state: AlertState, policy: AlertPolicy) -> bool:
    """A session's final score whose session left its cart, p(strong) at the intent threshold
    or above, and no abandoned-cart alert yet for this session."""
    if score.get("trigger") != "session_close" or not left_cart(features, session):
        return False
    if (state.get(ABANDONED_CART) or {}).get("session_id") == score["session_id"]:
        return False
    return head_probability(score, "intent") >= policy.intent_threshold


def cart_value(features: list[float] | None) -> list[str]:
    if features is None or len(features) != len(FEATURE_NAMES):
        return []
    value = features[_FEATURE_AT["cart_value"]]
    return [f"cart value {value:.2f}"] if value > 0 else []


def _item_line(item: dict[str, Any]) -> str:
    return render_event({"type": "add_to_cart", "item": item}).removeprefix("add_to_cart: ")

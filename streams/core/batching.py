"""One micro-batch of raw messages → dead letters, new user states, sessions to score. Pure.

This is the coalescing point: however many events a user sends within one batch, their
session is scored once (plus once per session those events closed). The Faust agent does the
I/O around it; replay and tests call it directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streams.core.events import Rejection, ShopEvent, not_from_the_future, parse_event
from streams.core.features import copy_stats, feature_vector
from streams.core.privacy import DEFAULT_PRIVACY, PrivacyPolicy
from streams.core.raw_message import RawMessage
from streams.core.records import DeadLetter, DeadLetterSource, Trigger, dead_letter
from streams.core.sessions import (
    Admission,
    KeptNetwork,
    Outcome,
    Session,
    SessionPolicy,
    UserState,
    absorb,
    admit,
    empty_state,
    session_features,
    text_digest,
)


@dataclass(frozen=True, slots=True)
class ToScore:
    session: Session
    closed: bool  # the session is closed: its final scoring, or a silence re-score of it
    features: list[float]  # the model's FEATURES row (streams.core.features)
    # what caused this scoring, and the event time its FEATURES are taken as of (the
    # session's end, or a silence milestone); both are part of the prediction id
    trigger: Trigger = "event"
    as_of: int | None = None
    silence_days: float | None = None  # the milestone, for a silence scoring
    # the network's outputs kept with the session (its latest network run): the cascade
    # (streams/core/cascade.py) reuses them while the text allows
    kept: KeptNetwork | None = None


@dataclass
class BatchPlan:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    states: dict[str, UserState] = field(default_factory=dict)  # users whose state changed
    to_score: list[ToScore] = field(default_factory=list)
    n_valid: int = 0  # events applied to a session
    n_redelivered: int = 0  # at or below a user's applied input position: skipped
    n_duplicates: int = 0  # producer re-sends (same event id and content): skipped
    # user -> index of the user's latest message in the batch: its partition is the one the
    # user's table changelog entry must go to (co-partitioned with the source topic).
    last_message: dict[str, int] = field(default_factory=dict)
    # partition -> newest event time among its valid events in the batch (the clock's input)
    newest_ts: dict[int, int] = field(default_factory=dict)


def copy_state(state: UserState) -> UserState:
    """Copy deep enough for `absorb`, which edits the open session's event list and stats and
    the profile in place (never a kept event dict, nor a pending session)."""
    current = state["current"]
    if current is not None:
        current = {**current, "events": list(current["events"])}
        if "stats" in current:
            current["stats"] = copy_stats(current["stats"])
    copied: UserState = {**state, "current": current, "pending": list(state["pending"])}
    if "profile" in state:
        copied["profile"] = dict(state["profile"])
    return copied


def plan_batch(
    messages: Iterable[RawMessage],
    load_state: Callable[[str], UserState | None],
    policy: SessionPolicy,
    max_event_bytes: int,
    privacy: PrivacyPolicy = DEFAULT_PRIVACY,
) -> BatchPlan:
    plan = BatchPlan()
    for index, msg in enumerate(messages):
        parsed = parse_event(msg.value, msg.key, max_event_bytes, privacy, policy.ts_bounds)
        if not isinstance(parsed, Rejection):
            parsed = not_from_the_future(parsed, msg.timestamp_ms, policy.max_future_ms)
        if isinstance(parsed, Rejection):
            plan.dead_letters.append(_dead_letter(msg, parsed, privacy))
            continue
        newest = plan.newest_ts.get(msg.partition)
        if newest is None or parsed.ts > newest:
            plan.newest_ts[msg.partition] = parsed.ts
        state = plan.states.get(parsed.user_id)
        if state is None:
            loaded = load_state(parsed.user_id)
            state = empty_state() if loaded is None else copy_state(loaded)
            plan.states[parsed.user_id] = state
        plan.last_message[parsed.user_id] = index
        admission = admit(state, parsed, msg.partition, msg.offset, policy.remembered_ids)
        if admission is Admission.REDELIVERED:
            plan.n_redelivered += 1
            continue
        if admission is Admission.DUPLICATE:
            plan.n_duplicates += 1
            continue
        if admission is Admission.CONFLICT:
            plan.dead_letters.append(_dead_letter(msg, _conflict(parsed), privacy))
            continue
        outcome = absorb(state, parsed, policy)
        if outcome is Outcome.LATE:
            plan.dead_letters.append(_dead_letter(msg, _late(parsed, state), privacy))
            continue
        plan.n_valid += 1
    # Every touched user is scored, even on a redelivery: the batch that carried it may have
    # written the state but not delivered its scores and alerts before a crash. Scoring the
    # same state again gives the same prediction and alert ids.
    for state in plan.states.values():
        plan.to_score.extend(scoring_items(state, with_current=True))
    return plan


def scoring_items(state: UserState, with_current: bool) -> list[ToScore]:
    """What a user's state asks to be scored: its closed sessions not yet delivered (final
    scores), a silence milestone a timer chose and not yet delivered, and, when an event
    touched the user, the open session. Derived from the state alone, so a re-run after a
    crash scores exactly the same things (same ids)."""
    items = [ToScore(s, True, session_features(state, s), "session_close", s["end"],
                     kept=s.get("network"))
             for s in state["pending"]]
    silence = state.get("silence") or {}
    milestone = silence.get("pending")
    last = state.get("last_closed")
    if milestone is not None and last is not None:
        features = feature_vector(last, state.get("profile"), as_of=milestone["as_of"])
        items.append(ToScore(last, True, features, "silence", milestone["as_of"],
                             milestone["days"], last.get("network")))
    current = state["current"]
    if with_current and current is not None:
        items.append(ToScore(current, False, session_features(state, current), "event",
                             current["end"], kept=current.get("network")))
    return items


def can_reuse(item: ToScore, text: str, served_version: int | None) -> bool:
    """Whether a scoring may skip the text network: a silence re-score whose kept network
    outputs were computed from this very text by the intent_bert version served now. Then
    only the stacker runs (new FEATURES, kept TEXT_* inputs); anything else runs it all."""
    kept = item.kept
    return (item.trigger == "silence" and kept is not None and served_version is not None
            and kept["version"] == served_version and kept["digest"] == text_digest(text))


def keep_network(state: UserState, session: Session, kept: KeptNetwork) -> None:
    """Keep the network's outputs for `session`'s text with that session in the state, in
    place: the last closed session when it is the one scored (same id, events and last
    event), for its silence re-scores; the open session when it has the same id (the outputs
    say what they read: digest, free text, size), for its later scores and its final one.
    Other sessions keep nothing (bounded: two per user)."""
    last = state.get("last_closed")
    if last is not None and all(last[k] == session[k]  # type: ignore[literal-required]
                                for k in ("session_id", "n_events", "last_event_id")):
        state["last_closed"] = {**last, "network": kept}
    current = state["current"]
    if current is not None and current["session_id"] == session["session_id"]:
        state["current"] = {**current, "network": kept}


def delivered(state: UserState) -> UserState:
    """The state once what `scoring_items` asked for is on the topic: closed sessions leave,
    a pending milestone becomes the latest scored."""
    out: UserState = {**state, "pending": []}
    silence = state.get("silence")
    if silence is not None and "pending" in silence:
        out["silence"] = {"scored": silence["pending"]["index"]}
    return out


def _conflict(event: ShopEvent) -> Rejection:
    return Rejection(
        "conflicting_duplicate",
        f"event_id {event.event_id!r} was already accepted for this user with other content",
    )


def _late(event: ShopEvent, state: UserState) -> Rejection:
    current = state["current"]
    start = current["start"] if current else event.ts
    return Rejection(
        "late_event",
        f"event time {event.ts} is too far before the open session (start {start}); "
        "sessions only reach back by the inactivity gap",
    )


def _dead_letter(msg: RawMessage, rejection: Rejection, privacy: PrivacyPolicy) -> DeadLetter:
    source = DeadLetterSource(
        topic=msg.topic, partition=msg.partition, offset=msg.offset, timestamp=msg.timestamp_ms
    )
    return dead_letter(msg.value, msg.key, rejection, source, privacy)

"""Per-user session windows in event time, and their rendering to one compact text. Pure.

A session is a run of a user's events with no gap longer than `gap_ms` and no longer than
`max_span_ms` overall (a longer run is split). It keeps its newest `max_events` events for the
text, while its window bounds and event count cover everything it absorbed. A session that is
closed by a later event waits in `pending` until it has been scored, so a crash between closing
and scoring cannot lose it: the worker removes it only after its score is produced.

Redelivery is recognised by input position, producer re-sends by event id (`admit`): a user's
state carries the (partition, offset) of the last input record it applied, written in the same
table update as the sessions, so a record at or below it is skipped however long ago its
session closed; and a bounded memory of the user's newest event ids (with a hash of each
event's content) catches an event sent twice under new offsets, or an id reused for different
content. That memory holds `SessionPolicy.remembered_ids` events: a re-send older than the
user's last that many events is not recognised.

State is plain JSON-able dicts, because it lives in a changelog-backed table.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any, NotRequired, TypedDict

from streams.core.events import DEFAULT_TS_BOUNDS, ShopEvent
from streams.core.features import (
    Profile,
    SessionStats,
    add_to_profile,
    add_to_stats,
    close_session_in_profile,
    empty_profile,
    empty_stats,
    feature_vector,
    open_session_in_profile,
)
from streams.core.timeunits import HOUR_MS


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    gap_ms: int
    max_span_ms: int
    max_events: int
    max_chars: int
    # How far event time may run ahead of the message's (producer/broker) timestamp.
    max_future_ms: int = HOUR_MS
    # Newest event ids remembered per user to recognise producer re-sends (module docstring).
    remembered_ids: int = 128  # ~21 bytes each in the state: ~2.7 KB a user
    # Plausible event time [lo, hi) in epoch ms: outside it an event is a bad_timestamp.
    ts_bounds: tuple[int, int] = DEFAULT_TS_BOUNDS


class Session(TypedDict):
    session_id: str
    user_id: str
    start: int  # event time of the earliest event, ms
    end: int  # event time of the latest event, ms
    n_events: int  # all events absorbed, including those no longer kept in `events`
    last_event_id: str  # the most recently absorbed event (arrival order)
    events: list[dict[str, Any]]  # compact events, sorted by (ts, event_id), newest kept
    stats: NotRequired[SessionStats]  # behaviour aggregates over every event absorbed
    # FEATURES frozen when a later session closed it (the profile as of its end)
    features: NotRequired[list[float]]
    # The network's outputs from its latest run on this session (streams/core/cascade.py):
    # later scores of the session, and silence re-scores of it, reuse them.
    network: NotRequired[KeptNetwork]


class KeptNetwork(TypedDict):
    """The text network's outputs for one rendered text (~10 floats, < 200 bytes as JSON):
    the stacker's TEXT_* inputs exactly as the ensemble computed them."""

    version: int  # the intent_bert version that produced them
    digest: str  # `text_digest` of the rendered text they were computed from
    strength: list[float]
    intent_type: list[float]
    churn: float
    # What the network had read (streams/core/cascade.py): `reading_digest` of the session and
    # its size then. Absent in outputs kept before the cascade: only an exact match reuses them.
    reads: NotRequired[str]
    n_events: NotRequired[int]
    # The score whose network run produced them: a re-score of that very prediction (a
    # redelivered batch) says `network: true` again, so one id keeps one content.
    prediction_id: NotRequired[str]


class UserState(TypedDict):
    current: Session | None
    pending: list[Session]  # closed, not yet scored
    # [partition, offset] of the last input record applied (absent in states written before it)
    position: NotRequired[list[int]]
    seen: NotRequired[list[str]]  # "<id hash>:<content hash>" of the newest events, oldest first
    profile: NotRequired[Profile]  # lifetime aggregates (streams.core.features)
    # The newest session closed by the clock, without its frozen features: what a silent user
    # is re-scored on (streams.core.silence). One session, bounded like any other.
    last_closed: NotRequired[Session]
    silence: NotRequired[SilenceState]  # milestones scored since `last_closed` ended


class PendingMilestone(TypedDict):
    index: int  # position in the silence schedule
    days: float  # silent this many days
    as_of: int  # event time it was reached: last activity + days


class SilenceState(TypedDict):
    scored: int  # index of the latest milestone whose score was delivered (-1: none)
    # chosen by a timer, written before its score is produced and cleared after delivery,
    # so a crash in between re-scores exactly this milestone (same ids)
    pending: NotRequired[PendingMilestone]


class Outcome(Enum):
    APPENDED = "appended"
    DUPLICATE = "duplicate"  # redelivered: already in the session; rescoring is harmless
    NEW_SESSION = "new_session"  # closed the previous session (moved to pending)
    LATE = "late"  # older than the open session allows; not absorbed


class Admission(Enum):
    NEW = "new"  # apply it
    REDELIVERED = "redelivered"  # at or below the applied input position: already applied
    DUPLICATE = "duplicate"  # a producer re-send: same event id, same content
    CONFLICT = "conflict"  # same event id, different content


def empty_state() -> UserState:
    return {"current": None, "pending": []}


def admit(
    state: UserState, event: ShopEvent, partition: int, offset: int, remembered_ids: int
) -> Admission:
    """Whether a user's input record is new; records its position and id in `state` if so.

    Redelivered records leave the state untouched. Every other record moves the position, so
    a re-send or conflict dead-lettered once is not judged again when it is redelivered.
    """
    position = state.get("position")
    if position is not None and position[0] == partition and offset <= position[1]:
        return Admission.REDELIVERED
    state["position"] = [partition, offset]
    id_hash, content_hash = _fingerprint(event)
    seen = state.get("seen") or []
    for entry in seen:
        if entry.startswith(f"{id_hash}:"):
            return Admission.DUPLICATE if entry.endswith(content_hash) else Admission.CONFLICT
    state["seen"] = [*seen, f"{id_hash}:{content_hash}"][-remembered_ids:]
    return Admission.NEW


def _fingerprint(event: ShopEvent) -> tuple[str, str]:
    """Short hashes of an event's id (48 bits) and of its whole content (32 bits)."""
    id_hash = hashlib.blake2b(event.event_id.encode(), digest_size=6).hexdigest()
    content = hashlib.blake2b(event.model_dump_json().encode(), digest_size=4).hexdigest()
    return id_hash, content


def compact_event(event: ShopEvent) -> dict[str, Any]:
    """The fields a session keeps of an event (no Nones, to keep table records small)."""
    doc = event.model_dump(exclude_none=True, exclude={"user_id"})
    return doc


def session_id_for(user_id: str, first_event_id: str) -> str:
    """Stable across redelivery and replay: derived from the event that opened the session."""
    digest = hashlib.blake2b(f"{user_id}\x00{first_event_id}".encode(), digest_size=8)
    return digest.hexdigest()


def _new_session(event: ShopEvent, doc: dict[str, Any]) -> Session:
    stats = empty_stats()
    add_to_stats(stats, doc)
    return {
        "session_id": session_id_for(event.user_id, event.event_id),
        "user_id": event.user_id,
        "start": event.ts,
        "end": event.ts,
        "n_events": 1,
        "last_event_id": event.event_id,
        "events": [doc],
        "stats": stats,
    }


def absorb(state: UserState, event: ShopEvent, policy: SessionPolicy) -> Outcome:
    """Apply one event to a user's state in place (sessions and profile); say what happened."""
    current = state["current"]
    doc = compact_event(event)
    if current is not None and any(e["event_id"] == event.event_id for e in current["events"]):
        return Outcome.DUPLICATE
    profile = state.get("profile")
    if profile is None:
        profile = state["profile"] = empty_profile(event.ts)
    if current is None:
        state["current"] = _new_session(event, doc)
        open_session_in_profile(profile)
        add_to_profile(profile, doc)
        return Outcome.APPENDED
    after_gap = event.ts > current["end"] + policy.gap_ms
    if after_gap or event.ts - current["start"] >= policy.max_span_ms:
        # Closed: its features are frozen with the profile as of its end, as training sees it.
        close_session_in_profile(profile, current.get("stats") or empty_stats())
        current["features"] = feature_vector(current, profile)
        state["pending"].append(current)
        state["current"] = _new_session(event, doc)
        open_session_in_profile(profile)
        add_to_profile(profile, doc)
        return Outcome.NEW_SESSION
    before_gap = event.ts < current["start"] - policy.gap_ms
    if before_gap or current["end"] - event.ts >= policy.max_span_ms:
        return Outcome.LATE
    _insert_sorted(current, doc, policy.max_events)
    add_to_profile(profile, doc)
    return Outcome.APPENDED


def session_features(state: UserState, session: Session) -> list[float]:
    """FEATURES of one of the user's sessions: frozen at its close, else as of now."""
    frozen = session.get("features")
    return frozen if frozen is not None else feature_vector(session, state.get("profile"))


def _insert_sorted(session: Session, doc: dict[str, Any], max_events: int) -> None:
    events = session["events"]
    sort_key = (doc["ts"], doc["event_id"])
    i = len(events)
    while i > 0 and (events[i - 1]["ts"], events[i - 1]["event_id"]) > sort_key:
        i -= 1
    events.insert(i, doc)
    if len(events) > max_events:
        del events[: len(events) - max_events]  # bounded: keep the newest context
    session["start"] = min(session["start"], doc["ts"])
    session["end"] = max(session["end"], doc["ts"])
    session["n_events"] += 1
    session["last_event_id"] = doc["event_id"]
    stats = session.get("stats")
    if stats is not None:  # sessions from before stats existed keep none rather than a part
        add_to_stats(stats, doc)


# --- rendering ------------------------------------------------------------------------------

SEPARATOR = " | "
_WS = re.compile(r"\s+")


def _clean(text: str, limit: int) -> str:
    # One line, no separator look-alikes, bounded: user text must not forge session structure.
    text = _WS.sub(" ", text.replace("|", "/")).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _item_text(item: dict[str, Any]) -> str:
    title = _clean(item.get("title") or f"item {item['id']}", 80)
    extras = []
    if item.get("category"):
        extras.append(_clean(item["category"], 40))
    if item.get("price") is not None:
        extras.append(f"{item['price']:.2f}")
    return f"{title} ({', '.join(extras)})" if extras else title


def render_event(doc: dict[str, Any]) -> str:
    kind = doc["type"]
    if kind == "search":
        return f"search: {_clean(doc.get('query', ''), 120)}"
    if kind == "support_message":
        return f"support: {_clean(doc.get('text', ''), 240)}"
    if kind == "review":
        stars = f" {doc['rating']}/5" if doc.get("rating") else ""
        return f"review{stars}: {_clean(doc.get('text', ''), 240)}"
    if doc.get("item"):
        return f"{kind}: {_item_text(doc['item'])}"
    page = _clean(doc.get("page", "page"), 40)
    dwell = f" {round(doc['duration_s'])}s" if doc.get("duration_s") is not None else ""
    return f"{kind}: {page} page{dwell}"


def text_digest(text: str) -> str:
    """A short digest of a rendered text: equal digests, the same network input."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def render(session: Session, max_chars: int) -> str:
    """One compact line, oldest to newest; repeats collapse to `×n`; newest kept when too long."""
    parts: list[str] = []
    counts: list[int] = []
    for doc in session["events"]:
        text = render_event(doc)
        if parts and parts[-1] == text:
            counts[-1] += 1
        else:
            parts.append(text)
            counts.append(1)
    pieces = [p if n == 1 else f"{p} ×{n}" for p, n in zip(parts, counts, strict=True)]
    out: list[str] = []
    length = 0
    for piece in reversed(pieces):
        extra = len(piece) + (len(SEPARATOR) if out else 0)
        if length + extra > max_chars:
            if not out:  # a single oversized piece: keep its end
                out.append("…" + piece[-(max_chars - 1) :])
            break
        out.append(piece)
        length += extra
    return SEPARATOR.join(reversed(out))

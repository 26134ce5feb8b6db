"""Labels for a scored window, from what the user did AFTER it. Pure.

Shared by training (simulated histories) and the live feedback path (real later events), so a
label means the same in both. A window is one session as the worker scored it: its events and
its end (event time of its newest event). Given the user's events after that end:

- intent strength: `strong` = a purchase within the horizon H after the window end; `medium` =
  cart activity (add/remove) within H but no purchase; `weak` = neither.
- churn: no event at all within D after the window end.
- intent type: the window's dominant need (see `intent_type`). This one reads the window
  itself, on purpose: it names what the user wanted in it, not what happened next.

Strength and churn are `None` ("unresolved") while the future is not yet known far enough:
`observed_until` is the event time up to which the user's events are complete. Only events
with `ts > window_end` are looked at, so nothing inside the window can leak into them.

Events are compact dicts (`streams.core.sessions.compact_event`, or any mapping with `ts`, `type`
and the type's fields).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from streams.core.timeunits import DAY_MS

CART_TYPES = frozenset({"add_to_cart", "remove_from_cart"})

# Intent types are the model's vocabulary, INTENT_TYPE_LABELS in inference/heads.py: this module
# only orders them. PURCHASE plus NEED_PRIORITY must be exactly that tuple (a test checks it).
PURCHASE = "purchase"  # the intent type of cart or purchase activity
# Most pressing first: when a window holds several explicit needs, the first listed wins.
NEED_PRIORITY: tuple[str, ...] = ("complaint", "request", "advice", "query", "notice")


@dataclass(frozen=True, slots=True)
class LabelPolicy:
    horizon_ms: int = DAY_MS  # H: how far ahead a purchase counts as `strong`
    churn_after_ms: int = 7 * DAY_MS  # D: silence this long after the window is churn

    @property
    def settles_after_ms(self) -> int:
        """After this long past the window end, every label of the window is resolved."""
        return max(self.horizon_ms, self.churn_after_ms)


DEFAULT_LABEL_POLICY = LabelPolicy()


@dataclass(frozen=True, slots=True)
class WindowLabels:
    strength: str | None  # strong / medium / weak; None = unresolved
    intent_type: str
    churn: bool | None  # None = unresolved

    @property
    def resolved(self) -> bool:
        return self.strength is not None and self.churn is not None


def _after(window_end: int, events: Iterable[Mapping[str, Any]], span_ms: int) -> list[str]:
    """Types of the events in (window_end, window_end + span_ms]."""
    return [e["type"] for e in events if window_end < e["ts"] <= window_end + span_ms]


def intent_strength(
    window_end: int, later: Iterable[Mapping[str, Any]], observed_until: int, horizon_ms: int
) -> str | None:
    types = _after(window_end, later, horizon_ms)
    if "purchase" in types:
        return "strong"  # final as soon as it happens, even before the horizon has passed
    if observed_until < window_end + horizon_ms:
        return None
    return "medium" if CART_TYPES.intersection(types) else "weak"


def churned(
    window_end: int, later: Iterable[Mapping[str, Any]], observed_until: int, churn_after_ms: int
) -> bool | None:
    if _after(window_end, later, churn_after_ms):
        return False
    if observed_until < window_end + churn_after_ms:
        return None
    return True


# --- intent type: the window's dominant need --------------------------------------------------

# Lexical cues of what a support message asks for, checked in NEED_PRIORITY order. A message
# matching none is a `notice` (it tells, it does not ask).
_NEED_CUES: dict[str, re.Pattern[str]] = {
    "complaint": re.compile(
        r"\b(broken|damaged|defective|cracked|scratched|faulty|stopped working|not working|"
        r"(never|still (hasn'?t|has not|not)|hasn'?t) arrived|wrong (item|size|colou?r|one)|"
        r"charged (me )?twice|missing (parts|items?|pieces)|disappointed|unacceptable|terrible|"
        r"nothing like|fell apart|leaks|ripped)\b"
    ),
    "request": re.compile(
        r"\b(please|can you|could you|can i|i'?d like to|i would like to|i want to|i need to)\b"
        r".*\b(cancel|change|return|exchange|refund|send|resend|update|delete|close|"
        r"unsubscribe|remove|reset|hold)\b|\bunsubscribe\b"
    ),
    "advice": re.compile(
        r"\b(recommend|suggest|should i (get|buy|go for|pick|choose)|help me (choose|pick|decide)|"
        r"what'?s the best|what is the best|which (one|model) (should|would|is better)|"
        r"better for|worth (it|upgrading|the extra))\b"
    ),
    "query": re.compile(
        r"\?|\b(does|do you|is (it|there|the)|are (they|there|the)|how (long|much|many|do)|"
        r"when will|what is|what are)\b"
    ),
}
_ADVICE_SEARCH = re.compile(r"\b(best|vs|versus|recommended|top rated)\b")


def message_need(text: str) -> str:
    """The need a support message expresses: complaint, request, advice, query or notice."""
    lowered = text.lower()
    for need in NEED_PRIORITY[:-1]:
        if _NEED_CUES[need].search(lowered):
            return need
    return "notice"


def review_need(rating: int | None, text: str) -> str:
    """A low rating is a complaint; a high one is feedback (notice); a 3 reads its text."""
    if rating is not None and rating <= 2:
        return "complaint"
    if rating is not None and rating >= 4:
        return "notice"
    need = message_need(text)
    return need if need in ("complaint", "notice") else "notice"


def intent_type(window: Sequence[Mapping[str, Any]]) -> str:
    """The window's dominant need, most explicit signal first:

    1. support messages and reviews: the most pressing need they express (NEED_PRIORITY);
    2. else cart or purchase activity: `purchase`;
    3. else searches: `advice` if one asks for the best / a comparison, else `query`;
    4. else (only views and clicks): `query`, looking around for information.
    """
    explicit = set()
    for e in window:
        if e["type"] == "support_message":
            explicit.add(message_need(e.get("text") or ""))
        elif e["type"] == "review":
            explicit.add(review_need(e.get("rating"), e.get("text") or ""))
    if explicit:
        return next(need for need in NEED_PRIORITY if need in explicit)
    types = {e["type"] for e in window}
    if types & (CART_TYPES | {"purchase"}):
        return PURCHASE
    if any(_ADVICE_SEARCH.search((e.get("query") or "").lower()) for e in window):
        return "advice"
    return "query"


def label_window(
    window: Sequence[Mapping[str, Any]],
    window_end: int,
    later: Sequence[Mapping[str, Any]],
    observed_until: int,
    policy: LabelPolicy = DEFAULT_LABEL_POLICY,
) -> WindowLabels:
    """All three labels of one window. `later` may hold any of the user's events: only those
    after `window_end` are read for strength and churn."""
    return WindowLabels(
        strength=intent_strength(window_end, later, observed_until, policy.horizon_ms),
        intent_type=intent_type(window),
        churn=churned(window_end, later, observed_until, policy.churn_after_ms),
    )

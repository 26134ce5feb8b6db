"""The cascade: which scorings run the text network, and which the stacker alone answers. Pure.

The text network is nearly all of a scoring's cost, yet the served answer comes from a stacker
over the network's outputs and the FEATURES row; where the text cannot change the answer, the
network need not run. Each scoring takes one of four routes (`route`):

- `exact`: the session's kept network outputs were computed from this very text by the version
  served now (a silence re-score, or a re-score with nothing new to read): the stacker alone,
  with fresh FEATURES, gives exactly what the whole ensemble would.
- `network`: the session holds something the served network has not read that changes its
  reading: free text (search queries, support messages, reviews), or a kind of event the kept
  run did not see (the first add_to_cart, a purchase: intent type turns on them). It runs.
- `stale`: the network read this session at an earlier event; the events since are more of the
  kinds it saw, and no free text (`reading_digest` unchanged). The stacker answers from those
  kept outputs and fresh FEATURES.
- `typical`: no free text and no kept outputs: the stacker answers from fresh FEATURES and the
  network's typical outputs for sessions holding the same kinds of event (a prototype per
  `kinds_mask`, the mean of the network's outputs on validation sessions without free text,
  stored with the version), where the version's policy lets them (`CascadePolicy.typical`).
  Measured on the simulator (docs/cascade.md): features-only heads in their place cost strength
  0.045 ROC-AUC, which no band brought back within the bar; the prototypes, 0.011.

A `stale` or `typical` answer is the cheap stage. The stacker checks it against the version's
cascade policy (`CascadePolicy`, fitted on the validation split by training and stored with
the version): an answer inside a band around a decision that matters (the intent alert
threshold, the churn threshold, a near tie between two intent types or two strength
classes), or kept outputs older
than `refresh_events` events, asks for the network after all (`wants_network`); so does every
cheap answer of a version without a policy. So the decision is a pure function of the session
and the model version, and replay reproduces it exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from streams.core.events import EVENT_TYPES
from streams.core.sessions import KeptNetwork, Session, render_event, text_digest

FREE_TEXT_TYPES = frozenset({"search", "support_message", "review"})

# The stacker's CASCADE input, per row: [mode, events since the kept network run, kinds_mask].
MODE_EXACT = 0  # kept outputs of this very text: the stacker's answer stands
MODE_STALE = 1  # kept outputs of an earlier text with the same reading: checked
MODE_TYPICAL = 2  # no network outputs: the version's prototype for the kinds_mask, checked

# The stacker's NETWORK_WANTED output, per row.
WANTED_NO = 0  # the cheap answer stands
WANTED_BAND = 1  # it lies in a band around a decision that matters
WANTED_REFRESH = 2  # the kept outputs are `refresh_events` or more events old
WANTED_NO_POLICY = 3  # the version has no cascade policy: every cheap answer runs the network
WANTED_TYPICAL_OFF = 4  # its policy lets no typical answer stand
WANTED_UNSEEN = 5  # it has no prototype for these kinds of event
WANTED_REASONS = {WANTED_NO: "", WANTED_BAND: "band", WANTED_REFRESH: "refresh",
                  WANTED_NO_POLICY: "no_policy", WANTED_TYPICAL_OFF: "typical_off",
                  WANTED_UNSEEN: "unseen_kinds"}

RouteName = Literal["exact", "network", "stale", "typical"]


def free_text_digest(session: Session) -> str:
    """A digest of the session's free text as the network reads it (its rendered search,
    support and review pieces, oldest first); "" where it holds none."""
    pieces = [render_event(doc) for doc in session["events"] if doc["type"] in FREE_TEXT_TYPES]
    if not pieces:
        return ""
    return _digest(pieces)


def reading_digest(session: Session) -> str:
    """What of the session's text changes the network's reading: its free text and the kinds
    of event it holds. Measured on the simulator (docs/cascade.md): kept outputs reused while
    only the free text was unchanged cost intent type 0.14 macro-F1 (a first add_to_cart
    turns a query into a purchase); with the kinds as well, every head stayed within 0.005."""
    kinds = sorted({doc["type"] for doc in session["events"]})
    return _digest([free_text_digest(session), *kinds])


def kinds_mask(session: Session) -> int:
    """The kinds of event the session holds, as bits in EVENT_TYPES order: the key of the
    version's prototypes (JSON keys: its decimal string)."""
    held = {doc["type"] for doc in session["events"]}
    return sum(1 << i for i, kind in enumerate(EVENT_TYPES) if kind in held)


def _digest(parts: Sequence[str]) -> str:
    return hashlib.blake2b("\x00".join(parts).encode("utf-8"), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class Route:
    name: RouteName
    kept: KeptNetwork | None = None  # the outputs the stacker reads (exact, stale)
    events_since: int = 0  # events absorbed since the kept run (stale)
    served: int | None = None  # the intent_bert version served when it was chosen
    kinds: int = 0  # `kinds_mask` of the session (typical)

    @property
    def cascade_row(self) -> tuple[int, int, int]:
        """The stacker's CASCADE row for a cheap route: mode, events since, kinds_mask."""
        mode = {"exact": MODE_EXACT, "stale": MODE_STALE, "typical": MODE_TYPICAL}[self.name]
        return (mode, self.events_since, self.kinds)


def route(session: Session, kept: KeptNetwork | None, text: str,
          served_version: int | None) -> Route:
    """How to score `session` rendered as `text`, given the network outputs kept with it and
    the intent_bert version served now (None: unknown, so the network runs)."""
    if served_version is None:
        return Route("network")
    usable = kept if kept is not None and kept["version"] == served_version else None
    if usable is not None and usable["digest"] == text_digest(text):
        return Route("exact", usable, served=served_version)
    if usable is not None and usable.get("reads") == reading_digest(session):
        since = max(0, session["n_events"] - usable.get("n_events", session["n_events"]))
        return Route("stale", usable, since, served_version)
    if usable is None and not free_text_digest(session):
        return Route("typical", served=served_version, kinds=kinds_mask(session))
    return Route("network", served=served_version)


def kept_of(prediction_network: KeptNetwork, session: Session) -> KeptNetwork:
    """Kept outputs stamped with what the network read: `reading_digest` and the size."""
    return {**prediction_network, "reads": reading_digest(session),
            "n_events": session["n_events"]}


@dataclass(frozen=True, slots=True)
class CascadePolicy:
    """When a cheap answer asks for the network: a typical answer where `typical` is off;
    p(strong) within `strength_band`, p(churn) within `churn_band` (closed intervals; None:
    never), the top two intent types within `intent_margin`, the top two strength classes
    within `strength_margin`, or kept outputs `refresh_events` or more events old (0: never)."""

    strength_band: tuple[float, float] | None = None
    churn_band: tuple[float, float] | None = None
    intent_margin: float = 0.0
    refresh_events: int = 0
    typical: bool = False  # typical answers may stand (they measured within the bar)
    strength_margin: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"strength_band": None if self.strength_band is None else list(self.strength_band),
                "churn_band": None if self.churn_band is None else list(self.churn_band),
                "intent_margin": self.intent_margin, "refresh_events": self.refresh_events,
                "typical": self.typical, "strength_margin": self.strength_margin}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CascadePolicy:
        def band(value: Any) -> tuple[float, float] | None:
            return None if value is None else (float(value[0]), float(value[1]))

        return cls(band(doc.get("strength_band")), band(doc.get("churn_band")),
                   float(doc.get("intent_margin", 0.0)), int(doc.get("refresh_events", 0)),
                   bool(doc.get("typical", False)), float(doc.get("strength_margin", 0.0)))


def wants_network(policy: CascadePolicy | None, mode: int, events_since: int,
                  strength: Sequence[float], p_churn: float, intent_type: Sequence[float]) -> int:
    """Whether a cheap answer (the stacker's, for a row of CASCADE `mode`; `strength` over
    STRENGTH_LABELS, strong first) asks for the network, as a WANTED_* code. The stacker runs
    its own copy (it cannot import this project); a test holds the two equal."""
    if mode == MODE_EXACT:
        return WANTED_NO
    if policy is None:
        return WANTED_NO_POLICY
    if mode == MODE_TYPICAL and not policy.typical:
        return WANTED_TYPICAL_OFF
    if mode == MODE_STALE and policy.refresh_events and events_since >= policy.refresh_events:
        return WANTED_REFRESH
    for band, p in ((policy.strength_band, strength[0]), (policy.churn_band, p_churn)):
        if band is not None and band[0] <= p <= band[1]:
            return WANTED_BAND
    for probs, margin in ((intent_type, policy.intent_margin),
                          (strength, policy.strength_margin)):
        top = sorted(probs, reverse=True)
        if len(top) > 1 and top[0] - top[1] < margin:
            return WANTED_BAND
    return WANTED_NO

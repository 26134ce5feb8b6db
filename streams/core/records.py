"""Output records: `intent.scores` and the dead-letter envelope. Pure codecs, versioned.

Each record type is a pydantic model, so the JSON Schema published in `streams/runtime/schemas/` and
the bytes on the topic come from one definition. Ids are deterministic (derived from inputs,
never from the clock) so at-least-once redelivery produces the same ids and consumers can dedup.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from streams.core.events import Rejection
from streams.core.features import FEATURE_SCHEMA_VERSION
from streams.core.privacy import (
    DEFAULT_PRIVACY,
    PrivacyPolicy,
    protect_raw,
    protects_raw,
    pseudonymise,
    scrub_text,
)
from streams.core.sessions import Session

if TYPE_CHECKING:
    from inference.heads import Prediction

# What caused a scoring: an event of the user, the session's close, a silence milestone.
Trigger = Literal["event", "session_close", "silence"]
# 2: trigger, as_of, silence_days, customer value, network (all optional)
SCORE_SCHEMA_VERSION = 2
DLQ_SCHEMA_VERSION = 1
RAW_PREVIEW_CHARS = 1000
# A dead letter must fit in one Kafka message (1 MB by default) next to its envelope: raw
# bytes past this are cut (`raw_truncated`, `raw_bytes` say so).
RAW_KEEP_BYTES = 256 * 1024


class Window(BaseModel):
    model_config = ConfigDict(frozen=True)

    start: int = Field(description="event time of the session's earliest event, epoch ms")
    end: int = Field(description="event time of the session's latest event, epoch ms")
    n_events: int = Field(description="events absorbed by the session so far")
    last_event_id: str


class HeadScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    label: str
    probs: dict[str, float]


class ModelRef(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: int


class FeatureRow(BaseModel):
    """The behaviour features the model was given with the text (streams/core/features.py)."""

    model_config = ConfigDict(frozen=True)

    schema_version: int = Field(description="the feature schema the values follow")
    values: list[float] = Field(description="FEATURES in the schema's order (docs/model.md)")


class IntentScore(BaseModel):
    """One scoring of one user's session (topic `intent.scores`, key = user_id)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1, 2] = SCORE_SCHEMA_VERSION
    prediction_id: str = Field(description="stable across redelivery and replay: session "
                                           "state, trigger, as-of time and model version")
    user_id: str
    session_id: str
    closed: bool = Field(description="true for a closed session: its final scoring "
                                     "(trigger session_close) or a silence re-score")
    trigger: Trigger | None = Field(
        None, description="what caused this scoring: an event of the user, the session's "
                          "close (by a later event or by the clock), or a silence milestone "
                          "(absent before v2)")
    as_of: int | None = Field(
        None, description="event time the FEATURES are taken as of, epoch ms: the session's "
                          "end, or the silence milestone (absent before v2)")
    silence_days: float | None = Field(
        None, description="for a silence scoring: days since the user's last activity")
    window: Window
    text: str = Field(description="the rendered session text the model saw")
    features: FeatureRow | None = Field(
        None, description="the feature row scored with the text (absent in older records)")
    model: ModelRef
    strength: HeadScore
    intent_type: HeadScore
    churn: float = Field(ge=0, le=1, description="probability of churn")
    p_alive: float | None = Field(
        None, description="BG/NBD probability the customer is still active (when served)")
    expected_orders: float | None = Field(
        None, description="expected purchases in the next period (when served)")
    expected_value: float | None = Field(
        None, description="expected value of those purchases (when served)")
    network: bool | None = Field(
        None, description="whether the text network ran for this score: false for a silence "
                          "re-score of an unchanged text, where the network's outputs kept "
                          "with the session went to the stacker alone (absent in older "
                          "records)")
    latency_ms: float = Field(description="Triton round trip of the batch this score was in")
    scored_at: int = Field(description="wall clock, epoch ms (not part of replay determinism)")


class DeadLetterSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    timestamp: int | None = None


class DeadLetter(BaseModel):
    """A rejected input (topic `shop.events.dlq`): its raw bytes (PII-scrubbed unless the
    privacy policy is off) and why."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = DLQ_SCHEMA_VERSION
    reason: str = Field(description="stable code: not_json, invalid_field, late_event, …")
    detail: str
    source: DeadLetterSource
    key_b64: str | None = Field(description="the message key, base64 (pseudonymised when "
                                            "user ids are)")
    raw_b64: str = Field(description="the message value, base64: the original bytes, or with "
                                     "raw_scrubbed, those bytes with PII masked; only the "
                                     "first RAW_KEEP_BYTES when raw_truncated")
    raw_bytes: int = Field(0, description="size of the original message value")
    raw_truncated: bool = Field(False, description="raw_b64 holds only a prefix of the value")
    raw_preview: str = Field(description="raw_b64's bytes as UTF-8 (replacement chars), truncated")
    raw_scrubbed: bool = Field(False, description="the privacy policy was applied to key and "
                               "value: e-mails, phones, cards, addresses masked, user ids "
                               "pseudonymised when configured (docs/privacy.md)")

    def message_key(self) -> bytes | None:
        """The input's key as this record carries it (pseudonymised when user ids are): the
        key to produce the dead letter with, so the DLQ keeps per-user order without the id."""
        return None if self.key_b64 is None else base64.b64decode(self.key_b64)


def prediction_id(session: Session, model_version: int, trigger: Trigger = "event",
                  as_of: int | None = None) -> str:
    """Same inputs, same id; and the same id always carries the same content, because a
    session's text and FEATURES are functions of its state (id, events absorbed, last event)
    and the trigger and as-of time. An open session's score (trigger `event`) keeps the id
    of before v2. Its final score differs (the close is applied to the profile before its
    FEATURES are frozen), so the trigger is part of the id: a final score has its own id."""
    state = f"{session['session_id']}\x00{session['n_events']}\x00{session['last_event_id']}"
    if trigger != "event":
        state = f"{state}\x00{trigger}\x00{as_of}"
    digest = hashlib.blake2b(f"{state}\x00{model_version}".encode(), digest_size=12)
    return digest.hexdigest()


CUSTOMER_VALUE_FIELDS = ("p_alive", "expected_orders", "expected_value")


def customer_value(prediction: Any) -> dict[str, float | None]:
    """The served customer value of a prediction, when the model serves one (else Nones)."""
    value = getattr(prediction, "customer_value", None) or {}
    return {name: (None if value.get(name) is None else float(value[name]))
            for name in CUSTOMER_VALUE_FIELDS}


def intent_score(
    session: Session,
    closed: bool,
    text: str,
    prediction: Prediction,
    latency_ms: float,
    now_ms: int,
    features: list[float] | None = None,
    trigger: Trigger = "event",
    as_of: int | None = None,
    silence_days: float | None = None,
    network: bool | None = None,
) -> IntentScore:
    """One score record. `trigger`, `as_of` (default: the session's end) and `silence_days`
    are what `batching.ToScore` says about the scoring; `network`, whether the text network
    ran for it (False: the stacker alone, on the outputs kept for the same text)."""
    as_of = session["end"] if as_of is None else as_of
    return IntentScore(
        prediction_id=prediction_id(session, prediction.model_version, trigger, as_of),
        user_id=session["user_id"],
        session_id=session["session_id"],
        closed=closed,
        trigger=trigger,
        as_of=as_of,
        silence_days=silence_days,
        window=Window(
            start=session["start"],
            end=session["end"],
            n_events=session["n_events"],
            last_event_id=session["last_event_id"],
        ),
        text=text,
        features=None if features is None else FeatureRow(
            schema_version=FEATURE_SCHEMA_VERSION, values=features),
        model=ModelRef(name=prediction.model_name, version=prediction.model_version),
        strength=HeadScore(label=prediction.strength_label, probs=prediction.strength),
        intent_type=HeadScore(label=prediction.intent_type_label, probs=prediction.intent_type),
        churn=prediction.churn,
        **customer_value(prediction),
        network=network,
        latency_ms=round(latency_ms, 3),
        scored_at=now_ms,
    )


def dead_letter(
    raw: bytes | None, key: bytes | None, rejection: Rejection, source: DeadLetterSource,
    privacy: PrivacyPolicy = DEFAULT_PRIVACY,
) -> DeadLetter:
    size = len(raw or b"")
    raw = protect_raw((raw or b"")[:RAW_KEEP_BYTES], privacy)
    detail = scrub_text(rejection.detail) if privacy.scrub_pii else rejection.detail
    if key is not None and privacy.pseudonym_key is not None:
        # The key of a valid event is its user id: give it the pseudonym that event would get.
        key = pseudonymise(key.decode("utf-8", "replace"), privacy.pseudonym_key).encode()
    return DeadLetter(
        reason=rejection.reason,
        detail=detail,
        source=source,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        raw_b64=base64.b64encode(raw).decode(),
        raw_bytes=size,
        raw_truncated=size > RAW_KEEP_BYTES,
        raw_preview=raw[: RAW_PREVIEW_CHARS * 4].decode("utf-8", "replace")[:RAW_PREVIEW_CHARS],
        raw_scrubbed=protects_raw(privacy),
    )


# Session text and user ids are already scrubbed and pseudonymised when they reach the scorer.
_ALREADY_PROTECTED = PrivacyPolicy(scrub_pii=True, pseudonym_key=None)


def scoring_failed(
    session: Session, text: str, error: str, source: DeadLetterSource
) -> DeadLetter:
    """A session the model could not score, as a dead letter carrying its rendered text.

    `source` is the session's latest input record, so an operator can find its events."""
    rejection = Rejection(
        "scoring_failed",
        f"session {session['session_id']} ({session['n_events']} events) could not be scored: "
        f"{error}",
    )
    return dead_letter(text.encode(), session["user_id"].encode(), rejection, source,
                       _ALREADY_PROTECTED)


def encode(record: BaseModel) -> bytes:
    return orjson.dumps(record.model_dump(mode="json"))

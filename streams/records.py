"""Output records: `intent.scores` and the dead-letter envelope. Pure codecs, versioned.

Each record type is a pydantic model, so the JSON Schema published in `streams/schemas/` and
the bytes on the topic come from one definition. Ids are deterministic (derived from inputs,
never from the clock) so at-least-once redelivery produces the same ids and consumers can dedup.
"""

from __future__ import annotations

import base64
import hashlib
from typing import TYPE_CHECKING, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from streams.events import Rejection
from streams.sessions import Session

if TYPE_CHECKING:
    from inference.client import Prediction

SCORE_SCHEMA_VERSION = 1
DLQ_SCHEMA_VERSION = 1
RAW_PREVIEW_CHARS = 1000


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


class IntentScore(BaseModel):
    """One scoring of one user's session (topic `intent.scores`, key = user_id)."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = SCORE_SCHEMA_VERSION
    prediction_id: str = Field(description="stable across redelivery: session, state and model")
    user_id: str
    session_id: str
    closed: bool = Field(description="true for the final scoring of a session a later one closed")
    window: Window
    text: str = Field(description="the rendered session text the model saw")
    model: ModelRef
    strength: HeadScore
    intent_type: HeadScore
    churn: float = Field(ge=0, le=1, description="probability of churn")
    latency_ms: float = Field(description="Triton round trip of the batch this score was in")
    scored_at: int = Field(description="wall clock, epoch ms (not part of replay determinism)")


class DeadLetterSource(BaseModel):
    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int
    timestamp: int | None = None


class DeadLetter(BaseModel):
    """A rejected input (topic `shop.events.dlq`): the exact raw bytes and why."""

    model_config = ConfigDict(frozen=True)

    schema_version: Literal[1] = DLQ_SCHEMA_VERSION
    reason: str = Field(description="stable code: not_json, invalid_field, late_event, …")
    detail: str
    source: DeadLetterSource
    key_b64: str | None
    raw_b64: str = Field(description="the original message value, base64")
    raw_preview: str = Field(description="the value as UTF-8 (replacement chars), truncated")


def prediction_id(session: Session, model_version: int) -> str:
    state = f"{session['session_id']}\x00{session['n_events']}\x00{session['last_event_id']}"
    digest = hashlib.blake2b(f"{state}\x00{model_version}".encode(), digest_size=12)
    return digest.hexdigest()


def intent_score(
    session: Session,
    closed: bool,
    text: str,
    prediction: Prediction,
    latency_ms: float,
    now_ms: int,
) -> IntentScore:
    return IntentScore(
        prediction_id=prediction_id(session, prediction.model_version),
        user_id=session["user_id"],
        session_id=session["session_id"],
        closed=closed,
        window=Window(
            start=session["start"],
            end=session["end"],
            n_events=session["n_events"],
            last_event_id=session["last_event_id"],
        ),
        text=text,
        model=ModelRef(name=prediction.model_name, version=prediction.model_version),
        strength=HeadScore(label=prediction.strength_label, probs=prediction.strength),
        intent_type=HeadScore(label=prediction.intent_type_label, probs=prediction.intent_type),
        churn=prediction.churn,
        latency_ms=round(latency_ms, 3),
        scored_at=now_ms,
    )


def dead_letter(
    raw: bytes | None, key: bytes | None, rejection: Rejection, source: DeadLetterSource
) -> DeadLetter:
    raw = raw or b""
    return DeadLetter(
        reason=rejection.reason,
        detail=rejection.detail,
        source=source,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        raw_b64=base64.b64encode(raw).decode(),
        raw_preview=raw[: RAW_PREVIEW_CHARS * 4].decode("utf-8", "replace")[:RAW_PREVIEW_CHARS],
    )


def encode(record: BaseModel) -> bytes:
    return orjson.dumps(record.model_dump(mode="json"))

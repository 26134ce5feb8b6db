"""The input contract: one JSON event per message on `shop.events`, keyed by user id.

Pure: raw bytes in, a valid `ShopEvent` or a `Rejection` (reason code + detail) out. No Faust,
no I/O, so the same function validates live traffic, replays and fuzz tests. The JSON Schema in
`streams/runtime/schemas/shop_event.v1.json` is generated from `ShopEvent`
(see `streams.runtime.schema_files`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from streams.core.privacy import DEFAULT_PRIVACY, PrivacyPolicy, pseudonymise, scrub_text

EventType = Literal[
    "view",
    "click",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "purchase",
    "support_message",
    "review",
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)  # the same names, as a tuple to iterate
ITEM_TYPES = frozenset({"view", "click", "add_to_cart", "remove_from_cart", "purchase"})

# Event time must be plausible: outside the bounds is a producer bug (seconds for ms, say), not
# a shopper. The defaults suit live traffic; a history from any year sets its own
# (INTENTSTREAM_MIN_EVENT_TIME / MAX_EVENT_TIME).
MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01
DEFAULT_TS_BOUNDS = (MIN_TS_MS, MAX_TS_MS)

Id = Annotated[str, StringConstraints(min_length=1, max_length=128, strip_whitespace=True)]
ShortText = Annotated[str, StringConstraints(max_length=300)]


def _number(value: Any) -> Any:
    """Strict floats that also take ints (JSON has one number type); no bools, no NaN."""
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be finite")
    return value


class Item(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    id: Id
    title: ShortText | None = None
    category: Annotated[str, StringConstraints(max_length=100)] | None = None
    price: Annotated[float, Field(ge=0, le=10_000_000)] | None = None

    _numbers = field_validator("price", mode="before")(lambda cls, value: _number(value))


Rate = Annotated[float, Field(ge=0, le=1)]
Label = Annotated[str, StringConstraints(max_length=64, strip_whitespace=True)] | int


class PageAnalytics(BaseModel):
    """What a web-analytics tool reports for the page viewed (Google Analytics' names)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    bounce_rate: Rate | None = Field(None, description="share of visits that left at once")
    exit_rate: Rate | None = Field(None, description="share of page views that were the last")
    page_value: Annotated[float, Field(ge=0, le=10_000_000)] | None = Field(
        None, description="average value of the page to visits that led to a transaction")

    _numbers = field_validator("bounce_rate", "exit_rate", "page_value", mode="before")(
        lambda cls, value: _number(value))


class VisitContext(BaseModel):
    """Where the visit came from and on what: labels or the analytics tool's numeric codes."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    traffic_source: Label | None = None
    visitor_type: Label | None = Field(None, description="e.g. new, returning")
    device: Label | None = None
    browser: Label | None = None
    os: Label | None = None
    region: Label | None = None
    special_day: Rate | None = Field(None, description="closeness to a special day, 0..1")

    _numbers = field_validator("special_day", mode="before")(lambda cls, value: _number(value))


class ShopEvent(BaseModel):
    """One shopper action. `ts` is event time (epoch ms or ISO-8601), normalised to epoch ms."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    event_id: Id
    user_id: Id
    ts: int = Field(description="event time: epoch milliseconds, or an ISO-8601 string")
    type: EventType
    item: Item | None = None
    query: Annotated[str, StringConstraints(max_length=500)] | None = None
    text: Annotated[str, StringConstraints(max_length=4000)] | None = None
    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    page: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        None, description="page kind for page-level analytics (e.g. product, informational)"
    )
    duration_s: Annotated[float, Field(ge=0, le=86_400)] | None = None
    analytics: PageAnalytics | None = Field(None, description="the page view's analytics")
    context: VisitContext | None = Field(None, description="the visit's context")

    @field_validator("ts", mode="before")
    @classmethod
    def _event_time_ms(cls, value: Any, info: ValidationInfo) -> int:
        bounds = (info.context or {}).get("ts_bounds", DEFAULT_TS_BOUNDS)
        return parse_event_time(value, bounds)

    @field_validator("duration_s", mode="before")
    @classmethod
    def _duration_number(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        return value

    def check_type_fields(self) -> str | None:
        """The fields each type needs; None when complete, else what is missing."""
        if self.type in ITEM_TYPES and self.item is None and self.page is None:
            return f"'{self.type}' needs 'item' (or 'page')"
        if self.type == "search" and not (self.query and self.query.strip()):
            return "'search' needs a non-empty 'query'"
        if self.type in ("support_message", "review") and not (self.text and self.text.strip()):
            return f"'{self.type}' needs a non-empty 'text'"
        return None


def parse_event_time(value: Any, bounds: tuple[int, int] = DEFAULT_TS_BOUNDS) -> int:
    """Epoch milliseconds from an int (ms) or an ISO-8601 string, within `bounds` [lo, hi);
    raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("ts must be epoch ms or ISO-8601")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        ms = int(value)
    elif isinstance(value, str) and 0 < len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError("ts is not ISO-8601") from exc
        if parsed.tzinfo is None:  # event time without a zone is read as UTC, never local
            parsed = parsed.replace(tzinfo=UTC)
        ms = int(parsed.timestamp() * 1000)
    else:
        raise ValueError("ts must be epoch ms or ISO-8601")
    lo, hi = bounds
    if not lo <= ms < hi:
        raise ValueError(f"ts is outside {_day(lo)}..{_day(hi)} (seconds instead of ms?)")
    return ms


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date().isoformat()


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an input record cannot be processed; it goes to the DLQ with the raw bytes."""

    reason: str  # stable machine-readable code
    detail: str  # for humans


def parse_event(
    raw: bytes | None, key: bytes | None, max_bytes: int,
    privacy: PrivacyPolicy = DEFAULT_PRIVACY, ts_bounds: tuple[int, int] = DEFAULT_TS_BOUNDS,
) -> ShopEvent | Rejection:
    """Validate one raw message. Never raises: every failure is a `Rejection`.

    A valid event comes back with the privacy policy applied (`apply_privacy`), so nothing
    downstream ever sees its raw free text or, with a pseudonym key, its raw user id."""
    if raw is None or len(raw) == 0:
        return Rejection("empty", "message has no value")
    if len(raw) > max_bytes:
        return Rejection("too_large", f"{len(raw)} bytes > limit {max_bytes}")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return Rejection("not_json", _short(str(exc)))
    if not isinstance(doc, dict):
        return Rejection("not_object", f"top-level JSON is {type(doc).__name__}, not an object")
    try:
        event = ShopEvent.model_validate(doc, context={"ts_bounds": ts_bounds})
    except ValidationError as exc:
        return Rejection(_reason_code(exc), _describe(exc))
    except (ValueError, TypeError, RecursionError) as exc:  # defensive: pydantic internals
        return Rejection("invalid", _short(repr(exc)))
    missing = event.check_type_fields()
    if missing:
        return Rejection("missing_field", missing)
    if key is None or key.decode("utf-8", "replace") != event.user_id:
        # Sessions are partitioned by user: an event on another user's partition would split
        # that user's session across workers.
        return Rejection("key_mismatch", "message key must equal user_id")
    return apply_privacy(event, privacy)


# Fields that may carry what a shopper typed (ids are not scrubbed: docs/privacy.md).
FREE_TEXT_FIELDS = ("query", "text", "page")
ITEM_TEXT_FIELDS = ("title", "category")


def apply_privacy(event: ShopEvent, privacy: PrivacyPolicy) -> ShopEvent:
    """The event with its free text scrubbed and its user id pseudonymised, as configured.

    Runs after the key check, which compares the raw key with the raw user id."""
    update: dict[str, Any] = {}
    if privacy.scrub_pii:
        update.update(_scrubbed(event, FREE_TEXT_FIELDS))
        if event.item is not None and (item := _scrubbed(event.item, ITEM_TEXT_FIELDS)):
            update["item"] = event.item.model_copy(update=item)
    if privacy.pseudonym_key is not None:
        update["user_id"] = pseudonymise(event.user_id, privacy.pseudonym_key)
    return event.model_copy(update=update) if update else event


def _scrubbed(model: BaseModel, fields: tuple[str, ...]) -> dict[str, str]:
    """The fields whose scrubbed value differs (so an event without PII is not copied)."""
    out = {}
    for name in fields:
        value = getattr(model, name)
        if value is not None and (clean := scrub_text(value)) != value:
            out[name] = clean
    return out


def not_from_the_future(
    event: ShopEvent, message_ts_ms: int | None, max_future_ms: int
) -> ShopEvent | Rejection:
    """An event dated well after its message was produced is a producer bug. Absorbed, it
    would open a session in the future (the worker) or move event time past every pending
    prediction (the sidecar); both apps reject it the same way."""
    if message_ts_ms is None or event.ts <= message_ts_ms + max_future_ms:
        return event
    return Rejection(
        "future_timestamp",
        f"event time {event.ts} is more than {max_future_ms} ms after the message's "
        f"timestamp {message_ts_ms}",
    )


def _reason_code(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = first.get("loc", ())
    if first.get("type") == "missing":
        return "missing_field"
    if loc and loc[0] == "type":
        return "unknown_type"
    if loc and loc[0] == "ts":
        return "bad_timestamp"
    return "invalid_field"


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return _short("; ".join(parts))


def _short(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

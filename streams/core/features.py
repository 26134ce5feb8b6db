"""Behaviour features of a session and a user's lifetime profile, in event time. Pure.

Both are kept as running aggregates in the user's state (a changelog-backed table), updated by
`streams.core.sessions.absorb` event by event, so the worker, replay and training compute them
with the same code from the same events, and a session's numbers cover every event it
absorbed, not only the newest ones it keeps for its text. Everything is JSON-able and bounded.

`feature_vector(session, profile, as_of)` turns them into the model's FEATURES input, in the
order of `FEATURE_NAMES`, under schema `FEATURE_SCHEMA_VERSION`; `feature_schema()` describes
each one (name, unit, encoding) and is saved with every model version together with the
normalisation the model was trained with. Change a feature and the version goes up.

Encodings: counts, seconds, money and rates as numbers; a visit context value (traffic source,
browser, region, ...) that is a number is kept as that number (real clickstreams code them so:
UCI's TrafficType 1-20), any other value becomes a stable hash code in [1000, 2000); a missing
value is -1. Days since an event that never happened is -1 too.
"""

from __future__ import annotations

import functools
import hashlib
from datetime import UTC, datetime
from typing import Any, TypedDict

from streams.core.timeunits import DAY_MS, MINUTE_MS

FEATURE_SCHEMA_VERSION = 2  # 2: silence_days, and the profile's days taken as of the score
MAX_DISTINCT = 64  # distinct items/categories remembered per session: counts are exact below
PAGE_KINDS = ("administrative", "informational", "product")  # and "other"
CONTEXT_FIELDS = ("traffic_source", "visitor_type", "device", "browser", "os", "region")
EVENT_KINDS = ("view", "click", "search", "add_to_cart", "remove_from_cart", "purchase",
               "support_message", "review")
CHECKOUT_PAGES = frozenset({"cart", "checkout", "payment"})
MISSING = -1.0


class SessionStats(TypedDict):
    kinds: dict[str, int]  # events by type
    pages: dict[str, list[float]]  # page kind -> [views, seconds]
    items: list[str]  # short hashes of distinct item ids (at most MAX_DISTINCT)
    categories: list[str]
    cart_value: float  # added minus removed, at the items' prices
    max_price: float
    checkout: bool  # a cart/checkout page or a purchase was reached
    refinements: int  # searches right after a search
    previous: str  # the type of the last event absorbed (arrival order)
    dwell_s: float
    analytics: list[float]  # [page views with analytics, bounce sum, exit sum, value sum]
    context: dict[str, Any]  # the visit's context, latest value of each field
    special_day: float


class Profile(TypedDict):
    first_seen: int
    last_seen: int
    sessions: int
    orders: int
    spend: float
    first_order: int | None
    last_order: int | None
    cart_adds: int
    abandoned_carts: int  # sessions closed with a cart add and no purchase
    complaints: int  # support messages


def empty_stats() -> SessionStats:
    return {"kinds": {}, "pages": {}, "items": [], "categories": [], "cart_value": 0.0,
            "max_price": 0.0, "checkout": False, "refinements": 0, "previous": "",
            "dwell_s": 0.0, "analytics": [0, 0.0, 0.0, 0.0], "context": {},
            "special_day": MISSING}


def copy_stats(stats: SessionStats) -> SessionStats:
    """A copy `add_to_stats` can edit without touching the original: each container it
    changes in place is copied (a fraction of `copy.deepcopy`'s cost, once per user a batch)."""
    return {**stats, "kinds": dict(stats["kinds"]),
            "pages": {page: list(views) for page, views in stats["pages"].items()},
            "items": list(stats["items"]), "categories": list(stats["categories"]),
            "analytics": list(stats["analytics"]), "context": dict(stats["context"])}


def empty_profile(ts: int) -> Profile:
    return {"first_seen": ts, "last_seen": ts, "sessions": 0, "orders": 0, "spend": 0.0,
            "first_order": None, "last_order": None, "cart_adds": 0, "abandoned_carts": 0,
            "complaints": 0}


def add_to_stats(stats: SessionStats, doc: dict[str, Any]) -> None:
    """Count one compact event (`sessions.compact_event`) into its session's aggregates."""
    kind = doc["type"]
    stats["kinds"][kind] = stats["kinds"].get(kind, 0) + 1
    if kind == "view" and doc.get("item") is None:
        page = doc.get("page", "")
        bucket = page if page in PAGE_KINDS else "other"
        views = stats["pages"].setdefault(bucket, [0, 0.0])
        views[0] += 1
        views[1] += doc.get("duration_s") or 0.0
    stats["dwell_s"] += doc.get("duration_s") or 0.0
    item = doc.get("item")
    if item:
        _remember(stats["items"], item["id"])
        if item.get("category"):
            _remember(stats["categories"], item["category"])
        price = item.get("price")
        if price is not None:
            stats["max_price"] = max(stats["max_price"], price)
            if kind == "add_to_cart":
                stats["cart_value"] += price
            elif kind == "remove_from_cart":
                stats["cart_value"] -= price
    if kind == "purchase" or doc.get("page") in CHECKOUT_PAGES:
        stats["checkout"] = True
    if kind == "search" and stats["previous"] == "search":
        stats["refinements"] += 1
    stats["previous"] = kind
    analytics = doc.get("analytics")
    if analytics:
        ga = stats["analytics"]
        ga[0] += 1
        ga[1] += analytics.get("bounce_rate") or 0.0
        ga[2] += analytics.get("exit_rate") or 0.0
        ga[3] += analytics.get("page_value") or 0.0
    context = doc.get("context")
    if context:
        for name in CONTEXT_FIELDS:
            if context.get(name) is not None:
                stats["context"][name] = context[name]
        if context.get("special_day") is not None:
            stats["special_day"] = context["special_day"]


def _remember(seen: list[str], value: str) -> None:
    digest = hashlib.blake2b(value.encode(), digest_size=4).hexdigest()
    if digest not in seen and len(seen) < MAX_DISTINCT:
        seen.append(digest)


def add_to_profile(profile: Profile, doc: dict[str, Any]) -> None:
    """Count one event into the user's lifetime profile."""
    ts, kind = doc["ts"], doc["type"]
    profile["first_seen"] = min(profile["first_seen"], ts)
    profile["last_seen"] = max(profile["last_seen"], ts)
    if kind == "purchase":
        profile["orders"] += 1
        price = (doc.get("item") or {}).get("price")
        profile["spend"] += price or 0.0
        first, last = profile["first_order"], profile["last_order"]
        profile["first_order"] = ts if first is None else min(first, ts)
        profile["last_order"] = ts if last is None else max(last, ts)
    elif kind == "add_to_cart":
        profile["cart_adds"] += 1
    elif kind == "support_message":
        profile["complaints"] += 1


def open_session_in_profile(profile: Profile) -> None:
    profile["sessions"] += 1


def close_session_in_profile(profile: Profile, stats: SessionStats) -> None:
    if stats["kinds"].get("add_to_cart") and not stats["kinds"].get("purchase"):
        profile["abandoned_carts"] += 1


# --- the model's FEATURES input ----------------------------------------------------------------

# (name, unit/encoding); the order is the vector's.
FEATURES: tuple[tuple[str, str], ...] = (
    ("n_events", "count"),
    ("span_min", "minutes"),
    *((f"n_{kind}", "count") for kind in EVENT_KINDS),
    *(f for kind in PAGE_KINDS for f in ((f"pages_{kind}", "count"),
                                           (f"pages_{kind}_s", "seconds"))),
    ("pages_other", "count"),
    ("distinct_items", "count, exact below 64"),
    ("distinct_categories", "count, exact below 64"),
    ("cart_value", "currency"),
    ("max_price_viewed", "currency"),
    ("checkout_reached", "0/1"),
    ("search_refinements", "count"),
    ("dwell_s", "seconds"),
    ("bounce_rate", "mean over page views with analytics, -1 if none"),
    ("exit_rate", "mean over page views with analytics, -1 if none"),
    ("page_value", "mean over page views with analytics, -1 if none"),
    ("special_day", "0..1 closeness to a special day, -1 if unknown"),
    ("month", "1..12 of the session start, UTC"),
    ("weekend", "0/1 session start on Saturday/Sunday, UTC"),
    ("hour", "0..23 of the session start, UTC"),
    *((f"ctx_{name}", "number as given, else hash code in [1000, 2000), -1 if missing")
      for name in CONTEXT_FIELDS),
    ("profile_sessions", "count, this one included"),
    ("profile_orders", "count"),
    ("profile_spend", "currency"),
    ("profile_mean_order", "currency, 0 if no order"),
    ("profile_days_since_last_order", "days before the score's as-of time, -1 if none"),
    ("profile_mean_days_between_orders", "days, -1 with fewer than two orders"),
    ("profile_days_since_first_seen", "days before the score's as-of time"),
    ("profile_abandoned_carts", "count of closed sessions"),
    ("profile_cart_adds_not_ordered", "count, cart adds minus orders, >= 0"),
    ("profile_complaints", "count of support messages"),
    ("silence_days", "days from the session's last event to the score's as-of time (0 live)"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(name for name, _ in FEATURES)
N_FEATURES = len(FEATURE_NAMES)


def feature_schema() -> dict[str, Any]:
    """Names, units and encodings of FEATURES, as saved with a model version."""
    return {"version": FEATURE_SCHEMA_VERSION,
            "features": [{"name": name, "unit": unit} for name, unit in FEATURES]}


def feature_vector(session: dict[str, Any], profile: Profile | None,
                   as_of: int | None = None) -> list[float]:
    """The FEATURES row of a session (its running stats) and its user's profile, as of an
    event time: the session's end (live scoring, the default) or later, for a user who has
    been silent since (the profile's days and `silence_days` grow with it)."""
    stats: SessionStats = session.get("stats") or empty_stats()
    kinds, pages = stats["kinds"], stats["pages"]
    start, end = session["start"], session["end"]
    started = datetime.fromtimestamp(start / 1000, tz=UTC)
    n_ga, bounce, exit_, value = stats["analytics"]
    out: list[float] = [
        float(session["n_events"]),
        (end - start) / MINUTE_MS,
        *(float(kinds.get(kind, 0)) for kind in EVENT_KINDS),
        *(float(v) for kind in PAGE_KINDS for v in pages.get(kind, [0, 0.0])),
        float(pages.get("other", [0, 0.0])[0]),
        float(len(stats["items"])),
        float(len(stats["categories"])),
        float(stats["cart_value"]),
        float(stats["max_price"]),
        1.0 if stats["checkout"] else 0.0,
        float(stats["refinements"]),
        float(stats["dwell_s"]),
        bounce / n_ga if n_ga else MISSING,
        exit_ / n_ga if n_ga else MISSING,
        value / n_ga if n_ga else MISSING,
        float(stats["special_day"]),
        float(started.month),
        1.0 if started.weekday() >= 5 else 0.0,
        float(started.hour),
        *(_code(stats["context"].get(name)) for name in CONTEXT_FIELDS),
    ]
    now = end if as_of is None else max(end, as_of)
    out += _profile_features(profile, now)
    out.append((now - end) / DAY_MS)
    return out


def _profile_features(profile: Profile | None, now: int) -> list[float]:
    if profile is None:
        return [0.0, 0.0, 0.0, 0.0, MISSING, MISSING, 0.0, 0.0, 0.0, 0.0]
    orders = profile["orders"]
    first, last = profile["first_order"], profile["last_order"]
    return [
        float(profile["sessions"]),
        float(orders),
        float(profile["spend"]),
        profile["spend"] / orders if orders else 0.0,
        (now - last) / DAY_MS if last is not None else MISSING,
        (last - first) / DAY_MS / (orders - 1) if orders > 1 and first is not None
        and last is not None else MISSING,
        max(0, now - profile["first_seen"]) / DAY_MS,
        float(profile["abandoned_carts"]),
        float(max(0, profile["cart_adds"] - orders)),
        float(profile["complaints"]),
    ]


def _code(value: Any) -> float:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    return _text_code(str(value).strip())


@functools.lru_cache(maxsize=4096)  # a visit context has few distinct values: hash each once
def _text_code(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        digest = hashlib.blake2b(text.lower().encode(), digest_size=4).digest()
        return 1000.0 + int.from_bytes(digest, "big") % 1000

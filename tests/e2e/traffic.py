"""Deterministic test traffic: valid sessions for many users, plus malformed records."""

from __future__ import annotations

import random
from dataclasses import dataclass

import orjson

from streams.core.timeunits import HOUR_MS

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CATALOG = [
    ("Salomon Speedcross 6", "shoes", 129.99), ("Garmin Forerunner 265", "watches", 449.0),
    ("Osprey Talon 22", "backpacks", 140.0), ("Black Diamond Spot 400", "headlamps", 49.95),
    ("MSR PocketRocket 2", "stoves", 54.95), ("Patagonia Nano Puff", "jackets", 239.0),
]
QUERIES = ["trail running shoes", "gps watch", "daypack 20l", "headlamp", "camping stove"]


@dataclass(frozen=True)
class Traffic:
    records: list[tuple[bytes | None, bytes]]  # (key, value) in produce order
    valid: list[dict]  # the valid events, as produced
    malformed: list[tuple[bytes | None, bytes]]


def browse_event(rng: random.Random, user: str, n: int, ts: int) -> dict:
    """The user's n-th event, at `ts`: a valid view, click, search or add-to-cart. Item ids
    follow the catalog position, so the same product has the same id in every run."""
    kind = rng.choice(["view", "view", "click", "search", "add_to_cart"])
    doc: dict = {"event_id": f"{user}-e{n}", "user_id": user, "ts": ts, "type": kind}
    if kind == "search":
        doc["query"] = rng.choice(QUERIES)
    else:
        title, category, price = product = rng.choice(CATALOG)
        doc["item"] = {"id": f"sku-{CATALOG.index(product)}", "title": title,
                       "category": category, "price": price}
    return doc


def user_events(rng: random.Random, user: str, n: int) -> list[dict]:
    ts = T0 + rng.randrange(0, HOUR_MS)
    events = []
    for i in range(n):
        ts += rng.randrange(5_000, 240_000)  # well within the inactivity gap
        events.append(browse_event(rng, user, i, ts))
    return events


def malformed_records(rng: random.Random, n: int) -> list[tuple[bytes | None, bytes]]:
    shapes = [
        lambda i: (b"u-bad", b"{not json"),
        lambda i: (b"u-bad", b"\xff\xfe\x00\x01"),
        lambda i: (b"u-bad", b"[1,2,3]"),
        lambda i: (b"u-bad", orjson.dumps({"event_id": f"x{i}", "user_id": "u-bad",
                                           "ts": T0, "type": "teleport"})),
        lambda i: (b"u-bad", orjson.dumps({"event_id": f"x{i}", "ts": T0, "type": "view"})),
        lambda i: (b"u-bad", orjson.dumps({"event_id": f"x{i}", "user_id": "u-bad",
                                           "ts": "not a time", "type": "search", "query": "x"})),
        lambda i: (b"u-bad", orjson.dumps({"event_id": f"x{i}", "user_id": "u-bad", "ts": T0,
                                           "type": "search", "query": "x" * 50_000})),
        lambda i: (None, orjson.dumps({"event_id": f"x{i}", "user_id": "u-nokey", "ts": T0,
                                       "type": "search", "query": "x"})),
    ]
    return [shapes[i % len(shapes)](i) for i in range(n)]


def make_traffic(n_users: int, events_per_user: tuple[int, int], n_malformed: int,
                 seed: int = 7) -> Traffic:
    rng = random.Random(seed)
    per_user = [user_events(rng, f"user-{u:04d}", rng.randint(*events_per_user))
                for u in range(n_users)]
    valid = sorted((e for events in per_user for e in events), key=lambda e: e["ts"])
    records = [(e["user_id"].encode(), orjson.dumps(e)) for e in valid]
    malformed = malformed_records(rng, n_malformed)
    for rec in malformed:  # interleave the bad with the good
        records.insert(rng.randrange(len(records) + 1), rec)
    return Traffic(records=records, valid=valid, malformed=malformed)

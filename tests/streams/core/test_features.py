"""Session behaviour features and the user profile: running aggregates over every event, the
same whichever path (live micro-batches with redelivery, or one pass as training does)."""

from __future__ import annotations

import random

import orjson
import pytest

from streams.core.batching import plan_batch
from streams.core.events import Rejection, ShopEvent, parse_event
from streams.core.features import (
    FEATURE_NAMES,
    N_FEATURES,
    add_to_stats,
    copy_stats,
    empty_stats,
    feature_schema,
)
from streams.core.raw_message import RawMessage
from streams.core.sessions import (
    SessionPolicy,
    UserState,
    absorb,
    compact_event,
    empty_state,
    session_features,
)

MIN = 60_000
DAY = 24 * 60 * MIN
T0 = 1_700_000_000_000
POLICY = SessionPolicy(gap_ms=30 * MIN, max_span_ms=240 * MIN, max_events=5, max_chars=500)


def doc(n: int, ts: int, kind: str = "view", user: str = "u1", **extra) -> dict:
    base = {"event_id": f"{user}-{n}", "user_id": user, "ts": ts, "type": kind}
    if kind in ("view", "click", "add_to_cart", "remove_from_cart", "purchase") and (
            "item" not in extra and "page" not in extra):
        extra["item"] = {"id": f"sku-{n % 7}", "category": f"c{n % 3}", "price": 10.0 + n}
    if kind == "search":
        extra.setdefault("query", "tent")
    return {**base, **extra}


def features(state: UserState, session) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, session_features(state, session), strict=True))


def run_one_pass(docs: list[dict]) -> UserState:
    state = empty_state()
    for d in docs:
        absorb(state, ShopEvent.model_validate(d), POLICY)
    return state


def test_session_counts_cover_every_event_not_only_the_kept_ones():
    docs = [doc(i, T0 + i * MIN) for i in range(40)] + [
        doc(40, T0 + 40 * MIN, "add_to_cart"), doc(41, T0 + 41 * MIN, "search"),
        doc(42, T0 + 42 * MIN, "search", query="tent 2p"), doc(43, T0 + 43 * MIN, "purchase")]
    state = run_one_pass(docs)
    session = state["current"]
    assert len(session["events"]) == 5  # kept for the text
    f = features(state, session)
    assert f["n_events"] == 44 and f["n_view"] == 40 and f["n_search"] == 2
    assert f["search_refinements"] == 1 and f["checkout_reached"] == 1
    assert f["distinct_items"] == 7 and f["distinct_categories"] == 3
    assert f["max_price_viewed"] == 10.0 + 43 and f["cart_value"] == 50.0
    assert f["span_min"] == 43


def test_profile_orders_recency_and_abandoned_carts():
    docs = [doc(0, T0, "purchase"), doc(1, T0 + 10 * DAY, "purchase"),
            doc(2, T0 + 20 * DAY, "add_to_cart"),  # a session that ends without an order
            doc(3, T0 + 30 * DAY, "support_message", text="where is my parcel")]
    state = run_one_pass(docs)
    f = features(state, state["current"])
    assert f["profile_sessions"] == 4 and f["profile_orders"] == 2
    assert f["profile_spend"] == 10.0 + 11.0 and f["profile_mean_order"] == 10.5
    assert f["profile_days_since_last_order"] == 20
    assert f["profile_mean_days_between_orders"] == 10
    assert f["profile_abandoned_carts"] == 1 and f["profile_complaints"] == 1
    assert f["profile_days_since_first_seen"] == 30


def test_a_closed_session_keeps_the_profile_as_of_its_end():
    state = run_one_pass([doc(0, T0, "purchase"), doc(1, T0 + DAY, "purchase")])
    (closed,) = state["pending"]
    assert features(state, closed)["profile_orders"] == 1  # not the next session's order
    assert features(state, state["current"])["profile_orders"] == 2


def history(rng: random.Random, user: str) -> list[dict]:
    out, ts = [], T0
    for n in range(rng.randint(20, 120)):
        ts += rng.choice([MIN, 2 * MIN, 40 * MIN, 3 * DAY])
        out.append(doc(n, ts, rng.choice(["view", "view", "search", "add_to_cart",
                                          "purchase"]), user=user))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_live_micro_batches_with_redelivery_compute_what_training_computes(seed):
    """No training/serving skew: the worker's batches (any size, with a rewind) and one pass
    over the same events (training's path) give the same features for every session."""
    rng = random.Random(seed)
    users = {f"u{u}": history(rng, f"u{u}") for u in range(4)}
    log = sorted((d for docs in users.values() for d in docs), key=lambda d: d["ts"])
    messages = [RawMessage(d["user_id"].encode(), orjson.dumps(d), "ev", 0, i, None)
                for i, d in enumerate(log)]
    table: dict[str, UserState] = {}
    live: dict[tuple[str, str], list[float]] = {}
    position = 0
    while position < len(messages):
        size = rng.randint(1, 30)
        plan = plan_batch(messages[position: position + size], table.get, POLICY, 16_384)
        for item in plan.to_score:
            live[(item.session["user_id"], item.session["session_id"])] = item.features
        table.update({u: {**s, "pending": []} for u, s in plan.states.items()})
        position = position + size if rng.random() > 0.2 else max(0, position - 10)
    for user, docs in users.items():
        state = run_one_pass(docs)
        for session in [*state["pending"], state["current"]]:
            assert live[(user, session["session_id"])] == session_features(state, session)


def test_the_event_contract_takes_page_analytics_and_visit_context():
    raw = orjson.dumps(doc(0, T0, "view", page="product", item=None, duration_s=12,
                           analytics={"bounce_rate": 0, "exit_rate": 0.05, "page_value": 12},
                           context={"traffic_source": 2, "visitor_type": "Returning_Visitor",
                                    "region": "north", "special_day": 0.4}))
    event = parse_event(raw, b"u1", 16_384)
    assert not isinstance(event, Rejection)
    state = empty_state()
    absorb(state, event, POLICY)
    f = features(state, state["current"])
    assert (f["bounce_rate"], f["exit_rate"], f["page_value"]) == (0, 0.05, 12)
    assert f["ctx_traffic_source"] == 2 and 1000 <= f["ctx_region"] < 2000
    assert f["special_day"] == 0.4 and f["pages_product"] == 1 and f["pages_product_s"] == 12
    bad = orjson.dumps(doc(1, T0, "view", analytics={"bounce_rate": 1.5}))
    assert parse_event(bad, b"u1", 16_384).reason == "invalid_field"


def test_event_time_bounds_are_a_setting_not_a_constant():
    old = orjson.dumps(doc(0, 788_918_400_000, "purchase"))  # 1995-01-01
    assert parse_event(old, b"u1", 16_384).reason == "bad_timestamp"
    assert not isinstance(parse_event(old, b"u1", 16_384, ts_bounds=(0, 2**42)), Rejection)


def test_the_feature_schema_names_every_feature_once():
    schema = feature_schema()
    names = [f["name"] for f in schema["features"]]
    assert len(names) == len(set(names)) == N_FEATURES and schema["version"] >= 1
    state = run_one_pass([doc(0, T0)])
    assert len(session_features(state, state["current"])) == N_FEATURES


def test_a_copied_stats_dict_takes_new_events_without_changing_the_original():
    view = doc(1, T0, page="product", duration_s=12.0,
               analytics={"bounce_rate": 0.1, "exit_rate": 0.2, "page_value": 3.0},
               context={"traffic_source": "ads", "special_day": 0.4})
    stats = empty_stats()
    for d in (doc(0, T0, "add_to_cart"), view):
        add_to_stats(stats, compact_event(ShopEvent.model_validate(d)))
    before = orjson.dumps(stats)
    copied = copy_stats(stats)
    later = doc(2, T0 + MIN, page="informational", duration_s=5.0,
                analytics={"bounce_rate": 0.5, "exit_rate": 0.5, "page_value": 1.0},
                context={"traffic_source": "mail"})
    for d in (later, doc(3, T0 + 2 * MIN, "add_to_cart"), view):
        add_to_stats(copied, compact_event(ShopEvent.model_validate(d)))
    assert orjson.dumps(stats) == before  # every container the copy changed was its own
    assert copied != stats

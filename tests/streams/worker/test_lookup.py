"""Per-user lookups (streams/worker/lookup.py), the pure parts: where a user lives, the key
it is held under, the latest scores kept, the view answered, and the routing decision."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from inference.heads import Prediction
from streams.core.events import Rejection, parse_event
from streams.core.privacy import PrivacyPolicy, pseudonymise
from streams.core.records import encode, intent_score
from streams.core.sessions import SessionPolicy, UserState, absorb, empty_state, render
from streams.runtime.schema_files import SCHEMA_DIR, render_schema
from streams.worker import lookup
from streams.worker.lookup import (
    Route,
    UserView,
    input_partition,
    newest,
    owner_of,
    route,
    stored_key,
    user_id_from_path,
    user_view,
    with_score,
)
from streams.worker.timers import PartitionAnchor

T0 = 1_767_225_600_000
POLICY = SessionPolicy(gap_ms=1_800_000, max_span_ms=4 * 3_600_000, max_events=64,
                       max_chars=1200)


# Kafka's own test vectors for its default partitioner's hash (UtilsTest.testMurmur2), as
# signed 32-bit ints: the Java producer and aiokafka put a key on the same partition.
@pytest.mark.parametrize(("key", "java_murmur2"), [
    ("21", -973932308), ("foobar", -790332482), ("a-little-bit-long-string", -985981536),
    ("a-little-bit-longer-string", -1486304829), ("abc", 479470107),
])
def test_the_partition_is_kafkas_default_partitioner_on_the_raw_id(key, java_murmur2):
    for partitions in (1, 4, 6, 12):
        assert input_partition(key, partitions) == (java_murmur2 & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("user", ["user-0001", "u-42", "ünï-cødé", "p-" + "0" * 32])
def test_the_partition_is_aiokafkas_producer_choice(user):
    choose = DefaultPartitioner()
    for partitions in (3, 4, 6):
        assert input_partition(user, partitions) == choose(
            user.encode(), list(range(partitions)), list(range(partitions)))


def test_the_stored_key_is_the_pseudonym_when_configured():
    assert stored_key("u-1", PrivacyPolicy()) == "u-1"
    keyed = PrivacyPolicy(pseudonym_key=b"k")
    assert stored_key("u-1", keyed) == pseudonymise("u-1", b"k") != "u-1"


def score(session: dict, closed: bool, churn: float = 0.3, value: dict | None = None,
          trigger: str = "event") -> dict:
    text = render(session, POLICY.max_chars)
    prediction = Prediction(strength={"strong": 0.7, "medium": 0.2, "weak": 0.1},
                            intent_type={"browse": 1.0}, churn=churn,
                            model_name="intent_bert", model_version=2, customer_value=value)
    record = intent_score(session, closed, text, prediction, 1.0, T0, trigger=trigger)
    return orjson.loads(encode(record))


def state_after(user: str, n: int) -> UserState:
    state = empty_state()
    for i in range(n):
        doc = {"event_id": f"{user}-e{i}", "user_id": user, "ts": T0 + i * 60_000,
               "type": "add_to_cart" if i == 1 else "view",
               "item": {"id": f"sku-{i}", "title": "Trail shoe", "price": 50.0}}
        event = parse_event(orjson.dumps(doc), user.encode(), 16_384)
        assert not isinstance(event, Rejection)
        absorb(state, event, POLICY)
    return state


def test_the_latest_keeps_the_last_open_and_closed_score_in_topic_order():
    state = state_after("u-1", 3)
    first, second = score(state["current"], False), score(state["current"], False, churn=0.5)
    final = score(state["current"], True, trigger="session_close")
    latest = with_score(None, first)
    assert latest["open"] == first and latest["closed"] is None and newest(latest) == first
    latest = with_score(latest, final)
    assert latest["closed"] == final and latest["open"] == first and newest(latest) == final
    latest = with_score(latest, second)  # a later open score after a close: it is the newest
    assert latest["open"] == second and latest["closed"] == final and newest(latest) == second


def test_the_view_holds_scores_session_profile_and_customer_value():
    state = state_after("u-1", 3)
    value = {"p_alive": 0.8, "expected_orders": 1.5, "expected_value": 90.0}
    record = score(state["current"], False, value=value)
    view = user_view("u-1", 2, "http://w:1", state, with_score(None, record))
    assert view is not None
    doc = view.model_dump(mode="json")
    assert doc["schema_version"] == 1 and doc["user_id"] == "u-1" and doc["partition"] == 2
    assert doc["latest"]["open"] == record and doc["latest"]["closed"] is None
    assert doc["session"]["n_events"] == 3 and doc["session"]["kinds"] == {
        "view": 2, "add_to_cart": 1}
    assert doc["session"]["session_id"] == record["session_id"]
    assert doc["profile"]["first_seen"] == T0 and doc["profile"]["cart_adds"] == 1
    assert doc["customer_value"] == {**value, "prediction_id": record["prediction_id"],
                                     "as_of": record["as_of"]}
    assert "events" not in doc["session"] and "text" not in doc["session"]


def test_a_user_with_state_but_no_score_yet_is_known_and_one_with_nothing_is_not():
    view = user_view("u-1", 0, "http://w:1", state_after("u-1", 1), None)
    assert view is not None and view.latest.open is None and view.customer_value is None
    assert user_view("u-9", 0, "http://w:1", None, None) is None


def test_remember_latest_keeps_each_users_last_open_and_closed_and_sends_them_on(monkeypatch):
    state = state_after("u-1", 2)
    text = render(state["current"], POLICY.max_chars)
    prediction = Prediction(strength={"strong": 0.7, "medium": 0.2, "weak": 0.1},
                            intent_type={"browse": 1.0}, churn=0.3,
                            model_name="intent_bert", model_version=2)
    records = [intent_score(state["current"], closed, text, prediction, 1.0, T0)
               for closed in (False, True, False)]
    values = [encode(r) for r in records]
    table, sent, anchors = {}, [], []

    class Topic:  # resolves at once, as after the broker's ack
        async def send(self, key: bytes, value: bytes, partition: int) -> asyncio.Future:
            sent.append((key, value, partition))
            future = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

    def anchor_of(partition: int) -> PartitionAnchor:
        anchors.append(partition)
        return PartitionAnchor.of("shop.events", partition)

    monkeypatch.setattr(lookup, "latest_table", table)
    monkeypatch.setattr(lookup, "latest_out", Topic())
    asyncio.run(lookup.remember_latest(records, values, lambda user: 5, anchor_of))
    latest = table["u-1"]
    assert latest["open"] == orjson.loads(values[2]) and latest["closed"] == orjson.loads(values[1])
    assert latest["last"] == "open" and anchors == [5, 5, 5]
    assert sent == [(b"u-1", value, 5) for value in values]

    monkeypatch.setattr(lookup, "settings",
                        lookup.settings.model_copy(update={"lookup_latest": False}))
    table.clear(), sent.clear()
    asyncio.run(lookup.remember_latest(records, values, lambda user: 5, anchor_of))
    assert table == {} and sent == []


DIST = {"http://a:1": {"ev": [0, 2], "scores": [0, 2]}, "http://b:2": {"ev": [1, 3]}}


def test_the_owner_is_the_member_assigned_the_input_partition():
    assert owner_of(DIST, "ev", 2) == "http://a:1"
    assert owner_of(DIST, "ev", 3) == "http://b:2"
    assert owner_of(DIST, "ev", 5) is None and owner_of({}, "ev", 0) is None


READY, MOVING = (True, "tables ready"), (False, "rebalancing: partitions are moving")


@pytest.mark.parametrize(("ready", "owned", "owner", "forwarded", "expected"), [
    (READY, True, "http://a:1", False, Route("answer", "http://a:1")),
    (READY, True, "http://a:1", True, Route("answer", "http://a:1")),  # forwarded to the owner
    (READY, False, "http://b:2", False, Route("forward", "http://b:2")),
    # the forwarder's metadata said we own it, ours says not: moving, never forwarded twice
    (READY, False, "http://b:2", True, Route("unavailable", "the partition is moving "
                                                           "(forwarded to a non-owner)")),
    # our metadata names us but we are not assigned it (yet): no guess
    (READY, False, "http://a:1/", False, Route("unavailable",
                                               "no owner known for the partition yet")),
    (READY, False, None, False, Route("unavailable", "no owner known for the partition yet")),
    (MOVING, True, "http://a:1", False, Route("unavailable", MOVING[1])),
    (MOVING, False, "http://b:2", False, Route("unavailable", MOVING[1])),
])
def test_the_route_answers_only_when_owned_and_ready(ready, owned, owner, forwarded, expected):
    assert route(ready, owned, owner, "http://a:1", forwarded) == expected


@pytest.mark.parametrize(("path", "user"), [
    ("/users/u-42", "u-42"), ("/users/u%2F42", "u/42"), ("/users/%C3%BC", "ü"),
    ("/users/", None), ("/users/a/b", None), ("/metrics", None),
])
def test_the_user_id_is_the_unquoted_last_path_segment(path, user):
    assert user_id_from_path(path) == user


def test_the_published_schema_is_the_models():
    name = "user_view.v1.json"
    committed = (SCHEMA_DIR / name).read_text()
    assert committed == render_schema(UserView, "GET /users/{user_id} (each worker's "
                                      "METRICS_PORT)", name), \
        f"{name} is stale: regenerate it from streams.worker.lookup.UserView"

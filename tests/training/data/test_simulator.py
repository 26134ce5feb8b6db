from __future__ import annotations

import itertools
from collections import Counter

from streams.core.events import ShopEvent
from streams.core.labelling import message_need, review_need
from streams.core.timeunits import DAY_MS
from training.data.simulator import (
    ARCHETYPES,
    SimConfig,
    UserHistory,
    event_stream,
    known_labels,
    simulate,
    simulate_user,
)


def test_every_event_is_a_complete_valid_shop_event(histories: list[UserHistory]) -> None:
    events = [e for h in histories for e in h.events]
    assert len(events) > 1000
    for doc in events:
        event = ShopEvent.model_validate(doc)
        assert event.check_type_fields() is None, doc
        assert event.model_dump(exclude_none=True) == doc  # nothing dropped or coerced


def test_histories_are_sorted_unique_and_within_the_observed_span(
    histories: list[UserHistory],
) -> None:
    config = SimConfig(seed=3)
    ids = [e["event_id"] for h in histories for e in h.events]
    assert len(ids) == len(set(ids))
    for h in histories:
        stamps = [e["ts"] for e in h.events]
        assert stamps == sorted(set(stamps))  # strictly increasing: one order, live or replayed
        assert all(config.start_ms <= t < h.observed_until == config.end_ms for t in stamps)
        assert {e["user_id"] for e in h.events} <= {h.user_id}


def test_same_seed_same_histories_other_seed_other_histories() -> None:
    assert simulate(8, SimConfig(seed=11)) == simulate(8, SimConfig(seed=11))
    assert simulate(8, SimConfig(seed=11)) != simulate(8, SimConfig(seed=12))


def test_a_user_does_not_depend_on_how_many_users_are_simulated() -> None:
    assert simulate(3, SimConfig(seed=5))[2] == simulate_user(2, SimConfig(seed=5))
    assert simulate(10, SimConfig(seed=5))[:3] == simulate(3, SimConfig(seed=5))


def test_all_archetypes_and_event_types_occur(histories: list[UserHistory]) -> None:
    assert {h.archetype for h in histories} == set(ARCHETYPES)
    types = Counter(e["type"] for h in histories for e in h.events)
    assert set(types) == {
        "view", "click", "search", "add_to_cart", "remove_from_cart", "purchase",
        "support_message", "review",
    }


def test_the_labeller_reads_each_message_as_the_need_the_simulator_wrote(
    histories: list[UserHistory],
) -> None:
    # Ground truth (the need behind each message) against streams.core.labelling's reading of it.
    for h in histories:
        for session in h.sessions:
            written = [
                message_need(e["text"]) if e["type"] == "support_message"
                else review_need(e["rating"], e["text"])
                for e in h.events
                if session.start <= e["ts"] <= session.end
                and e["type"] in ("support_message", "review")
            ]
            assert written == list(session.needs)


def test_live_stream_is_in_event_time_order_and_holds_every_event() -> None:
    config = SimConfig(seed=2)
    stream = list(event_stream(12, config))
    keys = [(e["ts"], e["event_id"]) for e in stream]
    assert keys == sorted(keys)
    assert len(stream) == sum(len(h.events) for h in simulate(12, config))


def test_known_labels_match_what_the_history_shows(histories: list[UserHistory]) -> None:
    checked = Counter()
    pairs = [(h, s) for h in histories for s in h.sessions]
    for h, session in itertools.islice(pairs, 400):
        labels = known_labels(h, session.end)
        after = [e for e in h.events if session.end < e["ts"] <= session.end + DAY_MS]
        if any(e["type"] == "purchase" for e in after):
            assert labels.strength == "strong"
            checked["strong"] += 1
        if h.observed_until >= session.end + 7 * DAY_MS:
            silent = not any(session.end < e["ts"] <= session.end + 7 * DAY_MS
                             for e in h.events)
            assert labels.churn is silent
            checked["churn" if silent else "active"] += 1
    assert checked["strong"] and checked["churn"] and checked["active"]

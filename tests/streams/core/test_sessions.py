import pytest

from streams.core.events import ShopEvent
from streams.core.sessions import (
    Outcome,
    SessionPolicy,
    absorb,
    empty_state,
    render,
    render_event,
)

MIN = 60_000
POLICY = SessionPolicy(gap_ms=30 * MIN, max_span_ms=240 * MIN, max_events=5, max_chars=200)
T0 = 1_700_000_000_000


def ev(eid: str, minute: float, kind: str = "view", **extra) -> ShopEvent:
    fields = {"item": {"id": f"sku-{eid}", "title": f"Item {eid}"}} if kind == "view" else {}
    fields.update(extra)
    return ShopEvent(event_id=eid, user_id="u1", ts=int(T0 + minute * MIN), type=kind, **fields)


def run(events, policy=POLICY):
    state = empty_state()
    outcomes = [absorb(state, e, policy) for e in events]
    return state, outcomes


def test_events_within_the_gap_share_one_session_in_event_time_order():
    state, outcomes = run([ev("a", 0), ev("c", 10), ev("b", 5)])  # b arrives late but in window
    assert outcomes == [Outcome.APPENDED] * 3
    assert [e["event_id"] for e in state["current"]["events"]] == ["a", "b", "c"]
    assert (state["current"]["start"], state["current"]["end"]) == (T0, T0 + 10 * MIN)


def test_a_gap_longer_than_the_policy_closes_the_session_into_pending():
    state, outcomes = run([ev("a", 0), ev("b", 31)])
    assert outcomes[-1] is Outcome.NEW_SESSION
    assert [s["events"][0]["event_id"] for s in state["pending"]] == ["a"]
    assert state["current"]["events"][0]["event_id"] == "b"
    assert state["pending"][0]["session_id"] != state["current"]["session_id"]


def test_a_session_longer_than_max_span_is_split():
    events = [ev(str(i), 20 * i) for i in range(13)]  # 0..240 min, no gap over 30
    state, outcomes = run(events)
    assert Outcome.NEW_SESSION in outcomes
    assert all(s["end"] - s["start"] < POLICY.max_span_ms for s in state["pending"])


def test_redelivered_event_is_a_duplicate_and_not_counted_twice():
    state, outcomes = run([ev("a", 0), ev("b", 1), ev("a", 0)])
    assert outcomes[-1] is Outcome.DUPLICATE
    assert state["current"]["n_events"] == 2


def test_event_older_than_the_session_reaches_is_late():
    state, outcomes = run([ev("a", 100), ev("old", 10)])
    assert outcomes[-1] is Outcome.LATE
    assert state["current"]["n_events"] == 1


def test_length_is_bounded_keeping_the_newest_but_window_covers_all():
    state, _ = run([ev(str(i), i) for i in range(8)])
    session = state["current"]
    assert [e["event_id"] for e in session["events"]] == ["3", "4", "5", "6", "7"]
    assert session["n_events"] == 8 and session["start"] == T0


def test_session_id_is_stable_across_replays():
    a, _ = run([ev("a", 0), ev("b", 1)])
    b, _ = run([ev("a", 0), ev("b", 1)])
    assert a["current"]["session_id"] == b["current"]["session_id"]


@pytest.mark.parametrize(
    ("doc", "text"),
    [
        ({"type": "search", "query": "trail  running\nshoes"}, "search: trail running shoes"),
        ({"type": "view", "item": {"id": "1", "title": "Speedcross 6", "category": "shoes",
                                   "price": 129.99}}, "view: Speedcross 6 (shoes, 129.99)"),
        ({"type": "add_to_cart", "item": {"id": "9"}}, "add_to_cart: item 9"),
        ({"type": "support_message", "text": "where | is my order"},
         "support: where / is my order"),
        ({"type": "review", "rating": 2, "text": "broke fast"}, "review 2/5: broke fast"),
        ({"type": "view", "page": "product", "duration_s": 42.4}, "view: product page 42s"),
    ],
)
def test_render_event(doc, text):
    assert render_event(doc) == text


def test_render_collapses_repeats_and_keeps_newest_when_truncated():
    state, _ = run([ev("a", 0, "search", query="tent"), ev("b", 1, "search", query="tent"),
                    ev("c", 2)], SessionPolicy(30 * MIN, 240 * MIN, 50, 1000))
    assert render(state["current"], 1000) == "search: tent ×2 | view: Item c (…)".replace(
        " (…)", "")
    long_state, _ = run([ev(str(i), i, "search", query=f"query number {i}") for i in range(40)],
                        SessionPolicy(30 * MIN, 240 * MIN, 50, 1000))
    text = render(long_state["current"], 60)
    assert len(text) <= 60 and text.endswith("query number 39")

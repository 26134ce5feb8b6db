import orjson

from streams.batching import RawMessage, plan_batch
from streams.sessions import SessionPolicy

MIN = 60_000
T0 = 1_700_000_000_000
POLICY = SessionPolicy(gap_ms=30 * MIN, max_span_ms=240 * MIN, max_events=64, max_chars=500)


def msg(offset: int, user: str, minute: float, kind: str = "search", **extra) -> RawMessage:
    doc = {"event_id": f"{user}-{offset}", "user_id": user, "ts": int(T0 + minute * MIN),
           "type": kind, "query": "tent", **extra}
    return RawMessage(user.encode(), orjson.dumps(doc), "shop.events", 0, offset, None)


def bad(offset: int, value: bytes) -> RawMessage:
    return RawMessage(b"u9", value, "shop.events", 1, offset, 123)


def test_many_events_of_one_user_are_scored_once():
    plan = plan_batch([msg(i, "u1", i) for i in range(10)], lambda _: None, POLICY, 16_384)
    assert plan.n_valid == 10
    assert len(plan.to_score) == 1 and plan.to_score[0].session["n_events"] == 10


def test_invalid_and_late_messages_become_dead_letters_with_their_source():
    messages = [msg(0, "u1", 100), bad(1, b"{oops"), msg(2, "u1", 0)]  # last one is late
    plan = plan_batch(messages, lambda _: None, POLICY, 16_384)
    assert [d.reason for d in plan.dead_letters] == ["not_json", "late_event"]
    assert plan.dead_letters[0].source.offset == 1 and plan.dead_letters[0].raw_preview == "{oops"
    assert plan.n_valid == 1


def test_a_session_closed_within_the_batch_gets_its_own_final_scoring():
    plan = plan_batch([msg(0, "u1", 0), msg(1, "u1", 5), msg(2, "u1", 60)],
                      lambda _: None, POLICY, 16_384)
    closed = [t for t in plan.to_score if t.closed]
    assert len(closed) == 1 and closed[0].session["n_events"] == 2
    assert [t.closed for t in plan.to_score] == [True, False]


def test_pending_sessions_left_by_a_crash_are_scored_when_the_user_is_touched_again():
    first = plan_batch([msg(0, "u1", 0), msg(1, "u1", 60)], lambda _: None, POLICY, 16_384)
    stored = first.states["u1"]  # written to the table, then the worker died before scoring
    again = plan_batch([msg(1, "u1", 60)], lambda _: stored, POLICY, 16_384)  # redelivery
    assert [t.closed for t in again.to_score] == [True, False]
    assert again.states["u1"]["current"]["n_events"] == 1  # the duplicate was not re-counted


def test_planning_does_not_mutate_the_stored_state():
    stored = plan_batch([msg(0, "u1", 0)], lambda _: None, POLICY, 16_384).states["u1"]
    before = orjson.dumps(stored)
    plan_batch([msg(1, "u1", 1), msg(2, "u1", 90)], lambda _: stored, POLICY, 16_384)
    assert orjson.dumps(stored) == before

import base64

import orjson

from streams.core.batching import plan_batch
from streams.core.privacy import PrivacyPolicy, pseudonymise
from streams.core.raw_message import RawMessage
from streams.core.sessions import SessionPolicy

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


# --- privacy: nothing raw in states, scores-to-be or dead letters --------------------------------

KEY = b"k1"
PRIVATE = PrivacyPolicy(scrub_pii=True, pseudonym_key=KEY)


def test_states_and_sessions_hold_only_pseudonyms_and_scrubbed_text():
    messages = [msg(0, "alice", 0, event_id="e0", query="jane@example.com 555-123-4567"),
                msg(1, "alice", 1, event_id="e1", kind="support_message",
                    text="ship to 42 Elm St")]
    plan = plan_batch(messages, lambda _: None, POLICY, 16_384, PRIVATE)
    pid = pseudonymise("alice", KEY)
    assert list(plan.states) == [pid] and plan.n_valid == 2
    dumped = orjson.dumps([plan.states, [t.session for t in plan.to_score]]).decode()
    for raw_value in ("alice", "jane@example.com", "555-123-4567", "42 Elm St"):
        assert raw_value not in dumped
    assert plan.to_score[0].session["user_id"] == pid
    assert "[email] [phone]" in dumped and "ship to [address]" in dumped


def test_dead_letters_are_scrubbed_and_pseudonymised():
    broken = b'{"user_id": "alice", "text": "call 555-123-4567 \xff'
    late = msg(2, "alice", 0, event_id="e2", kind="support_message", text="mail jane@example.com")
    messages = [msg(0, "alice", 100), RawMessage(b"alice", broken, "shop.events", 0, 1, None),
                late]
    plan = plan_batch(messages, lambda _: None, POLICY, 16_384, PRIVATE)
    assert [d.reason for d in plan.dead_letters] == ["not_json", "late_event"]
    pid = pseudonymise("alice", KEY).encode()
    for dead in plan.dead_letters:
        raw = base64.b64decode(dead.raw_b64)
        assert dead.raw_scrubbed and dead.message_key() == pid
        assert b"alice" not in raw and pid in raw
        assert b"555-123-4567" not in raw and b"jane@example.com" not in raw
        assert b"[card]" not in raw  # the event time is no card
        assert "alice" not in dead.model_dump_json()
    # Broken UTF-8 survives byte for byte around the masks.
    assert base64.b64decode(plan.dead_letters[0].raw_b64) == (
        b'{"user_id": "' + pid + b'", "text": "call [phone] \xff')


def test_without_a_privacy_policy_dead_letters_keep_the_exact_bytes():
    value = b'{"user_id": "alice", "text": "call 555-123-4567 \xff'
    off = PrivacyPolicy(scrub_pii=False)
    plan = plan_batch([RawMessage(b"alice", value, "t", 0, 1, None)], lambda _: None, POLICY,
                      16_384, off)
    dead = plan.dead_letters[0]
    assert base64.b64decode(dead.raw_b64) == value and not dead.raw_scrubbed
    assert dead.message_key() == b"alice"

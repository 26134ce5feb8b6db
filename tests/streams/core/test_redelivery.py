"""Idempotent user state by input position: redelivery and re-sends never count an event twice.

The driver below plays the worker's table protocol (plan a batch, write the states, drop a
session from `pending` once its final score is out) over traffic with the hard shapes: users
with more events than a session keeps, sessions split by max span and by the gap, producer
re-sends under new offsets, conflicting re-sends, and redelivery of any earlier range (a
rewind to the committed offset after a crash or a rebalance, or a crash that lost the last
batch's table writes).
"""

from __future__ import annotations

import random

import orjson
import pytest

from streams.core.batching import plan_batch
from streams.core.events import parse_event
from streams.core.raw_message import RawMessage
from streams.core.records import prediction_id
from streams.core.sessions import Admission, SessionPolicy, UserState, admit, empty_state

MIN = 60_000
T0 = 1_700_000_000_000
# Short sessions on purpose: every shape (max-events overflow, span split, gap) happens often.
POLICY = SessionPolicy(gap_ms=30 * MIN, max_span_ms=90 * MIN, max_events=5, max_chars=500,
                       remembered_ids=64)


def event_doc(user: str, n: int, minute: float, query: str = "tent") -> dict:
    return {"event_id": f"{user}-e{n}", "user_id": user, "ts": int(T0 + minute * MIN),
            "type": "search", "query": query}


def record(offset: int, doc: dict, partition: int = 0) -> RawMessage:
    return RawMessage(doc["user_id"].encode(), orjson.dumps(doc), "shop.events", partition,
                      offset, None)


def traffic(rng: random.Random) -> tuple[list[RawMessage], dict[str, set[str]]]:
    """One partition's log and, per user, the distinct event ids that are valid to count."""
    docs: list[dict] = []
    for u in range(6):
        user, minute = f"u{u}", 0.0
        for n in range(rng.choice([3, 40, 250])):
            # mostly dense activity, sometimes a pause long enough to close the session
            minute += rng.choice([1, 2, 5]) if rng.random() > 0.05 else 45
            docs.append(event_doc(user, n, minute))
    docs.sort(key=lambda d: d["ts"])  # interleaved users, each in its own time order
    log: list[dict] = []
    for doc in docs:
        log.append(doc)
        if rng.random() < 0.03:  # a producer re-send, exact, a little later in the log
            log.append(dict(doc))
        if rng.random() < 0.01:  # the same id with other content
            log.append({**doc, "query": "conflicting"})
    valid: dict[str, set[str]] = {}
    for doc in docs:
        valid.setdefault(doc["user_id"], set()).add(doc["event_id"])
    return [record(i, doc) for i, doc in enumerate(log)], valid


class Worker:
    """The worker's table protocol, in memory; `final` keeps the newest score per session."""

    def __init__(self) -> None:
        self.table: dict[str, UserState] = {}
        self.final: dict[str, dict] = {}  # session id -> its user, n_events, prediction_id
        self.dead: list[tuple[int, str]] = []

    def process(self, batch: list[RawMessage], crash_before_scores: bool = False) -> None:
        plan = plan_batch(batch, self.table.get, POLICY, 16_384)
        self.dead += [(d.source.offset, d.reason) for d in plan.dead_letters]
        self.table.update(plan.states)  # written (changelog) before the scores go out
        if crash_before_scores:
            return
        for item in plan.to_score:
            session = item.session
            self.final[session["session_id"]] = {
                "user": session["user_id"], "n_events": session["n_events"],
                "prediction_id": prediction_id(session, 1)}
        for user, state in plan.states.items():  # closed sessions leave once scored
            self.table[user] = {**state, "pending": []}


def run(log: list[RawMessage], rng: random.Random, faults: bool) -> Worker:
    worker = Worker()
    position = 0
    while position < len(log):
        size = rng.randint(1, 60)
        batch = log[position : position + size]
        crash = faults and rng.random() < 0.15
        worker.process(batch, crash_before_scores=crash)
        if crash:  # unacked, so redelivered from at or before its start
            position = rng.randint(max(0, position - 300), position)
        elif faults and rng.random() < 0.1:  # a rebalance rewinds to an older commit
            position = rng.randint(max(0, position + size - 300), position + size)
        else:
            position += size
    return worker


def per_user_counts(worker: Worker) -> dict[str, int]:
    totals: dict[str, int] = {}
    for final in worker.final.values():
        totals[final["user"]] = totals.get(final["user"], 0) + final["n_events"]
    return totals


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("faults", [False, True])
def test_every_valid_event_counts_once_whatever_is_redelivered(seed: int, faults: bool) -> None:
    rng = random.Random(seed)
    log, valid = traffic(rng)
    worker = run(log, rng, faults)
    assert per_user_counts(worker) == {u: len(ids) for u, ids in valid.items()}
    # No valid event is dead-lettered; each conflicting re-send is, once per input offset.
    conflicts = {i for i, m in enumerate(log) if b'"conflicting"' in m.value}
    assert {offset for offset, _ in worker.dead} == conflicts
    assert {reason for _, reason in worker.dead} <= {"conflicting_duplicate"}
    # Sessions a later one closed were scored as closed: none is left pending.
    assert all(not s["pending"] for s in worker.table.values())


def test_redelivery_gives_the_same_prediction_ids() -> None:
    rng = random.Random(7)
    log, _ = traffic(rng)
    clean = run(log, random.Random(1), faults=False)
    faulty = run(log, random.Random(2), faults=True)
    assert {s: f["prediction_id"] for s, f in faulty.final.items()} == {
        s: f["prediction_id"] for s, f in clean.final.items()}


def test_a_redelivered_record_is_recognised_by_position_long_after_its_session_closed() -> None:
    docs = [event_doc("u1", n, n * 40) for n in range(4)]  # every event opens a new session
    state = empty_state()
    for offset, doc in enumerate(docs):
        parsed = parse_event(orjson.dumps(doc), b"u1", 16_384)
        assert admit(state, parsed, 0, offset, POLICY.remembered_ids) is Admission.NEW
    again = parse_event(orjson.dumps(docs[0]), b"u1", 16_384)
    assert admit(state, again, 0, 0, POLICY.remembered_ids) is Admission.REDELIVERED
    assert admit(state, again, 0, 10, POLICY.remembered_ids) is Admission.DUPLICATE
    changed = parse_event(orjson.dumps({**docs[1], "query": "other"}), b"u1", 16_384)
    assert admit(state, changed, 0, 11, POLICY.remembered_ids) is Admission.CONFLICT
    # Another partition's offsets say nothing about this one's (a repartitioned topic).
    assert admit(state, again, 1, 0, POLICY.remembered_ids) is Admission.DUPLICATE


def test_the_event_id_memory_is_bounded() -> None:
    state = empty_state()
    for offset in range(100):
        parsed = parse_event(orjson.dumps(event_doc("u1", offset, offset)), b"u1", 16_384)
        admit(state, parsed, 0, offset, remembered_ids=16)
    assert len(state["seen"]) == 16
    oldest = parse_event(orjson.dumps(event_doc("u1", 0, 0)), b"u1", 16_384)
    newest = parse_event(orjson.dumps(event_doc("u1", 99, 99)), b"u1", 16_384)
    assert admit(state, newest, 0, 200, remembered_ids=16) is Admission.DUPLICATE
    assert admit(state, oldest, 0, 201, remembered_ids=16) is Admission.NEW  # past the bound


def test_states_written_before_positions_existed_are_read() -> None:
    old = {"current": None, "pending": []}  # a changelog entry from before this change
    plan = plan_batch([record(5, event_doc("u1", 0, 0))], lambda _: old, POLICY, 16_384)
    assert plan.n_valid == 1 and plan.states["u1"]["position"] == [0, 5]

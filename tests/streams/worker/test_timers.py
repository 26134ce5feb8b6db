"""The worker's clocks and timers (streams/worker/timers.py): rebuilt from the tables after an
assignment, moved by batches and by wall time, saved only when they moved."""

from __future__ import annotations

from streams.core.clock import ClockPolicy, SilenceSchedule
from streams.core.sessions import SessionPolicy, UserState
from streams.core.silence import TimerPolicy, due_at
from streams.worker.timers import PartitionAnchor, WorkerTimers, user_partition

T0 = 1_767_225_600_000
MIN = 60_000
SESSION = SessionPolicy(gap_ms=30 * MIN, max_span_ms=240 * MIN, max_events=8, max_chars=300)
POLICY = TimerPolicy.of(SESSION, SilenceSchedule((1, 3)))
CLOCK = ClockPolicy(lateness_ms=MIN, idle_after_ms=30_000)


def open_state(user: str, partition: int, end: int) -> UserState:
    session = {"session_id": f"s-{user}", "user_id": user, "start": end, "end": end,
               "n_events": 1, "last_event_id": "e0", "events": []}
    return {"current": session, "pending": [], "position": [partition, 7]}


def rebuild(timers: WorkerTimers, users: list, partitions: list[int], saved_clock) -> int:
    """What the worker does over an assignment's scan, in one chunk."""
    timers.begin_rebuild(partitions, saved_clock)
    timers.add_rebuilt(users)
    return timers.finish_rebuild()


def test_rebuild_takes_the_owned_partitions_users_and_restores_or_keeps_clocks():
    timers = WorkerTimers(CLOCK, POLICY)
    timers.observe(0, T0 + 10 * MIN, wall_ms=1_000)  # ran partition 0 already
    users = [("a", open_state("a", 0, T0)), ("b", open_state("b", 1, T0)),
             ("c", open_state("c", 2, T0)), ("gone", None),
             ("old", {"current": None, "pending": []})]  # no position: no partition known
    saved = {1: {"newest_ms": T0 + 50 * MIN, "watermark_ms": T0 + 49 * MIN}}
    assert rebuild(timers, users, [0, 1], saved.get) == 2
    assert sorted(key for key, _, _ in timers.index.items()) == ["a", "b"]
    assert timers.watermark(0) == T0 + 9 * MIN  # kept: newer than anything saved
    assert timers.watermark(1) == T0 + 49 * MIN  # restored
    assert timers.pop_due(0) == [] and timers.pop_due(1) == ["b"]  # b's close: end + gap
    assert not timers.stale


def test_a_users_timer_follows_its_state_and_its_partition():
    timers = WorkerTimers(CLOCK, POLICY)
    state = open_state("a", 3, T0)
    timers.set("a", state)
    assert timers.index.due_of("a") == due_at(state, POLICY) == T0 + 30 * MIN + 1
    assert timers.index.partition_of("a") == user_partition(state) == 3
    timers.set("a", None)
    assert "a" not in timers.index


def test_idle_partitions_advance_by_wall_time_only_without_lag_and_are_saved_when_moved():
    timers = WorkerTimers(CLOCK, POLICY)
    rebuild(timers, [], [0], lambda p: None)
    timers.observe(0, T0, wall_ms=0)
    assert timers.unsaved() == [0]
    timers.saved(0)
    assert timers.unsaved() == []
    timers.tick(0, wall_ms=40_000, has_lag=True)
    assert timers.watermark(0) == T0 - MIN  # behind: waits for its events
    timers.tick(0, wall_ms=40_000, has_lag=False)
    assert timers.watermark(0) == T0 - MIN + 10_000  # 10 s past the 30 s idle bound
    assert timers.unsaved() == [0] and timers.clock_doc(0)["watermark_ms"] == T0 - 50_000


def test_a_partition_anchor_names_the_changelog_partition():
    anchor = PartitionAnchor.of("shop.events", 5)
    assert (anchor.message.topic, anchor.message.partition) == ("shop.events", 5)


def test_a_rebuild_in_chunks_gives_the_timers_of_one_in_a_go():
    users = [(f"u{n}", open_state(f"u{n}", n % 3, T0 + n * MIN)) for n in range(50)]
    whole, chunked = WorkerTimers(CLOCK, POLICY), WorkerTimers(CLOCK, POLICY)
    rebuild(whole, users, [0, 1], lambda p: None)
    chunked.begin_rebuild([0, 1], lambda p: None)
    assert chunked.rebuilding and not chunked.stale and len(chunked.index) == 0
    for start in range(0, 50, 7):
        chunked.add_rebuilt(users[start:start + 7])
    assert chunked.finish_rebuild() == len(whole.index) == 34  # partitions 0 and 1 only
    assert sorted(chunked.index.items()) == sorted(whole.index.items())
    assert not chunked.rebuilding


def test_a_timer_set_or_handed_out_during_a_rebuild_is_not_overridden_by_an_older_read():
    timers = WorkerTimers(CLOCK, POLICY)
    timers.begin_rebuild([0], lambda p: {"newest_ms": T0 + 40 * MIN,
                                         "watermark_ms": T0 + 39 * MIN})
    older = open_state("a", 0, T0)  # what the store's iterator read when the scan began
    newer = open_state("a", 0, T0 + 60 * MIN)  # a batch wrote this meanwhile
    timers.set("a", newer)
    timers.add_rebuilt([("b", open_state("b", 0, T0))])
    assert timers.pop_due(0) == ["b"]  # b's close is due: handed out to be fired
    timers.add_rebuilt([("a", older), ("b", open_state("b", 0, T0))])
    assert timers.index.due_of("a") == due_at(newer, POLICY)
    assert "b" not in timers.index  # its firing sets what follows from the state
    assert timers.finish_rebuild() == 1 and not timers.rebuilding

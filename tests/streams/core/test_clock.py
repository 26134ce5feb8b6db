"""The event-time clock, the timer index and the silence schedule (streams/core/clock.py)."""

from __future__ import annotations

import heapq
import random

import pytest

from streams.core import feedback
from streams.core.clock import (
    ClockPolicy,
    PartitionClock,
    SilenceSchedule,
    TimerIndex,
    bench_timer_index,
)
from streams.core.timeunits import DAY_MS, MINUTE_MS

LATE = 5_000
IDLE = 60_000
POLICY = ClockPolicy(lateness_ms=LATE, idle_after_ms=IDLE)
T0 = 1_767_225_600_000  # event time of the first event
W0 = 1_800_000_000_000  # wall time then (another clock: only differences matter)


def run(steps: list[tuple], policy: ClockPolicy = POLICY) -> list[int | None]:
    """Feed ("event", event_ms, wall_ms) / ("tick", wall_ms, has_lag) steps; the watermarks."""
    clock, marks = PartitionClock(), []
    for step in steps:
        if step[0] == "event":
            clock = clock.observe(step[1], step[2], policy)
        else:
            clock = clock.tick(step[1], step[2], policy)
        marks.append(clock.watermark_ms)
    return marks


# --- the clock ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([T0], [T0 - LATE]),
        ([T0, T0 + 1000, T0 + 3000], [T0 - LATE, T0 + 1000 - LATE, T0 + 3000 - LATE]),
        # out of order: a late event neither lowers the watermark nor moves it
        ([T0 + 9000, T0 + 1000, T0 + 8000], [T0 + 4000] * 3),
        # one later event moves it by exactly its own advance
        ([T0, T0 - 60_000, T0 + 1], [T0 - LATE, T0 - LATE, T0 + 1 - LATE]),
    ],
)
def test_watermark_is_newest_event_less_lateness(events, expected):
    assert run([("event", ts, None) for ts in events]) == expected


def test_the_sidecars_watermark_is_the_same_rule():
    clock = PartitionClock().observe(T0, None, POLICY)
    assert clock.watermark_ms == feedback.watermark(T0, LATE)


def test_no_event_no_watermark():
    assert run([("tick", W0, False), ("tick", W0 + 10 * IDLE, False)]) == [None, None]


@pytest.mark.parametrize(
    ("ticks", "expected"),
    [
        # within the idle bound: nothing moves
        ([(W0 + IDLE, False)], [T0 - LATE]),
        # past it, with no lag: the watermark runs at wall speed from where it stood
        ([(W0 + IDLE + 1, False)], [T0 - LATE + 1]),
        ([(W0 + IDLE + 7 * DAY_MS, False)], [T0 - LATE + 7 * DAY_MS]),
        # lag holds it, however long the partition has been quiet
        ([(W0 + 10 * IDLE, True)], [T0 - LATE]),
        # lag then no lag: the advance is counted from the last traffic, not from the lag
        ([(W0 + 10 * IDLE, True), (W0 + 10 * IDLE, False)],
         [T0 - LATE, T0 - LATE + 9 * IDLE]),
        # a tick from an earlier wall time (clock skew) never takes it back
        ([(W0 + 5 * IDLE, False), (W0 + 2 * IDLE, False), (W0 + 5 * IDLE, True)],
         [T0 - LATE + 4 * IDLE, T0 - LATE + 4 * IDLE, T0 - LATE + 4 * IDLE]),
    ],
)
def test_idle_advance_only_without_lag_and_after_the_bound(ticks, expected):
    marks = run([("event", T0, W0)] + [("tick", wall, lag) for wall, lag in ticks])
    assert marks[1:] == expected


def test_traffic_restarts_the_idle_bound_from_where_the_clock_stood():
    marks = run([
        ("event", T0, W0),
        ("tick", W0 + IDLE + 10_000, False),  # idle: +10 s
        ("event", T0 - 1, W0 + IDLE + 20_000),  # a straggler: traffic, no new newest
        ("tick", W0 + IDLE + 30_000, False),  # within the bound again: held
        ("tick", W0 + 2 * IDLE + 20_000 + 500, False),  # past it: +500 from the held value
    ])
    assert marks == [T0 - LATE, T0 - LATE + 10_000, T0 - LATE + 10_000, T0 - LATE + 10_000,
                     T0 - LATE + 10_500]


def test_an_event_behind_an_idle_advance_does_not_lower_it():
    marks = run([("event", T0, W0), ("tick", W0 + IDLE + DAY_MS, False),
                 ("event", T0 + 1000, W0 + IDLE + DAY_MS + 1)])
    assert marks[2] == marks[1] == T0 - LATE + DAY_MS


def test_without_an_idle_bound_only_events_move_it():
    policy = ClockPolicy(lateness_ms=LATE)
    assert run([("event", T0, W0), ("tick", W0 + 100 * DAY_MS, False)], policy) == [
        T0 - LATE, T0 - LATE]


def test_rebuilt_clock_is_monotonic_and_waits_one_idle_bound():
    clock = PartitionClock().observe(T0, W0, POLICY).tick(W0 + IDLE + DAY_MS, False, POLICY)
    restored = PartitionClock.from_json(clock.to_json())
    assert restored.watermark_ms == clock.watermark_ms == T0 - LATE + DAY_MS
    # the new owner's wall clock starts the idle bound again, from the restored watermark
    wall = W0 + 5 * DAY_MS
    restored = restored.tick(wall, False, POLICY)
    assert restored.watermark_ms == clock.watermark_ms
    assert restored.tick(wall + IDLE, False, POLICY).watermark_ms == clock.watermark_ms
    assert restored.tick(wall + IDLE + 42, False, POLICY).watermark_ms == clock.watermark_ms + 42
    # an older event after the rebuild does not take it back
    assert restored.observe(T0, wall, POLICY).watermark_ms == clock.watermark_ms


def test_random_walk_never_goes_back():
    rng = random.Random(7)
    clock, wall, last = PartitionClock(), W0, None
    for _ in range(3000):
        wall += rng.choice([0, 1, 1000, IDLE, 3 * IDLE]) - rng.choice([0, 0, 0, 500])
        if rng.random() < 0.5:
            clock = clock.observe(T0 + rng.randrange(-DAY_MS, DAY_MS), wall, POLICY)
        elif rng.random() < 0.05:
            clock = PartitionClock.from_json(clock.to_json())
        else:
            clock = clock.tick(wall, rng.random() < 0.3, POLICY)
        assert last is None or clock.watermark_ms >= last
        last = clock.watermark_ms


@pytest.mark.parametrize("bad", [dict(lateness_ms=-1), dict(lateness_ms=0, idle_after_ms=-1)])
def test_policy_rejects_negative_bounds(bad):
    with pytest.raises(ValueError):
        ClockPolicy(**bad)


# --- the timer index ----------------------------------------------------------------------------


def test_set_replaces_and_cancel_removes():
    index = TimerIndex()
    index.set("a", 0, 100)
    index.set("a", 0, 300)  # replaces: the 100 entry is stale
    index.set("b", 0, 200)
    index.set("c", 0, 150)
    index.cancel("c")
    index.set("d", 0, 120)
    index.set("d", 0, None)  # None cancels, as the sidecar calls it
    assert len(index) == 2 and "c" not in index and index.due_of("a") == 300
    assert index.pop_due(0, 250) == ["b"]
    assert index.pop_due(0, 299) == []
    assert index.pop_due(0, 300) == ["a"]
    assert len(index) == 0 and index.pop_due(0, 10**15) == []


def test_a_timer_moved_to_another_partition_pops_only_there():
    index = TimerIndex()
    index.set("a", 0, 100)
    index.set("a", 1, 100)
    assert index.pop_due(0, 1000) == [] and index.pop_due(1, 1000) == ["a"]


@pytest.mark.parametrize("due", [-(2**50), -1, 0, 1, 2**46, 2**70])
def test_any_due_time_round_trips(due):
    index = TimerIndex()
    index.set("k", 3, due)
    assert (index.due_of("k"), index.partition_of("k"), index.next_due(3)) == (due, 3, due)
    assert index.pop_due_items(3, due - 1) == [] and index.pop_due_items(3, due) == [(due, "k")]


def test_pop_order_is_due_then_key_whatever_the_insertion_order():
    timers = [(f"u{i}", (i * 7919) % 50) for i in range(400)]
    expected = sorted((due, key) for key, due in timers)
    orders = []
    for seed in range(3):
        shuffled = timers[:]
        random.Random(seed).shuffle(shuffled)
        index = TimerIndex()
        for key, due in shuffled:
            index.set(key, 0, due)
        orders.append(index.pop_due_items(0, 49))
    assert orders == [expected] * 3


def test_reused_slots_never_pop_a_key_twice_or_early():
    index = TimerIndex()
    index.set("a", 0, 100)
    index.cancel("a")  # a's slot is free, its heap entry stale
    index.set("b", 0, 100)  # b takes the slot: an equal heap entry
    index.set("c", 0, 50)
    assert index.pop_due(0, 100) == ["c", "b"]
    index.set("b", 0, 500)
    assert index.pop_due(0, 499) == [] and index.pop_due(0, 500) == ["b"]


def test_next_due_skips_cancelled_heads():
    index = TimerIndex()
    index.set("a", 2, 10)
    index.set("b", 2, 20)
    index.cancel("a")
    assert index.next_due(2) == 20 and index.next_due(5) is None


def test_drop_partition_forgets_only_its_timers():
    index = TimerIndex()
    for i in range(10):
        index.set(f"u{i}", i % 2, i)
    assert index.drop_partition(0) == 5
    assert len(index) == 5 and index.pop_due(0, 100) == []
    assert index.pop_due(1, 100) == [f"u{i}" for i in range(1, 10, 2)]


def reference_pops(ops: list[tuple], marks: list[tuple[int, int]]) -> list[list[str]]:
    """The plain model of the index: a dict of key -> (partition, due), popped by sorting."""
    pending: dict[str, tuple[int, int]] = {}
    for key, partition, due in ops:
        if due is None:
            pending.pop(key, None)
        else:
            pending[key] = (partition, due)
    out = []
    for partition, mark in marks:
        due = sorted((d, k) for k, (p, d) in pending.items() if p == partition and d <= mark)
        for _, key in due:
            del pending[key]
        out.append([k for _, k in due])
    return out


def random_ops(seed: int, n: int, keys: int, partitions: int) -> list[tuple]:
    rng = random.Random(seed)
    return [(f"u{rng.randrange(keys)}", rng.randrange(partitions),
             None if rng.random() < 0.1 else rng.randrange(10_000)) for _ in range(n)]


@pytest.mark.parametrize(("seed", "n", "keys"), [(1, 200, 20), (2, 5000, 300), (3, 20_000, 50)])
def test_index_matches_the_plain_model_and_its_rebuild(seed, n, keys):
    """Many replacements (compaction runs), cancels and partition moves; the index, and an
    index rebuilt from its items halfway, pop exactly what the plain model says."""
    ops = random_ops(seed, n, keys, partitions=3)
    marks = [(p, m) for m in range(0, 10_001, 500) for p in range(3)]
    index = TimerIndex()
    for key, partition, due in ops:
        index.set(key, partition, due)
    rebuilt = TimerIndex()
    rebuilt.rebuild(index.items())
    expected = reference_pops(ops, marks)
    assert [index.pop_due(p, m) for p, m in marks] == expected
    assert [rebuilt.pop_due(p, m) for p, m in marks] == expected
    assert len(index) == len(rebuilt) == 0


def test_rebuild_from_state_triples_keeps_the_last_and_skips_none():
    index = TimerIndex()
    index.set("stale", 0, 1)
    index.rebuild([("a", 0, 30), ("b", 1, 10), ("a", 0, 20), ("c", 0, None), ("d", 0, 5),
                   ("d", 0, None)])
    assert sorted(index.items()) == [("a", 0, 20), ("b", 1, 10)]
    assert index.pop_due(0, 100) == ["a"] and index.pop_due(1, 100) == ["b"]


def test_heap_stays_bounded_under_churn():
    """Replacing one key's timer forever must not grow memory: compaction drops stale entries."""
    index = TimerIndex()
    for i in range(100):
        index.set(f"u{i}", 0, 10**12)
    for step in range(50_000):
        index.set(f"u{step % 100}", 0, 10**12 + step)
    assert len(index._heaps[0]) <= 100 + 1100  # live + the compaction floor and a fifth


def test_the_sidecars_timer_index_pops_alike():
    """What the sidecar's `feedback.TimerIndex` pops, ours pops, call for call."""
    ops = random_ops(11, 3000, 200, partitions=2)
    marks = [(p, m) for m in range(0, 10_001, 250) for p in range(2)]
    ours, theirs = TimerIndex(), feedback.TimerIndex()
    for key, partition, due in ops:
        # the sidecar's index keys one partition per user (its user's), so keep it fixed
        partition = int(key[1:]) % 2
        ours.set(key, partition, due)
        theirs.set(key, partition, due)
    assert [ours.pop_due(p, m) for p, m in marks] == [theirs.pop_due(p, m) for p, m in marks]


def test_memory_per_timer_on_100k_timers():
    bench = bench_timer_index(100_000)
    print(bench.line())
    assert bench.bytes_per_timer < 110 and bench.bytes_after_churn < 130
    assert bench.sets_per_s > 20_000 and bench.pops_per_s > 20_000


def test_heap_invariant_holds_after_rebuild():
    index = TimerIndex()
    index.rebuild((f"u{i}", 0, (i * 31) % 97) for i in range(1000))
    heap = index._heaps[0]
    assert all(heap[(i - 1) // 2] <= heap[i] for i in range(1, len(heap)))
    assert heapq.nsmallest(1, heap)[0] == heap[0]


# --- silence ------------------------------------------------------------------------------------

SCHEDULE = SilenceSchedule((1, 3, 7, 14, 30, 60, 90))
LAST = T0


@pytest.mark.parametrize(
    ("silent_ms", "next_index", "reached_index"),
    [
        (0, 0, None),  # just active
        (DAY_MS - 1, 0, None),
        (DAY_MS, 1, 0),  # exactly at a milestone: reached, the next is the one after
        (DAY_MS + 1, 1, 0),
        (3 * DAY_MS, 2, 1),
        (21 * DAY_MS, 4, 3),  # silent for weeks: several passed, the latest stands
        (90 * DAY_MS - 1, 6, 5),
        (90 * DAY_MS, None, 6),  # the last one reached: nothing next
        (400 * DAY_MS, None, 6),  # far past the last
        (-5 * MINUTE_MS, 0, None),  # a watermark behind the last activity (late events)
    ],
)
def test_schedule_next_and_reached(silent_ms, next_index, reached_index):
    nxt = SCHEDULE.next_after(LAST, LAST + silent_ms)
    reached = SCHEDULE.reached_at(LAST, LAST + silent_ms)
    assert (None if nxt is None else nxt.index) == next_index
    assert (None if reached is None else reached.index) == reached_index
    if nxt is not None:
        assert nxt.due_ms == LAST + SCHEDULE.days[nxt.index] * DAY_MS > LAST + silent_ms
    if reached is not None:
        assert reached.due_ms <= LAST + silent_ms


def test_walking_the_schedule_visits_every_milestone_once():
    mark, seen = LAST, []
    while (milestone := SCHEDULE.next_after(LAST, mark)) is not None:
        seen.append((milestone.index, milestone.days))
        mark = milestone.due_ms
    assert seen == list(enumerate(SCHEDULE.days))


def test_fractional_days_for_short_schedules():
    schedule = SilenceSchedule((0.5, 1.25))
    assert schedule.next_after(0, 0).due_ms == DAY_MS // 2
    assert schedule.next_after(0, DAY_MS // 2).due_ms == 5 * DAY_MS // 4


@pytest.mark.parametrize("days", [(), (0, 1), (3, 3), (7, 3), (-1,)])
def test_schedule_rejects_bad_days(days):
    with pytest.raises(ValueError):
        SilenceSchedule(days)

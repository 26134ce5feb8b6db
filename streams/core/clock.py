"""Event time for timers: a partition's clock, a timer index, and the silence schedule. Pure.

One implementation for the worker, the feedback sidecar, replay and training (issue #24). Wall
time and "has lag" are arguments, never read here, so a replay that passes no wall time is
exactly as deterministic as its input.

**The clock** (`PartitionClock`, one per input partition). Its watermark is the event time up
to which the partition's events are taken to be complete:

    watermark = newest event time seen on the partition − lateness

and, when `idle_after_ms` is set, a quiet partition advances by wall-clock time: once the
partition has had no traffic (no record at all) for `idle_after_ms` of wall time **and** has
no lag (the consumer is at the end of the log), its watermark runs at wall-clock speed from
where it stood at the last traffic:

    watermark = max(watermark, watermark at the last traffic + (wall − last traffic wall − idle))

So a shop with no visitors still closes sessions and reaches silence milestones, while a
partition that is merely behind (lag > 0) waits for its events. An event arriving in a quiet
shop is late only if its delay exceeds `lateness + idle_after_ms`. The watermark never goes
back: a late event does not lower it, and `to_json`/`from_json` carry it through a rebuild.
The wall-time anchor is process-local and not persisted: after a restore (a rebalance, a
restart) the idle bound counts again from the first `tick`, starting from the restored
watermark, so a new owner waits one idle bound before advancing by wall time.

**Timers** (`TimerIndex`): per partition a min-heap of pending `(due, key)` with one pending
timer per key (a later `set` replaces the earlier one), O(log n) `set`/`cancel` by lazy
deletion with compaction (stale entries never outnumber live ones by much), and `pop_due`
returning the keys whose due time the watermark has reached, ordered by `(due, key)`. It is
derived state: `rebuild` from `(key, partition, due)` triples (the user table after a
rebalance) gives exactly the pops the original would have given. Memory: a key's timer is
one packed int `due << 44 | partition << 28 | slot` shared by the key map and the heap, plus
one list slot for the key; `bench_timer_index` measures it: at 1M keys 83 bytes per timer,
94 once every timer has been replaced (stale heap entries), not counting the key strings,
which the index shares with the caller (pass the user table's own key, or `sys.intern` ids,
or each costs another ~58 bytes).

**Silence** (`SilenceSchedule`): milestones (days after a user's last activity) at which a
silent user is scored again; `next_after` gives the next milestone after a watermark and its
index, `reached_at` the latest one reached.
"""

from __future__ import annotations

import bisect
import heapq
import random
import sys
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import pairwise

from streams.core.timeunits import DAY_MS

__all__ = [
    "ClockPolicy",
    "Milestone",
    "PartitionClock",
    "SilenceSchedule",
    "TimerBench",
    "TimerIndex",
    "bench_timer_index",
    "watermark",
]


# --- the clock ----------------------------------------------------------------------------------


def watermark(newest_event_ms: int, lateness_ms: int) -> int:
    """Event time up to which a partition's events are taken to be complete."""
    return newest_event_ms - lateness_ms


@dataclass(frozen=True, slots=True)
class ClockPolicy:
    lateness_ms: int
    # Wall time a partition must be quiet (no traffic, no lag) before its clock runs by wall
    # time; None: only events move it (replay, training, tests of pure event time).
    idle_after_ms: int | None = None

    def __post_init__(self) -> None:
        if self.lateness_ms < 0:
            raise ValueError(f"lateness_ms must be >= 0, got {self.lateness_ms}")
        if self.idle_after_ms is not None and self.idle_after_ms < 0:
            raise ValueError(f"idle_after_ms must be >= 0 or None, got {self.idle_after_ms}")


@dataclass(frozen=True, slots=True)
class PartitionClock:
    """One partition's event-time clock; immutable, each step returns the next clock."""

    newest_ms: int | None = None  # newest event time seen on the partition
    watermark_ms: int | None = None  # never decreases; None until the first event
    # Where the idle advance starts from: the wall time of the last traffic (or of the first
    # tick after a restore) and the watermark then. Process-local, not persisted.
    anchor_wall_ms: int | None = None
    anchor_watermark_ms: int | None = None

    def observe(self, event_ms: int | None, wall_ms: int | None,
                policy: ClockPolicy) -> PartitionClock:
        """Traffic on the partition: a record read at `wall_ms` (None in replay) whose event
        time is `event_ms` (None for a record without a valid event time: it still proves the
        partition is not idle). A batch may pass its newest event time once."""
        newest = self.newest_ms
        if event_ms is not None and (newest is None or event_ms > newest):
            newest = event_ms
        mark = self.watermark_ms
        if newest is not None:
            mark = _later(mark, watermark(newest, policy.lateness_ms))
        if wall_ms is None:
            return replace(self, newest_ms=newest, watermark_ms=mark)
        return PartitionClock(newest, mark, _later(self.anchor_wall_ms, wall_ms), mark)

    def tick(self, wall_ms: int, has_lag: bool, policy: ClockPolicy) -> PartitionClock:
        """The clock at wall time `wall_ms`: advanced by wall time if the partition is idle
        (see the module's rule), else unchanged."""
        if policy.idle_after_ms is None or self.watermark_ms is None:
            return self
        if self.anchor_wall_ms is None or self.anchor_watermark_ms is None:
            # First tick since a restore: the idle bound counts from now, from where it stands.
            return replace(self, anchor_wall_ms=wall_ms, anchor_watermark_ms=self.watermark_ms)
        if has_lag:
            return self
        quiet_beyond_bound = wall_ms - self.anchor_wall_ms - policy.idle_after_ms
        if quiet_beyond_bound <= 0:
            return self
        advanced = self.anchor_watermark_ms + quiet_beyond_bound
        if advanced <= self.watermark_ms:
            return self
        return replace(self, watermark_ms=advanced)

    def to_json(self) -> dict[str, int | None]:
        """What a changelog keeps: event-time facts only (the wall-time anchor is local)."""
        return {"newest_ms": self.newest_ms, "watermark_ms": self.watermark_ms}

    @classmethod
    def from_json(cls, doc: dict[str, int | None]) -> PartitionClock:
        newest, mark = doc.get("newest_ms"), doc.get("watermark_ms")
        if mark is None and newest is not None:
            raise ValueError("a clock that has seen an event must carry its watermark")
        return cls(newest_ms=newest, watermark_ms=mark)


def _later(a: int | None, b: int) -> int:
    return b if a is None or b > a else a


# --- timers -------------------------------------------------------------------------------------

# A pending timer is one int: due << _DUE_SHIFT | partition << _SLOT_BITS | slot. Ints order as
# (due, partition, slot), `>>` floors, so any due (negative too) round-trips; the key map and
# the heap share the same int object.
_SLOT_BITS = 28
_PARTITION_BITS = 16
_DUE_SHIFT = _SLOT_BITS + _PARTITION_BITS
_SLOT_MASK = (1 << _SLOT_BITS) - 1
_PARTITION_MASK = (1 << _PARTITION_BITS) - 1
# Compact a partition's heap once its stale entries pass a fifth of it (and this floor), so
# replaced and cancelled timers add at most ~25% to the memory of the pending ones.
_COMPACT_FLOOR = 1024
_STALE_SHARE = 5


class TimerIndex:
    """Pending timers, at most one per key, each on one partition; see the module docstring.

    Replaces `streams.core.feedback.TimerIndex` (same `set`/`pop_due`/`len`, same pop order).
    """

    def __init__(self) -> None:
        self._timers: dict[str, int] = {}  # key -> packed timer (the heap holds the same int)
        self._keys: list[str | None] = []  # slot -> key (None: free)
        self._free: list[int] = []  # free slots, reused
        self._heaps: dict[int, list[int]] = {}  # partition -> min-heap of packed timers
        self._stale: dict[int, int] = {}  # partition -> heap entries no longer pending

    def __len__(self) -> int:
        return len(self._timers)

    def __contains__(self, key: object) -> bool:
        return key in self._timers

    def due_of(self, key: str) -> int | None:
        packed = self._timers.get(key)
        return None if packed is None else packed >> _DUE_SHIFT

    def partition_of(self, key: str) -> int | None:
        packed = self._timers.get(key)
        return None if packed is None else (packed >> _SLOT_BITS) & _PARTITION_MASK

    def set(self, key: str, partition: int, due: int | None) -> None:
        """The key's one pending timer is now `due` on `partition` (None: cancel it)."""
        if due is None:
            self.cancel(key)
            return
        _check_partition(partition)
        old = self._timers.get(key)
        slot = self._take_slot(key) if old is None else old & _SLOT_MASK
        packed = (due << _DUE_SHIFT) | (partition << _SLOT_BITS) | slot
        if packed == old:
            return
        self._timers[key] = packed
        heapq.heappush(self._heaps.setdefault(partition, []), packed)
        if old is not None:
            self._mark_stale((old >> _SLOT_BITS) & _PARTITION_MASK)

    def cancel(self, key: str) -> None:
        old = self._timers.pop(key, None)
        if old is not None:
            self._release_slot(old & _SLOT_MASK)
            self._mark_stale((old >> _SLOT_BITS) & _PARTITION_MASK)

    def pop_due(self, partition: int, watermark_ms: int) -> list[str]:
        """Remove and return the keys on `partition` due at or before the watermark, ordered
        by (due, key)."""
        return [key for _, key in self.pop_due_items(partition, watermark_ms)]

    def pop_due_items(self, partition: int, watermark_ms: int) -> list[tuple[int, str]]:
        """As `pop_due`, with each key's due time: [(due, key), ...] sorted."""
        heap = self._heaps.get(partition)
        if not heap:
            return []
        bound = (watermark_ms + 1) << _DUE_SHIFT  # every packed timer with due <= watermark
        due: list[tuple[int, str]] = []
        stale_popped = 0
        while heap and heap[0] < bound:
            packed = heapq.heappop(heap)
            key = self._live_key(packed)
            if key is None:
                stale_popped += 1
                continue
            del self._timers[key]
            self._release_slot(packed & _SLOT_MASK)
            due.append((packed >> _DUE_SHIFT, key))
        if stale_popped:
            self._stale[partition] = max(0, self._stale.get(partition, 0) - stale_popped)
        due.sort()
        return due

    def next_due(self, partition: int) -> int | None:
        """The earliest pending due time on the partition (None: nothing pending)."""
        heap = self._heaps.get(partition)
        while heap and self._live_key(heap[0]) is None:
            heapq.heappop(heap)
            self._stale[partition] = max(0, self._stale.get(partition, 0) - 1)
        return heap[0] >> _DUE_SHIFT if heap else None

    def items(self) -> Iterator[tuple[str, int, int]]:
        """Every pending timer as (key, partition, due): what `rebuild` takes."""
        for key, packed in self._timers.items():
            yield key, (packed >> _SLOT_BITS) & _PARTITION_MASK, packed >> _DUE_SHIFT

    def drop_partition(self, partition: int) -> int:
        """Forget every timer on a partition (it was revoked); returns how many."""
        heap = self._heaps.pop(partition, [])
        self._stale.pop(partition, None)
        dropped = 0
        for packed in heap:
            key = self._live_key(packed)
            if key is not None:
                del self._timers[key]
                self._release_slot(packed & _SLOT_MASK)
                dropped += 1
        return dropped

    def rebuild(self, items: Iterable[tuple[str, int, int | None]]) -> None:
        """Replace every timer with `items` (key, partition, due; due None: none), e.g. from
        the user table after a rebalance. A key given twice keeps its last due time. Pops
        afterwards are exactly those of an index that had been given the same timers."""
        latest: dict[str, tuple[int, int]] = {}
        for key, partition, due in items:
            if due is None:
                latest.pop(key, None)
            else:
                _check_partition(partition)
                latest[key] = (partition, due)
        if len(latest) > _SLOT_MASK + 1:
            raise OverflowError(f"more than {_SLOT_MASK + 1} pending timers")
        self._timers, self._keys, self._free = {}, list(latest), []
        self._heaps, self._stale = {}, {}
        for slot, (key, (partition, due)) in enumerate(latest.items()):
            packed = (due << _DUE_SHIFT) | (partition << _SLOT_BITS) | slot
            self._timers[key] = packed
            self._heaps.setdefault(partition, []).append(packed)
        for heap in self._heaps.values():
            heapq.heapify(heap)

    # -- internals --

    def _live_key(self, packed: int) -> str | None:
        """The key whose pending timer this heap entry is, or None for a stale entry."""
        key = self._keys[packed & _SLOT_MASK]
        if key is None or self._timers.get(key) != packed:
            return None
        return key

    def _take_slot(self, key: str) -> int:
        if self._free:
            slot = self._free.pop()
            self._keys[slot] = key
            return slot
        slot = len(self._keys)
        if slot > _SLOT_MASK:
            raise OverflowError(f"more than {_SLOT_MASK + 1} pending timers")
        self._keys.append(key)
        return slot

    def _release_slot(self, slot: int) -> None:
        self._keys[slot] = None
        self._free.append(slot)

    def _mark_stale(self, partition: int) -> None:
        stale = self._stale.get(partition, 0) + 1
        heap = self._heaps[partition]
        if stale > _COMPACT_FLOOR and stale * _STALE_SHARE > len(heap):
            self._compact(partition)
        else:
            self._stale[partition] = stale

    def _compact(self, partition: int) -> None:
        """Drop a heap's stale entries (and duplicates a reused slot can leave): O(n),
        amortised over the at least n/5 replacements or cancels that made them."""
        live = dict.fromkeys(p for p in self._heaps[partition] if self._live_key(p) is not None)
        heap = list(live)
        heapq.heapify(heap)
        self._heaps[partition] = heap
        self._stale[partition] = 0


def _check_partition(partition: int) -> None:
    if not 0 <= partition <= _PARTITION_MASK:
        raise ValueError(f"partition must be in [0, {_PARTITION_MASK}], got {partition}")


# --- measurement --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimerBench:
    timers: int
    bytes_per_timer: float  # the index's own memory (tracemalloc), key strings excluded
    bytes_after_churn: float  # the same once every timer has been replaced (stale entries)
    key_bytes_per_timer: float  # the key strings', for the record (the user table holds them)
    sets_per_s: float  # replacing every key's timer with a later one
    pops_per_s: float  # popping them all, in watermark steps of an hour
    rebuild_s: float  # rebuilding an index from the items of this one

    def line(self) -> str:
        return (f"timers={self.timers:,} bytes/timer={self.bytes_per_timer:.1f} "
                f"after churn={self.bytes_after_churn:.1f} (keys +{self.key_bytes_per_timer:.1f}) "
                f"sets/s={self.sets_per_s:,.0f} pops/s={self.pops_per_s:,.0f} "
                f"rebuild={self.rebuild_s:.2f}s")


def bench_timer_index(n: int, partitions: int = 8, seed: int = 0) -> TimerBench:
    """Measure a `TimerIndex` of `n` users' timers: memory per timer, set and pop rates.

    Keys look like user ids ("u-0000042") and are made before measuring, as the user table
    holds them; due times are spread over 90 days from a 2026 epoch (full-width ints)."""
    rng = random.Random(seed)
    start = 1_767_225_600_000
    keys = [f"u-{i:07d}" for i in range(n)]
    parts = [i % partitions for i in range(n)]
    dues = [start + rng.randrange(90 * DAY_MS) for _ in range(n)]
    index = TimerIndex()

    def set_all(shift_ms: int) -> None:
        for key, partition, due in zip(keys, parts, dues, strict=True):
            index.set(key, partition, due + shift_ms)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        set_all(0)
        fresh = tracemalloc.get_traced_memory()[0] - before
        set_all(DAY_MS)  # every timer replaced once: stale entries until compaction
        churned = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    t0 = time.perf_counter()
    set_all(2 * DAY_MS)
    sets_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    TimerIndex().rebuild(index.items())
    rebuild_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    popped = 0
    for mark in range(start, start + 93 * DAY_MS, DAY_MS // 24):
        for partition in range(partitions):
            popped += len(index.pop_due(partition, mark))
    pops_s = time.perf_counter() - t0
    if popped != n:
        raise AssertionError(f"popped {popped} of {n} timers")
    key_bytes = sum(map(sys.getsizeof, keys))
    return TimerBench(n, fresh / n, churned / n, key_bytes / n, n / sets_s, n / pops_s,
                      rebuild_s)


# --- silence ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Milestone:
    index: int  # position in the schedule, 0-based (a stable part of a silence score's id)
    days: float  # silent this many days
    due_ms: int  # event time it is reached: last activity + days


@dataclass(frozen=True, slots=True)
class SilenceSchedule:
    """Days of silence after a user's last activity at which the user is scored again."""

    days: tuple[float, ...] = (1, 3, 7, 14, 30, 60, 90)
    _offsets_ms: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.days:
            raise ValueError("a silence schedule needs at least one milestone")
        if any(d <= 0 for d in self.days):
            raise ValueError(f"milestone days must be > 0, got {self.days}")
        offsets = tuple(round(d * DAY_MS) for d in self.days)
        if any(b <= a for a, b in pairwise(offsets)):
            raise ValueError(f"milestone days must increase strictly, got {self.days}")
        object.__setattr__(self, "_offsets_ms", offsets)

    def milestone(self, last_activity_ms: int, index: int) -> Milestone:
        return Milestone(index, self.days[index], last_activity_ms + self._offsets_ms[index])

    def next_after(self, last_activity_ms: int, watermark_ms: int) -> Milestone | None:
        """The first milestone due strictly after the watermark (None: past the last one).
        A milestone due exactly at the watermark has been reached, so it is not next."""
        index = bisect.bisect_right(self._offsets_ms, watermark_ms - last_activity_ms)
        return self.milestone(last_activity_ms, index) if index < len(self.days) else None

    def reached_at(self, last_activity_ms: int, watermark_ms: int) -> Milestone | None:
        """The latest milestone due at or before the watermark (None: none yet). After a long
        jump of the clock several may have passed at once; this is the one that stands."""
        index = bisect.bisect_right(self._offsets_ms, watermark_ms - last_activity_ms) - 1
        return self.milestone(last_activity_ms, index) if index >= 0 else None

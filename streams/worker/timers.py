"""The worker's event-time clocks and pending timers, for the input partitions it owns.

Both are derived state. A partition's clock (`streams.core.clock.PartitionClock`) is saved in
the progress table with the partition's input offsets, so it survives a restart and moves
with the partition; the timer index is rebuilt from the session table after an assignment
(each user's due time is a function of the user's state, `streams.core.silence.due_at`).

The rebuild reads every owned user's state: ~70 µs a user from RocksDB here, ~70 s at 1M
users (docs/benchmarks.md). It runs in chunks beside the batches (`begin_rebuild`, `add_rebuilt`,
`finish_rebuild`), so a restarted worker scores its input at once; until it ends, a timer
not yet read fires when its chunk is (late by at most the rebuild's duration, in wall time;
its score is the same, as ids and features come from the state). A user whose timer is set
meanwhile (a batch or a timer wrote the state) keeps that timer: the chunk that reads the
user may hold an older state (a store iterator sees the data as of its start).
No Faust here: the agent (streams/worker/agent.py) does the I/O around it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from streams.core.clock import ClockPolicy, PartitionClock, TimerIndex
from streams.core.sessions import UserState
from streams.core.silence import TimerPolicy, due_at


def user_partition(state: UserState) -> int | None:
    """The input partition a user's events come in on: that of the last record applied."""
    position = state.get("position")
    return None if position is None else position[0]


@dataclass
class _Message:
    topic: str
    partition: int


@dataclass
class PartitionAnchor:
    """Stands in for an event of a partition, so that a table write made outside a batch (a
    timer's) goes to that partition's changelog (`agent_io.as_current` reads only
    `message.topic` and `message.partition`)."""

    message: _Message

    @classmethod
    def of(cls, topic: str, partition: int) -> PartitionAnchor:
        return cls(_Message(topic, partition))


class WorkerTimers:
    """Clocks of the assigned input partitions and the users' pending timers on them."""

    def __init__(self, clock: ClockPolicy, policy: TimerPolicy) -> None:
        self.clock_policy = clock
        self.policy = policy
        self.clocks: dict[int, PartitionClock] = {}
        self.index = TimerIndex()
        self.stale = True  # an assignment happened: rebuild before use
        self.rebuilding = False  # between begin_rebuild and finish_rebuild
        self._owned: set[int] = set()
        self._touched: set[str] = set()  # users set while rebuilding: newer than any chunk
        self._saved: dict[int, dict[str, int | None]] = {}  # what the progress table holds

    def begin_rebuild(self, partitions: Collection[int],
                      saved_clock: Callable[[int], Mapping[str, Any] | None]) -> None:
        """Start over for an assignment: each partition's clock kept if this process already
        ran it, else restored from the progress table; no timers until `add_rebuilt` gives
        the users."""
        owned = set(partitions)
        self.index = TimerIndex()
        self._owned, self._touched = owned, set()
        self.rebuilding = True
        clocks = {}
        for partition in owned:
            clock = self.clocks.get(partition)
            if clock is None:
                doc = saved_clock(partition)
                clock = PartitionClock.from_json(dict(doc)) if doc else PartitionClock()
                self._saved[partition] = clock.to_json()
            clocks[partition] = clock
        self.clocks = clocks
        self.stale = False

    def add_rebuilt(self, users: Iterable[tuple[str, UserState | None]]) -> None:
        """A chunk of the session table: each owned user's timer, unless set meanwhile."""
        for user, state in users:
            if state and user not in self._touched \
                    and (partition := user_partition(state)) in self._owned:
                self.index.set(user, partition, due_at(state, self.policy))

    def finish_rebuild(self) -> int:
        """Every user was given: returns the number of pending timers."""
        self.rebuilding, self._touched = False, set()
        return len(self.index)

    def set(self, user: str, state: UserState | None) -> None:
        """The user's timer as the user's state now asks (none for a state with nothing due)."""
        if self.rebuilding:
            self._touched.add(user)
        partition = None if state is None else user_partition(state)
        if state is None or partition is None:
            self.index.cancel(user)
        else:
            self.index.set(user, partition, due_at(state, self.policy))

    def observe(self, partition: int, newest_ms: int | None, wall_ms: int) -> None:
        """A batch read records of the partition (`newest_ms`: its newest valid event time)."""
        clock = self.clocks.get(partition, PartitionClock())
        self.clocks[partition] = clock.observe(newest_ms, wall_ms, self.clock_policy)

    def tick(self, partition: int, wall_ms: int, has_lag: bool) -> None:
        clock = self.clocks.get(partition)
        if clock is not None:
            self.clocks[partition] = clock.tick(wall_ms, has_lag, self.clock_policy)

    def watermark(self, partition: int) -> int | None:
        clock = self.clocks.get(partition)
        return None if clock is None else clock.watermark_ms

    def pop_due(self, partition: int) -> list[str]:
        """The users on the partition whose timers the watermark reached, (due, user) order."""
        mark = self.watermark(partition)
        due = [] if mark is None else self.index.pop_due(partition, mark)
        if self.rebuilding:  # handed out: what follows is set from the state as it stands
            self._touched.update(due)
        return due

    def clock_doc(self, partition: int) -> dict[str, int | None] | None:
        clock = self.clocks.get(partition)
        return None if clock is None else clock.to_json()

    def unsaved(self) -> list[int]:
        """Partitions whose clock moved since it was last saved."""
        return [p for p, clock in self.clocks.items() if clock.to_json() != self._saved.get(p)]

    def saved(self, partition: int) -> None:
        doc = self.clock_doc(partition)
        if doc is not None:
            self._saved[partition] = doc

"""The worker's event-time clocks and pending timers, for the input partitions it owns.

Both are derived state. A partition's clock (`streams.core.clock.PartitionClock`) is saved in
the progress table with the partition's input offsets, so it survives a restart and moves
with the partition; the timer index is rebuilt from the session table after an assignment
(each user's due time is a function of the user's state, `streams.core.silence.due_at`).
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
        self._saved: dict[int, dict[str, int | None]] = {}  # what the progress table holds

    def rebuild(self, users: Iterable[tuple[str, UserState | None]],
                partitions: Collection[int],
                saved_clock: Callable[[int], Mapping[str, Any] | None]) -> int:
        """Timers from the session table's users on `partitions`; each partition's clock kept
        if this process already ran it, else restored from the progress table. Returns the
        number of pending timers."""
        owned = set(partitions)
        self.index.rebuild(
            (user, partition, due_at(state, self.policy))
            for user, state in users
            if state and (partition := user_partition(state)) in owned)
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
        return len(self.index)

    def set(self, user: str, state: UserState | None) -> None:
        """The user's timer as the user's state now asks (none for a state with nothing due)."""
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
        return [] if mark is None else self.index.pop_due(partition, mark)

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

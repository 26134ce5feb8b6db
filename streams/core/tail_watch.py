"""Input Faust dropped at the end of a partition: found by a position that stays short of the
end while nothing of the partition is processed. Pure.

Faust (0.15) can drop messages it has fetched without delivering them (rebalance, recovery;
`streams.core.offsets`). A dropped run in the middle of a partition shows up when the next
message is delivered (`offset_gaps`); a dropped run at the end has no next message, so nothing
ever reveals it, and Faust, whose fetch position is already past it, never delivers it again.
The partition then looks idle while its committed offset (or the agent's own next offset)
stays below its end. Seen on a feedback sidecar restarted after a SIGKILL: in its first
second it took 25 scores per partition and re-read a dropped run of `shop.events`
(`25-341`), then took nothing more for minutes, though the rest of `intent.scores` was on
the broker (the worker had finished): 100 examples stored where about 180 were due. A
dropped end of `shop.events` stops a partition's event-time clock instead, and the
predictions pending there never settle.

`TailWatch` says which partitions to send back: those whose position has stayed below the
highwater, with nothing of them processed, for `idle_s` (longer than a commit interval, so a
processed tail has been committed by then), and only while the agent waits for input (a batch
in flight may be holding the rest back: sending the consumer back then would only redeliver
what is on its way), once per (position, highwater) pair, so input
that holds no record (transaction markers) costs one redundant seek, not a loop. Sending the
consumer back is safe: redelivered input is idempotent downstream.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from streams.core.offsets import lower_known

TopicPartition = tuple[str, int]


def tail_position(committed: int | None, next_offset: int | None) -> int:
    """Where a partition's processed input provably ends: the lower of Faust's commit and the
    agent's own next offset (neither known: nothing processed, so the start).

    Processed input with no commit at all is one record short of its end: Faust commits only
    what it acked itself, so a partition whose input was all processed in an earlier
    assignment, then read and dropped unacked by this one, is never committed (seen on Apache
    Kafka: a worker took over a killed one's partition, every event was scored, and the group
    offset stayed unset). Sending Faust back to the last processed record makes it deliver that
    one again (skipped downstream as redelivered), ack it, and commit the end."""
    if committed is None and next_offset:
        return next_offset - 1
    position = lower_known(committed, next_offset)
    return 0 if position is None else position


@dataclass
class TailWatch:
    idle_s: float
    _seen: dict[TopicPartition, float] = field(default_factory=dict)
    _sent: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    _busy: bool = False

    def reset(self) -> None:
        """Forget everything (a new assignment: Faust itself rewinds to the commit)."""
        self._seen.clear()
        self._sent.clear()

    def started(self) -> None:
        """A batch is in flight: nothing is sent back until it is processed."""
        self._busy = True

    def processed(self, tps: Iterable[TopicPartition], now: float) -> None:
        self._busy = False
        for tp in tps:
            self._seen[tp] = now

    def stalled(
        self,
        positions: Mapping[TopicPartition, int],
        highwaters: Mapping[TopicPartition, int | None],
        now: float,
    ) -> dict[TopicPartition, int]:
        """tp -> offset to send the consumer back to, for each assigned partition stuck below
        its end. `positions`: `tail_position` per partition; `highwaters`: the assigned
        partitions' ends as of the consumer's last fetch (None: not fetched yet)."""
        out: dict[TopicPartition, int] = {}
        if self._busy:
            return out
        for tp, highwater in highwaters.items():
            position = positions.get(tp)
            if position is None or highwater is None or position >= highwater:
                self._seen.pop(tp, None)  # at the end: the idle clock starts at the next stall
                continue
            since = self._seen.setdefault(tp, now)
            if now - since < self.idle_s or self._sent.get(tp) == (position, highwater):
                continue
            self._sent[tp] = (position, highwater)
            out[tp] = position
        return out

"""Input offsets: finding what Faust skipped, so no accepted event is lost. Pure.

During a rebalance Faust (0.15) can drop buffered messages it has read, so an agent never sees
them: without an ack (its Cython iterator, queue clears), which leaves a hole its commit never
passes; or, on other paths, with one, so its commit passes them (faust-streaming/faust#527).
A gap is found against two cursors, whichever is lower:
- the agent's own next offset per input partition, in a changelog-backed table (input Faust
  acked without processing: its commit passed it);
- where the group consumer's delivery must go on in its current generation, which starts at
  the committed offset (`DeliveryCursor`: input dropped unacked; the progress table alone misses
  it when a previous owner processed past the commit, and the commit then froze for good).
It is re-read before the batch that reveals it (`streams.runtime.agent_io.with_skipped`); once
the batch is processed the gap is acked in Faust's bookkeeping (`fill_gaps`), so the commit
moves on. User state is idempotent by input position, so a gap that was in fact processed — or
holds only transaction markers on Apache Kafka — costs only a re-read.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from streams.core.raw_message import RawMessage


@dataclass(frozen=True, slots=True)
class Gap:
    topic: str
    partition: int
    start: int  # first offset not seen
    end: int  # first offset seen again (exclusive)


def offset_gaps(
    messages: Sequence[RawMessage], next_offset: Callable[[str, int], int | None]
) -> list[Gap]:
    """Offset ranges missing before or between the batch's messages, per topic partition.
    `next_offset` gives the offset after the last one processed (None: nothing known)."""
    expected: dict[tuple[str, int], int | None] = {}
    gaps = []
    for msg in messages:
        tp = (msg.topic, msg.partition)
        if tp not in expected:
            expected[tp] = next_offset(*tp)
        want = expected[tp]
        if want is not None and msg.offset > want:
            gaps.append(Gap(msg.topic, msg.partition, want, msg.offset))
        expected[tp] = max(msg.offset + 1, want or 0)
    return gaps


def next_offsets(messages: Sequence[RawMessage]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset after the batch's last message there."""
    out: dict[tuple[str, int], int] = {}
    for msg in messages:
        tp = (msg.topic, msg.partition)
        out[tp] = max(out.get(tp, 0), msg.offset + 1)
    return out


def splice(messages: Sequence[RawMessage], recovered: Sequence[RawMessage]) -> list[RawMessage]:
    """The batch with re-read messages put back in offset order within their partition."""
    pending = sorted(recovered, key=lambda m: m.offset)
    out: list[RawMessage] = []
    for msg in messages:
        keep = []
        for r in pending:
            if (r.topic, r.partition) == (msg.topic, msg.partition) and r.offset < msg.offset:
                out.append(r)
            else:
                keep.append(r)
        pending = keep
        out.append(msg)
    return out + pending


def lower_known(*offsets: int | None) -> int | None:
    """The lowest of the offsets that are known (None if none is)."""
    known = [o for o in offsets if o is not None]
    return min(known) if known else None


class DeliveryCursor:
    """Per consumer generation, the offset after the last one of each partition the group
    consumer delivered (or a processed gap filled) in that generation.

    A generation starts at the committed offset (a rebalance rewinds there), so until a
    partition's first batch of the generation the cursor defers to it. Only input of the
    current generation moves the cursor: a stale event from before the rebalance says nothing
    about what the new generation delivered. Lower is safe (a redundant re-read), higher is not.
    """

    def __init__(self) -> None:
        self._generation: int | None = None
        self._next: dict[tuple[str, int], int] = {}

    def expected(self, generation: int, topic: str, partition: int,
                 committed: int | None) -> int | None:
        if generation != self._generation:
            return committed
        return self._next.get((topic, partition), committed)

    def advance(self, generation: int, offsets: Mapping[tuple[str, int], int]) -> None:
        if generation != self._generation:
            self._generation, self._next = generation, {}
        for tp, n in offsets.items():
            self._next[tp] = max(self._next.get(tp, n), n)

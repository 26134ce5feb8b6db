"""Regression (scale-out test, 2026-12-01): after a rebalance, shop.events[4]'s commit crept
one offset per commit interval (1428, 1430, 1431, 1434, …) and was at 1442 of 2731 when the
test gave up, though every offset had been processed and acked.

The joining worker's log (temporary debug of Faust's bookkeeping): its first batch held
[4]:1428-1502, acked, and Faust's `_gap[tp]` held Interval(1429, 1503); then a second fetch of
1428-2729 was dropped as already read ("DROPPED MESSAGE ROFF"). So Faust's read offset had
been put back to the commit (most likely its seek to the committed offset after recovery, which
runs after the partitions are resumed; the log shows the effect, not the seek) while it still
delivered records it had fetched: 1502 looked like a jump past read offset 1428 and became a log
gap (`Consumer._add_gap`), over offsets that were delivered and acked too. `_new_offset` appends
a gap's offsets to the acked list without checking it, and its run of consecutive offsets
(`consecutive_numbers`) ends at every duplicate: each commit then passes one offset. The same
happens when the gap re-read (`fill_gaps`) acks a range that Faust also recorded as a gap.

Our consumer (`streams.runtime.faust_base`) merges gaps without duplicates. Checked against
Faust's real Consumer; only the assignment and the agent's topic subscription are stood in for.
"""

from __future__ import annotations

import asyncio

import faust
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams.core.offsets import Gap
from streams.runtime.agent_io import fill_gaps
from streams.runtime.faust_base import IntentstreamFaustApp

TOPIC = "shop.events"
TP4 = TP(TOPIC, 4)


def stand_in(consumer, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(consumer, "assignment", lambda: {TP4})
    # An agent's input topic is acked (Faust's conductor knows it from the agent's channel).
    monkeypatch.setattr(consumer.app.topics, "acks_enabled_for", lambda topic: topic == TOPIC)
    return consumer


@pytest.fixture
def faust_consumer(monkeypatch: pytest.MonkeyPatch):
    return stand_in(faust.App("regression-gap-faust", broker="kafka://127.0.0.1:1").consumer,
                    monkeypatch)


@pytest.fixture(params=[20, None], ids=["embedded", "kafka"])
def our_consumer(request, monkeypatch: pytest.MonkeyPatch):
    app = IntentstreamFaustApp("regression-gap-ours", broker="kafka://127.0.0.1:1",
                               fetch_max_wait_ms=request.param)
    return stand_in(app.consumer, monkeypatch)


def ack(consumer, offsets: range) -> None:
    for offset in offsets:
        consumer.ack(ConsumerMessage(topic=TOPIC, partition=4, offset=offset, timestamp=0.0,
                                     timestamp_type=0, headers=None, key=None, value=None,
                                     checksum=None, tp=TP4))


def commits_until(consumer, end: int, limit: int = 500) -> int:
    """How many commits (one `_new_offset` each, as `force_commit` does) until `end`."""
    for n in range(1, limit + 1):
        offset = consumer._new_offset(TP4)
        if offset is not None and consumer._should_commit(TP4, offset):
            consumer._committed_offset[TP4] = offset  # what `_commit_offsets` records
        if consumer._committed_offset[TP4] == end:
            return n
    raise AssertionError(f"committed {consumer._committed_offset[TP4]} after {limit} commits")


def add_gap(consumer, start: int, end_inclusive: int) -> None:
    """Faust's drain loop records a log gap when a fetched offset jumps past its read offset."""
    asyncio.run(consumer._add_gap(TP4, start, end_inclusive))


def the_run(consumer) -> None:
    """What the joining worker's Faust went through, in its bookkeeping."""
    consumer._committed_offset[TP4] = 1428  # the seek to the committed offset
    ack(consumer, range(1428, 1503))  # its first batch, processed
    add_gap(consumer, 1429, 1502)  # 1502 delivered with the read offset put back at 1428
    ack(consumer, range(1503, 2731))  # the rest, processed


def test_faust_s_own_merge_creeps_one_offset_per_commit(faust_consumer):
    """The premise: with Faust's Consumer the commit needs one interval per false-gap offset
    (2.8 s each: 3.5 minutes here). If this fails, Faust changed and the override may go."""
    the_run(faust_consumer)
    assert commits_until(faust_consumer, 2731) > 70


def test_our_consumer_commits_the_end_at_once(our_consumer):
    the_run(our_consumer)
    assert commits_until(our_consumer, 2731) == 1


def test_a_re_read_gap_that_faust_also_recorded_commits_at_once(our_consumer):
    """Faust dropped [4]:1502-1519 while fetching (its read offset stayed at 1501, so 1520 made
    a log gap); the guard re-read and processed them and acked them with `fill_gaps`."""
    our_consumer._committed_offset[TP4] = 1500
    ack(our_consumer, range(1500, 1502))
    add_gap(our_consumer, 1502, 1520)
    fill_gaps(our_consumer, [Gap(TOPIC, 4, 1502, 1520)])
    ack(our_consumer, range(1520, 1600))
    assert commits_until(our_consumer, 1600) == 1


def test_the_commit_never_passes_the_highest_acked_offset(faust_consumer, our_consumer):
    """A gap's interval ends at the offset that revealed it, which may still be in a batch being
    processed (a Triton outage holds one for minutes): Faust merges whole intervals, so once it
    has crept through the duplicates it commits past input not processed yet."""
    for consumer in (faust_consumer, our_consumer):
        consumer._committed_offset[TP4] = 1428
        ack(consumer, range(1428, 1451))  # a batch up to 1450; 1451-1502 still in flight
        add_gap(consumer, 1429, 1502)
    assert commits_until(faust_consumer, 1503) == 23  # 1451-1502 never acked
    assert commits_until(our_consumer, 1451) == 1
    assert our_consumer._new_offset(TP4) is None  # and there it stays
    ack(our_consumer, range(1451, 1503))  # the in-flight batch, processed
    assert commits_until(our_consumer, 1503) == 1


def test_a_real_hole_still_holds_the_commit(our_consumer):
    """Merging without duplicates must not commit past input nobody acked or logged as a gap."""
    our_consumer._committed_offset[TP4] = 1428
    ack(our_consumer, range(1428, 1450))
    ack(our_consumer, range(1460, 1500))  # 1450-1459 dropped unacked, no log gap
    assert our_consumer._new_offset(TP4) == 1450
    our_consumer._committed_offset[TP4] = 1450
    assert our_consumer._new_offset(TP4) is None

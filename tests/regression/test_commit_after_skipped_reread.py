"""Regression (scale-out issue): after a rebalance, Faust read and dropped shop.events[0]
1441-1469 unacked; the guard re-read and processed them, yet the partition's commit stayed at
1441 for good, because Faust commits only the unbroken run of acked offsets from its committed
one. `fill_gaps` acks the processed gap in Faust's own bookkeeping (its real Consumer here;
only the assignment and the agent's topic subscription are stood in for, as no broker runs)."""

from __future__ import annotations

import faust
import pytest
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams.core.offsets import DeliveryCursor, Gap, lower_known, offset_gaps
from streams.core.raw_message import RawMessage
from streams.runtime.agent_io import committed_offset, fill_gaps

TOPIC = "shop.events"


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch):
    consumer = faust.App("regression-commit", broker="kafka://127.0.0.1:1").consumer
    monkeypatch.setattr(consumer, "assignment", lambda: {TP(TOPIC, 0)})
    # An agent's input topic is acked (Faust's conductor knows it from the agent's channel).
    monkeypatch.setattr(consumer.app.topics, "acks_enabled_for", lambda topic: topic == TOPIC)
    return consumer


def ack(consumer, partition: int, offsets: range) -> None:
    tp = TP(TOPIC, partition)
    for offset in offsets:
        consumer.ack(ConsumerMessage(topic=TOPIC, partition=partition, offset=offset,
                                     timestamp=0.0, timestamp_type=0, headers=None, key=None,
                                     value=None, checksum=None, tp=tp))


def test_a_hole_left_by_dropped_records_freezes_the_commit_until_filled(consumer):
    tp = TP(TOPIC, 0)
    consumer._committed_offset[tp] = 1441
    ack(consumer, 0, range(1470, 3463))  # what Faust delivered and the batches acked
    assert len(consumer._acked[tp]) == 3463 - 1470
    assert consumer._new_offset(tp) is None  # the stall: nothing to commit, ever
    fill_gaps(consumer, [Gap(TOPIC, 0, 1441, 1470)])  # the re-read range, once processed
    assert consumer._new_offset(tp) == 3463


def test_gaps_of_partitions_no_longer_assigned_are_left_to_their_new_owner(consumer):
    tp = TP(TOPIC, 1)
    consumer._committed_offset[tp] = 100
    ack(consumer, 1, range(120, 130))
    fill_gaps(consumer, [Gap(TOPIC, 1, 100, 120)])
    assert consumer._new_offset(tp) is None


def test_a_hole_below_the_progress_table_is_found_from_faust_s_committed_offset(
        consumer, monkeypatch: pytest.MonkeyPatch):
    """CI run of 2026-12-01 (three workers, one SIGKILLed): shop.events[4] committed 542 of
    2730. The killed owner had processed (and written progress for) far past its last commit;
    the new owner's Faust rewound to 542 and dropped the head of its delivery unacked. The
    progress table (next = 2730) saw no gap; the delivery cursor, which starts each generation
    at Faust's committed offset, does."""
    tp = TP(TOPIC, 4)
    monkeypatch.setattr(consumer, "assignment", lambda: {tp})
    consumer._committed_offset[tp] = 542
    delivered = [RawMessage(key=b"u", value=b"{}", topic=TOPIC, partition=4, offset=o,
                            timestamp_ms=0) for o in range(600, 2730)]
    progress = {(TOPIC, 4): 2730}  # written by the previous owner

    assert offset_gaps(delivered, lambda t, p: progress.get((t, p))) == []  # the old guard

    cursor, generation = DeliveryCursor(), 7
    def expected(topic: str, partition: int) -> int | None:
        return lower_known(progress.get((topic, partition)), cursor.expected(
            generation, topic, partition, committed_offset(consumer, TP(topic, partition))))
    gaps = offset_gaps(delivered, expected)
    assert gaps == [Gap(TOPIC, 4, 542, 600)]

    ack(consumer, 4, range(600, 2730))  # the batch, processed with the re-read gap
    assert consumer._new_offset(tp) is None
    fill_gaps(consumer, gaps)
    assert consumer._new_offset(tp) == 2730

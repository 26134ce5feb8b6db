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

from streams.core.offsets import Gap
from streams.runtime.agent_io import fill_gaps

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

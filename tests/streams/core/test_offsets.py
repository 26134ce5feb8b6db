"""The delivery cursor: where the group consumer's delivery of a partition must go on."""

from __future__ import annotations

from streams.core.offsets import DeliveryCursor, lower_known

TP = ("shop.events", 0)


def test_a_generation_starts_at_the_committed_offset_then_follows_delivery():
    cursor = DeliveryCursor()
    assert cursor.expected(1, *TP, committed=100) == 100
    cursor.advance(1, {TP: 150})
    assert cursor.expected(1, *TP, committed=100) == 150
    cursor.advance(1, {TP: 120})  # never backwards within a generation
    assert cursor.expected(1, *TP, committed=100) == 150
    assert cursor.expected(1, "shop.events", 1, committed=7) == 7  # a partition not yet seen


def test_a_new_generation_forgets_the_old_delivery():
    cursor = DeliveryCursor()
    cursor.advance(1, {TP: 150})
    assert cursor.expected(2, *TP, committed=110) == 110  # rewound to the commit
    cursor.advance(2, {TP: 130})
    assert cursor.expected(2, *TP, committed=110) == 130
    assert cursor.expected(2, *TP, committed=None) == 130


def test_nothing_known_is_none_and_the_lower_known_cursor_wins():
    assert DeliveryCursor().expected(1, *TP, committed=None) is None
    assert lower_known(None, None) is None
    assert lower_known(2730, None) == 2730
    assert lower_known(2730, 542) == 542


def test_delivery_goes_on_after_this_generation_s_events_and_the_gaps_filled():
    from types import SimpleNamespace

    from streams.core.offsets import Gap
    from streams.runtime.agent_io import delivered_next

    def event(offset: int, generation: int) -> SimpleNamespace:
        return SimpleNamespace(message=SimpleNamespace(
            topic="shop.events", partition=0, offset=offset, generation_id=generation))

    events = [event(900, 6), event(560, 7), event(561, 7)]  # 900: stale, before the rebalance
    assert delivered_next(events, [], generation=7) == {TP: 562}
    gaps = [Gap("shop.events", 0, 542, 560), Gap("shop.events", 1, 10, 20)]
    assert delivered_next(events, gaps, generation=7) == {TP: 562, ("shop.events", 1): 20}

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

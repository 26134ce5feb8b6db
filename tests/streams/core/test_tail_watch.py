"""TailWatch: a partition stuck below its end with nothing processed is sent back, once."""

from __future__ import annotations

from streams.core.tail_watch import TailWatch, tail_position

EV = ("shop.events", 0)
SC = ("intent.scores", 0)


def test_a_dropped_tail_is_sent_back_to_where_processed_input_ends_after_idle_s():
    watch = TailWatch(idle_s=5)
    watch.processed([EV], now=0)
    # Faust read offsets 200..220 and dropped them: the commit stays at 200, the end is 221.
    assert watch.stalled({EV: 200}, {EV: 221}, now=4) == {}
    assert watch.stalled({EV: 200}, {EV: 221}, now=5) == {EV: 200}


def test_sent_back_once_per_position_and_end_then_again_if_still_stuck_elsewhere():
    watch = TailWatch(idle_s=5)
    assert watch.stalled({EV: 200}, {EV: 221}, now=0) == {}  # first look starts the clock
    assert watch.stalled({EV: 200}, {EV: 221}, now=6) == {EV: 200}
    assert watch.stalled({EV: 200}, {EV: 221}, now=20) == {}  # e.g. a transaction marker
    assert watch.stalled({EV: 200}, {EV: 230}, now=21) == {EV: 200}  # new input, still stuck


def test_a_partition_that_is_processed_or_at_its_end_is_never_sent_back():
    watch = TailWatch(idle_s=5)
    for now in range(0, 30, 2):
        watch.processed([SC], now=now)  # live input: behind its end, but being processed
        assert watch.stalled({SC: 10 + now, EV: 221}, {SC: 12 + now, EV: 221}, now=now) == {}
    assert watch.stalled({EV: 221}, {EV: None}, now=100) == {}  # nothing fetched yet: unknown


def test_reaching_the_end_restarts_the_idle_clock_and_reset_forgets():
    watch = TailWatch(idle_s=5)
    watch.stalled({EV: 200}, {EV: 221}, now=0)
    watch.stalled({EV: 221}, {EV: 221}, now=3)  # caught up
    assert watch.stalled({EV: 221}, {EV: 240}, now=6) == {}  # a new stall starts its own clock
    assert watch.stalled({EV: 221}, {EV: 240}, now=11) == {EV: 221}
    watch.reset()
    assert watch.stalled({EV: 221}, {EV: 240}, now=12) == {}


def test_tail_position_is_the_lower_known_of_commit_and_own_progress():
    assert tail_position(200, 215) == 200  # processed past the commit: the commit bounds it
    assert tail_position(221, 215) == 215  # the commit passed input never processed
    assert tail_position(None, 215) == 214  # processed, never committed: redeliver the last
    assert tail_position(None, 0) == 0
    assert tail_position(None, None) == 0  # nothing processed: from the start


def test_nothing_is_sent_back_while_a_batch_is_in_flight():
    watch = TailWatch(idle_s=5)
    watch.stalled({EV: 200}, {EV: 221}, now=0)
    watch.started()  # e.g. a long batch of other partitions: EV's rest may be queued behind it
    assert watch.stalled({EV: 200}, {EV: 221}, now=30) == {}
    watch.processed([SC], now=31)
    assert watch.stalled({EV: 200}, {EV: 221}, now=31) == {EV: 200}

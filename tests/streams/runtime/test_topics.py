"""Startup check of existing topics' partition counts (streams/runtime/topics.py), pure part."""

from __future__ import annotations

from streams.runtime.topics import mismatch_error, partition_mismatches

OUTPUTS = ["scores", "dlq"]


def test_matching_or_missing_topics_are_fine():
    assert partition_mismatches({}, 4, "events", OUTPUTS) == []
    assert partition_mismatches({"events": 4, "scores": 4}, 4, "events", OUTPUTS) == []


def test_a_topic_with_another_count_is_named_with_both_counts():
    [problem] = partition_mismatches({"events": 4, "scores": 6}, 4, "events", OUTPUTS)
    assert "'scores'" in problem and "6 partitions" in problem and "PARTITIONS is 4" in problem


def test_an_output_with_fewer_partitions_than_the_input_is_reported_as_such():
    problems = partition_mismatches({"events": 8, "scores": 4, "dlq": 8}, 8, "events", OUTPUTS)
    assert problems == [
        "topic 'scores' has 4 partitions but PARTITIONS is 8",
        "output topic 'scores' has 4 partitions, fewer than the input topic 'events' (8)",
    ]


def test_an_input_that_differs_from_the_setting_is_reported():
    problems = partition_mismatches({"events": 2, "scores": 4}, 4, "events", OUTPUTS)
    assert problems == ["topic 'events' has 2 partitions but PARTITIONS is 4"]


def test_the_error_exits_non_zero_with_the_problems_as_its_message():
    error = mismatch_error(["topic 'scores' has 6 partitions but PARTITIONS is 4"])
    assert isinstance(error, SystemExit)
    assert "cannot start: topic 'scores' has 6 partitions but PARTITIONS is 4" in str(error)

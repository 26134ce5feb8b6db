"""`intentstream bench state`: its bookkeeping (pure). The measurement itself needs Apache Kafka,
Triton and minutes; its figures are in docs/benchmarks.md, not asserted here."""

from __future__ import annotations

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from bench.cli import main as bench_main
from bench.measure import BenchError
from bench.state import (
    PLACEHOLDER_PARTITION,
    PROBE_USER,
    TEMPLATE_USER,
    Row,
    check_continued,
    partition_of,
    positive_ints,
    probe_event,
    rebuilt_users,
    report_lines,
    slope,
    state_record,
    store_urls,
    template_state,
    user_id,
)
from streams.core.batching import plan_batch
from streams.core.raw_message import RawMessage
from streams.settings import Settings
from streams.worker.timers import WorkerTimers


@pytest.mark.parametrize(("text", "parsed"), [
    ("10000,100000", [10000, 100000]), ("300,20", [20, 300]), ("0,5", None), ("x", None),
])
def test_user_counts(text: str, parsed: list[int] | None) -> None:
    assert positive_ints(text) == parsed


@pytest.mark.parametrize(("text", "parsed"), [
    ("memory,rocksdb", ["memory://", "rocksdb://"]), ("rocksdb", ["rocksdb://"]),
    ("redis", None),
])
def test_store_names(text: str, parsed: list[str] | None) -> None:
    assert store_urls(text) == parsed


def test_the_template_is_a_scored_users_state_with_a_placeholder_position() -> None:
    state = template_state(Settings())
    current = state["current"]
    assert current is not None and current["n_events"] == 10  # the 4th session of 10 events
    assert state["pending"] == [] and state["position"] == [PLACEHOLDER_PARTITION, -1]


def test_a_users_record_is_the_template_as_theirs() -> None:
    template = orjson.dumps(template_state(Settings()))
    key, value = state_record(template, user_id(42), 4)
    assert key == b'"u-0000042"' and len(user_id(42)) == len(TEMPLATE_USER)
    state = orjson.loads(value)
    assert state["current"]["user_id"] == "u-0000042" and TEMPLATE_USER not in value.decode()
    # At the partition the user's events go to, so the worker indexes the user's timer.
    assert state["position"] == [partition_of(user_id(42), 4), -1]
    timers = WorkerTimers(Settings().clock_policy(), Settings().timer_policy())
    timers.begin_rebuild([partition_of(user_id(42), 4)], lambda p: None)
    timers.add_rebuilt([(user_id(42), state)])
    assert timers.finish_rebuild() == 1


def test_the_probe_continues_the_open_session_when_the_worker_plans_it() -> None:
    settings = Settings()
    state = template_state(settings)
    user = user_id(PROBE_USER)
    key, value, event_id = probe_event(state, 1)
    message = RawMessage(key, value, "events", 0, 10_000, orjson.loads(value)["ts"])
    plan = plan_batch([message], lambda _: state, settings.session_policy(),
                      settings.max_event_bytes)
    assert plan.states[user]["current"]["n_events"] == 11
    assert plan.states[user]["current"]["last_event_id"] == event_id


def test_a_score_that_lost_the_state_fails_the_run() -> None:
    state = template_state(Settings())
    ok = orjson.dumps({"window": {"n_events": 11}})
    check_continued(ok, state, 1, "run")
    with pytest.raises(BenchError, match="did not recover"):
        check_continued(orjson.dumps({"window": {"n_events": 1}}), state, 1, "run")


def test_partition_is_the_default_producers() -> None:
    partitioner = DefaultPartitioner()
    for n in range(50):
        user = user_id(n)
        assert partition_of(user, 4) == partitioner(user.encode(), [0, 1, 2, 3], [0, 1, 2, 3])


def test_slope_is_least_squares() -> None:
    assert slope([1.0, 2.0, 3.0], [3.0, 5.0, 7.0]) == pytest.approx((2.0, 1.0))
    assert slope([5.0], [4.0]) == (0.0, 4.0)


def test_report_extrapolates_only_past_the_measured_sizes_and_says_so() -> None:
    rows = [Row("rocksdb", 10_000, 3100, 1500, 6.0, 5.0, 5.5, 150),
            Row("rocksdb", 100_000, 3100, 1400, 30.0, 5.9, 10.0, 160)]
    lines = list(report_lines(rows))
    assert "slope rocksdb: restart +1.00 s, timers +5.00 s and RSS +11 MB per 100k users" \
        in lines[3]
    assert lines[4].startswith("  extrapolated to 1,000,000 users (not measured): restart 14.9 s,"
                               " timers 55.0 s")
    assert len(list(report_lines(rows, at=100_000))) == 4


def test_the_rebuilt_users_come_from_the_largest_timers_rebuilt_line() -> None:
    log = "\n".join([
        '{"event": "timers.rebuilt", "users": 0, "pending": 0}',
        'Faust says something that is not JSON "timers.rebuilt"',
        '{"event": "batch.done", "valid": 1}',
        '{"event": "timers.rebuilt", "users": 300000, "pending": 300000}',
    ])
    assert rebuilt_users(log) == 300_000
    assert rebuilt_users('{"event": "batch.done"}') == -1


def test_bench_state_refuses_bad_sizes(capsys) -> None:
    assert bench_main(["state", "--users", "0"]) == 2
    assert "--users" in capsys.readouterr().err

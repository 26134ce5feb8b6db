"""The broker- and Triton-free parts: sources, ordering into ticks, outcomes, canonical JSON."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from backtest.engine import EngineConfig, order_messages
from backtest.evaluate import covering_alert
from backtest.jobs import unscorable
from backtest.labels import outcomes_of
from backtest.report import canonical
from backtest.sources import read_file
from streams.core.alerts import AlertPolicy
from streams.core.labelling import LabelPolicy
from streams.core.sessions import SessionPolicy
from streams.core.timeunits import DAY_MS, HOUR_MS
from tests.backtest.fixtures import UCI_CSV, write_jsonl
from training.data import uci
from training.data.event_files import csv_row_event, file_message


def config(tick_ms: int | None = 500, **range_ms: int) -> EngineConfig:
    return EngineConfig(
        session=SessionPolicy(gap_ms=1_800_000, max_span_ms=4 * HOUR_MS, max_events=64,
                              max_chars=1200),
        alerts=AlertPolicy(), labels=LabelPolicy(), max_event_bytes=16_384, retry_max_s=1.0,
        lateness_ms=0, tick_ms=tick_ms, **range_ms,
    )


def test_csv_rows_become_events_with_typed_fields():
    row = {"event_id": "e1", "user_id": "u1", "ts": "1767225600000", "type": "review",
           "rating": "2", "text": "broke", "item.id": "sku-1", "item.price": "9.5",
           "item.title": "", "query": ""}
    assert csv_row_event(row) == {
        "event_id": "e1", "user_id": "u1", "ts": 1767225600000, "type": "review", "rating": 2,
        "text": "broke", "item": {"id": "sku-1", "price": 9.5}}
    iso = csv_row_event({"ts": "2026-01-01T00:00:00", "rating": "two"})
    assert iso == {"ts": "2026-01-01T00:00:00", "rating": "two"}  # the schema rejects "two"


def test_file_records_are_keyed_by_their_user():
    assert file_message(b'{"user_id": "u-7", "ts": 1}', "f", 0).key == b"u-7"
    assert file_message(b"{not json", "f", 1).key is None
    assert file_message({"user_id": "u-8"}, "f", 2).key == b"u-8"


def test_the_uci_csv_is_recognised_and_converted_as_training_converts_it():
    source = read_file(UCI_CSV, limit_rows=50)
    sessions = uci.load_sessions(UCI_CSV)[:50]
    assert source.uci is not None and source.description["format"] == "uci_online_shoppers"
    assert source.uci.revenue == tuple(s.revenue for s in sessions)
    assert len(source.messages) == sum(len(s.events) for s in sessions)
    assert source.uci.users[7] == sessions[7].events[0]["user_id"]


def test_order_is_by_event_time_whatever_the_input_order(sim_events, tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", sim_events[:300], (b"{broken", b"[1]"))
    messages = read_file(path).messages
    shuffled = list(messages)
    random.Random(1).shuffle(shuffled)
    a, b = order_messages(messages, config()), order_messages(shuffled, config())

    def ids(ordered):
        return [[e.event_id for _, e in tick] for tick in ordered.ticks]

    assert ids(a) == ids(b)
    assert [m.offset for m in a.malformed] == [m.offset for m in b.malformed] == [300, 301]
    flat = [e for tick in a.ticks for _, e in tick]
    assert [(e.ts, e.user_id, e.event_id) for e in flat] == sorted(
        (e.ts, e.user_id, e.event_id) for e in flat)
    assert all(len({e.ts // 500 for _, e in tick}) == 1 for tick in a.ticks)


def test_range_splits_scoring_from_label_only_events(sim_events, tmp_path):
    messages = read_file(write_jsonl(tmp_path / "e.jsonl", sim_events)).messages
    start, end = sim_events[0]["ts"] + DAY_MS, sim_events[0]["ts"] + 3 * DAY_MS
    ordered = order_messages(messages, config(
        tick_ms=60_000, score_from=start, score_until=end, label_until=end + DAY_MS))
    scored = [e.ts for tick in ordered.ticks for _, e in tick]
    labels_only = [e.ts for tick in ordered.label_ticks for _, e in tick]
    assert scored and min(scored) >= start and max(scored) < end
    assert labels_only and min(labels_only) >= end and max(labels_only) < end + DAY_MS
    assert ordered.outside == len(sim_events) - len(scored) - len(labels_only)


def test_one_tick_for_the_whole_range(sim_events, tmp_path):
    messages = read_file(write_jsonl(tmp_path / "e.jsonl", sim_events[:100])).messages
    assert len(order_messages(messages, config(tick_ms=None)).ticks) == 1


def test_churn_onsets_need_a_settled_silence():
    policy = LabelPolicy(horizon_ms=DAY_MS, churn_after_ms=7 * DAY_MS)
    activity = defaultdict(set)
    activity["u"] = {(0, "a", "view"), (DAY_MS, "b", "purchase"), (2 * DAY_MS, "c", "view")}
    out = outcomes_of(activity, policy, observed_until=9 * DAY_MS, lookback_from=0,
                      lookback_until=10 * DAY_MS)
    assert out.purchases == {"u": [DAY_MS]}
    assert out.churn_onsets == {"u": [2 * DAY_MS]}  # the last event, silence settled at day 9
    early = outcomes_of(activity, policy, observed_until=8 * DAY_MS, lookback_from=0,
                        lookback_until=10 * DAY_MS)
    assert early.churn_onsets == {}


@pytest.mark.parametrize(("head", "alerts", "outcome", "expected"), [
    ("intent", [10, 20, 30], 30, 10),  # earliest within the lookback, strictly before
    ("intent", [30], 30, None),  # an alert with the purchase itself is not ahead of it
    ("churn", [30], 30, 30),  # a churn alert with the last event is (lead time 0)
    ("intent", [1], 30, None),  # outside the 25 ms lookback
])
def test_covering_alert(head, alerts, outcome, expected):
    assert covering_alert(alerts, outcome, head, lookback_ms=25) == expected


def test_canonical_json_rounds_and_drops_non_finite():
    assert canonical({"a": 0.1234567891, "b": float("nan"), "c": (1, True)}) == {
        "a": 0.123457, "b": None, "c": [1, True]}


def test_unscorable_counts_each_reason_until_a_valid_event_in_range(sim_events, tmp_path):
    bad = (b"{broken", b"[1, 2]", b'{"user_id": "u1"}')
    source = read_file(write_jsonl(tmp_path / "bad.jsonl", [], bad))
    assert unscorable(source.messages, config()) == {"not_json": 1, "not_object": 1,
                                                     "missing_field": 1}
    mixed = read_file(write_jsonl(tmp_path / "mixed.jsonl", sim_events[:3], bad))
    assert unscorable(mixed.messages, config()) is None
    first, last = sim_events[0]["ts"], sim_events[2]["ts"]
    outside = config(score_from=first + 1, score_until=last)
    reasons = unscorable(read_file(write_jsonl(tmp_path / "one.jsonl", [sim_events[0]])).messages,
                         outside)
    assert reasons == {"before_range": 1}

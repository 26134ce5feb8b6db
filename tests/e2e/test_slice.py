"""Events in, intent scores out: Apache Kafka, a real Faust worker process and the
real tritonserver. Nothing here is mocked."""

from __future__ import annotations

import time
from collections import defaultdict

import orjson
import pytest

from tests.e2e.kafka_io import produce, read_until, run
from tests.e2e.traffic import make_traffic

pytestmark = pytest.mark.e2e


def latest_scores(records) -> dict[str, dict]:
    """user -> the score with the most events absorbed (the latest state of their session)."""
    best: dict[str, dict] = {}
    for rec in records:
        doc = orjson.loads(rec.value)
        cur = best.get(doc["user_id"])
        if cur is None or doc["window"]["n_events"] > cur["window"]["n_events"]:
            best[doc["user_id"]] = doc
    return best


def all_users_complete(expected: dict[str, int]):
    def done(seen) -> bool:
        latest = latest_scores(seen["scores"])
        return all(latest.get(u, {}).get("window", {}).get("n_events") == n
                   for u, n in expected.items())
    return done


def events_per_user(valid: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for e in valid:
        counts[e["user_id"]] += 1
    return dict(counts)


def test_every_valid_event_is_scored_and_every_malformed_one_dead_lettered(either_stack):
    stack = either_stack
    traffic = make_traffic(n_users=220, events_per_user=(6, 14), n_malformed=60)
    assert len(traffic.valid) >= 2000
    worker = stack.start_worker()
    run(produce(stack.bootstrap, stack.topics["events"], traffic.records))
    expected = events_per_user(traffic.valid)

    def done(seen) -> bool:
        return (all_users_complete(expected)({"scores": seen[stack.topics["scores"]]})
                and len(seen[stack.topics["dlq"]]) >= len(traffic.malformed))

    started = time.monotonic()
    seen = run(read_until(stack.bootstrap, [stack.topics["scores"], stack.topics["dlq"]], done,
                          timeout_s=120, alive=lambda: worker.alive))
    elapsed = time.monotonic() - started
    scores = [orjson.loads(r.value) for r in seen[stack.topics["scores"]]]
    dlq = [orjson.loads(r.value) for r in seen[stack.topics["dlq"]]]
    print(f"\n[slice] {len(traffic.records)} events in ({len(traffic.valid)} valid, "
          f"{len(traffic.malformed)} malformed) -> {len(scores)} scores, {len(dlq)} DLQ "
          f"records in {elapsed:.1f}s")

    # Every valid event's user got a score whose window contains that event.
    windows = defaultdict(list)
    for s in scores:
        windows[s["user_id"]].append((s["window"]["start"], s["window"]["end"]))
    uncovered = [e["event_id"] for e in traffic.valid
                 if not any(a <= e["ts"] <= b for a, b in windows[e["user_id"]])]
    assert uncovered == []
    latest = latest_scores(seen[stack.topics["scores"]])
    assert {u: latest[u]["window"]["n_events"] for u in expected} == expected
    # Scores are complete records of the published contract.
    sample = scores[0]
    assert set(sample["strength"]["probs"]) == {"strong", "medium", "weak"}
    assert abs(sum(sample["intent_type"]["probs"].values()) - 1) < 1e-4
    assert sample["model"]["name"] == "intent_bert" and sample["model"]["version"] >= 1
    # Every malformed event is on the DLQ with a reason and its raw bytes; none were scored.
    assert len(dlq) == len(traffic.malformed)
    assert all(d["reason"] and d["detail"] and "raw_b64" in d for d in dlq)
    assert {d["reason"] for d in dlq} >= {"not_json", "not_object", "unknown_type",
                                          "missing_field", "bad_timestamp", "too_large",
                                          "key_mismatch"}
    assert not {"u-bad", "u-nokey"} & {s["user_id"] for s in scores}
    assert worker.alive, worker.log_tail()


def test_sigkill_mid_stream_then_restart_loses_no_event(stack):
    traffic = make_traffic(n_users=200, events_per_user=(8, 12), n_malformed=0, seed=11)
    expected = events_per_user(traffic.valid)
    half = len(traffic.records) // 2
    # Small micro-batches: the first half takes many batches, so the kill lands mid-stream.
    # Low thresholds: many alerts, so a duplicate after the restart would show.
    small = {"INTENTSTREAM_BATCH_MAX_EVENTS": "50", "INTENTSTREAM_ALERT_INTENT_THRESHOLD": "0.05",
             "INTENTSTREAM_ALERT_CHURN_THRESHOLD": "0.05"}
    worker = stack.start_worker(**small)
    run(produce(stack.bootstrap, stack.topics["events"], traffic.records[:half]))
    # Wait until the worker is demonstrably mid-stream (some users scored), then kill -9.
    run(read_until(stack.bootstrap, [stack.topics["scores"]],
                   lambda seen: len(seen[stack.topics["scores"]]) >= 30, timeout_s=180,
                   alive=lambda: worker.alive))
    worker.kill()
    run(produce(stack.bootstrap, stack.topics["events"], traffic.records[half:]))
    restarted = stack.start_worker(**small)
    seen = run(read_until(
        stack.bootstrap, [stack.topics["scores"]],
        lambda s: all_users_complete(expected)({"scores": s[stack.topics["scores"]]}),
        timeout_s=300, alive=lambda: restarted.alive,
    ))
    latest = latest_scores(seen[stack.topics["scores"]])
    got = {u: latest.get(u, {}).get("window", {}).get("n_events") for u in expected}
    missing = {u: (got[u], n) for u, n in expected.items() if got[u] != n}
    ids = [orjson.loads(r.value)["prediction_id"] for r in seen[stack.topics["scores"]]]
    print(f"\n[sigkill] {len(traffic.valid)} events, {len(expected)} users; {len(ids)} scores "
          f"({len(ids) - len(set(ids))} redelivered after the kill); "
          f"users incomplete: {len(missing)}")
    # Session state came back from the changelog and replayed events were not double counted:
    # each user's latest score covers exactly all of their events.
    assert missing == {}, restarted.log_tail()
    # No duplicate alert: each user's test traffic spans under an hour of event time, inside
    # the cooldown, so every (user, head) gets at most one alert id — however often the
    # redelivered batches were scored again.
    alerts = run(read_until(stack.bootstrap, [stack.topics["alerts_intent"],
                                             stack.topics["alerts_churn"]],
                            lambda s: False, timeout_s=5))
    ids_by_trigger: dict[tuple[str, str], set[str]] = defaultdict(set)
    n_records = 0
    for records in alerts.values():
        for rec in records:
            doc = orjson.loads(rec.value)
            ids_by_trigger[(doc["user_id"], doc["head"])].add(doc["alert_id"])
            n_records += 1
    print(f"[sigkill] {n_records} alert records, {len(ids_by_trigger)} (user, head) triggers")
    assert len(ids_by_trigger) >= 100
    assert {k: v for k, v in ids_by_trigger.items() if len(v) > 1} == {}
    assert restarted.alive

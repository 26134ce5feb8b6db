"""Simulated shoppers with known futures → worker → scores and alerts → feedback sidecar →
labelled examples, on Apache Kafka and the real tritonserver. Nothing is mocked.

Labels are checked against the simulator's ground truth (`known_labels` over each user's whole
history), alert flags against the alert topics, and the example set against exactly the
predictions whose outcome window the partition's event time has passed.
"""

from __future__ import annotations

import time
from collections import defaultdict

import orjson
import pytest

from streams.core.feedback import AlertResponse
from streams.core.labelling import LabelPolicy
from streams.core.timeunits import DAY_MS, HOUR_MS
from streams.sidecar.store import FeedbackStore, read_stores
from tests.e2e.faults import PARTITIONS
from tests.e2e.kafka_io import produce, read_to_end, read_until, run
from training.data.simulator import SimConfig, UserHistory, known_labels, simulate

pytestmark = pytest.mark.e2e

# Short outcome windows so a few simulated days settle most predictions.
HORIZON_H, CHURN_DAYS, LATENESS_S = 12, 1, 60
POLICY = LabelPolicy(horizon_ms=HORIZON_H * HOUR_MS, churn_after_ms=CHURN_DAYS * DAY_MS)
ENV = {
    "INTENTSTREAM_LABEL_HORIZON_H": str(HORIZON_H),
    "INTENTSTREAM_CHURN_DAYS": str(CHURN_DAYS),
    "INTENTSTREAM_WATERMARK_LATENESS_S": str(LATENESS_S),
    # Thresholds inside the tiny model's range, so many predictions are alerted or explored.
    "INTENTSTREAM_ALERT_INTENT_THRESHOLD": "0.3",
    "INTENTSTREAM_ALERT_CHURN_THRESHOLD": "0.3",
}


def traffic(n_users: int, days: float, seed: int) -> tuple[dict[str, UserHistory], list]:
    histories = {h.user_id: h for h in simulate(n_users, SimConfig(seed=seed, days=days))}
    events = sorted((e for h in histories.values() for e in h.events),
                    key=lambda e: (e["ts"], e["event_id"]))
    return histories, [(e["user_id"].encode(), orjson.dumps(e)) for e in events]


def decoded(records) -> list[dict]:
    return [orjson.loads(r.value) for r in records]


def settled_predictions(seen: dict, stack) -> set[str]:
    """Ids of the scored predictions whose outcome window the watermark of their partition
    (max event time there - lateness) has passed: exactly the ones that must be labelled."""
    max_ts: dict[int, int] = defaultdict(int)
    partition_of: dict[str, int] = {}
    for rec in seen[stack.topics["events"]]:
        doc = orjson.loads(rec.value)
        max_ts[rec.partition] = max(max_ts[rec.partition], doc["ts"])
        partition_of[doc["user_id"]] = rec.partition
    return {s["prediction_id"] for s in decoded(seen[stack.topics["scores"]])
            if s["window"]["end"] + POLICY.settles_after_ms
            <= max_ts[partition_of[s["user_id"]]] - LATENESS_S * 1000}


def last_event_scored(histories: dict[str, UserHistory]):
    """Every user's newest event is in a scored window: the worker is done."""
    last = {u: h.events[-1]["event_id"] for u, h in histories.items() if h.events}

    def done(scores: list[dict]) -> bool:
        covered = {s["window"]["last_event_id"] for s in scores}
        return all(e in covered for e in last.values())
    return done


def wait_for_examples(stack, histories, timeout_s: float, alive) -> dict:
    topics = [stack.topics[t] for t in ("events", "scores", "feedback", "alerts_intent",
                                        "alerts_churn")]
    worker_done = last_event_scored(histories)

    def done(seen) -> bool:
        scores = decoded(seen[stack.topics["scores"]])
        if not worker_done(scores):
            return False
        examples = {e["example_id"] for e in decoded(seen[stack.topics["feedback"]])}
        return examples >= settled_predictions(seen, stack)
    seen = run(read_until(stack.bootstrap, topics, done, timeout_s=timeout_s, alive=alive))
    assert worker_done(decoded(seen[stack.topics["scores"]])), "the worker did not finish"
    return seen


def wait_for_stored(stack, at_least: int, timeout_s: float, alive) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        if stack.feedback_db.exists():
            with FeedbackStore(stack.feedback_db) as store:
                if (count := store.count()) >= at_least:
                    return count
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} examples stored in {timeout_s}s")


def agreement(examples, histories) -> tuple[int, list[str]]:
    disagreeing = []
    for e in examples:
        truth = known_labels(histories[e.user_id], e.window.end, POLICY)
        if (e.labels.strength, e.labels.intent_type, e.labels.churn) != (
                truth.strength, truth.intent_type, truth.churn):
            disagreeing.append(e.example_id)
    return len(examples), disagreeing


def responses_for(alerts: list[dict]) -> list[tuple[bytes, bytes]]:
    """Marketing's reports: every alert delivered, every 3rd clicked, every 6th converted."""
    out = []
    for i, alert in enumerate(sorted(alerts, key=lambda a: a["alert_id"])):
        statuses = ["delivered"] + ["clicked"] * (i % 3 == 0) + ["converted"] * (i % 6 == 0)
        for status in statuses:
            response = AlertResponse(response_id=f"{alert['alert_id']}-{status}",
                                     alert_id=alert["alert_id"], user_id=alert["user_id"],
                                     status=status, ts=alert["event_time"] + HOUR_MS)
            out.append((alert["user_id"].encode(), response.model_dump_json().encode()))
    return out


def test_feedback_examples_match_the_simulators_ground_truth(stack):
    histories, records = traffic(n_users=150, days=4, seed=21)
    worker = stack.start_worker(**ENV)
    sidecar = stack.start_sidecar(**ENV)
    started = time.monotonic()
    run(produce(stack.bootstrap, stack.topics["events"], records))
    seen = wait_for_examples(stack, histories, timeout_s=150,
                             alive=lambda: worker.alive and sidecar.alive)
    elapsed = time.monotonic() - started
    expected = settled_predictions(seen, stack)
    on_topic = [e["example_id"] for e in decoded(seen[stack.topics["feedback"]])]
    with FeedbackStore(stack.feedback_db) as store:
        examples = store.examples()
    n, disagreeing = agreement(examples, histories)
    n_scores = len({s["prediction_id"] for s in decoded(seen[stack.topics["scores"]])})
    print(f"\n[feedback] {len(records)} events, {n_scores} predictions -> {n} examples "
          f"({len(expected)} settled) in {elapsed:.1f}s; agreement "
          f"{100 * (n - len(disagreeing)) / max(n, 1):.2f}% "
          f"({len(disagreeing)} disagree)")
    assert sidecar.alive, sidecar.log_tail()
    # Exactly the settled predictions, each once, on the topic and in the store.
    assert set(on_topic) == expected and len(on_topic) == len(set(on_topic))
    assert {e.example_id for e in examples} == expected and n == len(expected) >= 150
    # Labels match the simulator's ground truth, and are not all alike.
    assert len(disagreeing) <= 0.01 * n, disagreeing[:10]
    assert {(e.labels.strength, e.labels.churn) for e in examples} >= {
        ("strong", False), ("medium", False), ("weak", True)}
    # The replayed alert decisions are the alerts the worker sent. Read to the end now: the
    # worker sends a batch's alerts after its scores, so `seen` (which stopped once the
    # examples were complete) can miss the last ones.
    alert_topics = [stack.topics["alerts_intent"], stack.topics["alerts_churn"]]
    on_alert_topics = run(read_to_end(stack.bootstrap, alert_topics, PARTITIONS))
    alerts = decoded([r for t in alert_topics for r in on_alert_topics[t]])
    sent = {a["alert_id"] for a in alerts if a["prediction_id"] in expected}
    flagged = {h.alert_id for e in examples for h in e.heads.values() if h.alerted}
    assert len(sent) >= 20 and flagged == sent
    assert all(0 <= h.propensity <= 1 for e in examples for h in e.heads.values())

    # Marketing reports arrive after the examples were written: the store joins them on read.
    reports = responses_for([a for a in alerts if a["alert_id"] in sent])
    run(produce(stack.bootstrap, stack.topics["responses"], reports + reports[:10]))
    deadline = time.monotonic() + 30
    while True:
        with FeedbackStore(stack.feedback_db) as store:
            joined = {h.alert_id: h.responses for e in store.examples()
                      for h in e.heads.values() if h.alert_id}
        if all(joined[a] for a in sent) or time.monotonic() > deadline or not sidecar.alive:
            break
        time.sleep(0.5)
    assert all(joined[a][0] == "delivered" for a in sent), sidecar.log_tail()
    assert sum("converted" in s for s in joined.values()) == (len(sent) + 5) // 6


def test_sidecar_sigkill_and_restart_loses_and_duplicates_no_example(stack):
    histories, records = traffic(n_users=120, days=4, seed=33)
    small = {**ENV, "INTENTSTREAM_BATCH_MAX_EVENTS": "100"}
    worker = stack.start_worker(**ENV)
    sidecar = stack.start_sidecar(**small)
    run(produce(stack.bootstrap, stack.topics["events"], records))
    # Kill -9 once the sidecar is demonstrably mid-stream (some examples stored).
    before_kill = wait_for_stored(stack, at_least=20, timeout_s=120,
                                  alive=lambda: sidecar.alive and worker.alive)
    sidecar.kill()
    restarted = stack.start_sidecar(**small)
    seen = wait_for_examples(stack, histories, timeout_s=150,
                             alive=lambda: restarted.alive and worker.alive)
    expected = settled_predictions(seen, stack)
    on_topic = decoded(seen[stack.topics["feedback"]])
    with FeedbackStore(stack.feedback_db) as store:
        examples = store.examples()
    ids = [e["example_id"] for e in on_topic]
    n, disagreeing = agreement(examples, histories)
    print(f"\n[feedback sigkill] {len(records)} events; {before_kill} examples stored at the "
          f"kill; after restart {n} stored ({len(expected)} settled), {len(ids)} on the topic "
          f"({len(ids) - len(set(ids))} repeated); {len(disagreeing)} disagree")
    assert 0 < before_kill < len(expected)
    # Nothing lost, nothing twice in the store; the topic is the same set (a repeat is only
    # possible if the kill lands between the topic's ack and the store's commit, and it is
    # then the same example under the same id).
    assert {e.example_id for e in examples} == expected == set(ids)
    first: dict[str, dict] = {}
    for doc in on_topic:
        assert first.setdefault(doc["example_id"], doc)["labels"] == doc["labels"]
    assert len(disagreeing) <= 0.01 * n
    assert restarted.alive, restarted.log_tail()


def stored_ids(path) -> set[str]:
    if not path.exists():
        return set()
    with FeedbackStore(path) as store:
        return {e.example_id for e in store.examples()}


def test_two_sidecars_in_a_group_one_sigkilled_their_stores_union_is_the_expected_set(stack):
    """Two sidecars share the group, each with its own store; one is SIGKILLed mid-stream, the
    other takes its partitions over. `retrain`'s union of the two stores (read_stores) is
    exactly the settled predictions, each once."""
    histories, records = traffic(n_users=120, days=4, seed=47)
    small = {**ENV, "INTENTSTREAM_BATCH_MAX_EVENTS": "100"}
    dbs = [stack.workdir / "feedback-a.sqlite", stack.workdir / "feedback-b.sqlite"]
    worker = stack.start_worker(**ENV)
    doomed, survivor = (
        stack.start_sidecar(**small, INTENTSTREAM_FEEDBACK_DB=str(db),
                            INTENTSTREAM_DATA_DIR=str(stack.workdir / f"data-{i}"))
        for i, db in enumerate(dbs))
    run(produce(stack.bootstrap, stack.topics["events"], records))
    deadline = time.monotonic() + 120
    while len(stored_ids(dbs[0])) < 20:  # the doomed one is demonstrably mid-stream
        assert time.monotonic() < deadline and doomed.alive and survivor.alive and worker.alive, \
            "the first sidecar stored nothing"
        time.sleep(0.05)
    before_kill = len(stored_ids(dbs[0]))
    doomed.kill()
    seen = wait_for_examples(stack, histories, timeout_s=150,
                             alive=lambda: survivor.alive and worker.alive)
    expected = settled_predictions(seen, stack)
    # A store commits just after its examples are on the topic: give the last one a moment.
    deadline = time.monotonic() + 20
    while not stored_ids(dbs[0]) | stored_ids(dbs[1]) >= expected \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    a, b = stored_ids(dbs[0]), stored_ids(dbs[1])
    merged = read_stores(dbs)
    ids = [e.example_id for e in merged]
    n, disagreeing = agreement(merged, histories)
    print(f"\n[feedback group] {len(records)} events; sidecar A stored {before_kill} before its "
          f"SIGKILL, {len(a)} in all; sidecar B {len(b)}; {len(a & b)} in both; union "
          f"{len(ids)} ({len(expected)} settled); {len(disagreeing)} disagree")
    assert set(ids) == expected and len(ids) == len(set(ids))
    assert a and b  # both did part of the work
    assert len(disagreeing) <= 0.01 * n
    assert survivor.alive, survivor.log_tail()

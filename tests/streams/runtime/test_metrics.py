"""Metrics: the pure helpers, the HTTP endpoint, and what the worker's batch steps count.

The batch steps are driven with stand-in topics (no broker here); the real broker, worker and
Triton are in tests/e2e/test_metrics.py."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
import structlog
from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from inference.client import ScoringError
from inference.heads import Prediction
from inference.tritonserver import free_port
from streams.core.alerts import AlertPolicy
from streams.core.batching import BatchPlan, plan_batch
from streams.core.raw_message import RawMessage
from streams.core.sessions import SessionPolicy
from streams.runtime import metrics
from streams.runtime.agent_io import report_lag
from streams.runtime.metrics import (
    AgentMetrics,
    MetricsPortError,
    consumer_lag,
    serve_metrics,
    split_invalid,
    tally,
)
from streams.worker import agent as worker
from streams.worker import scoring

T0 = 1_767_225_600_000


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# --- pure helpers ----------------------------------------------------------------------------
def test_lag_is_highwater_minus_next_offset_per_partition():
    next_offsets = {("ev", 0): 90, ("ev", 1): 40}
    lags = consumer_lag({("ev", 0): 100, ("ev", 1): 40},
                        lambda t, p: next_offsets.get((t, p)))
    assert lags == {("ev", 0): 10, ("ev", 1): 0}


def test_lag_leaves_out_unfetched_partitions_and_counts_unprocessed_from_log_start():
    lags = consumer_lag({("ev", 0): None, ("ev", 1): 50, ("ev", 2): 70},
                        lambda t, p: None, log_start={("ev", 1): 20})
    assert lags == {("ev", 1): 30}  # 0: no highwater yet; 2: neither progress nor log start


def test_lag_never_negative_when_the_broker_underreports_the_end():
    # Tansu can answer a highwater below offsets already consumed (docs/broker.md).
    assert consumer_lag({("ev", 0): 7}, lambda t, p: 12) == {("ev", 0): 0}


def test_tally_and_invalid_labels():
    assert tally(["a", "b", "a"]) == {"a": 2, "b": 1}
    assert tally([("intent", True), ("intent", True)]) == {("intent", True): 2}
    assert split_invalid({"events:not_json": 2, "odd:topic:unexpected_topic": 1}) == {
        ("events", "not_json"): 2, ("odd:topic", "unexpected_topic"): 1}


def test_set_lag_drops_partitions_no_longer_assigned():
    registry = CollectorRegistry()
    agent = AgentMetrics.create(registry)
    agent.set_lag({("ev", 0): 10, ("ev", 1): 5}, {("ev", 0): 3, ("ev", 1): 0})
    assert sample(registry, "intentstream_consumer_lag", topic="ev", partition="0") == 3
    assert sample(registry, "intentstream_consumer_highwater", topic="ev", partition="0") == 10
    agent.set_lag({("ev", 1): 9}, {("ev", 1): 4})  # partition 0 went to another worker
    assert registry.get_sample_value("intentstream_consumer_lag",
                                     {"topic": "ev", "partition": "0"}) is None
    assert sample(registry, "intentstream_consumer_lag", topic="ev", partition="1") == 4


def test_count_batch_counts_by_topic_and_observes_size_and_time():
    registry = CollectorRegistry()
    agent = AgentMetrics.create(registry)
    agent.count_batch(["ev", "ev", "sc"], seconds=0.2)
    agent.count_batch(["ev"], seconds=0.1)
    assert sample(registry, "intentstream_events_in_total", topic="ev") == 3
    assert sample(registry, "intentstream_events_in_total", topic="sc") == 1
    assert sample(registry, "intentstream_batch_events_sum") == 4
    assert sample(registry, "intentstream_batch_events_count") == 2
    assert sample(registry, "intentstream_batch_seconds_sum") == pytest.approx(0.3)


# --- the endpoint ----------------------------------------------------------------------------
def test_port_zero_serves_nothing():
    assert serve_metrics(0, CollectorRegistry(), "INTENTSTREAM_METRICS_PORT") is None


def test_serves_the_registry_and_a_taken_port_is_a_clear_config_error():
    registry = CollectorRegistry()
    AgentMetrics.create(registry).count_batch(["ev"], seconds=0.01)
    port = free_port()
    server = serve_metrics(port, registry, "INTENTSTREAM_METRICS_PORT")
    assert server is not None
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode()
        assert 'intentstream_events_in_total{topic="ev"} 1.0' in body
        with pytest.raises(MetricsPortError, match=f"port {port}.*INTENTSTREAM_METRICS_PORT"):
            serve_metrics(port, registry, "INTENTSTREAM_METRICS_PORT")
    finally:
        server.shutdown()
        server.server_close()


# --- consumer lag from a (stand-in) Faust consumer -------------------------------------------
class FakeConsumer:
    def __init__(self, highwaters: dict[TP, int | None], starts: dict[TP, int]) -> None:
        self.highwaters = highwaters
        self.starts = starts
        self.started = True

    def assignment(self) -> set[TP]:
        if not self.started:
            raise ConsumerNotStarted("not yet")
        return set(self.highwaters)

    def highwater(self, tp: TP) -> int | None:
        return self.highwaters[tp]

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.starts[tp] for tp in tps}


class FakeApp:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer


def test_report_lag_reads_assigned_input_partitions_only():
    registry = CollectorRegistry()
    agent = AgentMetrics.create(registry)
    consumer = FakeConsumer(
        {TP("ev", 0): 100, TP("ev", 1): 30, TP("app-sessions-changelog", 0): 999},
        starts={TP("ev", 1): 10},
    )
    progress = {("ev", 0): 60}
    asyncio.run(report_lag(FakeApp(consumer), {"ev"}, lambda t, p: progress.get((t, p)), agent))
    assert sample(registry, "intentstream_consumer_lag", topic="ev", partition="0") == 40
    assert sample(registry, "intentstream_consumer_lag", topic="ev", partition="1") == 20
    assert registry.get_sample_value("intentstream_consumer_lag", {
        "topic": "app-sessions-changelog", "partition": "0"}) is None
    # Mid-rebalance (no consistent assignment) the last values stay.
    consumer.started = False
    asyncio.run(report_lag(FakeApp(consumer), {"ev"}, lambda t, p: None, agent))
    assert sample(registry, "intentstream_consumer_lag", topic="ev", partition="0") == 40


class StalledApp(FakeApp):
    """A consumer mid-recovery: partition 1 paused, nothing acked, nothing committed."""

    rebalancing = False
    in_recovery = True

    def __init__(self, consumer: FakeConsumer) -> None:
        super().__init__(consumer)
        consumer._paused_partitions = {TP("ev", 1)}
        consumer._committed_offset = {TP("ev", 0): 60}
        self.tables = None
        self.flow_control = None


def test_a_stall_is_logged_once_with_the_consumers_state_and_again_after_recovering():
    agent = AgentMetrics.create(CollectorRegistry())
    app = StalledApp(FakeConsumer({TP("ev", 0): 100, TP("ev", 1): 30}, starts={TP("ev", 1): 10}))
    progress = {("ev", 0): 60}

    def report() -> list[dict]:
        with capture_logs() as logs:
            asyncio.run(report_lag(app, {"ev"}, lambda t, p: progress.get((t, p)), agent))
        return [e for e in logs if e["event"] == "input.stalled"]

    assert report() == []  # just started: not a stall yet
    agent.progress.started -= 120
    [stalled] = report()
    assert stalled["in_recovery"] is True and stalled["since_batch_s"] >= 120
    assert stalled["partitions"]["ev[0]"] == {"lag": 40, "next": 60, "paused": False,
                                              "committed": 60, "read": None, "acked_held": 0}
    assert stalled["partitions"]["ev[1]"]["paused"] is True
    assert report() == []  # once per stall
    agent.count_batch(["ev"], seconds=0.1)  # a batch completes: the stall is over
    assert report() == []
    agent.progress.last_batch -= 120
    assert len(report()) == 1  # a new stall is logged again


# --- what the worker's batch steps count and log ---------------------------------------------
class FakeTopic:
    """Stands in for a Faust topic: `send` resolves at once, as after the broker's ack."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes]] = []
        self.partitions: list[int | None] = []

    async def send(self, key: bytes | None, value: bytes,
                   partition: int | None = None) -> asyncio.Future:
        self.sent.append((key, value))
        self.partitions.append(partition)
        future = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


@pytest.fixture
def topics(monkeypatch) -> Iterator[dict[str, FakeTopic]]:
    fakes = {"dlq": FakeTopic(), "scores": FakeTopic()}
    monkeypatch.setattr(worker, "dlq_topic", fakes["dlq"])
    monkeypatch.setattr(worker, "scores_topic", fakes["scores"])
    yield fakes


def message(offset: int, value: bytes, key: bytes | None = b"u1") -> RawMessage:
    return RawMessage(key=key, value=value, topic="ev", partition=2, offset=offset,
                      timestamp_ms=T0)


def event(i: int, user: str = "u1") -> bytes:
    return orjson.dumps({"event_id": f"{user}-{i}", "user_id": user, "ts": T0 + i * 1000,
                         "type": "search", "query": "trail running shoes"})


def plan_of(messages: list[RawMessage]) -> BatchPlan:
    policy = SessionPolicy(gap_ms=1_800_000, max_span_ms=14_400_000, max_events=64,
                           max_chars=1200)
    return plan_batch(messages, lambda user: None, policy, max_event_bytes=16_384)


def worker_sample(name: str, **labels: str) -> float:
    return sample(metrics.WORKER_REGISTRY, name, **labels)


def test_dead_letters_are_counted_by_reason_keyed_by_user_and_logged_without_payload(topics):
    secret = b"{not json, card 4111 1111 1111 1111"
    plan = plan_of([message(0, secret, key=b"u9"), message(1, b"[1,2]"), message(2, event(0))])
    assert len(plan.dead_letters) == 2
    before = {r: worker_sample("intentstream_dead_letters_total", reason=r)
              for r in ("not_json", "not_object")}
    with structlog.testing.capture_logs() as logs:
        asyncio.run(worker.send_dead_letters(plan.dead_letters))
    assert [key for key, _ in topics["dlq"].sent] == [b"u9", b"u1"]  # not the topic name
    for reason in ("not_json", "not_object"):
        assert worker_sample("intentstream_dead_letters_total", reason=reason) == (
            before[reason] + 1)
    lines = [entry for entry in logs if entry["event"] == "dead_letter"]
    assert [(e["reason"], e["topic"], e["partition"], e["offset"]) for e in lines] == [
        ("not_json", "ev", 2, 0), ("not_object", "ev", 2, 1)]
    assert all(e["log_level"] == "warning" for e in lines)
    assert "4111" not in repr(logs) and "detail" not in repr(logs)


class FakeScorer:
    """Fails `failures` times, then answers a fixed prediction per text."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    async def score(self, texts: list[str], features=None) -> list[Prediction]:
        if self.failures:
            self.failures -= 1
            raise ScoringError("unavailable")
        return [Prediction(strength={"strong": 0.9, "medium": 0.05, "weak": 0.05},
                           intent_type={"buy": 1.0}, churn=0.7, model_name="intent_bert",
                           model_version=3) for _ in texts]


def test_scoring_counts_retries_latency_texts_scores_and_alerts(topics):
    messages = [message(i, event(i, user), key=user.encode())
                for i, user in enumerate(["u1", "u2", "u1"])]
    plan = plan_of(messages)
    before = {
        "retries": worker_sample("intentstream_triton_retries_total"),
        "latency": worker_sample("intentstream_triton_latency_seconds_count"),
        "texts": worker_sample("intentstream_batch_texts_sum"),
        "open": worker_sample("intentstream_scores_total", session="open"),
        "intent": worker_sample("intentstream_alerts_total", head="intent", explored="false"),
        "churn": worker_sample("intentstream_alerts_total", head="churn", explored="false"),
    }
    policy = AlertPolicy(explore_rate=0.0)

    async def run_steps() -> list:
        scored = await scoring.score_plan(FakeScorer(failures=1), plan, 1200, retry_max_s=1,
                                          observe=worker.SCORING_METRICS, cascade=False)
        records = scored.records
        await worker.send_scores(plan, messages, records)
        alerts, _ = scoring.decide_alerts(scored.scored, records, lambda user: None, policy)
        worker.report_alerts(alerts)
        return records

    with structlog.testing.capture_logs() as logs:  # structlog's default level: debug
        records = asyncio.run(run_steps())
    assert len(records) == 2  # two users, one session each
    # Scores go to their input's partition (co-partitioned for the sidecar), whatever the key.
    assert topics["scores"].partitions == [2, 2]
    assert worker_sample("intentstream_triton_retries_total") == before["retries"] + 1
    assert worker_sample("intentstream_triton_latency_seconds_count") == before["latency"] + 1
    assert worker_sample("intentstream_batch_texts_sum") == before["texts"] + 2
    assert worker_sample("intentstream_scores_total", session="open") == before["open"] + 2
    # p(strong) 0.9 and p(churn) 0.7 are over both 0.6 thresholds: one alert per head and user
    assert worker_sample("intentstream_alerts_total", head="intent",
                         explored="false") == before["intent"] + 2
    assert worker_sample("intentstream_alerts_total", head="churn",
                         explored="false") == before["churn"] + 2
    scores = [e for e in logs if e["event"] == "score"]
    assert {(e["user_id"], e["prediction_id"]) for e in scores} == {
        (r.user_id, r.prediction_id) for r in records}
    alerts = [e for e in logs if e["event"] == "alert.raised"]
    assert len(alerts) == 4 and all(e["log_level"] == "info" for e in alerts)
    assert {e["prediction_id"] for e in alerts} == {r.prediction_id for r in records}
    assert all(e["alert_id"] and e["reason"] == "threshold" for e in alerts)
    assert "trail running" not in repr(logs)  # no session text in any line

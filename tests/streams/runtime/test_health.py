"""Health that sees a stall (streams/runtime/metrics.py): the pure rule, then /health beside
/metrics on a real HTTP server, and `probe_health`, the client of `intentstream health`."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from inference.tritonserver import free_port
from streams.runtime.metrics import AgentMetrics, Progress, health, probe_health, serve_metrics

STALL_S = 120.0


@pytest.mark.parametrize(
    ("lags", "last_batch", "now", "healthy"),
    [
        ({}, None, 1000.0, True),  # nothing assigned, nothing to do
        ({("ev", 0): 0}, None, 1000.0, True),  # caught up, however long idle
        ({("ev", 0): 0}, 10.0, 1000.0, True),
        ({("ev", 0): 5}, 950.0, 1000.0, True),  # behind, but batches are completing
        ({("ev", 0): 5}, 880.0, 1000.0, False),  # behind and nothing completed for 120 s
        ({("ev", 0): 0, ("ev", 1): 3}, 500.0, 1000.0, False),
        ({("ev", 0): 5}, None, 100.0, True),  # just started: 100 s < 120 s
        ({("ev", 0): 5}, None, 1000.0, False),  # never completed a batch since start
    ],
)
def test_unhealthy_only_when_lag_waits_and_no_batch_completes(lags, last_batch, now, healthy):
    state = health(Progress(started=0.0, last_batch=last_batch, lags=lags), now, STALL_S)
    assert state.healthy is healthy
    assert state.lag == sum(lags.values())


def test_the_reason_names_the_lagging_partitions_and_the_window():
    state = health(Progress(started=0.0, last_batch=500.0, lags={("ev", 0): 0, ("ev", 1): 3}),
                   1000.0, STALL_S)
    assert state.reason == "stalled: lag 3 (ev[1]) and no batch completed for 500s (STALL_S 120)"


def test_batches_and_lag_reports_feed_the_check():
    agent = AgentMetrics.create(CollectorRegistry())
    agent.set_lag({("ev", 0): 10}, {("ev", 0): 4})
    assert agent.progress.lags == {("ev", 0): 4}
    start = agent.progress.started
    assert not health(agent.progress, start + STALL_S, STALL_S).healthy
    agent.count_batch(["ev"], seconds=0.01)
    assert agent.progress.last_batch is not None
    assert health(agent.progress, agent.progress.last_batch + 1, STALL_S).healthy


@pytest.fixture
def served() -> Iterator[tuple[AgentMetrics, int]]:
    registry = CollectorRegistry()
    agent = AgentMetrics.create(registry)
    port = free_port()
    server = serve_metrics(port, registry, "INTENTSTREAM_METRICS_PORT", stall_s=0.2)
    assert server is not None
    yield agent, port
    server.shutdown()
    server.server_close()


def status(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_health_endpoint_answers_503_with_a_reason_on_a_stall(served):
    agent, port = served
    agent.count_batch(["ev"], seconds=0.01)
    code, body = status(port, "/health")
    assert code == 200 and b'"healthy": true' in body
    assert probe_health(port) == (True, "caught up: lag 0")
    agent.set_lag({("ev", 0): 9}, {("ev", 0): 9})
    agent.progress.last_batch = agent.progress.last_batch - 1.0  # 1 s ago > stall_s 0.2
    code, body = status(port, "/health")
    assert code == 503 and b'"healthy": false' in body and b"lag 9" in body
    ok, line = probe_health(port)
    assert not ok and line.startswith("stalled: lag 9 (ev[0])")
    # /metrics is still served beside it, with the batch's completion time.
    code, body = status(port, "/metrics")
    assert code == 200 and b"intentstream_last_batch_completed_timestamp_seconds" in body


def test_a_process_that_does_not_answer_is_unhealthy():
    ok, line = probe_health(free_port(), timeout_s=1)
    assert not ok and line.startswith("cannot ask http://127.0.0.1:")


def test_a_registry_without_an_agent_has_no_health_check():
    registry = CollectorRegistry()
    port = free_port()
    server = serve_metrics(port, registry, "INTENTSTREAM_METRICS_PORT", stall_s=1)
    assert server is not None
    try:
        assert status(port, "/health")[0] == 404
        assert probe_health(port) == (False, f"http://127.0.0.1:{port}/health answered 404")
    finally:
        server.shutdown()
        server.server_close()

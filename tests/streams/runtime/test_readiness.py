"""/ready beside /health (streams/runtime/metrics.py): not ready while the app says so (a
rebalance, tables recovering) or while unhealthy, with Retry-After; routes the app adds
(the worker's /users/{id}) are served on the same port, the metrics on every other path."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from prometheus_client import CollectorRegistry

from inference.tritonserver import free_port
from streams.runtime.metrics import (
    RETRY_AFTER_S,
    AgentMetrics,
    Health,
    add_route,
    json_response,
    readiness,
    serve_metrics,
    set_readiness,
)

HEALTHY = Health(True, "caught up: lag 0", 0, 1.0)
STALLED = Health(False, "stalled: lag 3", 3, 500.0)


@pytest.mark.parametrize(
    ("state", "app_ready", "expected"),
    [
        (HEALTHY, None, (True, "caught up: lag 0")),
        (HEALTHY, (True, "tables ready"), (True, "tables ready; caught up: lag 0")),
        (HEALTHY, (False, "rebalancing"), (False, "rebalancing")),
        (STALLED, (True, "tables ready"), (False, "stalled: lag 3")),
        (STALLED, (False, "recovering tables"), (False, "stalled: lag 3")),
    ],
)
def test_ready_only_when_healthy_and_the_app_agrees(state, app_ready, expected):
    assert readiness(state, app_ready) == expected


@pytest.fixture
def served() -> Iterator[tuple[CollectorRegistry, AgentMetrics, int]]:
    registry = CollectorRegistry()
    agent = AgentMetrics.create(registry)
    port = free_port()
    server = serve_metrics(port, registry, "INTENTSTREAM_METRICS_PORT", stall_s=60)
    assert server is not None
    yield registry, agent, port
    server.shutdown()
    server.server_close()


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_ready_follows_the_apps_check_and_asks_to_retry(served):
    registry, _, port = served
    state = {"ready": (False, "rebalancing")}
    set_readiness(registry, lambda: state["ready"])
    code, headers, body = get(port, "/ready")
    assert code == 503 and headers["Retry-After"] == str(RETRY_AFTER_S)
    assert orjson.loads(body) == {"ready": False, "reason": "rebalancing"}
    assert get(port, "/health")[0] == 200  # liveness does not follow readiness
    state["ready"] = (True, "tables ready")
    code, headers, body = get(port, "/ready")
    assert code == 200 and "Retry-After" not in headers
    assert orjson.loads(body)["ready"] is True


def test_added_routes_answer_beside_the_metrics(served):
    registry, _, port = served
    add_route(registry, "/users/", lambda environ: json_response(
        404, {"path": environ["PATH_INFO"]}))
    code, _, body = get(port, "/users/u-1")
    assert code == 404 and orjson.loads(body) == {"path": "/users/u-1"}
    code, _, body = get(port, "/metrics")
    assert code == 200 and b"intentstream_batch_events" in body

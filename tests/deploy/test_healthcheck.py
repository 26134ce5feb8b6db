"""docker/healthcheck.py: the images' health check asks the process's own /health (a stall is
unhealthy); with the metrics endpoint off it falls back to reaching Kafka and Triton."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry

from inference.tritonserver import free_port
from streams.runtime.metrics import AgentMetrics, serve_metrics
from streams.settings import Settings


@pytest.fixture
def listening() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("kafka:9092", ("kafka", 9092)),
        ("triton", ("triton", 8001)),
        ("[::1]:9093", ("::1", 9093)),
        ("[::1]", ("::1", 8001)),
    ],
)
def test_host_port(healthcheck: ModuleType, address: str, expected: tuple[str, int]) -> None:
    assert healthcheck.host_port(address, 8001) == expected


def test_endpoints_come_from_the_settings(healthcheck: ModuleType) -> None:
    settings = Settings(broker_url="kafka://k1:9092;kafka://k2:9093", triton_url="triton:8001")
    assert healthcheck.endpoints(settings, triton=True) == [
        ("k1", 9092),
        ("k2", 9093),
        ("triton", 8001),
    ]
    assert healthcheck.endpoints(settings, triton=False) == [("k1", 9092), ("k2", 9093)]


def test_without_a_metrics_endpoint_the_exit_status_follows_reachability(
    healthcheck: ModuleType, listening: int, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTENTSTREAM_METRICS_PORT", "0")
    monkeypatch.setenv("INTENTSTREAM_FEEDBACK_METRICS_PORT", "0")
    monkeypatch.setenv("INTENTSTREAM_BROKER_URL", f"kafka://127.0.0.1:{listening}")
    monkeypatch.setenv("INTENTSTREAM_TRITON_URL", f"127.0.0.1:{closed_port}")
    assert healthcheck.main(["--timeout", "1"]) == 1  # Triton is down
    assert healthcheck.main(["--timeout", "1", "--no-triton"]) == 0

    monkeypatch.setenv("INTENTSTREAM_TRITON_URL", f"127.0.0.1:{listening}")
    assert healthcheck.main(["--timeout", "1"]) == 0


def test_the_exit_status_follows_the_processes_own_health(
    healthcheck: ModuleType, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    registry = CollectorRegistry()
    agent = AgentMetrics.create(registry)
    port, sidecar_port = free_port(), free_port()
    monkeypatch.setenv("INTENTSTREAM_METRICS_PORT", str(port))
    monkeypatch.setenv("INTENTSTREAM_FEEDBACK_METRICS_PORT", str(sidecar_port))
    monkeypatch.setenv("INTENTSTREAM_BROKER_URL", f"kafka://127.0.0.1:{free_port()}")  # down
    assert healthcheck.main(["--timeout", "1"]) == 1  # nothing answers on the port
    server = serve_metrics(port, registry, "INTENTSTREAM_METRICS_PORT", stall_s=0.5)
    assert server is not None
    try:
        agent.count_batch(["ev"], seconds=0.01)
        # Healthy although Kafka is unreachable: progress is what counts, not a TCP probe.
        assert healthcheck.main(["--timeout", "1"]) == 0
        agent.set_lag({("ev", 0): 7}, {("ev", 0): 7})
        assert agent.progress.last_batch is not None
        agent.progress.last_batch -= 1.0
        assert healthcheck.main(["--timeout", "1"]) == 1
        assert "stalled: lag 7" in capsys.readouterr().err
        # The sidecar's port (--feedback; --no-triton, as its image passes): nothing there.
        assert healthcheck.main(["--timeout", "1", "--feedback"]) == 1
        assert healthcheck.main(["--timeout", "1", "--no-triton"]) == 1
        monkeypatch.setenv("INTENTSTREAM_FEEDBACK_METRICS_PORT", str(port))
        agent.progress.last_batch += 1.0
        assert healthcheck.main(["--timeout", "1", "--no-triton"]) == 0
    finally:
        server.shutdown()
        server.server_close()

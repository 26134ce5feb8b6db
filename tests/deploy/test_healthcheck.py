"""docker/healthcheck.py: the images' health check reads the worker's settings and reports
which of Kafka and Triton it cannot reach."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from types import ModuleType

import pytest

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


def test_exit_status_follows_reachability(
    healthcheck: ModuleType, listening: int, closed_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("INTENTSTREAM_BROKER_URL", f"kafka://127.0.0.1:{listening}")
    monkeypatch.setenv("INTENTSTREAM_TRITON_URL", f"127.0.0.1:{closed_port}")
    assert healthcheck.main(["--timeout", "1"]) == 1  # Triton is down
    assert healthcheck.main(["--timeout", "1", "--no-triton"]) == 0

    monkeypatch.setenv("INTENTSTREAM_TRITON_URL", f"127.0.0.1:{listening}")
    assert healthcheck.main(["--timeout", "1"]) == 0

"""Shared pieces for backtest tests: simulated events, and the real broker and tritonserver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from inference.tritonserver import TritonServer, tiny_triton_server
from streams.runtime.kafka_broker import KafkaBroker
from streams.runtime.processes import EmbeddedBroker
from tests.backtest.fixtures import SIM, SIM_USERS
from tests.e2e.brokers import Broker
from training.data.simulator import UserHistory, simulate


@pytest.fixture(scope="session")
def histories() -> list[UserHistory]:
    return simulate(SIM_USERS, SIM)


@pytest.fixture(scope="session")
def sim_events(histories) -> list[dict]:
    """Every simulated event, in event-time order (ties by event id), as a live source."""
    events = [e for h in histories for e in h.events]
    return sorted(events, key=lambda e: (e["ts"], e["event_id"]))


@pytest.fixture(scope="session", params=["kafka", "embedded"])
def broker(request, tmp_path_factory) -> Iterator[Broker]:
    """Apache Kafka (one node: backtests read production's broker), and Tansu (the demo's)."""
    if request.param == "kafka":
        with KafkaBroker(tmp_path_factory.mktemp("kafka")) as running:
            yield running
    else:
        with EmbeddedBroker(tmp_path_factory.mktemp("broker") / "tansu.log") as running:
            yield running


@pytest.fixture(scope="session")
def triton(tmp_path_factory) -> Iterator[TritonServer]:
    with tiny_triton_server(tmp_path_factory.mktemp("triton")) as server:
        yield server

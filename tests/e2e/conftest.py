"""The real stack for end-to-end tests: one Apache Kafka node (the guarantee suite), one Tansu
broker (the embedded default's smoke set: `embedded_broker`, `either_broker`) and one
tritonserver per session, fresh topics and app id per test, a data dir per worker and sidecar
process, workers as subprocesses stopped by PID."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from inference.tritonserver import TritonServer, tiny_triton_server
from streams.runtime.kafka_broker import KafkaBroker
from streams.runtime.processes import EmbeddedBroker, SidecarProcess, WorkerProcess
from tests.e2e.brokers import Broker, broker_profile, replication_factor

_ids = itertools.count()


def running_tansu(tmp_path_factory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(tmp_path_factory.mktemp("broker") / "tansu.log") as running:
        yield running
    assert running.process is not None and running.process.poll() is not None  # gone


@pytest.fixture(scope="session")
def broker(tmp_path_factory) -> Iterator[Broker]:
    """Apache Kafka, one combined broker+controller node; Tansu with
    INTENTSTREAM_E2E_BROKER=embedded (to compare the two on the whole suite)."""
    if os.environ.get("INTENTSTREAM_E2E_BROKER") == "embedded":
        yield from running_tansu(tmp_path_factory)
        return
    with KafkaBroker(tmp_path_factory.mktemp("kafka")) as running:
        yield running
    assert not any(node.alive for node in running.nodes)  # gone


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory) -> Iterator[EmbeddedBroker]:
    """Tansu, the demo's embedded broker."""
    yield from running_tansu(tmp_path_factory)


@pytest.fixture(scope="session")
def triton(tmp_path_factory) -> Iterator[TritonServer]:
    with tiny_triton_server(tmp_path_factory.mktemp("triton")) as server:
        yield server
    assert not server.is_running()


@dataclass
class Stack:
    broker: Broker
    triton: TritonServer
    workdir: Path
    name: str
    workers: list[WorkerProcess] = field(default_factory=list)
    sidecars: list[SidecarProcess] = field(default_factory=list)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def topics(self) -> dict[str, str]:
        return {"events": f"{self.name}.events", "dlq": f"{self.name}.events.dlq",
                "scores": f"{self.name}.scores", "alerts_intent": f"{self.name}.alerts.intent",
                "alerts_churn": f"{self.name}.alerts.churn",
                "responses": f"{self.name}.alerts.responses",
                "feedback": f"{self.name}.feedback.examples"}

    @property
    def feedback_db(self) -> Path:
        return self.workdir / "feedback.sqlite"

    def env(self, **overrides: str) -> dict[str, str]:
        env = {
            "INTENTSTREAM_APP_ID": self.name,
            "INTENTSTREAM_BROKER_URL": self.broker.url,
            "INTENTSTREAM_BROKER_PROFILE": broker_profile(self.broker),
            "INTENTSTREAM_REPLICATION_FACTOR": str(replication_factor(self.broker)),
            # As the embedded profile: a SIGKILLed worker's partitions move within seconds.
            "INTENTSTREAM_BROKER_SESSION_TIMEOUT_S": "10",
            "INTENTSTREAM_BROKER_HEARTBEAT_INTERVAL_S": "1",
            "INTENTSTREAM_TRITON_URL": self.triton.grpc_url,
            "INTENTSTREAM_EVENTS_TOPIC": self.topics["events"],
            "INTENTSTREAM_DLQ_TOPIC": self.topics["dlq"],
            "INTENTSTREAM_SCORES_TOPIC": self.topics["scores"],
            "INTENTSTREAM_ALERTS_INTENT_TOPIC": self.topics["alerts_intent"],
            "INTENTSTREAM_ALERTS_CHURN_TOPIC": self.topics["alerts_churn"],
            "INTENTSTREAM_DATA_DIR": str(self.workdir / "data"),
            "INTENTSTREAM_BATCH_WITHIN_S": "0.3",
            "INTENTSTREAM_FEEDBACK_APP_ID": f"{self.name}-feedback",
            "INTENTSTREAM_ALERT_RESPONSES_TOPIC": self.topics["responses"],
            "INTENTSTREAM_FEEDBACK_TOPIC": self.topics["feedback"],
            "INTENTSTREAM_FEEDBACK_DB": str(self.feedback_db),
            # Prometheus endpoints off: parallel workers must not fight over the default port.
            "INTENTSTREAM_METRICS_PORT": "0",
            "INTENTSTREAM_FEEDBACK_METRICS_PORT": "0",
        }
        env.update(overrides)
        return env

    def data_dir(self, process: str) -> Path:
        """A process's own data dir: RocksDB locks it, so no two processes share one."""
        return self.workdir / "data" / process

    def start_worker(self, log_level: str = "warn", **overrides: str) -> WorkerProcess:
        """A worker with a data dir of its own, unless INTENTSTREAM_DATA_DIR names one (a
        restart on an earlier worker's state)."""
        n = len(self.workers)
        env = self.env(**{"INTENTSTREAM_DATA_DIR": str(self.data_dir(f"worker-{n}")), **overrides})
        worker = WorkerProcess(env, self.workdir / f"worker-{n}.log", log_level).start()
        self.workers.append(worker)
        return worker

    def start_sidecar(self, **overrides: str) -> SidecarProcess:
        n = len(self.sidecars)
        env = self.env(**{"INTENTSTREAM_DATA_DIR": str(self.data_dir(f"sidecar-{n}")), **overrides})
        sidecar = SidecarProcess(env, self.workdir / f"sidecar-{n}.log")
        self.sidecars.append(sidecar.start())
        return sidecar


def running_stack(broker: Broker, triton: TritonServer, workdir: Path) -> Iterator[Stack]:
    running = Stack(broker, triton, workdir, name=f"e2e{next(_ids)}-{workdir.name[-8:]}")
    yield running
    for worker in running.workers + running.sidecars:
        worker.stop()


@pytest.fixture
def stack(broker, triton, tmp_path) -> Iterator[Stack]:
    """On Apache Kafka."""
    yield from running_stack(broker, triton, tmp_path)


@pytest.fixture(params=["kafka", "embedded"])
def either_broker(request) -> Broker:
    """Each broker in turn: the smoke set that keeps the embedded default tested."""
    return request.getfixturevalue("broker" if request.param == "kafka" else "embedded_broker")


@pytest.fixture
def either_stack(either_broker, triton, tmp_path) -> Iterator[Stack]:
    yield from running_stack(either_broker, triton, tmp_path)

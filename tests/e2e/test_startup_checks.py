"""Startup checks on the real broker (Apache Kafka): a worker and a sidecar refuse to start on
topics whose partition count differs from PARTITIONS, and say which topic and which counts."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from streams.runtime.processes import IntentstreamProcess, SidecarProcess, WorkerProcess
from tests.e2e.brokers import Broker, broker_profile
from tests.e2e.kafka_io import create_topic, run

pytestmark = pytest.mark.e2e
_ids = itertools.count()


def env(broker: Broker, name: str, workdir: Path) -> dict[str, str]:
    return {
        "INTENTSTREAM_APP_ID": name,
        "INTENTSTREAM_FEEDBACK_APP_ID": f"{name}-feedback",
        "INTENTSTREAM_BROKER_URL": broker.url,
        "INTENTSTREAM_BROKER_PROFILE": broker_profile(broker),
        "INTENTSTREAM_PARTITIONS": "4",
        "INTENTSTREAM_TRITON_URL": "127.0.0.1:1",  # never reached: the check comes first
        **{f"INTENTSTREAM_{key}_TOPIC": f"{name}.{key.lower()}" for key in (
            "EVENTS", "DLQ", "SCORES", "ALERTS_INTENT", "ALERTS_CHURN", "ALERT_RESPONSES",
            "FEEDBACK")},
        "INTENTSTREAM_DATA_DIR": str(workdir / "data"),
        "INTENTSTREAM_FEEDBACK_DB": str(workdir / "feedback.sqlite"),
        "INTENTSTREAM_METRICS_PORT": "0",
        "INTENTSTREAM_FEEDBACK_METRICS_PORT": "0",
    }


@pytest.mark.parametrize("process", [WorkerProcess, SidecarProcess])
def test_a_topic_with_another_partition_count_stops_the_process(
    broker: Broker, tmp_path: Path, process: type[IntentstreamProcess]
) -> None:
    name = f"startup{next(_ids)}-{tmp_path.name[-8:]}"
    run(create_topic(broker.bootstrap, f"{name}.scores", 6))
    proc = process(env(broker, name, tmp_path), tmp_path / "process.log").start()
    try:
        assert proc.process is not None
        code = proc.process.wait(timeout=60)
    finally:
        proc.stop()
    output = proc.log_tail(200)
    message = next(line for line in output.splitlines() if "cannot start" in line)
    print(f"\n[startup check] {process.__name__} exit {code}: {message.strip()}")
    assert code != 0
    assert f"topic '{name}.scores' has 6 partitions but PARTITIONS is 4" in output
    assert "Traceback" not in output

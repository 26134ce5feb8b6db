"""`intentstream backtest` on Apache Kafka and tritonserver: deterministic, and
invisible to the live system (its consumer group, its output topics)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from backtest.cli import backtest_main, replay_main
from backtest.report import iso
from inference.tritonserver import TritonServer
from streams.core.timeunits import DAY_MS
from streams.runtime.processes import WorkerProcess, free_port
from streams.runtime.topics import ensure_topics
from streams.settings import Settings
from tests.backtest.broker_state import produce_events, snapshot, wait_committed
from tests.backtest.fixtures import SIM, metrics, only_run, write_jsonl
from tests.e2e.brokers import Broker, broker_profile

pytestmark = pytest.mark.e2e
PARTITIONS = 4
_ids = itertools.count()


@dataclass
class Live:
    """A topic of simulated traffic as a live system would have it, and its topic names."""

    broker: Broker
    name: str
    per_partition: dict[int, int]  # records produced

    def topic(self, suffix: str) -> str:
        return f"{self.name}.{suffix}"

    @property
    def outputs(self) -> list[str]:
        return [self.topic(t) for t in ("dlq", "scores", "alerts.intent", "alerts.churn")]

    def worker_env(self, triton: TritonServer, workdir: Path) -> dict[str, str]:
        return {
            "INTENTSTREAM_APP_ID": self.name,
            "INTENTSTREAM_BROKER_URL": self.broker.url,
            "INTENTSTREAM_BROKER_PROFILE": broker_profile(self.broker),
            "INTENTSTREAM_PARTITIONS": str(PARTITIONS),
            "INTENTSTREAM_TRITON_URL": triton.grpc_url,
            "INTENTSTREAM_EVENTS_TOPIC": self.topic("events"),
            "INTENTSTREAM_DLQ_TOPIC": self.topic("dlq"),
            "INTENTSTREAM_SCORES_TOPIC": self.topic("scores"),
            "INTENTSTREAM_ALERTS_INTENT_TOPIC": self.topic("alerts.intent"),
            "INTENTSTREAM_ALERTS_CHURN_TOPIC": self.topic("alerts.churn"),
            "INTENTSTREAM_DATA_DIR": str(workdir / "data"),
            "INTENTSTREAM_BATCH_WITHIN_S": "0.3",
            "INTENTSTREAM_METRICS_PORT": "0",  # no Prometheus port fights between test workers
            "INTENTSTREAM_FEEDBACK_METRICS_PORT": "0",
            # Faust's web server (on by default in `worker`) must not collide with a demo's.
            "WEB_PORT": str(free_port()),
        }

    def backtest_args(self, triton: TritonServer, out: Path, start: int = SIM.start_ms,
                      end: int = SIM.end_ms) -> list[str]:
        return ["--from", iso(start) or "", "--to", iso(end) or "",
                "--topic", self.topic("events"), "--broker-url", self.broker.url,
                "--triton-url", triton.grpc_url, "--tick-s", "60", "--out", str(out),
                "--no-progress"]


@pytest.fixture(scope="module")
def live(broker, sim_events) -> Iterator[Live]:
    name = f"bt{next(_ids)}"
    settings = Settings(broker_url=broker.url, partitions=PARTITIONS,
                        events_topic=f"{name}.events", dlq_topic=f"{name}.dlq",
                        scores_topic=f"{name}.scores", alerts_intent_topic=f"{name}.alerts.intent",
                        alerts_churn_topic=f"{name}.alerts.churn")
    asyncio.run(ensure_topics(settings))
    counts = asyncio.run(produce_events(broker.bootstrap, settings.events_topic, sim_events,
                                        orjson.dumps))
    yield Live(broker, name, dict(sorted(counts.items())))


def test_a_topic_range_replayed_twice_gives_byte_identical_metrics(live, triton, tmp_path,
                                                                    sim_events):
    outs = [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        assert backtest_main(live.backtest_args(triton, out)) == 0
    first, second = ((out / "metrics.json").read_bytes() for out in outs)
    assert first == second
    # Every prediction, byte for byte too: an analyst's join does not depend on the run.
    first, second = ((out / "predictions.jsonl").read_bytes() for out in outs)
    assert first == second and first.count(b"\n") == metrics(outs[0])["runs"][
        next(iter(metrics(outs[0])["runs"]))]["counts"]["predictions"]
    run = only_run(metrics(outs[0]))
    assert run["counts"]["events_in_range"] == len(sim_events)
    assert run["heads"]["strength"]["n"] > 100
    # The source does not matter either: the same events from a file score the same.
    path = write_jsonl(tmp_path / "events.jsonl", sim_events)
    assert replay_main([str(path), "--from", str(SIM.start_ms), "--to", str(SIM.end_ms),
                        "--triton-url", triton.grpc_url, "--tick-s", "60",
                        "--out", str(tmp_path / "file"), "--no-progress"]) == 0
    from_file = only_run(metrics(tmp_path / "file"))
    assert from_file["scores_sha256"] == run["scores_sha256"]
    assert from_file["heads"] == run["heads"]


def test_a_sub_range_reads_only_its_events(live, triton, tmp_path, sim_events):
    start, end = SIM.start_ms + 2 * DAY_MS, SIM.start_ms + 4 * DAY_MS
    args = live.backtest_args(triton, tmp_path / "sub", start, end)
    args += ["--label-until", iso(end + DAY_MS) or ""]
    assert backtest_main(args) == 0
    counts = only_run(metrics(tmp_path / "sub"))["counts"]
    assert counts["events_in_range"] == sum(start <= e["ts"] < end for e in sim_events)
    assert counts["events_for_labels_only"] == sum(
        end <= e["ts"] < end + DAY_MS for e in sim_events)


def test_a_backtest_leaves_live_offsets_and_outputs_untouched(live, triton, tmp_path):
    worker = WorkerProcess(live.worker_env(triton, tmp_path), tmp_path / "worker.log").start()
    try:
        # The live worker has consumed (and committed) everything and is idle.
        asyncio.run(wait_committed(live.broker.bootstrap, live.name, live.topic("events"),
                                   live.per_partition, timeout_s=90))
        state = [live.broker.bootstrap, [live.name], live.topic("events"), PARTITIONS,
                 live.outputs]
        before = asyncio.run(snapshot(*state))
        assert before.outputs[live.topic("scores")], "the live worker wrote no scores"
        # A range that ends mid-topic: a reader that committed its position would show.
        args = live.backtest_args(triton, tmp_path / "report", SIM.start_ms + DAY_MS,
                                  SIM.start_ms + 5 * DAY_MS)
        args += ["--lateness-s", "0"]  # stop reading at the range's end, mid-topic
        assert backtest_main(args) == 0
        after = asyncio.run(snapshot(*state))
        assert worker.alive, worker.log_tail()
    finally:
        worker.stop()
    assert after.committed == before.committed == {live.name: live.per_partition}
    assert after.outputs == before.outputs  # not one record more on any live output topic
    assert after.topics == before.topics  # and no topic of its own
    assert after.groups == before.groups  # nor a consumer group

"""The apps under test: where they run (a broker, a Triton), each one's settings and topics,
and how one is started, warmed up and stopped. Shared by `intentstream bench` (bench/cli.py)
and `intentstream bench soak` (bench/soak.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson

from bench.measure import BenchError, produce, read_until
from streams.runtime.processes import IntentstreamProcess, WorkerProcess, free_port
from streams.runtime.topics import ensure_topics
from streams.settings import Settings

WARM_UP_USER = "bench-warm-up"


@dataclass(frozen=True)
class Stage:
    """One app under test: its env (app id, topics) on the shared broker and Triton."""

    name: str
    env: dict[str, str]
    topics: tuple[str, str]  # (events in, outputs)


@dataclass(frozen=True)
class Bench:
    """Where the apps under test run: the broker, a Triton (in `env`) and the logs' folder."""

    bootstrap: str
    workdir: Path
    env: dict[str, str]  # settings every app shares, by Settings field name

    def stage(self, name: str) -> Stage:
        """A new app id, with its topics created on the broker and a state folder."""
        app_id = f"bench-{name}-{int(time.time())}"
        topics = (f"{app_id}.events", f"{app_id}.out")
        env = {**self.env, "app_id": app_id, "events_topic": topics[0],
               "scores_topic": topics[1], "dlq_topic": f"{app_id}.dlq",
               "alerts_intent_topic": f"{app_id}.alerts.intent",
               "alerts_churn_topic": f"{app_id}.alerts.churn",
               "data_dir": str(self.workdir / name)}
        (self.workdir / name).mkdir(parents=True, exist_ok=True)  # Faust creates only the leaf
        stage = Stage(name, {f"INTENTSTREAM_{k.upper()}": v for k, v in env.items()}, topics)
        asyncio.run(ensure_topics(settings_of(stage), names=list(stage.topics)))
        return stage

    def on_triton(self, url: str) -> Bench:
        return Bench(self.bootstrap, self.workdir, {**self.env, "triton_url": url})

    def log(self, stage: Stage) -> Path:
        return self.workdir / f"{stage.name}.log"


def base_env(broker_url: str, triton_url: str) -> dict[str, str]:
    return {"broker_url": broker_url, "broker_profile": "embedded", "triton_url": triton_url,
            "metrics_port": "0", "feedback_metrics_port": "0", "log_level": "warning"}


def settings_of(stage: Stage) -> Settings:
    return Settings(**{k.removeprefix("INTENTSTREAM_").lower(): v for k, v in stage.env.items()})


Process = TypeVar("Process", bound=IntentstreamProcess)


@contextlib.contextmanager
def running(process: Process) -> Iterator[Process]:
    """`process` started, and stopped on the way out; a failed measurement shows its log."""
    process.start()
    try:
        yield process
    except BenchError as error:
        raise BenchError(f"{error}\n{process.log_tail()}") from None
    finally:
        process.stop()


def warm_up(bench: Bench, stage: Stage, process: IntentstreamProcess) -> None:
    """Wait until the app has joined its group and produced an output (not timed)."""
    event = {"event_id": "warm-up", "user_id": WARM_UP_USER, "ts": 1_709_251_100_000,
             "type": "view", "item": {"id": "sku-0"}}
    asyncio.run(produce(bench.bootstrap, stage.topics[0],
                        [(WARM_UP_USER.encode(), orjson.dumps(event))]))
    asyncio.run(read_until(bench.bootstrap, stage.topics[1], is_warm_up, timeout_s=180,
                           alive=lambda: process.alive))


def is_warm_up(value: bytes) -> bool:
    return WARM_UP_USER.encode() in value


def metered_worker(bench: Bench, stage: Stage) -> tuple[WorkerProcess, str]:
    """Our worker for `stage` with a metrics page; and that page's URL."""
    port = free_port()
    worker = WorkerProcess({**stage.env, "INTENTSTREAM_METRICS_PORT": str(port)},
                           bench.log(stage))
    return worker, f"http://127.0.0.1:{port}/metrics"

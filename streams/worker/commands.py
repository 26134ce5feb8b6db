"""Operator commands on the Faust app: `create-topics`, `watch`, `health`.

Every Kafka client here takes the worker's security settings (`Settings.kafka_client_kwargs`),
so a command works against the same SASL/TLS cluster the worker does."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from faust.cli import option

from streams.runtime.demo_summary import format_score
from streams.runtime.metrics import probe_health
from streams.runtime.topics import bootstrap_servers, ensure_topics
from streams.settings import Settings
from streams.worker.app import app, settings


@app.command()
async def create_topics() -> None:
    """Create the source, output and DLQ topics (idempotent)."""
    created = await ensure_topics(settings)
    print(orjson.dumps({"created": created}).decode())


def watch_consumer_kwargs(settings: Settings) -> dict[str, Any]:
    """A group-less reader of the scores topic from its start, with the worker's security."""
    return {
        "bootstrap_servers": bootstrap_servers(settings.broker_url),
        "auto_offset_reset": "earliest",
        "enable_auto_commit": False,
        **settings.kafka_client_kwargs(),
    }


async def watch_scores(settings: Settings, max_records: int, idle_timeout: float,
                       out: Callable[[str], None] = print) -> int:
    """Print scores from the scores topic's start; return how many were printed."""
    consumer = AIOKafkaConsumer(settings.scores_topic, **watch_consumer_kwargs(settings))
    await consumer.start()
    seen = 0
    try:
        while not max_records or seen < max_records:
            batch = await consumer.getmany(timeout_ms=1000)
            if not batch and idle_timeout:
                idle_timeout -= 1
                if idle_timeout <= 0:
                    break
            for records in batch.values():
                for record in records:
                    out(format_score(orjson.loads(record.value)))
                    seen += 1
    finally:
        await consumer.stop()
    return seen


@app.command(
    option("--max-records", type=int, default=0, help="stop after this many (0: run forever)"),
    option("--idle-timeout", type=float, default=0.0, help="stop after this long with no record"),
)
async def watch(self, max_records: int, idle_timeout: float) -> None:
    """Print intent scores as they arrive on the scores topic."""
    await watch_scores(settings, max_records, idle_timeout,
                       out=lambda line: print(line, flush=True))
    await asyncio.sleep(0)


def health_port(settings: Settings, feedback: bool) -> int:
    return settings.feedback_metrics_port if feedback else settings.metrics_port


@app.command(
    option("--feedback", is_flag=True, default=False,
           help="ask the feedback sidecar (INTENTSTREAM_FEEDBACK_METRICS_PORT)"),
    option("--host", default="127.0.0.1", help="where the process runs"),
    option("--timeout", type=float, default=5.0, help="seconds to wait for the answer"),
)
async def health(self, feedback: bool, host: str, timeout: float) -> None:
    """Exit 0 if the worker (or sidecar) on this host is healthy, 1 if not: one line why.

    Unhealthy: consumer lag > 0 and no batch completed for STALL_S, or no answer."""
    port = health_port(settings, feedback)
    if port <= 0:
        setting = "FEEDBACK_METRICS_PORT" if feedback else "METRICS_PORT"
        print(f"unhealthy: INTENTSTREAM_{setting} is 0, so there is no /health to ask")
        sys.exit(1)
    ok, line = await asyncio.to_thread(probe_health, port, host, timeout)
    print(f"{'healthy' if ok else 'unhealthy'}: {line}", flush=True)
    if not ok:
        sys.exit(1)

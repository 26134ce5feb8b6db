"""Operator commands on the Faust app: `create-topics`, `watch`, `health`, `user`.

Every Kafka client here takes the worker's security settings (`Settings.kafka_client_kwargs`),
so a command works against the same SASL/TLS cluster the worker does."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from faust.cli import argument, option

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


def ask_user(base_url: str, user_id: str, timeout_s: float) -> tuple[int, str]:
    """`GET {base_url}/users/{user_id}`: (exit status, what to print). 0 and the JSON answer;
    1 and one line for an unknown user, a worker that cannot answer now, or no answer."""
    url = f"{base_url.rstrip('/')}/users/{urllib.parse.quote(user_id, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return 0, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return 1, _refusal(exc, user_id)
    except (OSError, ValueError) as exc:
        return 1, f"intentstream user: cannot reach {url}: {getattr(exc, 'reason', exc)}"


def _refusal(exc: urllib.error.HTTPError, user_id: str) -> str:
    try:
        reason = json.loads(exc.read()).get("reason", "")
    except ValueError:
        reason = ""
    if exc.code == 404:
        return f"intentstream user: unknown user {user_id!r} (404)"
    if exc.code == 503:
        retry = exc.headers.get("Retry-After")
        return (f"intentstream user: unavailable now (503): {reason or 'no reason given'}"
                + (f"; retry after {retry} s" if retry else ""))
    return f"intentstream user: {exc.url} answered {exc.code} {exc.reason}"


@app.command(
    argument("user_id"),
    option("--url", default=None,
           help="a worker's HTTP port (any worker: it forwards to the owner); default: "
                "http://127.0.0.1:INTENTSTREAM_METRICS_PORT"),
    option("--timeout", type=float, default=10.0, help="seconds to wait for the answer"),
)
async def user(self, user_id: str, url: str | None, timeout: float) -> None:
    """Print what the workers hold about one user (GET /users/{id}): latest scores, open
    session, profile, customer value. Exit 1 with one line if unknown or unavailable."""
    base = url or f"http://127.0.0.1:{settings.metrics_port}"
    status, text = await asyncio.to_thread(ask_user, base, user_id, timeout)
    print(text, file=sys.stdout if status == 0 else sys.stderr, flush=True)
    if status:
        sys.exit(status)

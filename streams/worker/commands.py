"""Operator commands on the Faust app: `create-topics`, `watch`."""

from __future__ import annotations

import asyncio

import orjson
from aiokafka import AIOKafkaConsumer
from faust.cli import option

from streams.runtime.topics import bootstrap_servers, ensure_topics
from streams.worker.app import app, settings


@app.command()
async def create_topics() -> None:
    """Create the source, output and DLQ topics (idempotent)."""
    created = await ensure_topics(settings)
    print(orjson.dumps({"created": created}).decode())


def format_score(doc: dict) -> str:
    strength = doc["strength"]
    return (
        f"{doc['user_id']:>12}  strength={strength['label']:<6} "
        f"p(strong)={strength['probs'].get('strong', 0):.2f}  "
        f"type={doc['intent_type']['label']:<9} churn={doc['churn']:.2f}  "
        f"events={doc['window']['n_events']:>3}  v{doc['model']['version']}  "
        f"| {doc['text'][-70:]}"
    )


@app.command(
    option("--max-records", type=int, default=0, help="stop after this many (0: run forever)"),
    option("--idle-timeout", type=float, default=0.0, help="stop after this long with no record"),
)
async def watch(self, max_records: int, idle_timeout: float) -> None:
    """Print intent scores as they arrive on the scores topic."""
    consumer = AIOKafkaConsumer(
        settings.scores_topic,
        bootstrap_servers=bootstrap_servers(settings.broker_url),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
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
                    print(format_score(orjson.loads(record.value)), flush=True)
                    seen += 1
    finally:
        await consumer.stop()
    await asyncio.sleep(0)

"""Create the topics this system owns, with the partition count from settings.

Faust creates only its internal topics (changelogs); source and output topics must exist with
the same partition count as the session table, or co-partitioning breaks. Brokers that
auto-create topics would pick their own count, so we create them explicitly, idempotently.
"""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings


def bootstrap_servers(broker_url: str) -> list[str]:
    """`kafka://h1:9092;kafka://h2:9092` (Faust's form) → `["h1:9092", "h2:9092"]`."""
    servers = []
    for part in broker_url.replace(",", ";").split(";"):
        part = part.strip()
        if part:
            servers.append(part.split("://", 1)[-1])
    return servers


def owned_topics(settings: Settings) -> list[str]:
    return [
        settings.events_topic,
        settings.dlq_topic,
        settings.scores_topic,
        settings.alerts_intent_topic,
        settings.alerts_churn_topic,
    ]


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create missing topics; return the names that were created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings.broker_url), **settings.kafka_client_kwargs()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in (names or owned_topics(settings)) if n not in existing]
        if not missing:
            return []
        new = [NewTopic(n, settings.partitions, settings.replication_factor) for n in missing]
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
            await admin.create_topics(new)
        return missing
    finally:
        await admin.close()

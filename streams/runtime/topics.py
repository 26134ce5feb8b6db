"""Create the topics this system owns, with the partition count from settings.

Faust creates only its internal topics (changelogs); source and output topics must exist with
the same partition count as the session table, or co-partitioning breaks. Brokers that
auto-create topics would pick their own count, so we create them explicitly, idempotently.

An existing topic with another partition count is a deployment error no restart can fix (a
user's events and their outputs or table rows would land on different partitions): both apps
stop at start with a message naming the topic and both counts (`TopicPartitionsMismatch`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings

log = structlog.get_logger("intentstream.topics")


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
        latest_topic(settings),
    ]


def latest_topic(settings: Settings) -> str:
    """LATEST_TOPIC, or the scores topic's name with its last part `latest`."""
    if settings.latest_topic:
        return settings.latest_topic
    stem, dot, _ = settings.scores_topic.rpartition(".")
    return f"{stem}{dot}latest" if dot else f"{settings.scores_topic}.latest"


def topic_configs(settings: Settings, name: str) -> dict[str, str]:
    """Broker configs a topic is created with: `intent.latest` keeps one record per user (the
    latest score), so it is compacted; the others keep the broker's retention."""
    return {"cleanup.policy": "compact"} if name == latest_topic(settings) else {}


class TopicPartitionsMismatch(SystemExit):
    """Existing topics disagree with PARTITIONS. A SystemExit: Faust's worker lets it through,
    so the process exits 1 with this message on stderr and no traceback."""


def partition_mismatches(
    counts: Mapping[str, int], expected: int, input_topic: str, outputs: Sequence[str]
) -> list[str]:
    """What is wrong with the existing topics' partition counts (`counts`: topic -> count),
    one sentence per problem; empty when all is well. Topics not in `counts` don't exist yet
    (they will be created with `expected`)."""
    problems = [f"topic {name!r} has {n} partitions but PARTITIONS is {expected}"
                for name, n in sorted(counts.items()) if n != expected]
    source = counts.get(input_topic)
    if source is not None:
        problems += [
            f"output topic {name!r} has {counts[name]} partitions, fewer than the input "
            f"topic {input_topic!r} ({source})"
            for name in outputs if name in counts and counts[name] < source]
    return problems


def mismatch_error(problems: Sequence[str]) -> TopicPartitionsMismatch:
    return TopicPartitionsMismatch(
        "intentstream: cannot start: " + "; ".join(problems) + ". Partition counts are fixed "
        "when topics are created: set INTENTSTREAM_PARTITIONS to the topics' count, or "
        "recreate the topics (docker/OPS.md)")


async def partition_counts(admin: AIOKafkaAdminClient, names: Sequence[str]) -> dict[str, int]:
    """Partition count of each of `names` that exists."""
    described = await admin.describe_topics(list(names))
    return {t["topic"]: len(t["partitions"]) for t in described
            if t.get("error_code", 0) == 0 and t["topic"] in names}


async def ensure_topics(settings: Settings, names: list[str] | None = None) -> list[str]:
    """Create missing topics; return the names that were created.

    Raises `TopicPartitionsMismatch` when an existing one has another partition count."""
    wanted = names or owned_topics(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(settings.broker_url), **settings.kafka_client_kwargs()
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        present = [n for n in wanted if n in existing]
        counts = await partition_counts(admin, present) if present else {}
        outputs = [n for n in wanted if n != settings.events_topic]
        problems = partition_mismatches(counts, settings.partitions, settings.events_topic,
                                        outputs)
        if problems:
            log.error("topics.partitions_mismatch", problems=problems)
            raise mismatch_error(problems)
        missing = [n for n in wanted if n not in existing]
        if not missing:
            return []
        new = [NewTopic(n, settings.partitions, settings.replication_factor,
                        topic_configs=topic_configs(settings, n)) for n in missing]
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
            await admin.create_topics(new)
        return missing
    finally:
        await admin.close()

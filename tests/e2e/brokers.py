"""The two brokers the end-to-end tests run on, and what a Stack must tell the app about each.

Apache Kafka (`KafkaBroker`, streams/runtime/kafka_broker.py) carries the guarantee suite;
Tansu (`EmbeddedBroker`, the demo's default) keeps a smoke set. The app learns which one it
talks to only through INTENTSTREAM_BROKER_PROFILE."""

from __future__ import annotations

from streams.runtime.kafka_broker import KafkaBroker
from streams.runtime.processes import EmbeddedBroker

Broker = KafkaBroker | EmbeddedBroker


def broker_profile(broker: Broker) -> str:
    """The settings' broker profile for this broker (streams/settings.py)."""
    return "kafka" if isinstance(broker, KafkaBroker) else "embedded"


def replication_factor(broker: Broker) -> int:
    """Replicas of the topics a test creates: the cluster's, 1 on a single node or Tansu."""
    return broker.config.rf if isinstance(broker, KafkaBroker) else 1



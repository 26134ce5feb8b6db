"""`watch`, `backtest` and `retrain --from-topic` build their Kafka clients with the worker's
SASL/TLS settings: the keyword arguments reach the aiokafka constructors (stand-in class)."""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import pytest

import streams.runtime.topic_reader as topic_reader
from streams.settings import Settings
from streams.worker import commands
from training import retrain

SASL = Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
                kafka_sasl_username="svc", kafka_sasl_password="s3cret")


class Refused(Exception):
    """Raised by the stand-in's start(): the test only needs what it was built with."""


class RecordingConsumer:
    built: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, *topics: str, **kwargs: Any) -> None:
        RecordingConsumer.built.append(kwargs)

    async def start(self) -> None:
        raise Refused

    async def stop(self) -> None:
        pass


@pytest.fixture(autouse=True)
def recording(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    RecordingConsumer.built = []
    monkeypatch.setattr(commands, "AIOKafkaConsumer", RecordingConsumer)
    monkeypatch.setattr(topic_reader, "AIOKafkaConsumer", RecordingConsumer)
    monkeypatch.setattr("aiokafka.AIOKafkaConsumer", RecordingConsumer)
    return RecordingConsumer.built


def assert_secured(kwargs: dict[str, Any]) -> None:
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc"
    assert kwargs["sasl_plain_password"] == "s3cret"
    assert kwargs["ssl_context"] is not None


def test_watch(recording):
    with pytest.raises(Refused):
        asyncio.run(commands.watch_scores(SASL, max_records=1, idle_timeout=1))
    [kwargs] = recording
    assert_secured(kwargs)


def test_backtest_reader(recording, monkeypatch):
    spec = topic_reader.KafkaRange(bootstrap=["k:9092"], topic="t", from_ms=0, until_ms=None,
                                   client_kwargs=SASL.kafka_client_kwargs())
    with pytest.raises(Refused):
        asyncio.run(topic_reader.read_kafka(spec))
    # Not given: the settings' own, read from the environment like the worker's.
    monkeypatch.setattr("streams.settings.get_settings", lambda: SASL)
    with pytest.raises(Refused):
        asyncio.run(topic_reader.read_kafka(topic_reader.KafkaRange(["k:9092"], "t", 0, None)))
    assert len(recording) == 2
    for kwargs in recording:
        assert_secured(kwargs)


def test_retrain_from_the_topic(recording):
    with pytest.raises(Refused):
        asyncio.run(retrain.read_feedback_topic(SASL))
    [kwargs] = recording
    assert_secured(kwargs)

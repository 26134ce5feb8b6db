"""`intentstream train --from/--to` reads the events topic by event time (a real broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from streams.core.timeunits import DAY_MS
from streams.settings import Settings
from tests.training.conftest import WORKER_POLICY
from tests.training.data.test_history import sim_docs
from training.arguments import parse_args
from training.data import history
from training.data.simulator import UserHistory

# --- the topic, on the embedded broker ------------------------------------------------------------


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from streams.runtime.processes import EmbeddedBroker

    with EmbeddedBroker(tmp_path_factory.mktemp("broker") / "tansu.log") as running:
        yield running


@pytest.mark.e2e
def test_train_reads_the_events_topic_by_event_time(broker: Any,
                                                    histories: list[UserHistory]) -> None:
    from streams.runtime.topics import ensure_topics
    from tests.backtest.broker_state import produce_events

    topic = "history.events"
    on_broker = Settings(broker_url=broker.url, broker_profile="embedded", partitions=2,
                         events_topic=topic)
    asyncio.run(ensure_topics(on_broker, [topic]))
    # In event-time order, as live traffic arrives: the reader stops a partition at the first
    # record stamped at or after the range's end.
    docs = sorted(sim_docs(histories), key=lambda d: d["ts"])
    asyncio.run(produce_events(broker.bootstrap, topic, docs, orjson.dumps))
    first, last = min(d["ts"] for d in docs), max(d["ts"] for d in docs)
    start, end = first + DAY_MS, last - DAY_MS  # a range inside the topic
    data_args = parse_args(["--from", str(start), "--to", history.iso(end),
                            "--churn-days", "3"])[0]
    data = history.load(data_args, on_broker, WORKER_POLICY, data_args.label_policy(), 0)
    h = data.card["history"]
    inside = sum(start <= d["ts"] < end for d in docs)
    assert h["type"] == "kafka" and h["valid_events"] == inside
    # Records are read by their stamps with the producer-skew slack on both sides (Tansu looks
    # the start up by append time: from the topic's start); event times decide the rest.
    assert set(h["dropped"]) <= {"before_range", "after_range"}
    assert h["records"] == inside + sum(h["dropped"].values())
    assert h["observed_until"] == history.iso(end - 1)
    assert all(data.splits[name] for name in ("train", "validation", "test"))

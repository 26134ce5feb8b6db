"""`intentstream retrain --from-topic` on the real broker (Apache Kafka): the feedback topic read
from start to end, each example_id once, records that are not examples counted and left out."""

from __future__ import annotations

import itertools

import pytest

from tests.e2e.brokers import Broker
from tests.e2e.kafka_io import create_topic, produce, run
from tests.training.test_retrain import make_example
from training.arguments import RetrainArguments
from training.retrain import load_examples

pytestmark = pytest.mark.e2e
_ids = itertools.count()


@pytest.mark.parametrize("either_broker", ["kafka", "embedded"], indirect=True)
def test_examples_come_from_the_topic_each_once(either_broker: Broker, tmp_path, monkeypatch):
    broker = either_broker
    topic = f"retrain{next(_ids)}-{tmp_path.name[-8:]}.feedback.examples"
    examples = [make_example(f"u{i % 7}", f"text {i}", "weak", "query", False, i)
                for i in range(30)]
    records = [(e.user_id.encode(), e.model_dump_json().encode()) for e in examples]
    # A partition that moved between sidecars can put an example on the topic twice.
    records += [*records[:5], (b"u1", b"not an example")]
    run(create_topic(broker.bootstrap, topic, 4))  # as the sidecar would (no auto-create)
    run(produce(broker.bootstrap, topic, records))
    monkeypatch.setenv("INTENTSTREAM_BROKER_URL", broker.url)
    monkeypatch.setenv("INTENTSTREAM_FEEDBACK_TOPIC", topic)
    said: list[str] = []
    loaded = load_examples(RetrainArguments(from_topic=True), said.append)
    print(f"\n[retrain --from-topic] {len(records)} records -> {len(loaded)} examples; {said}")
    assert sorted(e.example_id for e in loaded) == sorted(e.example_id for e in examples)
    assert said == [f"retrain: 1 records on {topic} are not feedback examples; left out"]

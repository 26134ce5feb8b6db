"""The Apache Kafka launcher (streams/runtime/kafka_broker.py): its configuration, and a node
that keeps its log across a SIGKILL and restart (which the embedded broker cannot)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.runtime.kafka_broker import (
    BrokerConfig,
    KafkaBroker,
    KafkaNode,
    kafka_version,
    new_cluster_id,
    node_properties,
)
from tests.e2e.kafka_io import create_topic, produce, read_to_end, run


def test_the_pinned_version_is_the_compose_images_major_version():
    compose = (Path(__file__).parents[2] / "docker" / "compose.yaml").read_text()
    image = compose.split("apache/kafka:", 1)[1].split("}", 1)[0]
    assert kafka_version().split(".")[0] == image.split(".")[0]


@pytest.mark.parametrize(("nodes", "rf", "min_isr"), [(1, 1, 1), (3, 3, 2)])
def test_replication_follows_the_cluster_size(nodes: int, rf: int, min_isr: int):
    config = BrokerConfig(nodes=nodes)
    node = KafkaNode(1, 9092, 9093, Path("/tmp/n1"))
    props = node_properties(node, "1@127.0.0.1:9093", config)
    assert (config.rf, config.min_isr) == (rf, min_isr)
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):
        assert props[key] == str(rf)
    for key in ("min.insync.replicas", "transaction.state.log.min.isr"):
        assert props[key] == str(min_isr)
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"
    assert props["group.initial.rebalance.delay.ms"] == "0"


def test_cluster_ids_are_kraft_uuids_that_the_storage_tool_cannot_read_as_an_option():
    ids = {new_cluster_id() for _ in range(2000)}  # ~60 would start with "-" if drawn freely
    assert len(ids) == 2000 and all(len(i) == 22 and "=" not in i for i in ids)
    assert not [i for i in ids if i.startswith("-")]


@pytest.mark.e2e
def test_a_node_killed_and_restarted_keeps_its_log(tmp_path: Path):
    with KafkaBroker(tmp_path / "kafka") as kafka:
        run(create_topic(kafka.bootstrap, "kept", 2))
        run(produce(kafka.bootstrap, "kept", [(b"k%d" % i, b"v%d" % i) for i in range(50)]))
        pid = kafka.pid
        kafka.kill(1)
        assert not kafka.nodes[0].alive
        kafka.restart(1)
        assert kafka.pid != pid
        got = run(read_to_end(kafka.bootstrap, ["kept"], 2))["kept"]
        assert sorted(r.value for r in got) == sorted(b"v%d" % i for i in range(50))
    assert not kafka.nodes[0].alive

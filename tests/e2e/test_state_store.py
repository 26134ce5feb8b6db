"""A worker restarted on its RocksDB tables replays only the changelog tail (#25 item 4).

On Apache Kafka with the real tritonserver: a worker scores a stream and stops; everything its
RocksDB store holds is then deleted from the sessions changelog (DeleteRecords up to the offset
the store records as applied), and a tombstone for one user is appended after it (the tail).
The restarted worker, on the same data dir, must continue every other user's session exactly
where it was (so their state came from disk: the head is gone from Kafka) and must have
forgotten the tombstoned user (so it read the tail); Faust's recovery log must show it reading
each partition from the applied offset. The memory store fails all three: it rebuilds from
whatever the changelog still holds, from its start.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.admin.records_to_delete import RecordsToDelete
from faust.stores.rocksdb import RocksDBOptions

from tests.e2e.kafka_io import produce, read_to_end, read_until, run
from tests.e2e.test_slice import all_users_complete, events_per_user
from tests.e2e.traffic import make_traffic

pytestmark = pytest.mark.e2e

PARTITIONS = 4  # the settings' default, which the Stack keeps
OFFSET_KEY = b"__faust\x00offset__"  # where Faust's RocksDB store keeps the applied offset
ENV = {
    "INTENTSTREAM_TABLE_STORE": "rocksdb://",
    # No session closes during the test: neither by the clock while the worker is down and
    # quiet, nor by the later users' event time (the traffic spans two hours).
    "INTENTSTREAM_WATERMARK_IDLE_S": "3600",
    "INTENTSTREAM_SESSION_GAP_S": "86400",
    "INTENTSTREAM_SESSION_MAX_SPAN_S": "86400",
}


def persisted_offsets(tables: Path, table: str) -> dict[int, int]:
    """partition -> the last changelog offset the store applied (read with the worker down)."""
    found = {}
    for partition in range(PARTITIONS):
        db = RocksDBOptions().open(tables / f"{table}-{partition}.db")  # as Faust's store does
        try:
            value = db.get(OFFSET_KEY)
        finally:
            db.close()
        if value is not None:
            found[partition] = int(value)
    return found


async def delete_head(bootstrap: str, topic: str, before: dict[int, int]) -> None:
    """Delete every record below `before[partition]`. Kafka deletes records only where the
    cleanup policy includes `delete` (Faust's changelogs are `compact`); nothing expires by
    time meanwhile (retention -1)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(
            ConfigResourceType.TOPIC, topic,
            configs={"cleanup.policy": "compact,delete", "retention.ms": "-1"})])
        await admin.delete_records(
            {TopicPartition(topic, p): RecordsToDelete(offset) for p, offset in before.items()})
    finally:
        await admin.close()


def recovery_starts(log: str, topic: str) -> dict[int, int]:
    """partition -> the offset Faust's recovery of `topic` read from (exclusive; -1: the whole
    changelog), from the last "Reading Starts At - Active" table an info-level log holds."""
    starts: dict[int, int] = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if "Reading Starts At - Active" not in line:
            continue
        starts, name = {}, None
        for row in lines[i + 1:]:
            if not row.startswith(("|", "+")):
                break
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            if row.startswith("+") or len(cells) != 3 or cells[0] == "topic":
                continue
            name = name if cells[0] == "\u3003" else cells[0]  # 〃: the topic above
            if name == topic:
                starts[int(cells[1])] = int(cells[2])
    return starts


async def tombstone(bootstrap: str, topic: str, key: bytes, partition: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=None, partition=partition)
    finally:
        await producer.stop()


def one_more_event(last: dict) -> tuple[bytes, bytes]:
    """The user's next event, a minute after their last: within the session's gap."""
    event = {"event_id": f"{last['event_id']}-after", "user_id": last["user_id"],
             "ts": last["ts"] + 60_000, "type": "view", "item": {"id": "sku-0"}}
    return event["user_id"].encode(), orjson.dumps(event)


def n_events_of(records, suffix: str) -> dict[str, int]:
    """user -> n_events of the score that absorbed their event ending in `suffix`."""
    found = {}
    for rec in records:
        doc = orjson.loads(rec.value)
        if doc["window"]["last_event_id"].endswith(suffix):
            found[doc["user_id"]] = doc["window"]["n_events"]
    return found


def test_restart_on_rocksdb_replays_only_the_tail_and_keeps_the_state(stack):
    traffic = make_traffic(n_users=80, events_per_user=(3, 7), n_malformed=0, seed=25)
    expected = events_per_user(traffic.valid)
    data_dir = stack.data_dir("worker-0")
    worker = stack.start_worker(**ENV, INTENTSTREAM_DATA_DIR=str(data_dir))
    run(produce(stack.bootstrap, stack.topics["events"], traffic.records))
    scores_topic = stack.topics["scores"]
    run(read_until(stack.bootstrap, [scores_topic],
                   lambda s: all_users_complete(expected)({"scores": s[scores_topic]}),
                   timeout_s=150, alive=lambda: worker.alive))
    worker.stop()
    assert worker.process is not None and worker.process.returncode is not None

    # What the store holds, and what the changelog holds beyond it.
    changelog = f"{stack.name}-sessions-changelog"
    applied = persisted_offsets(data_dir / stack.name / "slot-0" / "v1" / "tables", "sessions")
    records = run(read_to_end(stack.bootstrap, [changelog], PARTITIONS))[changelog]
    ends = {p: 1 + max((r.offset for r in records if r.partition == p), default=-1)
            for p in range(PARTITIONS)}
    assert applied and all(applied[p] < ends[p] for p in applied)
    head = {p: applied[p] + 1 for p in applied}

    # Gone from Kafka: everything the store applied. Appended: one user's tombstone.
    run(delete_head(stack.bootstrap, changelog, head))
    forgotten = sorted(expected)[0]
    key = orjson.dumps(forgotten)
    partition = next(r.partition for r in records if r.key == key)
    run(tombstone(stack.bootstrap, changelog, key, partition))
    tail = sum(ends[p] - head.get(p, 0) for p in range(PARTITIONS)) + 1
    print(f"\n[state] {len(records)} changelog records, {sum(head.values())} deleted (in "
          f"RocksDB), tail to replay: {tail} (the tombstone included)")

    restarted_at = time.monotonic()
    restarted = stack.start_worker("info", **ENV, INTENTSTREAM_DATA_DIR=str(data_dir))
    last = {e["user_id"]: e for e in traffic.valid}  # valid is in time order
    run(produce(stack.bootstrap, stack.topics["events"],
                [one_more_event(last[u]) for u in sorted(expected)]))
    seen = run(read_until(stack.bootstrap, [scores_topic],
                          lambda s: len(n_events_of(s[scores_topic], "-after")) == len(expected),
                          timeout_s=150, alive=lambda: restarted.alive))
    took = time.monotonic() - restarted_at
    got = n_events_of(seen[scores_topic], "-after")
    want = {u: (1 if u == forgotten else n + 1) for u, n in expected.items()}
    wrong = {u: (got.get(u), n) for u, n in want.items() if got.get(u) != n}
    print(f"[state] restart to every user scored again: {took:.1f}s; "
          f"users continued: {sum(1 for u in got if u != forgotten and got[u] == want[u])}")
    # Recovery read from the offset the store had applied, not from the changelog's start.
    starts = recovery_starts(restarted.log_path.read_text(errors="replace"), changelog)
    assert starts == {p: applied.get(p, -1) for p in range(PARTITIONS)}
    # Every kept user's session went on from its state: it came from disk, not from Kafka.
    # The tombstoned user starts over: the tail was replayed.
    assert wrong == {}, restarted.log_tail()
    assert restarted.alive

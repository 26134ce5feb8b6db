"""`scan_json_table` (streams/runtime/agent_io.py) on Faust's own stores: every entry of the
active partitions, decoded; readable in steps while the table is written; and a RocksDB scan
that is dropped releases its databases, so Faust can reopen them after a rebalance (the worker
drops its timers' scan when partitions are revoked, streams/worker/agent.py)."""

from __future__ import annotations

import gc
from itertools import islice
from pathlib import Path

import faust
import orjson
import pytest
from faust.types import TP

from streams.runtime.agent_io import scan_json_table

USERS = {f"u{p}{i}": (p, {"n": i, "partition": p}) for p in (0, 1) for i in range(5)}


def rocksdb_table(datadir: Path) -> tuple[faust.App, faust.types.TableT]:
    app = faust.App(f"scan-{datadir.name}", store="rocksdb://", datadir=str(datadir),
                    broker="kafka://127.0.0.1:1")  # never connected
    table = app.Table("sessions", partitions=2, default=None,
                      schema=faust.Schema(key_type=str, key_serializer="json",
                                          value_serializer="json"))
    topic = table.changelog_topic_name
    app.assignor.assigned_actives = lambda: {TP(topic, 0), TP(topic, 1)}  # no group here
    for user, (partition, state) in USERS.items():
        table.data._db_for_partition(partition).put(orjson.dumps(user), orjson.dumps(state))
    return app, table


def test_a_rocksdb_scan_gives_every_active_entry_decoded(tmp_path: Path) -> None:
    _, table = rocksdb_table(tmp_path / "a")
    assert dict(scan_json_table(table)) == {user: state for user, (_, state) in USERS.items()}


def test_a_database_opened_during_a_rocksdb_scan_does_not_break_it(tmp_path: Path) -> None:
    _, table = rocksdb_table(tmp_path / "c")
    scan = scan_json_table(table)
    first = list(islice(scan, 2))
    standby = table.data._db_for_partition(7)  # e.g. a standby's first changelog record
    standby.put(orjson.dumps("standby-user"), orjson.dumps({"n": 0}))
    assert dict(first + list(scan)) == {user: state for user, (_, state) in USERS.items()}


def test_a_rocksdb_scan_holds_its_databases_until_dropped(tmp_path: Path) -> None:
    _, table = rocksdb_table(tmp_path / "b")
    store, topic = table.data, table.changelog_topic_name
    scan = scan_json_table(table)
    first = list(islice(scan, 3))  # a rebuild between two steps
    assert len(first) == 3
    store.revoke_partitions(table, {TP(topic, 0), TP(topic, 1)})
    with pytest.raises(Exception, match="lock"):  # what Faust meets reopening after a rebalance
        store._db_for_partition(0)
    del scan  # what the worker does when partitions are revoked
    gc.collect()
    reopened = store._db_for_partition(0)
    assert orjson.loads(reopened[orjson.dumps("u01")]) == USERS["u01"][1]


def test_a_memory_scan_reads_a_copy_so_writes_between_steps_do_not_break_it() -> None:
    app = faust.App("scan-memory", store="memory://", broker="kafka://127.0.0.1:1")
    table = app.Table("sessions", partitions=2, default=None)
    for user, (_, state) in USERS.items():
        table.data[user] = state
    scan = scan_json_table(table)
    first = list(islice(scan, 4))
    table.data["late"] = {"n": 99}  # a batch wrote between two steps
    rest = list(scan)
    assert dict(first + rest) == {user: state for user, (_, state) in USERS.items()}

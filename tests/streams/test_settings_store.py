"""Table store settings: where each process keeps its tables, and what Faust is told."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings


def test_tables_default_to_rocksdb_under_the_apps_data_dir() -> None:
    conf = Settings(data_dir=Path("/state"), app_id="shop").faust_settings()
    assert conf["store"] == "rocksdb://"
    assert conf["datadir"] == "/state/shop"
    assert conf["table_standby_replicas"] == 1


def test_a_worker_id_gives_each_process_its_own_directory() -> None:
    one = Settings(data_dir=Path("/state"), app_id="shop", worker_id="w1")
    two = Settings(data_dir=Path("/state"), app_id="shop", worker_id="w2")
    assert one.faust_settings()["datadir"] == "/state/shop/w1"
    assert one.faust_settings()["datadir"] != two.faust_settings()["datadir"]
    assert one.app_data_dir("shop-feedback") == Path("/state/shop-feedback/w1")


@pytest.mark.parametrize("worker_id", ["../other", "a/b", "w 1"])
def test_a_worker_id_cannot_leave_the_data_dir(worker_id: str) -> None:
    with pytest.raises(ValidationError):
        Settings(worker_id=worker_id)


def test_store_and_standbys_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("INTENTSTREAM_TABLE_STORE", "memory://")
    monkeypatch.setenv("INTENTSTREAM_TABLE_STANDBY_REPLICAS", "0")
    conf = Settings().faust_settings()
    assert (conf["store"], conf["table_standby_replicas"]) == ("memory://", 0)


def test_an_unknown_store_is_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(table_store="redis://")


def test_rocksdb_memory_is_capped_per_table_partition() -> None:
    options = Settings(rocksdb_block_cache_mb=32, rocksdb_write_buffer_mb=4).table_options()
    assert options["block_cache_size"] == 32 * 1024 * 1024
    assert options["write_buffer_size"] == 4 * 1024 * 1024
    assert options["max_write_buffer_number"] == 2


def test_the_memory_store_takes_no_rocksdb_options() -> None:
    assert Settings(table_store="memory://").table_options() == {}

"""Faults against the real stack: Triton down and back, the broker frozen, poison events,
Triton failing one batch. Each test prints its counts (events in, scores out, DLQ records,
lost events, duplicate alerts) and asserts nothing is lost or alerted twice.

The worker SIGKILL fault is tests/e2e/test_slice.py::test_sigkill_mid_stream_then_restart….
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import orjson
import pytest
import tritonclient.grpc as grpcclient
from aiokafka.structs import RecordMetadata

from inference.tritonserver import TritonServer
from tests.e2e.faults import (
    MANY_ALERTS,
    PARTITIONS,
    dead_letters,
    dead_letters_by_source,
    finish,
    input_ends,
    latest_n_events,
    log_events,
    tally,
)
from tests.e2e.kafka_io import committed_offsets, produce, read_until, run
from tests.e2e.traffic import T0, Traffic, make_traffic

if TYPE_CHECKING:
    from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

OUTAGE_S = 30.0


# --- a Triton of our own, to stop, restart and unload models on ------------------------------


class OwnTriton:
    """A second tritonserver over the session server's repository (same seeded weights, so
    same scores) on fixed ports, so a restarted server answers at the same URL."""

    def __init__(self, repo: Path, log_path: Path) -> None:
        self.server = TritonServer(repo, log_path=log_path)
        self.server.start()
        self.server.wait_ready()

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        old = self.server
        self.server = TritonServer(old.repo, grpc_port=old.grpc_port, http_port=old.http_port,
                                   metrics_port=old.metrics_port, log_path=old.log_path)
        self.server.start()
        self.server.wait_ready()


@pytest.fixture(scope="module")
def own_triton(triton: TritonServer, tmp_path_factory) -> Iterator[OwnTriton]:
    own = OwnTriton(triton.repo, tmp_path_factory.mktemp("own-triton") / "tritonserver.log")
    yield own
    own.stop()


# --- shared steps ----------------------------------------------------------------------------


def produce_part(stack: Stack, records: list[tuple[bytes | None, bytes]]) -> list[RecordMetadata]:
    return run(produce(stack.bootstrap, stack.topics["events"], records))


def wait_scores(stack: Stack, worker, at_least: int, timeout_s: float = 120) -> None:
    run(read_until(stack.bootstrap, [stack.topics["scores"]],
                   lambda seen: len(seen[stack.topics["scores"]]) >= at_least,
                   timeout_s=timeout_s, alive=lambda: worker.alive))


def current_scores(stack: Stack) -> dict[str, int]:
    seen = run(read_until(stack.bootstrap, [stack.topics["scores"]], lambda s: False,
                          timeout_s=2))
    return latest_n_events(seen[stack.topics["scores"]])


def assert_clean(counts, traffic_malformed: int) -> None:
    assert counts.lost == 0
    assert counts.duplicate_alerts == 0
    assert counts.overcounted == 0
    # Each malformed input dead-lettered, no valid one; a batch redelivered after a rebalance
    # (on Kafka, a broker frozen past the session timeout) repeats its dead letters.
    assert counts.dlq_inputs == traffic_malformed <= counts.dlq
    assert counts.alerts >= 50  # enough alerts that a duplicate would have shown


def first_unscored(traffic: Traffic, metadata: list[RecordMetadata],
                   latest: dict[str, int]) -> dict[int, int]:
    """partition -> offset of its first valid event (of those produced so far, `metadata`)
    not covered by its user's latest score.

    A user's events are produced in order onto one partition, so a score absorbing n events
    covers exactly the user's first n."""
    seen_per_user: dict[str, int] = {}
    first: dict[int, int] = {}
    malformed = set(traffic.malformed)
    for record, md in zip(traffic.records[:len(metadata)], metadata, strict=True):
        if record in malformed:
            continue
        user = orjson.loads(record[1])["user_id"]
        index = seen_per_user.get(user, 0)
        seen_per_user[user] = index + 1
        if index >= latest.get(user, 0):
            first[md.partition] = min(first.get(md.partition, md.offset), md.offset)
    return first


# --- Triton down for 30 s --------------------------------------------------------------------


def test_triton_down_30s_backs_off_keeps_backlog_and_drains(stack, own_triton):
    traffic = make_traffic(n_users=150, events_per_user=(6, 12), n_malformed=20, seed=21)
    split = len(traffic.records) // 3
    worker = stack.start_worker(INTENTSTREAM_TRITON_URL=own_triton.grpc_url,
                                INTENTSTREAM_BATCH_MAX_EVENTS="50",
                                INTENTSTREAM_SCORE_RETRY_MAX_S="4", **MANY_ALERTS)
    started = time.monotonic()
    metadata = produce_part(stack, traffic.records[:split])
    wait_scores(stack, worker, at_least=20)  # mid-stream
    own_triton.stop()
    down_at = time.monotonic()
    metadata += produce_part(stack, traffic.records[split:2 * split])  # the backlog
    snapshots = []
    while time.monotonic() - down_at < OUTAGE_S:
        assert worker.alive, worker.log_tail()
        snapshots.append(run(committed_offsets(stack.bootstrap, stack.name,
                                               stack.topics["events"], PARTITIONS)))
        time.sleep(2)
    latest = current_scores(stack)  # nothing can be scored while Triton is down
    unscored = first_unscored(traffic, metadata, latest)
    retries = log_events(worker, "triton.retry")
    own_triton.restart()
    metadata += produce_part(stack, traffic.records[2 * split:])
    outputs = finish(stack, worker, metadata)
    counts = tally("triton-down-30s", len(traffic.records), traffic.valid,
                   len(traffic.malformed), outputs, stack)
    print(f"[fault:triton-down-30s] {len(retries)} retries while down; first unscored offsets "
          f"{unscored}; {len(snapshots)} commit snapshots, last {snapshots[-1]}; "
          f"{time.monotonic() - started:.1f}s")

    # The backlog was real: at least everything produced during the outage waited.
    assert len(unscored) == PARTITIONS
    # Backed off: several attempts spread over the outage, not a tight loop or a give-up.
    assert len(retries) >= 4 and max(r["attempt"] for r in retries) >= 4
    assert len(retries) < 60
    # Never committed past an unscored event while Triton was down.
    for snapshot in snapshots:
        assert all(snapshot[p] <= unscored[p] for p in unscored), (snapshot, unscored)
    assert_clean(counts, len(traffic.malformed))
    assert worker.alive


# --- Triton errors for one batch -------------------------------------------------------------


def test_triton_error_for_one_batch_is_retried_not_dropped(stack, own_triton):
    traffic = make_traffic(n_users=120, events_per_user=(6, 12), n_malformed=10, seed=23)
    worker = stack.start_worker(INTENTSTREAM_TRITON_URL=own_triton.grpc_url,
                                INTENTSTREAM_BATCH_MAX_EVENTS="50", **MANY_ALERTS)
    started = time.monotonic()
    client = grpcclient.InferenceServerClient(own_triton.grpc_url)
    try:
        client.unload_model("intent")  # requests now fail with Triton's own error
        metadata = produce_part(stack, traffic.records)
        deadline = time.monotonic() + 60
        while not log_events(worker, "triton.retry"):
            assert worker.alive, worker.log_tail()
            assert time.monotonic() < deadline, "the worker never retried"
            time.sleep(0.2)
        client.load_model("intent")
    finally:
        client.close()
    outputs = finish(stack, worker, metadata)
    counts = tally("triton-error-one-batch", len(traffic.records), traffic.valid,
                   len(traffic.malformed), outputs, stack)
    retries = log_events(worker, "triton.retry")
    print(f"[fault:triton-error-one-batch] {len(retries)} retries: {retries[0]['error']!r}; "
          f"{time.monotonic() - started:.1f}s")

    assert 1 <= len(retries) <= 5
    assert "unknown model" in retries[0]["error"]  # a real Triton answer, not a dead socket
    assert_clean(counts, len(traffic.malformed))
    assert worker.alive


# --- the broker frozen for 30 s --------------------------------------------------------------


def test_broker_frozen_30s_worker_survives_and_drains(stack):
    traffic = make_traffic(n_users=150, events_per_user=(6, 12), n_malformed=20, seed=25)
    half = len(traffic.records) // 2
    worker = stack.start_worker(INTENTSTREAM_BATCH_MAX_EVENTS="50", **MANY_ALERTS)
    started = time.monotonic()
    metadata = produce_part(stack, traffic.records[:half])
    wait_scores(stack, worker, at_least=20)
    before = run(committed_offsets(stack.bootstrap, stack.name, stack.topics["events"],
                                   PARTITIONS))
    stack.broker.freeze()
    try:
        frozen_at = time.monotonic()
        while time.monotonic() - frozen_at < OUTAGE_S:
            assert worker.alive, worker.log_tail()
            time.sleep(1)
    finally:
        stack.broker.thaw()
    metadata += produce_part(stack, traffic.records[half:])
    outputs = finish(stack, worker, metadata)
    counts = tally("broker-frozen-30s", len(traffic.records), traffic.valid,
                   len(traffic.malformed), outputs, stack)
    print(f"[fault:broker-frozen-30s] committed at the freeze {before}, input then "
          f"{input_ends(metadata[:half])}; {time.monotonic() - started:.1f}s")
    # The freeze landed mid-stream: input produced before it was not all processed yet.
    assert any(before[p] < end for p, end in input_ends(metadata[:half]).items())
    assert_clean(counts, len(traffic.malformed))
    assert worker.alive, worker.log_tail()


# --- poison events ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Poison:
    name: str
    user: str
    raw: bytes  # the poison event, sent between the user's valid events


def valid_event(name: str, user: str, i: int, ts: int) -> dict:
    return {"event_id": f"{name}-e{i}", "user_id": user, "ts": ts, "type": "search",
            "query": f"trail shoes {i}"}


def poison_event(user: str, **fields) -> bytes:
    doc = {"event_id": "poison", "user_id": user, "ts": T0 + 150_000,
           "type": "support_message", "text": "where is my order"}
    doc.update(fields)
    return orjson.dumps(doc)


def poisons() -> list[Poison]:
    def splice(user: str, field: str, raw_value: bytes) -> bytes:
        return poison_event(user).replace(b'"event_id"', b'"' + field.encode() + b'":'
                                          + raw_value + b',"event_id"', 1)

    deep_ok, deep_bad = "[" * 1000 + "]" * 1000, "[" * 5000 + "]" * 5000
    wide_user = "ü" * 64 + "🛒" * 64  # 128 characters, 384 bytes
    made = [
        ("deep_nesting_1000", lambda u: splice(u, "meta", deep_ok.encode())),
        ("deep_nesting_5000", lambda u: splice(u, "meta", deep_bad.encode())),
        ("lone_surrogate", lambda u: poison_event(u).replace(b"my order", b"my \\ud800 order")),
        ("nul_and_control", lambda u: poison_event(u, text="a\x00b\x07c\x1b[31m\x7f\x0bd")),
        ("rtl_override", lambda u: poison_event(u, text="\u202eredro ym si erehw\u202c\u2066")),
        ("emoji_10k", lambda u: poison_event(u, text="🛒" * 10_000)),
        ("emoji_1k", lambda u: poison_event(u, text="🛒" * 1_000)),
        ("number_1e309", lambda u: splice(u, "duration_s", b"1e309")),
        ("price_1e300", lambda u: poison_event(u, type="view", item={"id": "i", "price": 1e300})),
        ("duplicate_keys", lambda u: splice(u, "user_id", b'"somebody-else"')),
        ("user_id_128_chars", lambda u: poison_event(u)),
    ]
    return [Poison(name, wide_user if name == "user_id_128_chars" else f"poison-{name}",
                   build(wide_user if name == "user_id_128_chars" else f"poison-{name}"))
            for name, build in made]


def poison_traffic(poisoned: list[Poison], before: int = 3, after: int = 3
                   ) -> tuple[list[tuple[bytes | None, bytes]], list[dict]]:
    """Ordinary traffic with, per poison, a user sending valid events around the poison."""
    base = make_traffic(n_users=60, events_per_user=(5, 10), n_malformed=0, seed=27)
    records, valid = list(base.records), list(base.valid)
    for p in poisoned:
        events = [valid_event(p.name, p.user, i, T0 + i * 60_000) for i in range(before + after)]
        key = p.user.encode()
        records += [(key, orjson.dumps(e)) for e in events[:before]]
        records.append((key, p.raw))
        records += [(key, orjson.dumps(e)) for e in events[before:]]
        valid += events
    return records, valid


def test_poison_events_are_dead_lettered_or_harmless(stack):
    poisoned = poisons()
    records, valid = poison_traffic(poisoned)
    worker = stack.start_worker(**MANY_ALERTS)
    started = time.monotonic()
    metadata = produce_part(stack, records)
    # Wait for every valid event to be covered; the poison ones are counted after.
    outputs = finish(stack, worker, metadata)
    dlq = dead_letters_by_source(outputs[stack.topics["dlq"]])
    where = {p.name: (md.partition, md.offset)
             for (_, raw), md in zip(records, metadata, strict=True)
             for p in poisoned if raw is p.raw}
    outcome = {name: dlq[at]["reason"] if at in dlq else "scored" for name, at in where.items()}
    # A poison event that was not dead-lettered was absorbed: it counts in its user's session.
    absorbed = [{"user_id": p.user} for p in poisoned if where[p.name] not in dlq]
    counts = tally("poison", len(records), valid + absorbed, len(dlq), outputs, stack)
    print(f"[fault:poison] outcomes {outcome}; {time.monotonic() - started:.1f}s")

    assert all(d["reason"] and d["detail"] for d in dlq.values())
    assert set(dlq) <= set(where.values())  # no valid event went to the DLQ
    assert outcome["deep_nesting_5000"] == outcome["lone_surrogate"] == "not_json"
    assert outcome["number_1e309"] == "not_json"
    assert outcome["emoji_10k"] == "too_large" and outcome["price_1e300"] == "invalid_field"
    assert outcome["duplicate_keys"] == "scored" and outcome["user_id_128_chars"] == "scored"
    # Events after each poison were all scored: the poison cost nothing but itself.
    assert counts.lost == 0 and counts.overcounted == 0 and counts.duplicate_alerts == 0
    assert worker.alive, worker.log_tail()


def test_far_future_timestamp_does_not_poison_the_session(stack):
    user = "poison-far-future"
    poisoned = [Poison("far_future_ts", user, poison_event(user, ts=4_102_444_000_000))]
    records, valid = poison_traffic(poisoned)
    worker = stack.start_worker()
    metadata = produce_part(stack, records)
    outputs = finish(stack, worker, metadata)
    dlq = dead_letters(outputs[stack.topics["dlq"]])
    counts = tally("poison-far-future", len(records), valid, len(dlq), outputs, stack)
    print(f"[fault:poison-far-future] DLQ reasons {[d['reason'] for d in dlq]}")
    assert [d["reason"] for d in dlq if d["reason"] == "late_event"] == []
    assert "future_timestamp" in [d["reason"] for d in dlq]
    assert counts.lost == 0


def test_one_megabyte_event_is_dead_lettered_without_a_crash(stack):
    user = "poison-one-megabyte"
    poisoned = [Poison("one_megabyte", user, poison_event(user, text="x" * 1_000_000))]
    records, valid = poison_traffic(poisoned)
    worker = stack.start_worker()
    metadata = produce_part(stack, records)
    outputs = finish(stack, worker, metadata, timeout_s=60)
    dlq = dead_letters(outputs[stack.topics["dlq"]])
    counts = tally("poison-one-megabyte", len(records), valid, len(dlq), outputs, stack)
    assert [d["reason"] for d in dlq] == ["too_large"]
    # The dead letter keeps a prefix of the value, so it fits in one Kafka message.
    assert dlq[0]["raw_truncated"] and dlq[0]["raw_bytes"] > 1_000_000
    assert counts.lost == 0 and worker.alive

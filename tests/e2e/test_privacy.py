"""Planted PII never leaves the worker: not to Triton, not to any topic, not to the store.

Apache Kafka, real tritonserver (with Triton's own tensor tracing, which records every
TEXT input it receives), real worker and feedback sidecar subprocesses with a pseudonym key.
Shoppers with recognisable raw ids write e-mails, phone numbers, card numbers and street
addresses into search queries, support messages, reviews, item titles and pages; malformed
events carry them too. Then every byte that came out is searched for them.
"""

from __future__ import annotations

import base64
import sqlite3
import time
from pathlib import Path

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from inference.model.export import ensure_model
from inference.tritonserver import REPOSITORY_TEMPLATE, TritonServer, copy_repository
from streams.core.privacy import pseudonymise
from tests.e2e.kafka_io import produce, read_until, run

pytestmark = pytest.mark.e2e

KEY = "e2e-pseudonym-key"
T0 = 1_767_225_600_000  # 2026-01-01
MIN, DAY = 60_000, 86_400_000
EMAIL = "jane.doe+orders@example.com"
PHONES = ("+44 20 7946 0958", "(555) 123-4567", "0171 1234567")
CARDS = ("4111 1111 1111 1111", "5500-0000-0000-0004")
ADDRESSES = ("42 Wallaby Way", "1600 Pennsylvania Avenue", "Hauptstraße 12")
SHOPPERS = ("shopper-ann-raw", "shopper-bob-raw", "shopper-cyd-raw")
MALFORMED_USERS = ("shopper-xan-raw", "shopper-yul-raw", "shopper-zed-raw")
# Every planted value, and pieces of them that would show a partial leak.
FORBIDDEN = [EMAIL, "jane.doe", *PHONES, "7946 0958", "123-4567", "1234567", *CARDS,
             "4111111111111111", "1111 1111", "0000-0004", *ADDRESSES, "Wallaby",
             "Pennsylvania", "Hauptstra", *SHOPPERS, *MALFORMED_USERS, "-raw"]
ENV = {
    "INTENTSTREAM_PSEUDONYM_KEY": KEY,
    # Every score alerts, so alerts for the planted shoppers exist to be searched.
    "INTENTSTREAM_ALERT_INTENT_THRESHOLD": "0.0",
    "INTENTSTREAM_ALERT_CHURN_THRESHOLD": "0.0",
    # Short outcome windows: a view two days later settles the first session's prediction.
    "INTENTSTREAM_LABEL_HORIZON_H": "12",
    "INTENTSTREAM_CHURN_DAYS": "1",
    "INTENTSTREAM_WATERMARK_LATENESS_S": "60",
}


def shopper_events(n: int, user: str) -> list[dict]:
    """A session full of PII in every free-text field, then a plain view two days later."""
    ts = T0 + n * 7 * MIN
    base = {"user_id": user}
    docs = [
        {"type": "search", "query": f"gift for {EMAIL} to {ADDRESSES[0]}"},
        {"type": "support_message", "text": f"card {CARDS[0]} charged twice, call me on "
                                            f"{PHONES[0]} or {PHONES[1]}"},
        {"type": "add_to_cart", "item": {"id": "sku-77", "title": f"Mug engraved {PHONES[2]}",
                                         "category": f"to {ADDRESSES[2]}", "price": 12.5}},
        {"type": "view", "page": f"contact {EMAIL}", "duration_s": 30},
        {"type": "review", "rating": 1, "text": f"sent to {ADDRESSES[1]}, paid with {CARDS[1]}"},
    ]
    events = [{**base, **doc, "event_id": f"ev-{n}-{i}", "ts": ts + i * MIN}
              for i, doc in enumerate(docs)]
    later = {**base, "event_id": f"ev-{n}-later", "ts": ts + 2 * DAY, "type": "view",
             "item": {"id": "sku-1", "title": "Osprey Talon 22", "price": 140.0}}
    return [*events, later]


def malformed_records() -> list[tuple[bytes | None, bytes]]:
    x, y, z = MALFORMED_USERS
    broken = (f'{{"user_id": "{x}", "type": "support_message", "text": "card {CARDS[1]} '
              f'at {ADDRESSES[1]}, {EMAIL}').encode() + b"\xff"
    mismatch = orjson.dumps({"event_id": "ev-bad", "user_id": z, "ts": T0, "type": "search",
                             "query": f"call {PHONES[0]}"})
    return [(x.encode(), broken), (y.encode(), mismatch)]


def revealed(value: bytes | None) -> bytes:
    """A record's bytes plus whatever its base64 fields (dead letters) decode to."""
    if not value:
        return b""
    out = [value]
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for name, item in node.items():
                if name.endswith("_b64") and isinstance(item, str):
                    out.append(base64.b64decode(item))
                stack.append(item)
        elif isinstance(node, list):
            stack.extend(node)
    return b"\n".join(out)


def leaks(blob: bytes) -> list[str]:
    return [f for f in FORBIDDEN if f.encode() in blob]


async def changelog_topics(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(t for t in await admin.list_topics()
                      if t.startswith(prefix) and t.endswith("-changelog"))
    finally:
        await admin.close()


def traced_texts(trace_dir: Path) -> tuple[list[str], bytes]:
    """The TEXT inputs Triton traced (each request's strings), and the raw trace files."""
    texts, raw = [], b""
    for path in sorted(trace_dir.glob("trace.json*")):
        content = path.read_bytes()
        raw += content
        for entry in orjson.loads(content):
            tensor = entry.get("tensor") or {}
            if tensor.get("name") == "TEXT":
                texts.append(tensor["data"])
    return texts, raw


def store_dump(path: Path) -> bytes:
    db = sqlite3.connect(path)
    try:
        return "\n".join(db.iterdump()).encode()
    finally:
        db.close()


@pytest.fixture
def traced_triton(tmp_path):
    """A tiny-model tritonserver of our own that traces every tensor it receives."""
    repo = copy_repository(REPOSITORY_TEMPLATE, tmp_path / "traced_models")
    ensure_model(repo, tiny=True, seed=0)
    trace_dir = tmp_path / "traces"
    trace_dir.mkdir()
    server = TritonServer(repo, log_path=tmp_path / "traced-triton.log", extra_args=[
        f"--trace-config=triton,file={trace_dir / 'trace.json'}",
        "--trace-config=triton,log-frequency=1",  # a file per trace, written as it completes
        "--trace-config=level=TENSORS", "--trace-config=rate=1", "--trace-config=count=-1",
    ])
    with server:
        yield server, trace_dir


def test_planted_pii_and_raw_user_ids_never_leave_the_worker(stack, traced_triton):
    server, trace_dir = traced_triton
    key = KEY.encode()
    events = sorted((e for n, u in enumerate(SHOPPERS) for e in shopper_events(n, u)),
                    key=lambda e: e["ts"])
    records = [(e["user_id"].encode(), orjson.dumps(e)) for e in events]
    malformed = malformed_records()
    worker = stack.start_worker(INTENTSTREAM_TRITON_URL=server.grpc_url, **ENV)
    sidecar = stack.start_sidecar(INTENTSTREAM_TRITON_URL=server.grpc_url, **ENV)
    run(produce(stack.bootstrap, stack.topics["events"], malformed[:1] + records + malformed[1:]))

    pseudonyms = {pseudonymise(u, key): u for u in SHOPPERS}
    last_ids = {pseudonymise(e["user_id"], key): e["event_id"] for e in events}
    outputs = [stack.topics[t] for t in ("scores", "alerts_intent", "alerts_churn", "dlq",
                                         "feedback")]

    def scored(seen) -> bool:
        scores = [orjson.loads(r.value) for r in seen[stack.topics["scores"]]]
        covered = {(s["user_id"], s["window"]["last_event_id"]) for s in scores}
        return (all((p, last_ids[p]) in covered for p in pseudonyms)
                and len(seen[stack.topics["dlq"]]) >= len(malformed))

    def labelled(seen) -> set[str]:
        return {orjson.loads(r.value)["user_id"] for r in seen[stack.topics["feedback"]]}

    seen = run(read_until(stack.bootstrap, outputs,
                          lambda s: scored(s) and labelled(s) >= set(pseudonyms), timeout_s=90,
                          alive=lambda: worker.alive and sidecar.alive))
    assert scored(seen) and labelled(seen), (worker.log_tail(), sidecar.log_tail())
    time.sleep(2)  # the sidecar's table writes follow its outputs
    changelogs = run(changelog_topics(stack.bootstrap, stack.name))
    tables = run(read_until(stack.bootstrap, changelogs, lambda s: False, timeout_s=8))
    for proc in (*stack.workers, *stack.sidecars):
        proc.stop()
    server.stop()  # Triton writes any trace still open on exit
    texts, trace_bytes = traced_texts(trace_dir)
    store = store_dump(stack.feedback_db)

    # Not vacuous: the planted shoppers were scored (under their pseudonyms) on scrubbed
    # text, alerted, labelled and stored; the tables and Triton saw them too.
    scores = [orjson.loads(r.value) for r in seen[stack.topics["scores"]]]
    planted_texts = [s["text"] for s in scores if s["user_id"] in pseudonyms]
    assert any(all(p in t for p in ("[email]", "[card]", "[phone]", "[address]"))
               for t in planted_texts), planted_texts
    alerted = {orjson.loads(r.value)["user_id"] for t in ("alerts_intent", "alerts_churn")
               for r in seen[stack.topics[t]]}
    assert alerted >= set(pseudonyms)
    assert any(p.encode() in store for p in pseudonyms)  # all of them: the last assert
    assert f"{stack.name}-sessions-changelog" in changelogs
    assert f"{stack.name}-feedback-feedback_users-changelog" in changelogs
    table_bytes = b"\n".join(revealed(r.key) + revealed(r.value)
                             for rs in tables.values() for r in rs)
    assert all(p.encode() in table_bytes for p in pseudonyms)
    assert any("[email]" in t and "[card]" in t for t in texts), texts[:3]
    dead = [orjson.loads(r.value) for r in seen[stack.topics["dlq"]]]
    assert {d["reason"] for d in dead} == {"not_json", "key_mismatch"}
    assert all(d["raw_scrubbed"] for d in dead)

    # Nothing planted anywhere: keys, values and base64 payloads of every output topic and
    # changelog, the feedback store, every text Triton received, and the processes' logs.
    found = {}
    for topic, recs in [*seen.items(), *tables.items()]:
        for r in recs:
            if hits := leaks(revealed(r.key) + b"\n" + revealed(r.value)):
                found.setdefault(topic, set()).update(hits)
    if hits := leaks(store):
        found["feedback store"] = set(hits)
    if hits := leaks(trace_bytes):
        found["triton"] = set(hits)
    for proc in (*stack.workers, *stack.sidecars):
        if hits := leaks(proc.log_path.read_bytes()):
            found[proc.log_path.name] = set(hits)
    print(f"\n[privacy] {len(scores)} scores, {len(alerted)} alerted users, {len(dead)} dead "
          f"letters, {sum(len(r) for r in tables.values())} changelog records in "
          f"{len(changelogs)} topics, {len(texts)} traced Triton requests: leaks {found}")
    assert found == {}

    # Joins work on pseudonyms: every planted shopper's first session was labelled.
    assert labelled(seen) == set(pseudonyms), (
        "a shopper's scores must reach the sidecar on the partition of their events")

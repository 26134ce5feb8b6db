"""Several workers in one group, a worker killed, one added, one stopped, on traffic with the
hard shapes: every valid event counted once, no valid event dead-lettered, commits that reach
the end of every partition. Apache Kafka, real worker processes, real tritonserver.

The traffic has multi-session users, two users with over a thousand events each (more than a
session keeps, split by max span), exact producer re-sends, re-sends of an event id with other
content, and malformed records. Everything is checked from outside, on the topics and the
group's committed offsets.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import defaultdict

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.core.alerts import AlertPolicy
from streams.core.timeunits import MINUTE_MS
from tests.e2e.kafka_io import committed_offsets, produce, read_to_end, read_until, run
from tests.e2e.traffic import T0, browse_event, malformed_records

pytestmark = pytest.mark.e2e

PARTITIONS = 6
COOLDOWN_MS = AlertPolicy().cooldown_ms  # the worker's default


def user_history(rng: random.Random, user: str, sessions: int, per_session: tuple[int, int],
                 step_s: tuple[int, int]) -> list[dict]:
    ts, out = T0 + rng.randrange(0, 3_600_000), []
    for _ in range(sessions):
        for _ in range(rng.randint(*per_session)):
            ts += 1000 * rng.randint(*step_s)
            out.append(browse_event(rng, user, len(out), ts))
        ts += 45 * MINUTE_MS  # past the 30-minute gap: the next session
    return out


def scale_out_traffic(seed: int = 3) -> tuple[list[tuple[bytes | None, bytes]], dict, set]:
    """(records in produce order, user -> distinct valid event ids, indices of bad records)."""
    rng = random.Random(seed)
    histories = [user_history(rng, f"multi-{u:02d}", rng.randint(3, 5), (4, 14), (10, 200))
                 for u in range(24)]
    histories += [user_history(rng, f"short-{u:03d}", 1, (3, 8), (10, 200)) for u in range(120)]
    # 1,200 events 15-45 s apart: ~10 h, so max-span (4 h) splits and far more than 64 kept.
    histories += [user_history(rng, f"long-{u}", 1, (1200, 1200), (15, 45)) for u in range(2)]
    docs = sorted((d for h in histories for d in h), key=lambda d: d["ts"])
    records: list[tuple[bytes | None, bytes]] = []
    bad: set[int] = set()
    for i, doc in enumerate(docs):
        records.append((doc["user_id"].encode(), orjson.dumps(doc)))
        if i > 20 and rng.random() < 0.01:  # an exact re-send of a recent event
            again = docs[i - rng.randint(1, 20)]
            records.append((again["user_id"].encode(), orjson.dumps(again)))
        if i > 20 and rng.random() < 0.004:  # the same id with other content
            again = docs[i - rng.randint(1, 20)]
            bad.add(len(records))
            records.append((again["user_id"].encode(),
                            orjson.dumps({**again, "type": "search", "query": "conflict"})))
    for key, value in malformed_records(rng, 40):
        at = rng.randrange(len(records) + 1)
        bad = {b + 1 if b >= at else b for b in bad} | {at}
        records.insert(at, (key, value))
    valid: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        valid[doc["user_id"]].add(doc["event_id"])
    return records, dict(valid), bad


def final_counts(score_records) -> dict[str, int]:
    """user -> sum over its sessions of the session's latest (largest) n_events."""
    per_session: dict[tuple[str, str], int] = {}
    for rec in score_records:
        doc = orjson.loads(rec.value)
        key = (doc["user_id"], doc["session_id"])
        per_session[key] = max(per_session.get(key, 0), doc["window"]["n_events"])
    totals: dict[str, int] = defaultdict(int)
    for (user, _), n in per_session.items():
        totals[user] += n
    return dict(totals)


async def create_topics(bootstrap: str, names: list[str]) -> None:
    """As an operator would (`intentstream create-topics`) before starting a group: a reader
    subscribing first would otherwise auto-create a topic with the broker's default count."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names])
    finally:
        await admin.close()


def test_three_workers_a_kill_a_join_and_a_leave_count_every_event_once(stack):
    records, valid, bad = scale_out_traffic()
    expected = {user: len(ids) for user, ids in valid.items()}
    assert max(expected.values()) > 1000 and sum(expected.values()) > 3500
    run(create_topics(stack.bootstrap, list(stack.topics.values())))
    env = {"INTENTSTREAM_PARTITIONS": str(PARTITIONS), "INTENTSTREAM_BATCH_MAX_EVENTS": "100",
           "INTENTSTREAM_ALERT_INTENT_THRESHOLD": "0.05",
           "INTENTSTREAM_ALERT_CHURN_THRESHOLD": "0.05"}
    a, b = stack.start_worker(**env), stack.start_worker(**env)
    third = len(records) // 3
    positions = run(produce(stack.bootstrap, stack.topics["events"], records[:third]))
    run(read_until(stack.bootstrap, [stack.topics["scores"]],
                   lambda seen: len(seen[stack.topics["scores"]]) >= 50, timeout_s=180,
                   alive=lambda: a.alive and b.alive))
    a.kill()  # SIGKILL mid-stream
    c = stack.start_worker(**env)  # a worker joins
    positions += run(produce(stack.bootstrap, stack.topics["events"], records[third:2 * third]))
    time.sleep(5)
    b.stop()  # a graceful leave
    positions += run(produce(stack.bootstrap, stack.topics["events"], records[2 * third:]))
    last_event_at = time.monotonic()

    seen = run(read_until(stack.bootstrap, [stack.topics["scores"]],
                          lambda s: final_counts(s[stack.topics["scores"]]) == expected,
                          timeout_s=300, alive=lambda: c.alive))
    got = final_counts(seen[stack.topics["scores"]])
    wrong = {u: (got.get(u), n) for u, n in expected.items() if got.get(u) != n}
    ends = {p: 0 for p in range(PARTITIONS)}
    for meta in positions:
        ends[meta.partition] = max(ends[meta.partition], meta.offset + 1)
    committed = run(wait_for_commits(stack, ends, timeout_s=60))
    outputs = run(read_to_end(stack.bootstrap, [stack.topics["dlq"], stack.topics["alerts_intent"],
                                               stack.topics["alerts_churn"]], PARTITIONS))
    dlq = [orjson.loads(r.value) for r in outputs[stack.topics["dlq"]]]
    reasons_at: dict[tuple[int, int], set[str]] = defaultdict(set)
    for d in dlq:
        reasons_at[(d["source"]["partition"], d["source"]["offset"])].add(d["reason"])
    bad_at = {(positions[i].partition, positions[i].offset) for i in bad}
    alerts = [orjson.loads(r.value) for t in ("alerts_intent", "alerts_churn")
              for r in outputs[stack.topics[t]]]
    print(f"\n[scale-out] {len(records)} records ({sum(expected.values())} distinct valid "
          f"events, {len(bad)} bad), {len(expected)} users; "
          f"{len(seen[stack.topics['scores']])} scores, {len(dlq)} DLQ records, "
          f"{len(alerts)} alerts; users wrong: {len(wrong)}; "
          f"committed {committed} vs ends {ends} "
          f"{time.monotonic() - last_event_at:.0f}s after the last event was produced")
    assert wrong == {}, log_tails(stack)
    assert committed == ends, log_tails(stack)
    assert set(reasons_at) == bad_at  # every bad record, and no valid event, is on the DLQ
    assert all(len(reasons) == 1 for reasons in reasons_at.values())
    by_trigger: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for alert in alerts:
        by_trigger[(alert["user_id"], alert["head"])][alert["alert_id"]] = alert["event_time"]
    too_close = {k: v for k, v in by_trigger.items() if any(
        later - earlier < COOLDOWN_MS
        for earlier, later in itertools.pairwise(sorted(v.values())))}
    assert len(by_trigger) > 50 and too_close == {}
    assert c.alive


NOISE = ('"alert.raised"', '"dead_letter"')  # hundreds a run here: they hide the stall


def log_tails(stack, n: int = 15) -> str:
    """Every worker's last log lines but alerts and dead letters: a hang shows in the others'
    (rebalance warnings) as much as in its own (`input.stalled` names the wait)."""
    def tail(path) -> str:
        lines = path.read_text(errors="replace").splitlines()
        return "\n".join([line for line in lines if not any(x in line for x in NOISE)][-n:])
    return "\n".join(f"--- {w.log_path.name} (alive: {w.alive})\n{tail(w.log_path)}"
                     for w in stack.workers)


async def wait_for_commits(stack, ends: dict[int, int], timeout_s: float) -> dict[int, int]:
    """The group's committed offsets once they reach `ends`, or as they are at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        committed = await committed_offsets(stack.bootstrap, stack.name, stack.topics["events"],
                                            PARTITIONS)
        if committed == ends or time.monotonic() > deadline:
            return committed
        await asyncio.sleep(1)

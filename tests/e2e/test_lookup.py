"""Per-user lookups end to end (streams/worker/lookup.py): three workers on Apache Kafka and
tritonserver. Asking any worker gives the owner's answer, which matches the topics; an unknown
user is 404; through a rebalance (one worker stopped) the others answer 503 with Retry-After
or the right answer, never a wrong one; `intent.latest`, compacted, holds the latest score per
user; and the input's partitions are where the lookup looks for them.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.core.privacy import pseudonymise
from streams.runtime.processes import free_port
from streams.worker.lookup import input_partition
from tests.e2e.kafka_io import produce, read_to_end, read_until, run
from tests.e2e.test_slice import all_users_complete, events_per_user
from tests.e2e.traffic import make_traffic

pytestmark = pytest.mark.e2e

PARTITIONS = 6
KEY = "lookup-e2e-key"  # user ids pseudonymised: tables and outputs hold the pseudonym
QUIET_S = 4.0
Answer = tuple[int, dict[str, str], dict[str, Any]]


def ask(port: int, user: str, timeout_s: float = 10.0) -> Answer:
    url = f"http://127.0.0.1:{port}/users/{urllib.parse.quote(user, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return resp.status, dict(resp.headers), orjson.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), orjson.loads(exc.read() or b"{}")


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as resp:
            return resp.status == 200
    except OSError:
        return False


def wait(condition, timeout_s: float, what: str, alive=lambda: True, last=lambda: "") -> None:
    """Until `condition()`; `last()` says what was seen when it times out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert alive(), f"a worker died while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {last()}"
        time.sleep(0.5)


def content(view: dict[str, Any]) -> dict[str, Any]:
    """What must not change when the owner does: all but who served it, and of each score the
    wall-clock fields a redelivered re-score (same prediction id) may renew."""
    latest = {slot: None if score is None else
              {k: v for k, v in score.items() if k not in ("scored_at", "latency_ms")}
              for slot, score in view["latest"].items()}
    return {**{k: v for k, v in view.items() if k != "served_by"}, "latest": latest}


def last_by_key(records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """key -> the record last on the topic (one key's records share a partition)."""
    out: dict[str, dict[str, Any]] = {}
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        out[rec.key.decode()] = orjson.loads(rec.value)
    return out


def latest_slots(records: Iterable[Any]) -> dict[str, dict[str, Any]]:
    """user -> {"open": its last open score, "closed": its last closed score} on the topic."""
    out: dict[str, dict[str, Any]] = {}
    for rec in sorted(records, key=lambda r: (r.partition, r.offset)):
        doc = orjson.loads(rec.value)
        slots = out.setdefault(doc["user_id"], {"open": None, "closed": None})
        slots["closed" if doc["closed"] else "open"] = doc
    return out


async def cleanup_policy(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [described] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)])
        configs = {name: value for name, value, *_ in described.resources[0][4]}
        return configs["cleanup.policy"]
    finally:
        await admin.close()


def test_any_worker_answers_for_the_owner_and_a_rebalance_gives_503_or_the_right_answer(stack):
    latest_topic = f"{stack.name}.latest"
    traffic = make_traffic(n_users=40, events_per_user=(3, 8), n_malformed=0, seed=26)
    users = sorted(events_per_user(traffic.valid))
    alias = {user: pseudonymise(user, KEY.encode()) for user in users}
    ports = [free_port() for _ in range(3)]
    env = {"INTENTSTREAM_PARTITIONS": str(PARTITIONS),  # intent.latest: {name}.latest
           "INTENTSTREAM_PSEUDONYM_KEY": KEY,
           # Only events move the clock: no session closed or silence scored while we look.
           "INTENTSTREAM_WATERMARK_IDLE_S": "3600"}
    workers = []
    for port in ports:  # one at a time: each joins a settled group
        workers.append(stack.start_worker(INTENTSTREAM_METRICS_PORT=str(port), **env))
        started = ports[:len(workers)]
        wait(lambda: all(ready(p) for p in started), 90,  # noqa: B023 (called at once)
             f"{len(started)} ready workers", lambda: all(w.alive for w in workers))
    all_alive = lambda: all(w.alive for w in workers)  # noqa: E731

    # Routing: the broker's producer put each user (keyed by the raw id, as the input is)
    # where the lookup looks for it.
    placed = run(produce(stack.bootstrap, stack.topics["events"], traffic.records))
    assert {(key.decode(), meta.partition) for (key, _), meta in zip(traffic.records, placed,
                                                                      strict=True)} == \
        {(e["user_id"], input_partition(e["user_id"], PARTITIONS)) for e in traffic.valid}
    expected_counts = events_per_user(traffic.valid)
    run(read_until(stack.bootstrap, [stack.topics["scores"]],
                   lambda seen: all_users_complete({alias[u]: n for u, n in
                                                    expected_counts.items()})(
                       {"scores": seen[stack.topics["scores"]]}),
                   timeout_s=120, alive=all_alive))
    # Any worker gives the owner's answer, which is what the scores topic says. Read again
    # until the topic has been quiet for QUIET_S and the answers match it: the last batches'
    # timers close sessions after the users' last events are scored.
    differs: dict[str, Any] = {}
    scores: list[Any] = []
    expected: dict[str, dict[str, Any]] = {}
    quiet_since = [time.monotonic()]

    def answers_match() -> bool:
        now = run(read_to_end(stack.bootstrap, [stack.topics["scores"]],
                              PARTITIONS))[stack.topics["scores"]]
        if len(now) != len(scores):
            scores[:], quiet_since[0] = now, time.monotonic()
        expected.update(latest_slots(scores))  # by pseudonym
        assert set(expected) == set(alias.values())
        differs.clear()
        differs.update({u: (answer, expected[alias[u]]) for u in users
                        if (answer := ask(ports[0], u))[2].get("latest") != expected[alias[u]]})
        return not differs and time.monotonic() - quiet_since[0] >= QUIET_S
    wait(answers_match, 60, "the latest scores materialised", all_alive,
         lambda: f"{len(differs)} users differ, e.g. {next(iter(differs.items()), None)}")
    views: dict[str, dict[str, Any]] = {}
    for user in users:
        answers = [ask(port, user) for port in ports]
        assert [code for code, _, _ in answers] == [200, 200, 200], (user, answers)
        first = answers[0][2]
        assert all(doc == first for _, _, doc in answers), user  # the owner's, from each
        assert first["user_id"] == alias[user]  # asked by raw id, held by pseudonym
        assert first["partition"] == input_partition(user, PARTITIONS)
        assert first["latest"] == expected[alias[user]]
        # open, or closed by the partition's clock (other users' later events moved it)
        window = first["session"] or first["latest"]["closed"]["window"]
        assert window["n_events"] == expected_counts[user]
        assert first["profile"]["first_seen"] == min(
            e["ts"] for e in traffic.valid if e["user_id"] == user)
        views[user] = first
    owners = {v["served_by"] for v in views.values()}
    assert owners == {f"http://127.0.0.1:{p}" for p in ports}  # every worker owns some users
    for port in ports:
        code, _, doc = ask(port, "nobody-ever")
        assert code == 404 and doc["error"] == "unknown user"

    # intent.latest: compacted, its last record per user the user's last score.
    latest = run(read_to_end(stack.bootstrap, [latest_topic], PARTITIONS))[latest_topic]
    last_score = last_by_key(scores)
    assert {u: d["prediction_id"] for u, d in last_by_key(latest).items()} == \
        {u: d["prediction_id"] for u, d in last_score.items()}
    # keyed by pseudonym, on the raw id's input partition (co-partitioned with the input)
    assert {(r.key.decode(), r.partition) for r in latest} == \
        {(alias[u], input_partition(u, PARTITIONS)) for u in users}
    assert run(cleanup_policy(stack.bootstrap, latest_topic)) == "compact"

    # A rebalance: one worker leaves. The others answer 503 (Retry-After) or the right answer.
    seen: dict[int, int] = {}
    wrong: list[tuple[str, int, Any]] = []
    stop_asking = threading.Event()

    def keep_asking() -> None:
        while not stop_asking.is_set():
            for user in users:
                port = ports[hash(user) % 2]  # the two that stay
                code, headers, doc = ask(port, user)
                seen[code] = seen.get(code, 0) + 1
                if code == 503 and headers.get("Retry-After"):
                    continue
                if code != 200 or content(doc) != content(views[user]):
                    wrong.append((user, code, doc))

    asker = threading.Thread(target=keep_asking, daemon=True)
    asker.start()
    workers[2].stop()
    stayed = workers[:2]

    def all_answered_by_the_two() -> bool:
        answers = {u: ask(ports[0], u) for u in users}
        return all(code == 200 and doc["served_by"] != f"http://127.0.0.1:{ports[2]}"
                   for code, _, doc in answers.values())
    wait(all_answered_by_the_two, 60, "the two workers to take over",
         lambda: all(w.alive for w in stayed))
    time.sleep(1)
    stop_asking.set()
    asker.join(timeout=30)
    print(f"\n[lookup] {len(users)} users, {len(traffic.valid)} events; through the "
          f"rebalance: answers by status {dict(sorted(seen.items()))}, wrong {len(wrong)}")
    assert wrong == []
    assert seen.get(200, 0) > 0
    for user in users:  # and after it, the same answer from either of the two
        answers = [ask(port, user) for port in ports[:2]]
        assert all(code == 200 and content(doc) == content(views[user])
                   for code, _, doc in answers), user

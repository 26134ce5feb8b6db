"""`intentstream bench state`: what a worker's table state costs, memory store vs RocksDB.

For each store and each number of users, on Apache Kafka (one node) and a tritonserver serving
the tiny model (the model's speed is not what is measured):

  fill     the sessions table's changelog is written directly, one record per user in the
           table's own format (key: the JSON user id; value: the state the worker's own pure
           code builds for 40 events over 4 sessions, user id substituted), to the partition the
           user's events go to; no event goes through the model to build it
  cold     a worker starts on that changelog with an empty data dir; timed from the process's
           start to the score of one waiting event of a known user (the first scored batch)
  restart  that worker stopped (SIGTERM) and started again on the same data dir, timed alike
  timers   on restart, from the process's start to the log's `timers.rebuilt` for all the
           users: the timers are rebuilt beside the batches (streams/worker/timers.py), so
           until then a due timer may fire late, but scoring does not wait

Each score must continue the user's session (n_events = the state's + 1), or the run fails:
a restart that lost state would otherwise look fast. Printed per run: changelog bytes per user,
RocksDB bytes on disk per user, the worker's RSS once its timers are rebuilt, cold, restart and
timers seconds; then, per store, the least-squares slope of restart and timers seconds and RSS
against users and what that slope gives at 1M users, labelled as extrapolated. Exit 0 when
measured, 1 when a measurement failed, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2

from bench.measure import BenchError, read_until
from bench.report import say
from inference.tritonserver import tiny_triton_server
from streams.core.batching import plan_batch
from streams.core.raw_message import RawMessage
from streams.core.sessions import UserState
from streams.runtime.kafka_broker import KafkaBroker
from streams.runtime.processes import WorkerProcess
from streams.runtime.topics import ensure_topics
from streams.settings import Settings

STORES = ("memory://", "rocksdb://")
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MINUTE_MS = 60_000
TEMPLATE_USER = "u-0000000"  # user ids all have this length, so one template fits every user
PROBE_USER = 0  # the user whose waiting event is scored first after each start
PLACEHOLDER_PARTITION = 999_999  # in the template's input position, replaced per user
PLACEHOLDER_POSITION = b'"position":[999999,-1]'
START_TIMEOUT_S = 900.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intentstream bench state",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--users", default="10000,100000",
                   help="numbers of users in the table, comma-separated")
    p.add_argument("--stores", default="memory,rocksdb", help="memory, rocksdb or both")
    p.add_argument("--partitions", type=int, default=4, help="table and topic partitions")
    p.add_argument("--workdir", type=Path, default=None, help="logs and state (default: temp)")
    p.add_argument("--keep", action="store_true", help="keep the workdir (default: removed)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    users, stores = positive_ints(args.users), store_urls(args.stores)
    if users is None or stores is None or args.partitions < 1:
        print("intentstream bench state: --users e.g. 10000,100000; --stores memory,rocksdb",
              file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="intentstream-bench-state-"))
    workdir.mkdir(parents=True, exist_ok=True)
    # A topic just created is missing from the producer's first metadata: said at ERROR, retried.
    logging.getLogger("aiokafka.cluster").setLevel(logging.CRITICAL)
    try:
        rows = run(workdir, users, stores, args.partitions)
    except (BenchError, TimeoutError) as error:
        print(f"intentstream bench state: {error} (logs in {workdir})", file=sys.stderr)
        return 1
    for line in report_lines(rows):
        print(line)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    if args.workdir is None and not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def positive_ints(text: str) -> list[int] | None:
    """"10000,100000" -> [10000, 100000]; None unless every entry is a positive integer."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        return None
    return sorted(values) if values and min(values) >= 1 else None


def store_urls(text: str) -> list[str] | None:
    """"memory,rocksdb" -> ["memory://", "rocksdb://"]; None for an unknown store."""
    urls = [f"{name.strip()}://" for name in text.split(",")]
    return urls if urls and all(u in STORES for u in urls) else None


# --- the state written ------------------------------------------------------------------------


def template_state(settings: Settings, sessions: int = 4, per_session: int = 10) -> UserState:
    """The state the worker's own planning builds for `sessions` × `per_session` events of
    TEMPLATE_USER, as it stands once they are scored: no pending sessions, and an input
    position on a placeholder partition at offset -1 (`state_record` puts the user's own
    partition there, so the worker indexes each user's timer, as a live table's users have
    one; offset -1, so the probe event, at an offset of its own, is not a redelivery)."""
    messages, ts = [], T0
    for n in range(sessions * per_session):
        ts += 2 * settings.gap_ms if n and n % per_session == 0 else 3 * MINUTE_MS
        event = {"event_id": f"{TEMPLATE_USER}-e{n}", "user_id": TEMPLATE_USER, "ts": ts,
                 "type": "view", "item": {"id": f"sku-{n % 7}", "title": "Osprey Talon 22",
                                          "category": "backpacks", "price": 140.0}}
        messages.append(RawMessage(TEMPLATE_USER.encode(), orjson.dumps(event), "events", 0,
                                   n, ts))
    plan = plan_batch(messages, lambda _: None, settings.session_policy(),
                      settings.max_event_bytes)
    state = dict(plan.states[TEMPLATE_USER])
    state["pending"] = []
    state["position"] = [PLACEHOLDER_PARTITION, -1]
    return cast(UserState, state)


def user_id(n: int) -> str:
    return f"u-{n:07d}"


def partition_of(user: str, partitions: int) -> int:
    """The partition a keyed producer sends the user's events to (Kafka's default
    partitioner), which is where the worker keeps the user's state."""
    return (murmur2(user.encode()) & 0x7FFFFFFF) % partitions


def state_record(template: bytes, user: str, partitions: int) -> tuple[bytes, bytes]:
    """The sessions changelog record of `user`: (JSON key, the template's state as theirs,
    at the input partition their events go to)."""
    value = template.replace(TEMPLATE_USER.encode(), user.encode()).replace(
        PLACEHOLDER_POSITION, b'"position":[%d,-1]' % partition_of(user, partitions))
    return orjson.dumps(user), value


def last_ts(state: UserState) -> int:
    current = state["current"]
    assert current is not None
    return int(current["end"])


def probe_event(state: UserState, n: int) -> tuple[bytes, bytes, str]:
    """The probe user's n-th waiting event (a minute apart, within the open session): key,
    value and its event id."""
    user = user_id(PROBE_USER)
    event_id = f"{user}-probe{n}"
    event = {"event_id": event_id, "user_id": user, "ts": last_ts(state) + n * MINUTE_MS,
             "type": "click", "item": {"id": "sku-1"}}
    return user.encode(), orjson.dumps(event), event_id


# --- the figures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    store: str
    users: int
    changelog_bytes_per_user: float
    disk_bytes_per_user: float  # RocksDB's files after the restart; 0 for the memory store
    cold_s: float  # process start to the first scored batch, empty data dir
    restart_s: float  # the same after a stop, on the same data dir
    timers_s: float  # on restart, process start to every user's timer rebuilt
    rss_mb: float  # the worker's resident memory on restart, once its timers are rebuilt


def slope(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of ys on xs; a flat line through one point."""
    if len(xs) < 2:
        return 0.0, ys[0]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return b, my - b * mx


def report_lines(rows: Sequence[Row], at: int = 1_000_000) -> Iterator[str]:
    yield (f"{'store':<10} {'users':>9} {'changelog B/user':>16} {'disk B/user':>11} "
           f"{'cold s':>7} {'restart s':>9} {'timers s':>8} {'RSS MB':>7}")
    for r in rows:
        yield (f"{r.store:<10} {r.users:>9,} {r.changelog_bytes_per_user:>16.0f} "
               f"{r.disk_bytes_per_user:>11.0f} {r.cold_s:>7.1f} {r.restart_s:>9.1f} "
               f"{r.timers_s:>8.1f} {r.rss_mb:>7.0f}")
    for store in dict.fromkeys(r.store for r in rows):
        mine = [r for r in rows if r.store == store]
        users = [float(r.users) for r in mine]
        s_time, c_time = slope(users, [r.restart_s for r in mine])
        s_timers, c_timers = slope(users, [r.timers_s for r in mine])
        s_rss, c_rss = slope(users, [r.rss_mb for r in mine])
        measured = max(r.users for r in mine)
        yield (f"slope {store}: restart {s_time * 100_000:+.2f} s, timers "
               f"{s_timers * 100_000:+.2f} s and RSS {s_rss * 100_000:+.0f} MB per 100k users "
               f"(fit over {len(mine)} sizes, up to {measured:,})")
        if at > measured:
            yield (f"  extrapolated to {at:,} users (not measured): restart "
                   f"{c_time + s_time * at:.1f} s, timers {c_timers + s_timers * at:.1f} s, "
                   f"RSS {c_rss + s_rss * at:.0f} MB")


# --- the runs ---------------------------------------------------------------------------------


def run(workdir: Path, users: list[int], stores: list[str], partitions: int) -> list[Row]:
    rows = []
    with KafkaBroker(workdir / "kafka") as broker, \
            tiny_triton_server(workdir / "triton") as triton:
        for store in stores:
            for n in users:
                rows.append(measure(workdir, broker, triton.grpc_url, store, n, partitions))
    return rows


def worker_env(broker: KafkaBroker, triton_url: str, app_id: str, store: str,
               data_dir: Path, partitions: int) -> dict[str, str]:
    settings = {
        "app_id": app_id, "broker_url": broker.url, "broker_profile": "kafka",
        "triton_url": triton_url, "partitions": str(partitions),
        "events_topic": f"{app_id}.events", "scores_topic": f"{app_id}.scores",
        "dlq_topic": f"{app_id}.dlq", "alerts_intent_topic": f"{app_id}.alerts.intent",
        "alerts_churn_topic": f"{app_id}.alerts.churn", "data_dir": str(data_dir),
        "table_store": store, "metrics_port": "0", "feedback_metrics_port": "0",
        "log_level": "info",  # the timers' rebuild is read from the log
    }
    return {f"INTENTSTREAM_{k.upper()}": v for k, v in settings.items()}


def measure(workdir: Path, broker: KafkaBroker, triton_url: str, store: str, n: int,
            partitions: int) -> Row:
    name = f"{store.removesuffix('://')}-{n}"
    app_id = f"bench-state-{name}-{int(time.time())}"
    data_dir = workdir / name
    env = worker_env(broker, triton_url, app_id, store, data_dir, partitions)
    settings = Settings(**{k.removeprefix("INTENTSTREAM_").lower(): v for k, v in env.items()})
    state = template_state(settings)
    template = orjson.dumps(state)
    changelog = f"{app_id}-sessions-changelog"
    asyncio.run(ensure_topics(settings))
    say(f"{name}: writing {n:,} users' state to {changelog}")
    written = asyncio.run(fill_changelog(broker.bootstrap, changelog, template, n, partitions))
    starts = []
    for k, phase in enumerate(("cold", "restart"), start=1):
        key, value, event_id = probe_event(state, k)
        asyncio.run(produce_one(broker.bootstrap, settings.events_topic, key, value))
        try:
            start = timed_start(env, workdir / f"{name}-{phase}.log", broker.bootstrap,
                                settings.scores_topic, event_id, n)
        except BenchError as error:
            raise BenchError(f"{name} {phase}: {error}") from None
        check_continued(start.score, state, k, f"{name} {phase}")
        starts.append(start)
        say(f"{name} {phase}: first score after {start.first_score_s:.1f} s, timers rebuilt "
            f"after {start.timers_s:.1f} s, RSS {start.rss_mb:.0f} MB")
    disk = dir_bytes(data_dir) if store == "rocksdb://" else 0
    cold, restart = starts
    return Row(store.removesuffix("://"), n, written / n, disk / n, cold.first_score_s,
               restart.first_score_s, restart.timers_s, restart.rss_mb)


@dataclass(frozen=True)
class Start:
    first_score_s: float  # process start to the score of the probe event
    timers_s: float  # process start to the log's `timers.rebuilt` for every user
    rss_mb: float  # then
    score: bytes


def timed_start(env: dict[str, str], log: Path, bootstrap: str, scores_topic: str,
                event_id: str, users: int) -> Start:
    """Start a worker and time it to the score of `event_id` and to its timers rebuilt for
    `users` users. The worker is stopped (SIGTERM) on the way out."""
    worker = WorkerProcess(env, log, log_level="info")
    started = time.monotonic()
    worker.start()
    try:
        score = asyncio.run(first_score(bootstrap, scores_topic, event_id.encode(), worker))
        first = time.monotonic() - started
        wait_for_timers(log, users, worker, started + START_TIMEOUT_S)
        return Start(first, time.monotonic() - started, rss_mb(worker), score)
    except BenchError as error:
        raise BenchError(f"{error}\n{worker.log_tail()}") from None
    finally:
        worker.stop()


def rebuilt_users(log_text: str) -> int:
    """The most users any `timers.rebuilt` line of a worker's JSON log says it read."""
    most = -1
    for line in log_text.splitlines():
        if '"timers.rebuilt"' in line:
            with contextlib.suppress(orjson.JSONDecodeError):
                most = max(most, int(orjson.loads(line).get("users", -1)))
    return most


def wait_for_timers(log: Path, users: int, worker: WorkerProcess, deadline: float) -> None:
    while rebuilt_users(log.read_text(errors="replace")) < users:
        if not worker.alive:
            raise BenchError("the worker exited before its timers were rebuilt")
        if time.monotonic() > deadline:
            raise BenchError(f"no timers.rebuilt for {users:,} users in the worker's log")
        time.sleep(0.1)


async def first_score(bootstrap: str, topic: str, probe: bytes, worker: WorkerProcess) -> bytes:
    found: list[bytes] = []

    def is_probe(value: bytes) -> bool:
        if probe in value:
            found.append(value)
        return bool(found)

    await read_until(bootstrap, topic, is_probe, START_TIMEOUT_S, lambda: worker.alive)
    return found[0]


def check_continued(score: bytes, state: UserState, k: int, what: str) -> None:
    """The probe's score continues the user's session: the state was recovered."""
    current = state["current"]
    assert current is not None
    want = current["n_events"] + k
    got = orjson.loads(score)["window"]["n_events"]
    if got != want:
        raise BenchError(f"{what}: the probe's session has {got} events, not {want}: the "
                         "worker did not recover the user's state")


async def fill_changelog(bootstrap: str, topic: str, template: bytes, n: int,
                         partitions: int) -> int:
    """Create the compacted changelog (as Faust declares it) and write one state per user;
    the bytes written (keys and values)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1,
                                            topic_configs={"cleanup.policy": "compact"})])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=50,
                                max_batch_size=1_048_576, compression_type=None)
    await producer.start()
    written = 0
    try:
        pending = []
        for i in range(n):
            user = user_id(i)
            key, value = state_record(template, user, partitions)
            written += len(key) + len(value)
            pending.append(await producer.send(topic, key=key, value=value,
                                               partition=partition_of(user, partitions)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return written


async def produce_one(bootstrap: str, topic: str, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=key, value=value)
    finally:
        await producer.stop()


def rss_mb(worker: WorkerProcess) -> float:
    """Resident memory of the worker process (VmRSS), MB."""
    assert worker.process is not None
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return kb / 1024


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

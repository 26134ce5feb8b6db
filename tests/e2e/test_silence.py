"""Silence speaks, on the real broker and tritonserver: sessions closed by the clock while their
users stay silent, silence milestone scores, one churn alert within the cooldown, an abandoned
cart alerted once, and timers that survive a SIGKILL of one of two workers and the
rebalances it and a joining worker cause (issue #24). Silence re-scores
of an unchanged text do not run the network: they come with `network: false`, one Triton
request to the stacker alone per score for a lone silent user, and no ensemble text.

The clock is moved by event time: a "pacer" user on each partition sends an event per step,
each step a later event time, so the watermark of every partition passes the next timer.
Records go to explicit partitions (each user to one), as a keyed producer would send them.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import TYPE_CHECKING

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError

from inference.repository import REPOSITORY_TEMPLATE
from inference.tritonserver import TritonServer, free_port, tiny_triton_server
from tests.e2e.faults import PARTITIONS, input_ends, wait_committed
from tests.e2e.inference.network_outputs import template_exposing_network
from tests.e2e.kafka_io import committed_offsets, read_to_end, read_until, run
from tests.e2e.test_metrics import value, wait_for
from tests.e2e.traffic import T0

if TYPE_CHECKING:
    from aiokafka.structs import ConsumerRecord, RecordMetadata

    from streams.runtime.processes import WorkerProcess
    from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def triton(tmp_path_factory) -> Iterator[TritonServer]:
    """This module's tritonserver: its `intent` ensemble returns the network's outputs, so the
    worker keeps them (tests/e2e/inference/network_outputs.py: until the committed ensemble
    declares them)."""
    work = tmp_path_factory.mktemp("triton_silence")
    template = template_exposing_network(REPOSITORY_TEMPLATE, work / "template")
    with tiny_triton_server(work, template=template) as server:
        yield server

MIN = 60_000
# Milestones 72, 86.4 and 100.8 minutes after the last activity; cooldown one hour: the first
# milestone is over an hour after the in-session churn alert, the next two within an hour of
# the first milestone's.
SILENCE = {
    "INTENTSTREAM_SILENCE_MILESTONE_DAYS": "[0.05, 0.06, 0.07]",
    "INTENTSTREAM_ALERT_COOLDOWN_S": "3600",
    "INTENTSTREAM_ALERT_INTENT_THRESHOLD": "0.01",
    "INTENTSTREAM_ALERT_CHURN_THRESHOLD": "0.01",
    "INTENTSTREAM_ALERT_EXPLORE_RATE": "0",
    "INTENTSTREAM_ALERT_CART_PAST_COOLDOWN": "true",  # the cart alert despite the nudge
    "INTENTSTREAM_WATERMARK_IDLE_S": "600",  # event time only: the steps move the clock
}
# Event time of each pacer step (minutes after T0), and what it reaches for users whose
# last event is at T0 + 2 min (lateness 60 s): close (32 min), 0.05 d (74), 0.06 (88.4),
# 0.07 (102.8).
STEPS = (40, 80, 95, 110)


def doc(user: str, n: int, minute: float, kind: str = "view") -> dict:
    item = {"id": f"sku-{n % 3}", "title": ["Speedcross 6", "Talon 22", "Nano Puff"][n % 3],
            "category": "outdoor", "price": 100.0 + n}
    return {"event_id": f"{user}-e{n}", "user_id": user, "ts": int(T0 + minute * MIN),
            "type": kind, "item": item}


async def produce_to(bootstrap: str, topic: str, records: list[tuple[int, dict]],
                     timeout_s: float = 60.0) -> list[RecordMetadata]:
    """Produce to explicit partitions, in order; waits for the topic (the worker creates it
    at start)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                if len(await producer.partitions_for(topic)) == PARTITIONS:
                    break
            except (UnknownTopicOrPartitionError, KafkaTimeoutError):
                pass
            assert time.monotonic() < deadline, f"topic {topic} never appeared"
            await asyncio.sleep(0.5)
        futures = [await producer.send(topic, key=d["user_id"].encode(),
                                       value=orjson.dumps(d), partition=p)
                   for p, d in records]
        return list(await asyncio.gather(*futures))
    finally:
        await producer.stop()


CHANGELOGS = ("sessions", "worker_progress", "alert_state")


async def _changelogs_exist(stack: Stack) -> bool:
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.bootstrap)
    await admin.start()
    try:
        names = set(await admin.list_topics())
    finally:
        await admin.close()
    return all(f"{stack.name}-{table}-changelog" in names for table in CHANGELOGS)


def wait_ready(stack: Stack, worker: WorkerProcess, timeout_s: float = 90.0) -> None:
    """Until the worker's group has a coordinator and its table changelogs exist (the worker
    declares them before it subscribes: streams/worker/app.py), and a moment more."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert worker.alive, worker.log_tail()
        assert time.monotonic() < deadline, "the worker never became ready"
        try:
            run(committed_offsets(stack.bootstrap, stack.name, stack.topics["events"],
                                  PARTITIONS))
            if run(_changelogs_exist(stack)):
                break
        except KafkaError:
            pass
        time.sleep(0.5)
    time.sleep(1)


def first_events() -> list[tuple[int, dict]]:
    """Per partition: a silent browser, an abandoned cart, and the pacer's first event."""
    out = []
    for p in range(PARTITIONS):
        out += [(p, doc(f"quiet-{p}", 0, 0)), (p, doc(f"quiet-{p}", 1, 2, "click"))]
        out += [(p, doc(f"cart-{p}", 0, 0, "add_to_cart")),
                (p, doc(f"cart-{p}", 1, 2, "add_to_cart"))]
        out.append((p, doc(f"pacer-{p}", 0, 0)))
    return out


def pacer_step(step: int, minute: float) -> list[tuple[int, dict]]:
    return [(p, doc(f"pacer-{p}", step, minute)) for p in range(PARTITIONS)]


def scores_of(records: list[ConsumerRecord]) -> list[dict]:
    return [orjson.loads(r.value) for r in records]


def content(record: dict) -> dict:
    """What a record says, minus wall-clock fields; the model's numbers to 4 places: Triton
    batches differently on a re-run, and a batch's composition moves float32 results in the
    7th place (the inputs, text and FEATURES, must match exactly)."""
    return {k: _rounded(v) for k, v in record.items() if k not in ("scored_at", "latency_ms")}


def _rounded(value: object) -> object:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def one_content_per_id(records: list[dict], key: str) -> dict[str, dict]:
    by_id: dict[str, dict] = {}
    for record in records:
        kept = by_id.setdefault(record[key], content(record))
        assert kept == content(record), f"{key} {record[key]} with two contents"
    return by_id


def test_silent_users_get_closes_milestones_one_churn_alert_through_a_sigkill_and_rebalances(
    stack: Stack,
) -> None:
    started = time.monotonic()
    events = stack.topics["events"]
    # Two workers in the group: each fires the timers of its own partitions.
    worker, other = stack.start_worker(**SILENCE), stack.start_worker(**SILENCE)
    wait_ready(stack, worker)
    metadata = run(produce_to(stack.bootstrap, events, first_events()))
    users = 3 * PARTITIONS  # the group exists once they are scored: commits can be read
    run(read_until(stack.bootstrap, [stack.topics["scores"]],
                   lambda seen: len(seen[stack.topics["scores"]]) >= users, timeout_s=90,
                   alive=lambda: worker.alive and other.alive))
    wait_committed(stack, input_ends(metadata), other, timeout_s=90)
    for n, minute in enumerate(STEPS, start=1):
        metadata += run(produce_to(stack.bootstrap, events, pacer_step(n, minute)))
        if n == 2:
            # Let the step's timers fire (or not quite), then SIGKILL one worker: the other
            # takes its partitions (a rebalance) and a new one joins (another); whoever owns a
            # partition restores its clock and timers from the tables and finishes exactly
            # the same way.
            run(read_until(stack.bootstrap, [stack.topics["scores"]],
                           lambda seen: any(b'"silence"' in r.value
                                            for r in seen[stack.topics["scores"]]),
                           timeout_s=60, alive=lambda w=worker: w.alive and other.alive))
            worker.kill()
            worker = stack.start_worker(**SILENCE)
        wait_committed(stack, input_ends(metadata), other, timeout_s=120)
    out = run(read_to_end(stack.bootstrap, [stack.topics[t] for t in (
        "scores", "alerts_intent", "alerts_churn")], PARTITIONS))
    scores = scores_of(out[stack.topics["scores"]])
    alerts = scores_of(out[stack.topics["alerts_intent"]] + out[stack.topics["alerts_churn"]])
    one_content_per_id(scores, "prediction_id")
    one_content_per_id(alerts, "alert_id")

    by_user: dict[str, dict[str, dict]] = defaultdict(dict)  # user -> prediction id -> score
    for s in scores:
        by_user[s["user_id"]][s["prediction_id"]] = s
    for p in range(PARTITIONS):
        for user in (f"quiet-{p}", f"cart-{p}"):
            mine = sorted(by_user[user].values(), key=lambda s: (s["as_of"], s["trigger"]))
            triggers = [(s["trigger"], s["silence_days"]) for s in mine]
            # Closed while silent (no event of theirs after minute 2), then each milestone once.
            assert triggers[-4:] == [("session_close", None), ("silence", 0.05),
                                     ("silence", 0.06), ("silence", 0.07)], (user, triggers)
            assert {s["trigger"] for s in mine[:-4]} == {"event"}, (user, triggers)
            close = mine[-4]
            assert close["closed"] and close["as_of"] == T0 + 2 * MIN
            assert [s["as_of"] - close["as_of"] for s in mine[-3:]] == [
                round(d * 86_400_000) for d in (0.05, 0.06, 0.07)]
            churn = [a for a in alerts if a["user_id"] == user and a["head"] == "churn"]
            silent = [a for a in churn if a["kind"] == "silence"]
            # One within the cooldown (a record repeated after the SIGKILL has its id).
            assert len({a["alert_id"] for a in silent}) == 1, (user, churn)
            assert "silent for 0.05 days" in silent[0]["reason"]
            assert silent[0]["prediction_id"] == mine[-3]["prediction_id"]
        carts = [a for a in alerts if a["kind"] == "abandoned_cart"]
        mine = [a for a in carts if a["user_id"] == f"cart-{p}"]
        assert len({a["alert_id"] for a in mine}) == 1 and "Speedcross 6" in mine[0]["reason"]
        assert not [a for a in carts if a["user_id"] == f"quiet-{p}"]  # a click fills no cart
    # The network ran for every open score (this version has no cascade policy: every cheap
    # answer goes back to it), never for a silence re-score; a final score of the text the
    # network read last runs the stacker alone. The outputs kept in the state (restored after
    # the SIGKILL) served.
    pairs = {(s["trigger"], s["network"]) for s in scores}
    assert ("event", False) not in pairs and ("silence", True) not in pairs, pairs
    assert {("event", True), ("session_close", False), ("silence", False)} <= pairs, pairs
    n_silence = sum(s["trigger"] == "silence" for s in scores)
    print(f"\n[silence] {len(scores)} score records ({len({s['prediction_id'] for s in scores})}"
          f" ids), {n_silence} silence records, {len(alerts)} alert records "
          f"({len({a['alert_id'] for a in alerts})} ids), {time.monotonic() - started:.0f} s")


def test_a_quiet_shop_closes_sessions_and_reaches_milestones_by_wall_time(stack: Stack) -> None:
    """No more events at all: the idle bound lets the clock run at wall speed."""
    port = free_port()
    env = {**SILENCE, "INTENTSTREAM_WATERMARK_IDLE_S": "2",
           "INTENTSTREAM_WATERMARK_LATENESS_S": "1", "INTENTSTREAM_SESSION_GAP_S": "3",
           # 8.64 s and 17.28 s after the last event
           "INTENTSTREAM_SILENCE_MILESTONE_DAYS": "[0.0001, 0.0002]",
           "INTENTSTREAM_METRICS_PORT": str(port)}
    worker = stack.start_worker(**env)
    wait_ready(stack, worker)
    now = int(time.time() * 1000)
    first = {**doc("alone", 0, 0), "ts": now - 1000}
    second = {**doc("alone", 1, 0, "click"), "ts": now}
    run(produce_to(stack.bootstrap, stack.topics["events"], [(1, first), (1, second)]))
    started = time.monotonic()
    seen = run(read_until(
        stack.bootstrap, [stack.topics["scores"]],
        lambda got: sum(b'"silence"' in r.value for r in got[stack.topics["scores"]]) >= 2,
        timeout_s=120, alive=lambda: worker.alive))
    waited = time.monotonic() - started
    scores = scores_of(seen[stack.topics["scores"]])
    triggers = [s["trigger"] for s in scores]
    assert "session_close" in triggers and triggers[-2:] == ["silence", "silence"], triggers
    assert [s["network"] for s in scores if s["trigger"] == "silence"] == [False, False]
    # Counted by the worker: the stacker alone for each silence score, no ensemble text for
    # one. The open session's scores went through the cascade's cheap stage first (the
    # stacker), which this policy-less version sends on to the network.
    samples = wait_for(port, lambda got: value(
        got, "intentstream_stacker_only_scores_total", trigger="silence") >= 2, 30,
        lambda: worker.alive)
    silence = value(samples, "intentstream_stacker_only_scores_total", trigger="silence")
    stacker = value(samples, "intentstream_triton_requests_total", model="stacker")
    assert silence == 2 and stacker >= silence + 1, (silence, stacker)
    assert value(samples, "intentstream_triton_texts_total", trigger="silence") == 0
    assert value(samples, "intentstream_cascade_routes_total", route="no_policy") >= 1
    assert value(samples, "intentstream_cascade_routes_total", route="exact") >= 2
    assert value(samples, "intentstream_triton_requests_total", model="intent") >= 1
    print(f"\n[silence] quiet shop: close and two milestones after {waited:.1f} s of wall "
          f"time; {stacker:.0f} stacker requests for {silence:.0f} silence scores and the "
          f"open session's cheap stage")

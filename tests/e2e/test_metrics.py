"""Observability end to end: Apache Kafka, tritonserver and a worker process. What the
worker's /metrics endpoint counts must equal what went in and what came out on the topics,
and its JSON log must carry user and prediction ids but no event text. `intentstream health`
answers healthy once the worker has caught up, unhealthy when input waits and nothing moves."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections import Counter

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.runtime.processes import INTENTSTREAM, IntentstreamProcess, free_port
from tests.e2e.kafka_io import produce, read_until, run
from tests.e2e.test_slice import all_users_complete, events_per_user
from tests.e2e.traffic import make_traffic

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def by_label(samples: Samples, name: str, *keys: str) -> dict[tuple[str, ...], float]:
    out = {}
    for (sample, labels), v in samples.items():
        if sample == name and v:
            found = dict(labels)
            out[tuple(found[k] for k in keys)] = v
    return out


def wait_for(port: int, ok, timeout_s: float, alive) -> Samples:
    """Scrape until `ok(samples)`; the last scrape either way."""
    deadline = time.monotonic() + timeout_s
    while True:
        samples = scrape(port)
        if ok(samples) or time.monotonic() > deadline:
            return samples
        assert alive(), "the worker died"
        time.sleep(1)


def json_lines(text: str) -> list[dict]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_metrics_equal_what_went_in_and_came_out_and_logs_carry_ids(stack):
    traffic = make_traffic(n_users=80, events_per_user=(4, 9), n_malformed=40, seed=5)
    port, sidecar_port = free_port(), free_port()
    env = {
        "INTENTSTREAM_METRICS_PORT": str(port),
        "INTENTSTREAM_FEEDBACK_METRICS_PORT": str(sidecar_port),
        "INTENTSTREAM_LOG_LEVEL": "debug",
        # low thresholds: many alerts to count
        "INTENTSTREAM_ALERT_INTENT_THRESHOLD": "0.05",
        "INTENTSTREAM_ALERT_CHURN_THRESHOLD": "0.05",
    }
    worker = stack.start_worker(**env)
    sidecar = stack.start_sidecar(**env)
    run(produce(stack.bootstrap, stack.topics["events"], traffic.records))
    expected = events_per_user(traffic.valid)
    t = stack.topics
    run(read_until(stack.bootstrap, [t["scores"]],
                   lambda seen: all_users_complete(expected)({"scores": seen[t["scores"]]}),
                   timeout_s=120, alive=lambda: worker.alive))

    # Events in are counted once a batch is acked, so then its outputs are all on the topics;
    # the lag is refreshed every 5 s.
    n_in = len(traffic.records)
    lag_partitions = {("0",), ("1",), ("2",), ("3",)}

    def drained(samples: Samples) -> bool:
        lags = by_label(samples, "intentstream_consumer_lag", "partition")
        present = {labels for (name, labels) in samples if name == "intentstream_consumer_lag"}
        return (value(samples, "intentstream_events_in_total", topic=t["events"]) == n_in
                and len(present) == 4 and not lags)

    samples = wait_for(port, drained, timeout_s=60, alive=lambda: worker.alive)
    health = ask_health(worker)
    assert (health.returncode, health.stdout.split(":")[0]) == (0, "healthy"), health.stdout
    assert value(samples, "intentstream_events_in_total", topic=t["events"]) == n_in
    assert value(samples, "intentstream_batch_events_sum") == n_in
    lags = {labels: v for (name, labels), v in samples.items()
            if name == "intentstream_consumer_lag"}
    assert {tuple(v for k, v in sorted(labels) if k == "partition") for labels in lags} == (
        lag_partitions), lags
    assert set(lags.values()) == {0.0}, lags
    # Lag 0 is not the floor hiding a short highwater: the fetched highwaters add up to the
    # input (on Tansu fetches answer right, its ListOffsets "latest" is off).
    assert sum(by_label(samples, "intentstream_consumer_highwater", "partition").values()) == (
        n_in)

    # Read every output topic until it holds what the metrics say was produced.
    scores_n = (value(samples, "intentstream_scores_total", session="open")
                + value(samples, "intentstream_scores_total", session="closed"))
    alerts_n = sum(by_label(samples, "intentstream_alerts_total", "head", "explored").values())
    dlq_n = sum(by_label(samples, "intentstream_dead_letters_total", "reason").values())
    outputs = [t["scores"], t["dlq"], t["alerts_intent"], t["alerts_churn"]]
    seen = run(read_until(
        stack.bootstrap, outputs,
        lambda s: (len(s[t["scores"]]), len(s[t["dlq"]]),
                   len(s[t["alerts_intent"]]) + len(s[t["alerts_churn"]])) == (
                       scores_n, dlq_n, alerts_n),
        timeout_s=30))
    scores = [orjson.loads(r.value) for r in seen[t["scores"]]]
    dlq = [orjson.loads(r.value) for r in seen[t["dlq"]]]
    alerts = [orjson.loads(r.value) for r in seen[t["alerts_intent"]] + seen[t["alerts_churn"]]]
    print(f"\n[metrics] {n_in} events in -> {len(scores)} scores, {len(dlq)} DLQ, "
          f"{len(alerts)} alerts; Triton calls "
          f"{value(samples, 'intentstream_triton_latency_seconds_count'):.0f}; highwaters "
          f"{by_label(samples, 'intentstream_consumer_highwater', 'partition')}")

    # Dead letters: by reason, as on the DLQ topic, and keyed by the input's key (user).
    assert len(dlq) == len(traffic.malformed)
    assert by_label(samples, "intentstream_dead_letters_total", "reason") == {
        (reason,): float(n) for reason, n in Counter(d["reason"] for d in dlq).items()}
    assert {r.key for r in seen[t["dlq"]]} == {key for key, _ in traffic.malformed}
    # Scores, open and closed, and the texts sent to Triton.
    assert scores and len(scores) == scores_n
    assert value(samples, "intentstream_scores_total", session="closed") == sum(
        s["closed"] for s in scores)
    # Each score either ran the network (a text sent to the ensemble) or was the stacker's
    # alone (the cascade, docs/cascade.md); every one took a route.
    alone = sum(by_label(samples, "intentstream_stacker_only_scores_total", "trigger").values())
    assert value(samples, "intentstream_batch_texts_sum") + alone == len(scores)
    assert sum(by_label(samples, "intentstream_cascade_routes_total", "route").values()) == len(
        scores)
    assert value(samples, "intentstream_triton_latency_seconds_count") > 0
    assert value(samples, "intentstream_triton_latency_seconds_sum") > 0
    assert value(samples, "intentstream_triton_retries_total") == 0
    # Alerts by head and exploration, as on the alert topics.
    assert alerts and by_label(samples, "intentstream_alerts_total", "head", "explored") == {
        (head, str(explored).lower()): float(n)
        for (head, explored), n in Counter((a["head"], a["explored"]) for a in alerts).items()}

    # Logs: JSON lines with ids (scores at debug, alerts at info), dead letters without payload.
    text = worker.log_path.read_text(errors="replace")
    lines = json_lines(text)
    logged_scores = {(e["user_id"], e["prediction_id"]) for e in lines if e["event"] == "score"}
    assert logged_scores == {(s["user_id"], s["prediction_id"]) for s in scores}
    raised = [e for e in lines if e["event"] == "alert.raised"]
    assert {(e["user_id"], e["prediction_id"], e["alert_id"], e["head"]) for e in raised} == {
        (a["user_id"], a["prediction_id"], a["alert_id"], a["head"]) for a in alerts}
    assert all(e["level"] == "info" and e["reason"] in {"threshold", "explore"} for e in raised)
    dead = [e for e in lines if e["event"] == "dead_letter"]
    assert len(dead) == len(traffic.malformed)
    assert all(e["level"] == "warning" and e["reason"] and e["topic"] == t["events"]
               and isinstance(e["offset"], int) for e in dead)
    assert all("batch" in e for e in dead + raised)  # bound per micro-batch
    # No event text or raw input in the log: queries, titles, malformed payloads.
    for leak in ("trail running", "Speedcross", "not json", "teleport", "x" * 64):
        assert leak not in text, leak
    assert worker.alive, worker.log_tail()

    # The sidecar's endpoint: the same inputs, counted by topic; bad events by reason.
    def sidecar_done(samples: Samples) -> bool:
        return (value(samples, "intentstream_events_in_total", topic=t["events"]) == n_in
                and value(samples, "intentstream_events_in_total", topic=t["scores"])
                == len(scores))

    side = wait_for(sidecar_port, sidecar_done, timeout_s=90, alive=lambda: sidecar.alive)
    assert sidecar_done(side), sidecar.log_tail()
    health = ask_health(sidecar, "--feedback")
    assert (health.returncode, health.stdout.split(":")[0]) == (0, "healthy"), health.stdout
    assert by_label(side, "intentstream_feedback_invalid_total", "input", "reason") == {
        ("events", reason): float(n) for reason, n in Counter(d["reason"] for d in dlq).items()}
    assert ("intentstream_dead_letters_total" not in {name for name, _ in side})  # own registry
    assert sidecar.alive, sidecar.log_tail()


def ask_health(process: IntentstreamProcess, *flags: str) -> subprocess.CompletedProcess[str]:
    """`intentstream health` with the process's own settings (so its port)."""
    return subprocess.run([str(INTENTSTREAM), "health", *flags], env=process.env,
                          capture_output=True, text=True, timeout=60)


def test_health_reports_a_worker_that_cannot_make_progress(stack):
    """Triton unreachable: the worker retries its batch forever (by design), lag stays > 0 and
    no batch completes, so after STALL_S /health answers 503 and `intentstream health` exits 1;
    a TCP probe of Kafka would have called it healthy."""
    traffic = make_traffic(n_users=5, events_per_user=(2, 3), n_malformed=0, seed=9)
    port = free_port()
    worker = stack.start_worker(INTENTSTREAM_METRICS_PORT=str(port), INTENTSTREAM_STALL_S="3",
                                INTENTSTREAM_TRITON_URL=f"127.0.0.1:{free_port()}")
    run(produce(stack.bootstrap, stack.topics["events"], traffic.records))
    deadline = time.monotonic() + 90
    code, body = 0, b""
    while time.monotonic() < deadline and worker.alive:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                code, body = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            code, body = exc.code, exc.read()
            break
        except OSError:
            pass  # not serving yet
        time.sleep(0.5)
    health = ask_health(worker)
    print(f"\n[health] Triton unreachable: /health {code} {body.decode()}; "
          f"`intentstream health` exit {health.returncode}: {health.stdout.strip()}")
    assert worker.alive, worker.log_tail()
    assert code == 503 and orjson.loads(body)["healthy"] is False
    assert health.returncode == 1
    assert health.stdout.startswith("unhealthy: stalled: lag "), health.stdout


def test_a_taken_metrics_port_stops_the_worker_with_a_clear_error(stack):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = stack.start_worker(INTENTSTREAM_METRICS_PORT=str(port),
                                    INTENTSTREAM_FEEDBACK_METRICS_PORT="0")
        deadline = time.monotonic() + 60
        while worker.alive and time.monotonic() < deadline:
            time.sleep(0.5)
    assert not worker.alive, worker.log_tail()
    assert worker.process is not None and worker.process.returncode != 0
    assert f"cannot serve metrics on port {port}" in worker.log_tail(200)
    assert "INTENTSTREAM_METRICS_PORT" in worker.log_tail(200)

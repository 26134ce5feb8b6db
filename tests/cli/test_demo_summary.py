"""The demo's story: the live alert line, the end-of-run summary table (counts by strength label,
alerts by head with example reasons, dead letters by reason, event→score percentiles, mean
Triton batch), and the Ctrl-C path of scripts/demo.py (the generator stops, the summary
prints, exit 0). Pure pieces on dicts; the SIGINT case runs the demo's own loop with a fake
worker, producer and watcher and a real SIGINT sent to this process."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest

from streams.runtime.demo_summary import (
    DemoTally,
    assigned_partitions,
    batch_texts_from_metrics,
    format_alert,
    format_summary,
)

ROOT = Path(__file__).resolve().parents[2]


def score(user: str, label: str, end: int, scored_at: int = 1, latency_ms: float = 5.0) -> dict:
    return {"user_id": user, "strength": {"label": label, "probs": {label: 0.9}},
            "window": {"end": end}, "scored_at": scored_at, "latency_ms": latency_ms}


def alert(head: str, user: str, p: float, explored: bool = False) -> dict:
    return {"head": head, "user_id": user, "probability": p, "explored": explored,
            "reason": f"p={p:.2f} ≥ 0.60; added to cart: {user}"}


def worker_metrics(*batch_sizes: int) -> str:
    registry = CollectorRegistry()
    histogram = Histogram("intentstream_batch_texts", "texts per call", registry=registry,
                          buckets=(1, 4, 16, 64))
    for size in batch_sizes:
        histogram.observe(size)
    return generate_latest(registry).decode()


# --- latency: produce time to the first score covering the event ------------------------------

def test_latency_runs_from_each_event_to_the_first_score_that_covers_it() -> None:
    tally = DemoTally()
    tally.event_sent("u1", ts=1_000, sent_ms=100)
    tally.event_sent("u1", ts=2_000, sent_ms=110)
    tally.event_sent("u1", ts=3_000, sent_ms=120)
    tally.event_sent("u2", ts=1_500, sent_ms=130)
    tally.score_arrived(score("u1", "weak", end=2_000), arrived_ms=200)
    assert sorted(tally.latencies_ms) == [90, 100]  # the third event is not covered yet
    tally.score_arrived(score("u1", "weak", end=2_000), arrived_ms=250)  # a rescoring
    assert len(tally.latencies_ms) == 2  # covered events count once
    tally.score_arrived(score("u1", "strong", end=3_000), arrived_ms=300)
    assert sorted(tally.latencies_ms) == [90, 100, 180]
    assert list(tally.uncovered) == ["u2"]
    assert tally.events == 4 and tally.users == {"u1", "u2"}


# --- mean Triton batch ----------------------------------------------------------------------

def test_batch_texts_are_read_from_the_workers_histogram() -> None:
    assert batch_texts_from_metrics(worker_metrics(3, 5, 10)) == (18, 3)
    assert batch_texts_from_metrics(worker_metrics()) is None  # no scoring call yet
    assert batch_texts_from_metrics("other_metric 1.0\n") is None


def test_the_worker_is_consuming_once_it_reports_lag_for_the_events_topic() -> None:
    registry = CollectorRegistry()
    lag = Gauge("intentstream_consumer_lag", "lag", ["topic", "partition"], registry=registry)
    assert assigned_partitions(generate_latest(registry).decode(), "shop.events") == 0
    lag.labels("other.topic", "0").set(3)
    assert assigned_partitions(generate_latest(registry).decode(), "shop.events") == 0
    for partition in ("0", "1"):
        lag.labels("shop.events", partition).set(0)
    assert assigned_partitions(generate_latest(registry).decode(), "shop.events") == 2


def test_mean_batch_prefers_metrics_and_falls_back_to_scoring_calls_in_the_scores() -> None:
    tally = DemoTally()
    for user, call in (("a", 1), ("b", 1), ("c", 1), ("d", 2)):  # two calls: 3 texts, 1 text
        tally.score_arrived(score(user, "weak", end=1, scored_at=call, latency_ms=call),
                            arrived_ms=0)
    assert tally.mean_batch(worker_metrics(4, 4, 7)) == (5.0, "3 calls, worker /metrics")
    assert tally.mean_batch(None) == (2.0, "2 calls, counted from scores")
    assert DemoTally().mean_batch(None) is None


# --- the live alert line and the summary table ------------------------------------------------

def test_alert_line_names_head_user_probability_and_reason() -> None:
    line = format_alert(alert("churn", "u7", 0.734))
    assert "ALERT churn" in line and "u7" in line and "p=0.73" in line
    assert "added to cart: u7" in line and "explore" not in line
    assert "(explore)" in format_alert(alert("intent", "u8", 0.55, explored=True))


def filled_tally() -> DemoTally:
    tally = DemoTally()
    for i in range(10):
        tally.event_sent(f"u{i % 4}", ts=i, sent_ms=float(i))
    for _ in range(2):
        tally.malformed_sent()
    for user, label, end in (("u0", "weak", 9), ("u1", "strong", 9), ("u2", "medium", 9),
                             ("u3", "strong", 9)):
        tally.score_arrived(score(user, label, end), arrived_ms=1_000)
    for i in range(5):
        tally.alert_arrived(alert("intent", f"u{i}", 0.61 + i / 100))
    tally.alert_arrived(alert("churn", "u9", 0.9))
    for reason in ("not_json", "not_json", "too_large"):
        tally.dead_letter_arrived({"reason": reason, "detail": "x"})
    return tally


def table_rows(text: str) -> dict[str, str]:
    """label -> value, for the table's rows between its rules (examples left out)."""
    return {line.split("  ", 1)[0].strip(): line.split("  ", 1)[1].strip()
            for line in text.splitlines()[1:-1] if not line.startswith("  e.g.")}


def test_summary_table_counts_everything_the_demo_saw() -> None:
    text = format_summary(filled_tally(), elapsed_s=42.4, metrics_text=worker_metrics(2, 6))
    rows = table_rows(text)
    assert rows["events"] == "10 (+2 malformed) over 42 s"
    assert rows["users"] == "4"
    assert rows["scores"] == "4: strong 2 · medium 1 · weak 1"
    assert rows["alerts"] == "6: intent 5 · churn 1"
    assert rows["dead letters"] == "3: not_json 2 · too_large 1"
    # latencies 1000 - sent_ms for sent_ms 0..9: p50 = 995 (nearest rank 5 of 10), p99 = 1000
    assert rows["event→score"] == "p50 995 ms · p99 1,000 ms (10 events)"
    assert rows["Triton batch"] == "mean 4.0 texts per call (2 calls, worker /metrics)"


def test_summary_counts_the_events_no_score_covers_yet() -> None:
    tally = filled_tally()
    tally.event_sent("u5", ts=20, sent_ms=0)
    tally.event_sent("u5", ts=21, sent_ms=0)
    rows = table_rows(format_summary(tally, elapsed_s=1))
    assert rows["event→score"] == "p50 995 ms · p99 1,000 ms (10 events, 2 not scored yet)"


def test_summary_shows_a_few_example_reasons_per_head() -> None:
    text = format_summary(filled_tally(), elapsed_s=1)
    intent = [line for line in text.splitlines() if line.startswith("  e.g. intent")]
    churn = [line for line in text.splitlines() if line.startswith("  e.g. churn")]
    assert len(intent) == 3 and "u0 p=0.61" in intent[0] and "added to cart: u0" in intent[0]
    assert len(churn) == 1 and "u9 p=0.90" in churn[0]


def test_summary_of_an_empty_run_says_so_instead_of_failing() -> None:
    rows = table_rows(format_summary(DemoTally(), elapsed_s=0))
    assert rows["scores"] == "0: none" and rows["alerts"] == "0: none"
    assert rows["dead letters"] == "0: none"
    assert rows["event→score"] == "p50 n/a · p99 n/a (0 events)"
    assert rows["Triton batch"] == "n/a"  # nothing to average


# --- Ctrl-C: stop the generator, print the summary, exit 0 ------------------------------------

@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("demo_script", ROOT / "scripts" / "demo.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["demo_script"] = module
    spec.loader.exec_module(module)
    return module


class AliveWorker:
    alive = True


def test_sigint_stops_the_generator_and_the_summary_prints(demo, capsys) -> None:
    progress = demo.Progress()
    before = signal.getsignal(signal.SIGINT)

    async def produce(stop: asyncio.Event) -> None:  # an endless generator, like EVENTS=0
        while not stop.is_set():
            progress.tally.event_sent("u1", progress.tally.events, 0.0)
            if progress.tally.events == 5:
                os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends
            await asyncio.sleep(0.01)

    async def watch(stop: asyncio.Event) -> None:
        await stop.wait()

    asyncio.run(asyncio.wait_for(
        demo.run_demo(progress, AliveWorker(), produce, watch, timeout_s=None), timeout=10))
    assert progress.interrupted
    assert 5 <= progress.tally.events <= 7  # the generator stopped right after the signal
    assert signal.getsignal(signal.SIGINT) == before  # a later Ctrl-C is a plain one again

    assert demo.finish(progress, elapsed_s=3, metrics=None, failure=None) == 0
    out = capsys.readouterr().out
    assert "demo summary" in out and "events" in out and "[demo] done (interrupted)" in out


def test_a_dead_worker_still_prints_the_summary_and_exits_1(demo, capsys) -> None:
    progress = demo.Progress()

    class DeadWorker:
        alive = False

    async def idle(stop: asyncio.Event) -> None:
        await stop.wait()

    with pytest.raises(demo.DemoFailed, match="worker exited"):
        asyncio.run(demo.run_demo(progress, DeadWorker(), idle, idle, timeout_s=None,
                                  log_hint="worker.log"))
    assert demo.finish(progress, 1, None, "the worker exited; see worker.log") == 1
    captured = capsys.readouterr()
    assert "demo summary" in captured.out and "the worker exited" in captured.err


# --- the demo's Kafka clients take the worker's address list and security settings -----------

def test_demo_clients_use_the_workers_bootstrap_list_and_security(demo, monkeypatch) -> None:
    from streams.settings import Settings

    settings = Settings(broker_url="kafka://a:9092;kafka://b:9093",
                        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_username="demo",
                        kafka_sasl_password="secret")
    seen: list[dict] = []

    class StandIn:  # records its keyword arguments and refuses to connect
        def __init__(self, *topics: str, **kwargs: object) -> None:
            seen.append(kwargs)

        async def start(self) -> None:
            raise ConnectionError("stand-in")

    monkeypatch.setattr(demo, "AIOKafkaProducer", StandIn)
    monkeypatch.setattr(demo, "AIOKafkaConsumer", StandIn)
    progress, stop = demo.Progress(), asyncio.Event()
    for client in (demo.produce(settings, progress, stop, 10, 5, 100.0),
                   demo.watch(settings, progress, stop)):
        with pytest.raises(ConnectionError):
            asyncio.run(client)
    assert len(seen) == 2
    for kwargs in seen:
        assert kwargs["bootstrap_servers"] == ["a:9092", "b:9093"]
        assert kwargs["security_protocol"] == "SASL_PLAINTEXT"
        assert kwargs["sasl_plain_username"] == "demo"
        assert kwargs["sasl_plain_password"] == "secret"

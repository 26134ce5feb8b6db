"""`make demo`: the whole system on the embedded default, scores and alerts printed live.

Builds a model version if the repository has none, starts the Tansu broker and tritonserver on
127.0.0.1 (free ports), starts `intentstream worker` (its /metrics on a free port), feeds it
simulated shoppers (plus a few malformed records, to show the dead-letter queue), prints scores,
alerts and dead letters as they arrive, and ends with a summary table
(streams/runtime/demo_summary.py): events, users, scores by strength, alerts by head with
example reasons, dead letters by reason, event→score p50/p99, mean Triton batch.

    python scripts/demo.py                  # runs until Ctrl-C, then prints the summary
    python scripts/demo.py --events 2000    # stops by itself once every event is scored

Every process is stopped by PID on the way out, whatever happens. The broker, Triton and the
worker run in their own sessions, so Ctrl-C reaches only the demo, which stops the generator,
prints the summary and then stops them; a second Ctrl-C gives up at once.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.tritonserver import TritonServer, free_port  # noqa: E402
from streams.core.timeunits import DAY_MS  # noqa: E402
from streams.runtime.demo_summary import (  # noqa: E402
    DemoTally,
    assigned_partitions,
    format_alert,
    format_dead_letter,
    format_score,
    format_summary,
)
from streams.runtime.processes import EmbeddedBroker, WorkerProcess  # noqa: E402
from streams.runtime.topics import bootstrap_servers, ensure_topics  # noqa: E402
from streams.settings import Settings  # noqa: E402

REPO = ROOT / "triton_models"
MALFORMED_EVERY = 100  # one bad record per this many events
READY_TIMEOUT_S = 120.0  # the worker's start-up, before the stream begins
DRAIN_IDLE_MS = 1500  # after the last score: alerts are produced just after their scores


def ensure_model() -> None:
    from training.demo_model import DemoModelError, ensure_demo_model

    try:
        ensure_demo_model(REPO)
    except DemoModelError as error:
        raise SystemExit(f"[demo] {error}") from None


def simulated_events(n_users: int, endless: bool) -> Iterator[dict]:
    """Simulated shoppers over the last four weeks; endless: one fresh cohort after another
    (a new seed gives new user ids, so no event is late for its user)."""
    from training.data.simulator import SimConfig, event_stream

    seed = int(time.time()) % 1000
    while True:
        start = (int(time.time() * 1000) // DAY_MS - 28) * DAY_MS
        yield from event_stream(n_users, SimConfig(seed=seed, start_ms=start))
        if not endless:
            return
        seed += 1000


@dataclass
class Progress:
    tally: DemoTally = field(default_factory=DemoTally)
    last_ts: dict[str, int] = field(default_factory=dict)  # user -> newest event time sent
    covered: dict[str, int] = field(default_factory=dict)  # user -> newest window end scored
    producing_done: bool = False
    interrupted: bool = False

    def complete(self) -> bool:
        return (
            self.producing_done
            and sum(self.tally.dead_letters.values()) >= self.tally.malformed
            and all(self.covered.get(u, -1) >= ts for u, ts in self.last_ts.items())
        )


def now_ms() -> float:
    return time.time() * 1000


def kafka_kwargs(settings: Settings) -> dict:
    """The worker's own broker address and security settings."""
    return {"bootstrap_servers": bootstrap_servers(settings.broker_url),
            **settings.kafka_client_kwargs()}


async def produce(settings: Settings, progress: Progress, stop: asyncio.Event, n_events: int,
                  users: int, rate: float) -> None:
    producer = AIOKafkaProducer(linger_ms=20, **kafka_kwargs(settings))
    await producer.start()
    tally = progress.tally
    try:
        started = time.monotonic()
        for event in simulated_events(users, endless=not n_events):
            if stop.is_set() or (n_events and tally.events >= n_events):
                break
            if tally.events % MALFORMED_EVERY == MALFORMED_EVERY - 1:
                await producer.send(settings.events_topic, key=b"demo", value=b"{broken json")
                tally.malformed_sent()
            user = event["user_id"]
            await producer.send(settings.events_topic, key=user.encode(),
                                value=orjson.dumps(event))
            tally.event_sent(user, event["ts"], now_ms())
            progress.last_ts[user] = event["ts"]
            ahead = tally.events / rate - (time.monotonic() - started)
            if ahead > 0:  # pace the stream so scores arrive live, not all at the end
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        progress.producing_done = True
        await producer.stop()


def show(settings: Settings, progress: Progress, topic: str, value: bytes) -> None:
    """Tally one record read back and print its live line."""
    doc = orjson.loads(value)
    if topic == settings.dlq_topic:
        progress.tally.dead_letter_arrived(doc)
        line = format_dead_letter(doc)
    elif topic in (settings.alerts_intent_topic, settings.alerts_churn_topic):
        progress.tally.alert_arrived(doc)
        line = format_alert(doc)
    else:
        progress.tally.score_arrived(doc, now_ms())
        user = doc["user_id"]
        progress.covered[user] = max(progress.covered.get(user, -1), doc["window"]["end"])
        line = format_score(doc)
    print(line, flush=True)


async def watch(settings: Settings, progress: Progress, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.scores_topic, settings.dlq_topic,
        settings.alerts_intent_topic, settings.alerts_churn_topic,
        auto_offset_reset="earliest", enable_auto_commit=False, **kafka_kwargs(settings),
    )
    await consumer.start()
    try:
        draining = False
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=DRAIN_IDLE_MS if draining else 500)
            for tp, records in batch.items():
                for record in records:
                    show(settings, progress, tp.topic, record.value)
            if draining and not batch:
                stop.set()  # every event scored and nothing more came: the alerts are in
            draining = progress.complete()
    finally:
        await consumer.stop()


class Worker(Protocol):
    @property
    def alive(self) -> bool: ...


class DemoFailed(Exception):
    """The demo cannot finish (worker died, timeout); the summary still prints."""


Task = Callable[[asyncio.Event], Awaitable[None]]


async def run_demo(progress: Progress, worker: Worker, produce_task: Task, watch_task: Task,
                   timeout_s: float | None, log_hint: str = "") -> Progress:
    """Run producer and watcher until the watcher is done, the deadline passes or SIGINT:
    the first Ctrl-C stops the generator and returns; a second one raises KeyboardInterrupt."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    before = signal.getsignal(signal.SIGINT)

    def restore() -> None:
        # asyncio's removal installs Python's default handler; put back whatever was there
        # (an ignored SIGINT, under nohup, stays ignored)
        loop.remove_signal_handler(signal.SIGINT)
        if before is not None:  # None: a handler not set from Python, left as asyncio leaves it
            signal.signal(signal.SIGINT, before)

    def interrupted() -> None:
        progress.interrupted = True
        stop.set()
        restore()  # the next Ctrl-C is the one the demo started with

    loop.add_signal_handler(signal.SIGINT, interrupted)
    watcher = asyncio.create_task(watch_task(stop))
    producer = asyncio.create_task(produce_task(stop))
    deadline = time.monotonic() + timeout_s if timeout_s else float("inf")
    try:
        while not stop.is_set():
            if not worker.alive:
                raise DemoFailed(f"the worker exited; see {log_hint}")
            if time.monotonic() > deadline:
                raise DemoFailed(f"not every event was scored within {timeout_s}s")
            if producer.done() and producer.exception():
                raise producer.exception()  # type: ignore[misc]
            if watcher.done():
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        restore()
        await asyncio.gather(producer, watcher, return_exceptions=True)
    await watcher  # its exception, if any
    return progress


def scrape_metrics(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as resp:
            return resp.read().decode()
    except OSError:
        return None  # the summary counts batches from the scores instead


def wait_until_consuming(worker: WorkerProcess, port: int, topic: str,
                         timeout_s: float) -> None:
    """Hold the stream until the worker has its partitions, so event→score latency is the
    pipeline's and not the worker's start-up (which takes tens of seconds on two cores)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not worker.alive:
            return  # run_demo reports it, and the summary still prints
        if assigned_partitions(scrape_metrics(port) or "", topic):
            return
        time.sleep(0.5)
    print(f"[demo] the worker reports no assigned partition after {timeout_s:.0f}s; "
          "streaming anyway (latencies include its start-up)", flush=True)


def demo_env(broker: EmbeddedBroker, triton: TritonServer, workdir: Path,
             metrics_port: int) -> dict[str, str]:
    return {
        "INTENTSTREAM_APP_ID": f"intentstream-demo-{int(time.time())}",
        "INTENTSTREAM_BROKER_URL": broker.url,
        "INTENTSTREAM_BROKER_PROFILE": "embedded",
        "INTENTSTREAM_TRITON_URL": triton.grpc_url,
        "INTENTSTREAM_DATA_DIR": str(workdir / "data"),
        "INTENTSTREAM_METRICS_PORT": str(metrics_port),
    }


def run_with_services(args: argparse.Namespace) -> int:
    with EmbeddedBroker(args.workdir / "tansu.log") as broker, TritonServer(
        REPO, log_path=args.workdir / "tritonserver.log"
    ) as triton:
        metrics_port = free_port()
        env = demo_env(broker, triton, args.workdir, metrics_port)
        settings = Settings(**{k.removeprefix("INTENTSTREAM_").lower(): v for k, v in env.items()})
        asyncio.run(ensure_topics(settings))
        log = args.workdir / "worker.log"
        print(f"[demo] broker {broker.url} (pid {broker.pid}), triton {triton.grpc_url} "
              f"(pid {triton.pid}); worker log: {log}, metrics :{metrics_port}", flush=True)
        worker = WorkerProcess(env, log).start()
        progress = Progress()
        failure = None
        try:
            waited = time.monotonic()
            wait_until_consuming(worker, metrics_port, settings.events_topic, READY_TIMEOUT_S)
            started = time.monotonic()
            print(f"[demo] worker consuming after {started - waited:.0f}s; streaming "
                  f"{args.events or 'endless'} events at {args.rate:.0f}/s"
                  f"{'' if args.events else ' (Ctrl-C: summary and stop)'}", flush=True)
            try:
                asyncio.run(run_demo(
                    progress, worker,
                    lambda stop: produce(settings, progress, stop, args.events, args.users,
                                         args.rate),
                    lambda stop: watch(settings, progress, stop),
                    timeout_s=args.timeout if args.events else None, log_hint=str(log),
                ))
            except DemoFailed as error:
                failure = str(error)
            elapsed = time.monotonic() - started
            metrics = scrape_metrics(metrics_port) if worker.alive else None
        finally:
            worker.stop()
    return finish(progress, elapsed, metrics, failure)


def finish(progress: Progress, elapsed_s: float, metrics: str | None,
           failure: str | None) -> int:
    """Print the summary table, however the run ended; the exit code."""
    print(format_summary(progress.tally, elapsed_s, metrics), flush=True)
    if failure:
        print(f"[demo] {failure}", file=sys.stderr, flush=True)
        return 1
    how = "interrupted" if progress.interrupted else "every event scored"
    print(f"[demo] done ({how}).", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=0, help="stop after this many (0: never)")
    parser.add_argument("--users", type=int, default=0, help="simulated users (0: events/8)")
    parser.add_argument("--rate", type=float, default=400.0, help="events per second to send")
    parser.add_argument("--timeout", type=float, default=420.0, help="give up after (--events)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "demo")
    args = parser.parse_args(argv)
    if args.events < 0 or args.users < 0 or args.rate <= 0:
        parser.error("--events and --users must be >= 0 and --rate > 0")
    args.users = args.users or max(50, (args.events or 4000) // 8)
    args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        ensure_model()
        return run_with_services(args)
    except KeyboardInterrupt:  # before the stream started, or a second Ctrl-C
        print("\n[demo] interrupted; every process stopped", flush=True)
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`make demo`: the whole system on the embedded default, scores printed live.

Builds a model version if the repository has none, starts the Tansu broker and tritonserver on
127.0.0.1 (free ports), starts `intentstream worker`, feeds it simulated shoppers (plus a few
malformed records, to show the dead-letter queue), and prints scores as they arrive.

    python scripts/demo.py                  # runs until Ctrl-C
    python scripts/demo.py --events 2000    # stops by itself once every event is scored

Every process is stopped by PID on the way out, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from inference.tritonserver import TritonServer  # noqa: E402
from streams.core.timeunits import DAY_MS  # noqa: E402
from streams.runtime.processes import EmbeddedBroker, WorkerProcess  # noqa: E402
from streams.runtime.topics import ensure_topics  # noqa: E402
from streams.settings import Settings  # noqa: E402
from streams.worker.commands import format_score  # noqa: E402

REPO = ROOT / "triton_models"
MALFORMED_EVERY = 100  # one bad record per this many events


def ensure_model() -> None:
    from training.demo_model import DemoModelError, ensure_demo_model

    try:
        ensure_demo_model(REPO)
    except DemoModelError as error:
        raise SystemExit(f"[demo] {error}") from None


def simulated_events(n_users: int) -> Iterator[dict]:
    from training.simulator import SimConfig, event_stream

    start = (int(time.time() * 1000) // DAY_MS - 28) * DAY_MS  # the last four weeks, in event time
    yield from event_stream(n_users, SimConfig(seed=int(time.time()) % 1000, start_ms=start))


@dataclass
class Progress:
    produced: int = 0
    malformed: int = 0
    last_ts: dict[str, int] = field(default_factory=dict)  # user -> newest event time sent
    covered: dict[str, int] = field(default_factory=dict)  # user -> newest window end scored
    scores: int = 0
    dead_letters: int = 0
    producing_done: bool = False

    def complete(self) -> bool:
        return (
            self.producing_done
            and self.dead_letters >= self.malformed
            and all(self.covered.get(u, -1) >= ts for u, ts in self.last_ts.items())
        )


async def produce(settings: Settings, progress: Progress, n_events: int, users: int,
                  rate: float) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.broker_url.split("://", 1)[-1],
                                linger_ms=20)
    await producer.start()
    try:
        started = time.monotonic()
        for event in simulated_events(users):
            if n_events and progress.produced >= n_events:
                break
            if progress.produced % MALFORMED_EVERY == MALFORMED_EVERY - 1:
                await producer.send(settings.events_topic, key=b"demo", value=b"{broken json")
                progress.malformed += 1
            key = event["user_id"].encode()
            await producer.send(settings.events_topic, key=key, value=orjson.dumps(event))
            progress.produced += 1
            progress.last_ts[event["user_id"]] = event["ts"]
            ahead = progress.produced / rate - (time.monotonic() - started)
            if ahead > 0:  # pace the stream so scores arrive live, not all at the end
                await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        progress.producing_done = True
        await producer.stop()


async def watch(settings: Settings, progress: Progress, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        settings.scores_topic, settings.dlq_topic,
        bootstrap_servers=settings.broker_url.split("://", 1)[-1],
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    try:
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    doc = orjson.loads(record.value)
                    if tp.topic == settings.dlq_topic:
                        progress.dead_letters += 1
                        print(f"{'DLQ':>12}  reason={doc['reason']}  {doc['detail'][:60]}")
                        continue
                    progress.scores += 1
                    user = doc["user_id"]
                    progress.covered[user] = max(progress.covered.get(user, -1),
                                                 doc["window"]["end"])
                    print(format_score(doc), flush=True)
            if progress.complete():
                stop.set()
    finally:
        await consumer.stop()


async def run_demo(
    args: argparse.Namespace, settings: Settings, worker: WorkerProcess
) -> Progress:
    progress = Progress()
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch(settings, progress, stop))
    producer = asyncio.create_task(
        produce(settings, progress, args.events, args.users, args.rate))
    deadline = time.monotonic() + args.timeout if args.events else float("inf")
    while not stop.is_set():
        if not worker.alive:
            raise SystemExit(f"[demo] the worker exited with {worker.process.returncode}; "
                             f"see {args.workdir / 'worker.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"[demo] not every event was scored within {args.timeout}s")
        if producer.done() and producer.exception():
            raise producer.exception()  # type: ignore[misc]
        await asyncio.sleep(0.5)
    await producer
    await watcher
    return progress


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

    ensure_model()
    started = time.monotonic()
    with EmbeddedBroker(args.workdir / "tansu.log") as broker, TritonServer(
        REPO, log_path=args.workdir / "tritonserver.log"
    ) as triton:
        env = {
            "INTENTSTREAM_APP_ID": f"intentstream-demo-{int(time.time())}",
            "INTENTSTREAM_BROKER_URL": broker.url,
            "INTENTSTREAM_BROKER_PROFILE": "embedded",
            "INTENTSTREAM_TRITON_URL": triton.grpc_url,
            "INTENTSTREAM_DATA_DIR": str(args.workdir / "data"),
        }
        settings = Settings(**{k.removeprefix("INTENTSTREAM_").lower(): v for k, v in env.items()})
        asyncio.run(ensure_topics(settings))
        print(f"[demo] broker {broker.url} (pid {broker.pid}), triton {triton.grpc_url} "
              f"(pid {triton.pid}); worker log: {args.workdir / 'worker.log'}", flush=True)
        worker = WorkerProcess(env, args.workdir / "worker.log").start()
        try:
            progress = asyncio.run(run_demo(args, settings, worker))
        except KeyboardInterrupt:
            print("\n[demo] interrupted", flush=True)
            return 0
        finally:
            worker.stop()
    elapsed = time.monotonic() - started
    print(f"[demo] done: {progress.produced} events from {len(progress.last_ts)} users "
          f"(+{progress.malformed} malformed) -> {progress.scores} scores, "
          f"{progress.dead_letters} dead letters in {elapsed:.0f}s; every event scored.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

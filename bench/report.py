"""What `intentstream bench` prints: progress on stderr as it goes (`say`), and at the end the
figures (`Figures`, also written as JSON with --json) as a report on stdout.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from inference.model.runtimes import TORCH

# Cascade routes (intentstream_cascade_routes) where the network ran: the network route, and
# the reasons a cheap answer was sent back to it.
NETWORK_RAN = ("network", "band", "refresh", "no_policy")


@dataclass(frozen=True)
class Figures:
    """One bench run's measurements; the four ratios and their parts are derived from them."""

    # the workload and what served it
    events: int
    users: int
    model: str  # the size of the untrained weights (--model)
    runtime: str  # the runtime Triton served
    fastest_runtime: str  # the fastest in process on the pipeline's texts
    runtime_forced: bool  # set in config, no quality bar
    runtime_fastest: bool  # forced to the fastest in process on held-out texts
    runtimes_texts_per_s: dict[str, float]  # every runtime in process on the pipeline's texts
    # (1) and (2): the worker draining a backlog, and the model alone in process
    worker_events_per_s: float
    worker_scores: int
    pipeline_scores_per_s: float
    model_texts_per_s: float  # the fastest runtime, batches of model_batch
    naive_events_per_s: float
    # (3) the worker on a tiny model against bare Faust
    bare_faust_events_per_s: float
    worker_tiny_events_per_s: float
    # (4) half load
    paced_events_per_s: float
    p50_s: float
    p99_s: float  # the median of the runs'
    paced_p99s_s: list[float]  # each paced run's p99
    paced_texts_per_s: float  # texts the model was asked for at half load
    paced_triton_busy: float  # share of the paced runs' seconds in Triton calls
    paced_batch: int  # texts per batch that half load formed, rounded
    paced_batch_latency_s: float  # the fastest runtime on batches of paced_batch
    model_batch_1_texts_per_s: float
    model_batch: int  # the worker's score_max_batch
    model_batch_latency_s: float
    # where the drain's time went, from the worker's metrics
    triton_busy: float  # share of the drain Triton spent on calls
    events_per_batch: float
    texts_per_batch: float
    batch_seconds: float
    # coalescing under backlog, by backlog multiple ("1", "2", …)
    backlog_events_per_text: dict[str, float]
    backlog_events_per_session: dict[str, float]  # the ceiling: one score per session at least
    # what timer scores cost in the drain, from the worker's metrics (`scoring_cost`; empty
    # where not measured): texts the network ran, scores the stacker alone gave, by trigger;
    # Triton requests by model (intent: the ensemble, stacker: its last step alone)
    network_texts_by_trigger: dict[str, float] = field(default_factory=dict)
    stacker_only_by_trigger: dict[str, float] = field(default_factory=dict)
    triton_requests_by_model: dict[str, float] = field(default_factory=dict)
    # the cascade (streams/core/cascade.py): the drain's scorings by route or by the reason a
    # cheap answer went back to the network (band, refresh, no_policy); and the same drain
    # with SCORE_CASCADE=false (the network on every session), on the same model and traffic
    cascade_routes: dict[str, float] = field(default_factory=dict)
    all_network_events_per_s: float | None = None

    @property
    def pipeline_over_model(self) -> float:
        return self.pipeline_scores_per_s / self.model_texts_per_s

    @property
    def over_naive(self) -> float:
        return self.worker_events_per_s / self.naive_events_per_s

    @property
    def over_bare_faust(self) -> float:
        return self.worker_tiny_events_per_s / self.bare_faust_events_per_s

    @property
    def p99_over_batch(self) -> float:
        """Against the model's batch latency at the size the worker sends (score_max_batch)."""
        return self.p99_s / self.model_batch_latency_s

    @property
    def p99_over_batch_at_load(self) -> float:
        """Against the smaller batches half load actually formed."""
        return self.p99_s / self.paced_batch_latency_s

    @property
    def events_per_text(self) -> float:
        return self.worker_events_per_s / self.pipeline_scores_per_s

    @property
    def triton_calls_per_silence_score(self) -> float | None:
        """Triton calls a silence score cost: an ensemble row each where the network ran,
        and the stacker requests for those that reused kept outputs (batched: a request
        carries every silence score of a round); None without silence scores."""
        network = self.network_texts_by_trigger.get("silence", 0.0)
        alone = self.stacker_only_by_trigger.get("silence", 0.0)
        if not network + alone:
            return None
        return (network + self.triton_requests_by_model.get("stacker", 0.0)) / (network + alone)

    @property
    def cascade(self) -> float | None:
        """Events/s with the cascade ÷ with the network on every session (same drain)."""
        if not self.all_network_events_per_s:
            return None
        return self.worker_events_per_s / self.all_network_events_per_s

    @property
    def network_share(self) -> float | None:
        """The share of the drain's scorings that ran the network: the network route, and
        cheap answers sent back to it."""
        total = sum(self.cascade_routes.values())
        if not total:
            return None
        return sum(self.cascade_routes.get(name, 0.0) for name in NETWORK_RAN) / total

    @property
    def batching_gain(self) -> float:
        return self.model_texts_per_s / self.model_batch_1_texts_per_s

    def as_json(self) -> dict[str, Any]:
        """The measurements, then the derived figures: the keys --json has always written."""
        derived = ("pipeline_over_model", "over_naive", "over_bare_faust", "p99_over_batch",
                   "p99_over_batch_at_load", "events_per_text", "batching_gain", "cascade",
                   "network_share")
        return {**asdict(self), **{name: getattr(self, name) for name in derived}}


def ratios_line(figures: Figures) -> str:
    """The last line of a run, the one a script reads."""
    cascade = "-" if figures.cascade is None else f"{figures.cascade:.2f}"
    share = "-" if figures.network_share is None else f"{figures.network_share:.2f}"
    return (f"ratios: pipeline/model={figures.pipeline_over_model:.2f} "
            f"naive={figures.over_naive:.0f}x bare_faust={figures.over_bare_faust:.2f} "
            f"p99/batch={figures.p99_over_batch:.2f} cascade={cascade} "
            f"network_share={share} runtime={figures.runtime}")


def forced_note(figures: Figures) -> str:
    if figures.runtime_fastest:
        return " (the fastest in process here, set in config; no quality bar on untrained weights)"
    return " (set in config, no quality bar)" if figures.runtime_forced else ""


def runtime_table(texts_per_s: dict[str, float], *, texts: int, batch: int, fastest: str,
                  served: str) -> list[str]:
    """Every runtime's in-process texts/s on the pipeline's `texts` texts, against torch."""
    torch_speed = texts_per_s.get(TORCH)
    lines = [f"in-process runtimes on the pipeline's {texts} texts "
             f"(tokenizer + model, batches of {batch} in arrival order):",
             f"    {'runtime':<18} {'texts/s':>8} {'vs torch':>9}"]
    for name, speed in texts_per_s.items():
        ratio = f"{speed / torch_speed:.2f}" if torch_speed else "-"
        notes = [note for note, yes in (("fastest", name == fastest), ("served", name == served))
                 if yes]
        lines.append(f"    {name:<18} {speed:>8.1f} {ratio:>9}  {', '.join(notes)}".rstrip())
    return lines


def report(figures: Figures) -> None:
    """The workload, the runtime table and the four ratios with what they are made of."""
    lines = [
        *workload_lines(figures),
        *runtime_table(figures.runtimes_texts_per_s, texts=figures.worker_scores,
                       batch=figures.model_batch, fastest=figures.fastest_runtime,
                       served=figures.runtime),
        pipeline_line(figures),
        *naive_lines(figures),
        bare_faust_line(figures),
        latency_line(figures),
        *cascade_lines(figures),
        *silence_lines(figures),
    ]
    print("\n".join(lines))


def workload_lines(figures: Figures) -> list[str]:
    return [
        f"workload: {figures.events} simulated shop events of {figures.users} users, "
        f"model {figures.model}, served on {figures.runtime}{forced_note(figures)}",
        f"    drain: {figures.events_per_batch:.0f} events -> {figures.texts_per_batch:.0f} "
        f"texts per micro-batch, {figures.batch_seconds:.2f} s each; Triton busy "
        f"{figures.triton_busy:.0%} of the drain",
    ]


def pipeline_line(figures: Figures) -> str:
    """(1) the pipeline against the fastest runtime in process."""
    return (f"(1) pipeline {figures.pipeline_scores_per_s:.1f} scored sessions/s vs the fastest "
            f"runtime in process ({figures.fastest_runtime}) {figures.model_texts_per_s:.1f} "
            f"texts/s on the same {figures.worker_scores} texts "
            f"-> {figures.pipeline_over_model:.2f}")


def naive_lines(figures: Figures) -> list[str]:
    """(2) our worker against the naive per-event agent, and coalescing under backlog."""
    ceilings = figures.backlog_events_per_session
    backlogs = ", ".join(
        f"{per_text:.2f} of {ceilings[scale]:.2f} at {scale}x ({int(scale) * figures.events} "
        "events)" for scale, per_text in figures.backlog_events_per_text.items())
    return [
        f"(2) worker {figures.worker_events_per_s:.0f} events/s vs naive per-event agent "
        f"{figures.naive_events_per_s:.1f} events/s -> {figures.over_naive:.1f}x"
        f" (= {figures.events_per_text:.1f} events per scored text x batching gain "
        f"{figures.batching_gain:.2f}, batch {figures.model_batch} vs 1 on "
        f"{figures.fastest_runtime}, x the rest)",
        f"    coalescing under backlog (events per scored text, of at most the events per "
        f"session): {backlogs}",
    ]


def bare_faust_line(figures: Figures) -> str:
    """(3) what our windows and coalescing cost over Faust itself."""
    return (f"(3) worker on a tiny model {figures.worker_tiny_events_per_s:.0f} events/s vs bare "
            f"Faust {figures.bare_faust_events_per_s:.0f} events/s "
            f"-> {figures.over_bare_faust:.2f}"
            f" (with the model above: {figures.worker_events_per_s:.0f} events/s)")


def latency_line(figures: Figures) -> str:
    """(4) p99 at half load against the model's own batch latency."""
    p99s = figures.paced_p99s_s
    spread = (max(p99s) - min(p99s)) * 1000
    return (f"(4) at {figures.paced_events_per_s:.0f} events/s, "
            f"{figures.paced_texts_per_s:.0f} texts/s (half the "
            f"{figures.pipeline_scores_per_s:.0f} texts/s the drain scored; Triton busy "
            f"{figures.paced_triton_busy:.0%}); p99 of {len(p99s)} runs "
            + "/".join(f"{p * 1000:.0f}" for p in p99s) + f" ms (spread {spread:.0f} ms); "
            f"median: "
            f"p50 {figures.p50_s * 1000:.0f} ms, p99 {figures.p99_s * 1000:.0f} ms "
            f"vs {figures.fastest_runtime}'s batch-{figures.model_batch} latency "
            f"{figures.model_batch_latency_s * 1000:.0f} ms -> {figures.p99_over_batch:.2f}; "
            f"vs the {figures.paced_batch}-text batches half load formed "
            f"({figures.paced_batch_latency_s * 1000:.0f} ms) "
            f"-> {figures.p99_over_batch_at_load:.2f}")


def cascade_lines(figures: Figures) -> list[str]:
    """The cascade against the network on every session, and the drain's routes."""
    if figures.cascade is None or figures.network_share is None:
        return []
    routes = figures.cascade_routes
    total = sum(routes.values())
    parts = ", ".join(f"{name} {routes[name] / total:.0%}" for name in sorted(routes, key=lambda n:
                                                                             -routes[n]))
    return [f"cascade: worker {figures.worker_events_per_s:.0f} events/s vs the network on every "
            f"session {figures.all_network_events_per_s:.0f} events/s -> {figures.cascade:.2f}; "
            f"the network ran for {figures.network_share:.0%} of {total:.0f} scorings "
            f"({parts})"]


def silence_lines(figures: Figures) -> list[str]:
    """What timer scores cost in the drain: Triton calls per silence score, and the texts
    the network ran per trigger (none where the worker's metrics were not read)."""
    network = figures.network_texts_by_trigger
    if not network and not figures.stacker_only_by_trigger:
        return []
    alone = figures.stacker_only_by_trigger
    calls = figures.triton_calls_per_silence_score
    texts = ", ".join(f"{trigger} {network.get(trigger, 0):.0f}"
                      for trigger in ("event", "session_close", "silence"))
    silence = network.get("silence", 0) + alone.get("silence", 0)
    return [
        "    Triton calls per silence score: "
        + ("-" if calls is None else f"{calls:.2f}")
        + f" ({silence:.0f} silence scores, {alone.get('silence', 0):.0f} by the stacker alone "
        f"in {figures.triton_requests_by_model.get('stacker', 0):.0f} requests)",
        f"    texts the network ran per trigger: {texts}",
    ]


def say(message: str) -> None:
    """A progress line on stderr, apart from the report on stdout."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)

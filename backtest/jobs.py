"""Running a replay or a backtest once `backtest.cli` has parsed its arguments: read the
source, check there is something to score, serve the model version (or use a given Triton),
replay, evaluate, write the report and every prediction (`backtest.predictions`). Exit
statuses as in `backtest.cli`; every expected failure is one line on stderr (`guarded`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog
from aiokafka.errors import KafkaConnectionError

from inference.client import ScoringError
from inference.repository import INTENT_BERT, REPOSITORY_TEMPLATE
from inference.tritonserver import TritonError
from streams.core.events import Rejection, parse_event
from streams.core.raw_message import RawMessage
from streams.core.records import IntentScore
from streams.runtime.reachable import Unreachable, require_listening
from streams.runtime.topic_reader import KafkaRange, read_kafka
from streams.runtime.topics import bootstrap_servers
from streams.settings import Settings, get_settings
from training.data import uci
from training.progress import progress_bar

from . import uci_eval
from .engine import ROUND_TEXTS, EngineConfig, OrderedScorer, Run, replay
from .evaluate import Evaluation, compare, evaluate_run
from .models import ModelError, embedded_server, pick_version
from .predictions import MissingDependency, RunPredictions, require_pyarrow, write_predictions
from .report import iso_or_none, write_report
from .sources import Source, read_file

log = structlog.get_logger("intentstream.backtest")
PROBE_TEXT = "view: product page"


def version_label(version: int) -> str:
    """How reports and messages name a model version: `intent_bert v3`."""
    return f"{INTENT_BERT} v{version}"


# --- running ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """Everything a run needs besides the model: what to replay and how."""

    kind: str  # "backtest" | "replay" | "uci"
    source: Source
    config: EngineConfig
    settings: Settings
    progress: bool


def engine_config(settings: Settings, tick_s: float | None, *, start: int | None,
                  end: int | None, label_until: int | None, label: bool,
                  timers: bool = True) -> EngineConfig:
    """`timers`: the worker's event-time timers (sessions closed on time, silence
    milestones); off for the UCI rows, which are finished sessions scored once each."""
    return EngineConfig(
        session=settings.session_policy(),
        alerts=settings.alert_policy(),
        labels=settings.label_policy(),
        max_event_bytes=settings.max_event_bytes,
        retry_max_s=settings.score_retry_max_s,
        lateness_ms=int(settings.watermark_lateness_s * 1000),
        tick_ms=None if tick_s is None else max(1, int(tick_s * 1000)),
        score_from=start,
        score_until=end,
        label_until=label_until,
        label=label,
        timers=settings.timer_policy() if timers else None,
        watermark_lateness_ms=int(settings.watermark_lateness_s * 1000),
        cascade=settings.score_cascade,
    )


async def _replay_on(url: str, job: Job, alive: Callable[[], bool],
                     expected: int | None) -> tuple[Run, int]:
    """Replay the job's messages on the Triton at `url`; the version that scored them."""
    settings = job.settings
    scorer = OrderedScorer(url, model_name=settings.triton_model,
                           max_batch=settings.score_max_batch,
                           timeout_s=settings.score_timeout_s, alive=alive)
    try:
        probe = await scorer.score([PROBE_TEXT])  # fails fast: no retry loop before a start
        version = probe[0].model_version
        if expected is not None and version != expected:
            raise ModelError(f"the Triton at {url} serves {version_label(version)}, not "
                             f"v{expected}; leave out --triton-url to serve v{expected} here")
        with progress_bar(enabled=job.progress, total=len(job.source.messages), unit="event",
                          desc="events", position=0) as events, \
                progress_bar(enabled=job.progress, unit="text", desc="scored",
                             position=1) as texts:
            scorer.on_scored = texts.update
            run = await replay(job.source.messages, scorer, job.config, on_events=events.update)
        return run, version
    finally:
        await scorer.close()


def run_version(job: Job, repo: Path, version: int | None, url: str | None) -> tuple[Run, int]:
    """One full replay with one model version: on `url` if given, else on an embedded server."""
    if url is not None:
        return asyncio.run(_replay_on(url, job, lambda: True, version))
    assert version is not None
    with tempfile.TemporaryDirectory(prefix="intentstream-backtest-") as tmp, \
            embedded_server(repo, version, Path(tmp)) as server:
        return asyncio.run(_replay_on(server.grpc_url, job, server.is_running, version))


def scores_digest(records: Sequence[IntentScore]) -> str:
    """SHA-256 of every score record in order, without its wall-clock fields."""
    digest = hashlib.sha256()
    for record in records:
        doc = record.model_dump(mode="json", exclude={"latency_ms", "scored_at"})
        digest.update(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n")
    return digest.hexdigest()


def evaluate(job: Job, name: str, run: Run, version: int) -> Evaluation:
    counts = {k: v for k, v in sorted(run.counts.items())}
    policy = job.config.alerts
    if job.source.uci is not None:
        evaluation = uci_eval.evaluate_uci(name, run.records, run.alerts, job.source.uci,
                                           policy, counts)
        evaluation.metrics["levels"] = uci_eval.level_comparison(run.records, job.source.uci)
    else:
        assert run.labelling is not None
        evaluation = evaluate_run(name, run.records, run.alerts, run.labelling, policy,
                                  job.config.labels.horizon_ms, counts)
    evaluation.metrics["model"] = {"name": INTENT_BERT, "version": version}
    evaluation.metrics["dead_letters"] = dict(sorted(run.dead_letters.items()))
    evaluation.metrics["scores_sha256"] = scores_digest(run.records)
    evaluation.metrics["range"] = {"score_from": iso_or_none(run.score_from),
                                   "score_until": iso_or_none(run.score_until),
                                   "label_until": iso_or_none(run.label_until)}
    return evaluation


def execute(job: Job, args: argparse.Namespace) -> int:
    settings = job.settings
    url = args.triton_url or (settings.triton_url if "triton_url" in settings.model_fields_set
                              else None)
    if url is not None and args.baseline_version is not None:
        raise ModelError("--baseline-version needs the embedded server: leave out --triton-url "
                         "(and INTENTSTREAM_TRITON_URL)")
    repo = Path(args.model_repo)
    # On a given server the probe checks the version; here, it must be built.
    version = args.model_version if url else pick_version(repo, args.model_version)
    baseline = None if args.baseline_version is None else pick_version(repo,
                                                                        args.baseline_version)
    run, served = run_version(job, repo, version, url)
    evaluations = [evaluate(job, args.label or version_label(served), run, served)]
    roles = {evaluations[0].name: "model"}
    predictions = [run_predictions(job, "model", run)]
    if baseline is not None:
        base_run, base_served = run_version(job, repo, baseline, None)
        name = args.baseline_label or f"{version_label(base_served)} (baseline)"
        evaluations.append(evaluate(job, name, base_run, base_served))
        roles[name] = "baseline"
        predictions.append(run_predictions(job, "baseline", base_run))
    if len(roles) < len(evaluations):
        raise ModelError("--label and --baseline-label must differ")
    peers = ([uci_eval.evaluate_peer(job.source.uci, job.config.alerts)]
             if job.source.uci is not None else [])
    metrics = assemble(job, evaluations, roles, peers)
    out = args.out or default_out(job, served)
    live = {"intent": job.config.alerts.intent_threshold,
            "churn": job.config.alerts.churn_threshold,
            "revenue": job.config.alerts.intent_threshold}
    metrics["predictions"] = write_predictions(out, predictions)
    written = write_report(out, metrics, [*evaluations, *peers], live,
                           title=f"intentstream {job.kind}: {version_label(served)}")
    print(orjson.dumps({"out": str(out), "plots": sorted(written.values()),
                        "predictions": metrics["predictions"],
                        "summary": summary(metrics)}).decode())
    return 0


def run_predictions(job: Job, role: str, run: Run) -> RunPredictions:
    return RunPredictions(role=role, records=run.records, alerts=run.alerts,
                          labelling=run.labelling, uci=job.source.uci)


def assemble(job: Job, evaluations: Sequence[Evaluation], roles: dict[str, str],
             peers: Sequence[Evaluation]) -> dict[str, Any]:
    config = job.config
    metrics: dict[str, Any] = {
        "kind": job.kind,
        "source": job.source.description,
        "settings": {
            "session": asdict(config.session),
            "alerts": asdict(config.alerts),
            "labels": asdict(config.labels),
            "tick_ms": config.tick_ms,
            "round_texts": ROUND_TEXTS,
            "score_max_batch": job.settings.score_max_batch,
            "triton_model": job.settings.triton_model,
        },
        "runs": {e.name: {**e.metrics, "role": roles[e.name]} for e in evaluations},
        "notes": NOTES_UCI if job.source.uci is not None else NOTES_EVENTS,
    }
    if len(evaluations) == 2:
        metrics["comparison"] = {"model_minus_baseline": compare(evaluations[0].metrics,
                                                                 evaluations[1].metrics)}
    if job.source.uci is not None:
        metrics["uci"] = {
            **uci_eval.split_summary(job.source.uci),
            "peer": uci_eval.PEER_NAME,
            "peer_metrics": peers[0].metrics["heads"]["revenue"],
        }
    return metrics


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, run in metrics["runs"].items():
        out[name] = {h: {k: m.get(k) for k in ("n", "roc_auc", "pr_auc")}
                     for h, m in run.get("heads", {}).items()}
        if "levels" in run:  # UCI: ROC-AUC at each level of information, peer beside ours
            out[name]["levels_roc_auc"] = {
                level: {who: row[who]["roc_auc"] for who in ("peer", "ours",
                                                             "ours_features_only")}
                for level, row in run["levels"].items() if level != "text_model_alone"}
    if "uci" in metrics:
        peer = metrics["uci"]["peer_metrics"]
        out[metrics["uci"]["peer"]] = {"revenue": {k: peer.get(k) for k in ("n", "roc_auc",
                                                                            "pr_auc")}}
    return out


def default_out(job: Job, version: int) -> Path:
    description = job.source.description
    if description["type"] == "kafka":
        name = f"backtest-{description['topic']}-{description['from']}-{description['to']}"
    else:
        name = f"{job.kind}-{Path(description['name']).stem}"
    return Path("var") / "backtests" / re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}-v{version}")


NOTES_EVENTS = [
    "Same code as live: streams.core.batching.plan_batch, streams.worker.scoring.score_plan and "
    "decide_alerts per micro-batch; labels by the feedback sidecar's plan_feedback.",
    "Micro-batches are event-time ticks (settings.tick_ms): a user's events within one tick "
    "are scored together, as the worker coalesces one batch.",
    "Strength is labelled once H has passed after the window, churn once D has; the alert "
    "sweep re-runs the live policy (threshold, event-time cooldown, exploration) per threshold.",
    "Recall counts purchases (intent) and churn onsets (last event before >= D of silence) "
    "with an alert for the user in the H before; lead time is from the earliest such alert.",
    "Sessions open before the range start fresh at its start (no state is carried in).",
]
NOTES_UCI = [
    "UCI rows become page-view events (training.data.uci); each session is scored once, at its "
    "end, by the live code path; P(strong) is read as P(purchase).",
    "The threshold sweep is plain P >= t for both models (one score per session: no cooldown).",
    "levels: at each level of information (page views; + analytics; + context), "
    "HistGradientBoosting (random_state=0) on the level's CSV columns beside ours, a stacker "
    "(training.data.uci.fit_stacker) over the level's FEATURES from the score records and the text "
    "model's strength probabilities, both fitted on the training part.",
    f"Data: {uci.ATTRIBUTION}",
]



# --- the two commands ---------------------------------------------------------------------------

def _settings(args: argparse.Namespace) -> Settings:
    settings = get_settings()
    updates = {}
    if getattr(args, "topic", None):
        updates["events_topic"] = args.topic
    if getattr(args, "broker_url", None):
        updates["broker_url"] = args.broker_url
    return settings.model_copy(update=updates) if updates else settings


def _tick_s(args: argparse.Namespace, settings: Settings, uci: bool) -> float | None:
    """Seconds, or None for one tick over the whole range."""
    if args.tick_s is None:
        return None if uci else settings.batch_within_s
    return None if args.tick_s == "all" else float(args.tick_s)


class NothingToScore(Exception):
    """No valid event in the scoring range: a bad request (exit 2), whatever the model."""


def unscorable(messages: Sequence[RawMessage], config: EngineConfig) -> Counter[str] | None:
    """None as soon as one message is a valid event inside the scoring range; else, per
    reason, why none is: its rejection reason (as its dead letter would say), or
    `before_range` / `after_range` for a valid event outside --from/--to."""
    reasons: Counter[str] = Counter()
    for msg in messages:
        parsed = parse_event(msg.value, msg.key, config.max_event_bytes, config.privacy)
        if isinstance(parsed, Rejection):
            reasons[parsed.reason] += 1
        elif config.score_from is not None and parsed.ts < config.score_from:
            reasons["before_range"] += 1
        elif config.score_until is not None and parsed.ts >= config.score_until:
            reasons["after_range"] += 1
        else:
            return None
    return reasons


def require_something_to_score(source: Source, config: EngineConfig, where: str) -> None:
    reasons = unscorable(source.messages, config)
    if reasons is None:
        return
    counts = ", ".join(f"{reason} {n}" for reason, n in reasons.most_common())
    raise NothingToScore(f"no valid event to score in {where}: {len(source.messages)} records"
                         + (f", rejected: {counts}" if counts else ""))


def guarded(main: Callable[[], int]) -> int:
    """Expected failures as one line on stderr and an exit status, never a traceback."""
    try:
        return main()
    except (ModelError, FileNotFoundError, LookupError, NothingToScore,
            MissingDependency) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (TritonError, ScoringError) as error:
        print(f"error: Triton: {error}", file=sys.stderr)
        return 1
    except (Unreachable, KafkaConnectionError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def run_replay(args: argparse.Namespace) -> int:
    """`intentstream replay`: a file of events, or the UCI CSV."""
    settings = _settings(args)
    source = read_file(args.file, args.limit_rows)
    uci = source.uci is not None
    config = engine_config(settings, _tick_s(args, settings, uci), start=args.start,
                           end=args.end, label_until=None, label=not uci, timers=not uci)
    require_something_to_score(source, config, str(args.file))  # before any model work
    require_pyarrow()
    ensure_a_model(args)
    job = Job("uci" if uci else "replay", source, config, settings, not args.no_progress)
    return execute(job, args)


def run_backtest(args: argparse.Namespace, label_until: int) -> int:
    """`intentstream backtest`: a time range of the events topic."""
    settings = _settings(args)
    config = engine_config(settings, _tick_s(args, settings, False), start=args.start,
                           end=args.end, label_until=label_until, label=True)
    lookback_ms = int(settings.watermark_lateness_s * 1000)  # producer clock skew
    spec = KafkaRange(
        bootstrap=bootstrap_servers(settings.broker_url),
        topic=settings.events_topic,
        from_ms=args.start - lookback_ms,
        until_ms=None if args.lateness_s is None else label_until + int(
            args.lateness_s * 1000),
    )
    require_pyarrow()
    require_listening(spec.bootstrap, "broker",
                      "start one, or point --broker-url / INTENTSTREAM_BROKER_URL at it")
    messages = asyncio.run(read_kafka(spec))
    description = {"type": "kafka", "topic": spec.topic, "from": iso_or_none(args.start),
                   "to": iso_or_none(args.end), "label_until": iso_or_none(label_until),
                   "lateness_s": args.lateness_s}
    log.info("backtest.read", records=len(messages), topic=spec.topic)
    source = Source(messages, description)
    require_something_to_score(
        source, config, f"{spec.topic} from {iso_or_none(args.start)} to {iso_or_none(args.end)}")
    job = Job("backtest", source, config, settings, not args.no_progress)
    return execute(job, args)


def ensure_a_model(args: argparse.Namespace) -> None:
    """A fresh clone has no built model: train the demo model, as `make demo` does."""
    default_repo = Path(args.model_repo).resolve() == REPOSITORY_TEMPLATE.resolve()
    if args.triton_url or args.model_version is not None or not default_repo:
        return
    from training.demo_model import DemoModelError, ensure_demo_model

    try:
        ensure_demo_model(args.model_repo)
    except DemoModelError as error:
        raise ModelError(str(error)) from None


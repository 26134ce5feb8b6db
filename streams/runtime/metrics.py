"""Prometheus metrics of the scoring worker and the feedback sidecar (docs/observability.md).

Each process serves its own registry (`WORKER_REGISTRY`, `FEEDBACK_REGISTRY`), so a scrape
shows only what that process does. The two agents share a set of names (`AgentMetrics`:
events in, batch sizes and times, consumer lag), told apart by the scrape target. Counting is
per micro-batch (`inc(n)`), never per event. Pure helpers (lag arithmetic, tallies) are kept
apart from the HTTP server so they can be tested without one.

Health (`/health` beside `/metrics`, `intentstream health`): a process is unhealthy when its
consumer lag is above 0 and no micro-batch has completed for `STALL_S` — input waits and
nothing moves it (a stalled partition, Triton or the broker down, a hung agent). Both are
known here already: `AgentMetrics.count_batch` runs once per completed batch and `set_lag`
at every lag refresh, so the check needs no hook of its own.

Readiness (`/ready`): healthy, and whatever the app registered with `set_readiness` says
(the worker: no rebalance under way, tables recovered; streams/worker/lookup.py). Liveness
keeps /health: a worker rebuilding its tables is not ready, but must not be restarted for it.
Other paths on the same port are registered by the app (`add_route`: the worker's
`/users/{id}`).
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

TP = tuple[str, int]  # (topic, partition)
K = TypeVar("K", bound=Hashable)

# Micro-batches hold up to `batch_max_events` (default 1000) events; Triton calls take
# milliseconds on a GPU and up to `score_timeout_s` when it struggles.
EVENT_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
TEXT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
LAG_REFRESH_S = 5.0  # how often each agent recomputes its consumer lag

LAG_HELP = (
    "Input records not yet processed: the partition's highwater (from the consumer's last "
    "fetch) minus the next offset this group will process. Exact on Apache Kafka; "
    "approximate on the embedded Tansu broker, which can misreport end offsets "
    "(docs/broker.md). Refreshed every 5 s, for the partitions assigned to this process."
)


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


WORKER_REGISTRY = _registry()
FEEDBACK_REGISTRY = _registry()


@dataclass
class Progress:
    """What the health check reads: when a batch last completed, and the lag last reported.

    Monotonic seconds; `started` stands in for the last batch until the first one completes,
    so a process that never completes one is a stall too."""

    started: float = field(default_factory=time.monotonic)
    last_batch: float | None = None
    lags: dict[TP, int] = field(default_factory=dict)


@dataclass(frozen=True)
class AgentMetrics:
    """What both agents report, under the same names, each in its own registry."""

    events_in: Counter
    reread: Counter
    batch_events: Histogram
    batch_seconds: Histogram
    lag: Gauge
    highwater: Gauge
    last_batch: Gauge
    lag_reported: set[TP] = field(default_factory=set)  # label sets now exported
    progress: Progress = field(default_factory=Progress)

    @classmethod
    def create(cls, registry: CollectorRegistry) -> AgentMetrics:
        created = cls._create(registry)
        _AGENTS[id(registry)] = created  # so the registry's HTTP server can answer /health
        return created

    @classmethod
    def _create(cls, registry: CollectorRegistry) -> AgentMetrics:
        return cls(
            events_in=Counter(
                "intentstream_events_in", "Input records taken from Kafka, by topic "
                "(re-read skipped input is counted in intentstream_input_reread_total)",
                ["topic"], registry=registry),
            reread=Counter(
                "intentstream_input_reread", "Input records Faust skipped during a rebalance "
                "and the agent re-read by offset (faust-streaming/faust#527)",
                ["topic"], registry=registry),
            batch_events=Histogram(
                "intentstream_batch_events", "Input records per micro-batch",
                buckets=EVENT_BUCKETS, registry=registry),
            batch_seconds=Histogram(
                "intentstream_batch_seconds", "Time to process one micro-batch, from taking "
                "it to acking it (includes Triton and waiting for the broker's acks)",
                buckets=SECONDS_BUCKETS, registry=registry),
            lag=Gauge("intentstream_consumer_lag", LAG_HELP, ["topic", "partition"],
                      registry=registry),
            highwater=Gauge(
                "intentstream_consumer_highwater", "Highwater (end offset) of each assigned "
                "input partition as last fetched; can be misreported on the embedded Tansu "
                "broker (docs/broker.md)", ["topic", "partition"], registry=registry),
            last_batch=Gauge(
                "intentstream_last_batch_completed_timestamp_seconds", "When the last "
                "micro-batch completed (Unix time; 0: none yet). /health reports a stall when "
                "lag > 0 and this is older than STALL_S", registry=registry),
        )

    def count_batch(self, topics: Iterable[str], seconds: float) -> None:
        """One processed micro-batch, given each of its records' topic."""
        n = 0
        for topic, count in tally(topics).items():
            self.events_in.labels(topic).inc(count)
            n += count
        self.batch_events.observe(n)
        self.batch_seconds.observe(seconds)
        self.progress.last_batch = time.monotonic()
        self.last_batch.set_to_current_time()

    def set_lag(self, highwaters: Mapping[TP, int | None], lags: Mapping[TP, int]) -> None:
        """Export the current lags; drop partitions no longer assigned to this process."""
        for topic, partition in self.lag_reported - lags.keys():
            self.lag.remove(topic, str(partition))
            self.highwater.remove(topic, str(partition))
        for (topic, partition), lag in lags.items():
            self.lag.labels(topic, str(partition)).set(lag)
            self.highwater.labels(topic, str(partition)).set(
                highwaters.get((topic, partition)) or 0)
        self.lag_reported.clear()
        self.lag_reported.update(lags)
        self.progress.lags = dict(lags)


_AGENTS: dict[int, AgentMetrics] = {}  # id(registry) -> its agent's metrics
WORKER = AgentMetrics.create(WORKER_REGISTRY)
FEEDBACK = AgentMetrics.create(FEEDBACK_REGISTRY)

# --- scoring worker --------------------------------------------------------------------------
DEAD_LETTERS = Counter(
    "intentstream_dead_letters", "Input records sent to the dead-letter topic, by reason code "
    "(not_json, missing_field, too_large, late_event, …)", ["reason"], registry=WORKER_REGISTRY)
SCORES = Counter(
    "intentstream_scores", "Intent scores produced; session=closed: the final scoring of a "
    "session a later event closed", ["session"], registry=WORKER_REGISTRY)
BATCH_TEXTS = Histogram(
    "intentstream_batch_texts", "Session texts per scoring call (one per user touched in a "
    "micro-batch, plus one per session it closed)", buckets=TEXT_BUCKETS,
    registry=WORKER_REGISTRY)
TRITON_SECONDS = Histogram(
    "intentstream_triton_latency_seconds", "Successful Triton scoring calls: all of a "
    "batch's gRPC requests (at most score_max_batch texts each, at least one per served "
    "instance), sent concurrently",
    buckets=SECONDS_BUCKETS, registry=WORKER_REGISTRY)
TRITON_RETRIES = Counter(
    "intentstream_triton_retries", "Failed Triton scoring calls, each retried after a "
    "backoff (the batch stalls meanwhile, nothing is dropped)", registry=WORKER_REGISTRY)
SKIPPED = Counter(
    "intentstream_input_skipped", "Valid input records not applied again, by kind: "
    "redelivered (at or below the user state's input position) or duplicate (a producer "
    "re-send of an event id already applied)", ["kind"], registry=WORKER_REGISTRY)
TRITON_TEXTS = Counter(
    "intentstream_triton_texts", "Texts sent to the Triton ensemble, by what triggered their "
    "scoring (event, session_close, silence): each silence score is one full ensemble row "
    "today (docs/silence.md)", ["trigger"], registry=WORKER_REGISTRY)
TRITON_REQUESTS = Counter(
    "intentstream_triton_requests", "Inference requests sent to Triton, by model: intent (the "
    "whole ensemble: tokenizer, network, stacker) or stacker (its last step alone: the "
    "cascade's cheap stage, streams/core/cascade.py)",
    ["model"], registry=WORKER_REGISTRY)
STACKER_ONLY = Counter(
    "intentstream_stacker_only_scores", "Scores that did not run the text network (the "
    "stacker alone: kept network outputs, or the version's typical ones), by trigger",
    ["trigger"], registry=WORKER_REGISTRY)
CASCADE_ROUTES = Counter(
    "intentstream_cascade_routes", "Scorings by cascade route (streams/core/cascade.py): "
    "network (a reading not read yet), exact, stale, typical (the stacker alone), or the reason "
    "a cheap answer was sent to the network after all (band, refresh, no_policy, typical_off, "
    "unseen_kinds)", ["route"],
    registry=WORKER_REGISTRY)
TIMERS_FIRED = Counter(
    "intentstream_timers_fired", "Event-time timers that did something, by kind: close (a "
    "session closed by the clock), silence (a silence milestone chosen)", ["kind"],
    registry=WORKER_REGISTRY)
ALERTS = Counter(
    "intentstream_alerts", "Alerts produced, by head (intent, churn) and whether "
    "exploration sent it (explored=true: below threshold, sent to learn)",
    ["head", "explored"], registry=WORKER_REGISTRY)

# --- feedback sidecar ------------------------------------------------------------------------
FEEDBACK_EXAMPLES = Counter(
    "intentstream_feedback_examples", "Labelled examples newly written to the feedback topic "
    "and store (redelivered ones not counted again)", registry=FEEDBACK_REGISTRY)
FEEDBACK_INVALID = Counter(
    "intentstream_feedback_invalid", "Input records the sidecar ignored, by input "
    "(events, scores, responses) and reason code", ["input", "reason"],
    registry=FEEDBACK_REGISTRY)
FEEDBACK_RESPONSES = Counter(
    "intentstream_feedback_responses", "Alert responses received, by status "
    "(a redelivered response counts again; the store keeps one)",
    ["status"], registry=FEEDBACK_REGISTRY)
FEEDBACK_OUTCOMES = Counter(
    "intentstream_feedback_outcomes", "What the sidecar did with its inputs: event_<outcome>, "
    "score_<outcome> (added, duplicate, expired, …) and expired predictions",
    ["outcome"], registry=FEEDBACK_REGISTRY)
FEEDBACK_PENDING_USERS = Gauge(
    "intentstream_feedback_pending_users", "Users with predictions waiting for their label "
    "horizon, in the partitions assigned to this process", registry=FEEDBACK_REGISTRY)


# --- pure helpers ----------------------------------------------------------------------------
def tally(values: Iterable[K]) -> dict[K, int]:
    return dict(collections.Counter(values))


def consumer_lag(
    highwaters: Mapping[TP, int | None],
    next_offset: Callable[[str, int], int | None],
    log_start: Mapping[TP, int] | None = None,
) -> dict[TP, int]:
    """Per partition: highwater − the next offset to process, never below 0.

    A partition without a known highwater (not fetched yet) is left out; one with nothing
    processed yet counts from its log start (when given; else it is left out). Tansu can
    report a highwater below the true end (docs/broker.md), which the floor at 0 hides."""
    lags: dict[TP, int] = {}
    for (topic, partition), highwater in highwaters.items():
        if highwater is None:
            continue
        position = next_offset(topic, partition)
        if position is None:
            position = (log_start or {}).get((topic, partition))
        if position is not None:
            lags[(topic, partition)] = max(0, highwater - position)
    return lags


def split_invalid(invalid: Mapping[str, int]) -> dict[tuple[str, str], int]:
    """The sidecar's "input:reason" tallies as (input, reason) label pairs."""
    out: dict[tuple[str, str], int] = {}
    for key, count in invalid.items():
        source, _, reason = key.rpartition(":")
        out[(source, reason)] = out.get((source, reason), 0) + count
    return out


@dataclass(frozen=True)
class Health:
    healthy: bool
    reason: str
    lag: int
    since_batch_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"healthy": self.healthy, "reason": self.reason, "lag": self.lag,
                "since_batch_s": round(self.since_batch_s, 1)}


def health(progress: Progress, now: float, stall_s: float) -> Health:
    """Unhealthy when input waits (lag > 0) and no batch completed for `stall_s` seconds."""
    lag = sum(progress.lags.values())
    since = now - (progress.last_batch if progress.last_batch is not None else progress.started)
    if lag > 0 and since >= stall_s:
        behind = sorted((f"{t}[{p}]" for (t, p), n in progress.lags.items() if n > 0))
        what = "no batch completed" if progress.last_batch is not None else \
            "no batch completed since start"
        return Health(False, f"stalled: lag {lag} ({', '.join(behind)}) and {what} for "
                             f"{since:.0f}s (STALL_S {stall_s:g})", lag, since)
    if lag > 0:
        return Health(True, f"processing: lag {lag}, last batch {since:.0f}s ago", lag, since)
    return Health(True, "caught up: lag 0", lag, since)


Readiness = Callable[[], tuple[bool, str]]  # (ready, one line why)
RETRY_AFTER_S = 5  # what a 503 from /ready (or a lookup) asks the caller to wait


def readiness(state: Health, app_ready: tuple[bool, str] | None) -> tuple[bool, str]:
    """Ready to serve: healthy, and ready by the app's own check (when it registered one)."""
    if not state.healthy:
        return False, state.reason
    if app_ready is not None and not app_ready[0]:
        return app_ready
    return True, state.reason if app_ready is None else f"{app_ready[1]}; {state.reason}"


# --- HTTP --------------------------------------------------------------------------------------
Response = tuple[str, list[tuple[str, str]], bytes]  # status line, headers, body
Route = Callable[[dict[str, Any]], Response]  # a WSGI environ -> its response
_ROUTES: dict[int, dict[str, Route]] = {}  # id(registry) -> path prefix -> handler
_READINESS: dict[int, Readiness] = {}  # id(registry) -> the app's readiness check


def add_route(registry: CollectorRegistry, prefix: str, handler: Route) -> None:
    """Serve paths starting with `prefix` on `registry`'s port by `handler` (in the HTTP
    server's thread: a handler that needs the app's event loop must hand the work over)."""
    _ROUTES.setdefault(id(registry), {})[prefix] = handler


def set_readiness(registry: CollectorRegistry, check: Readiness) -> None:
    """What /ready asks besides health (called in the HTTP server's thread)."""
    _READINESS[id(registry)] = check


def json_response(code: int, doc: Any, retry_after_s: int | None = None) -> Response:
    headers = [("Content-Type", "application/json")]
    if retry_after_s is not None:
        headers.append(("Retry-After", str(retry_after_s)))
    return f"{code} {HTTPStatus(code).phrase}", headers, json.dumps(doc).encode()

class MetricsPortError(RuntimeError):
    """The metrics port cannot be bound (taken, or privileged): a configuration error."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes and health probes every few seconds: no access log."""


def metrics_app(registry: CollectorRegistry, stall_s: float) -> Callable:
    """WSGI: /health and /ready answer 200 or 503 with a JSON reason; registered routes
    (`add_route`) their own answer; any other path the metrics."""
    metrics = make_wsgi_app(registry)
    agent = _AGENTS.get(id(registry))

    def probe(path: str) -> Response:
        if agent is None:
            return "404 Not Found", [("Content-Type", "text/plain")], \
                b"no health check for this registry\n"
        state = health(agent.progress, time.monotonic(), stall_s)
        if path == "/health":
            return json_response(200 if state.healthy else 503, state.as_dict())
        check = _READINESS.get(id(registry))
        ready, reason = readiness(state, None if check is None else check())
        return json_response(200 if ready else 503, {"ready": ready, "reason": reason},
                             None if ready else RETRY_AFTER_S)

    def app(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in ("/health", "/ready"):
            status, headers, body = probe(path)
        else:
            route = next((handler for prefix, handler in _ROUTES.get(id(registry), {}).items()
                          if path.startswith(prefix)), None)
            if route is None:
                return metrics(environ, start_response)
            status, headers, body = route(environ)
        start_response(status, headers)
        return [body]
    return app


def serve_metrics(
    port: int, registry: CollectorRegistry, setting: str, stall_s: float | None = None
) -> WSGIServer | None:
    """Serve `registry` on http://0.0.0.0:`port`/metrics, and /health, in a daemon thread;
    0 turns it off. `stall_s`: the health check's stall window (default: STALL_S).

    `setting` names the env var in the error, so the operator knows what to change."""
    if port <= 0:
        return None
    if stall_s is None:
        from streams.settings import get_settings

        stall_s = get_settings().stall_s
    try:
        server = make_server("0.0.0.0", port, metrics_app(registry, stall_s),
                             ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise MetricsPortError(
            f"cannot serve metrics on port {port}: {exc.strerror or exc}; set {setting} to a "
            "free port, or to 0 to turn the metrics endpoint off"
        ) from exc
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics-http").start()
    return server


def probe_health(port: int, host: str = "127.0.0.1", timeout_s: float = 5.0) -> tuple[bool, str]:
    """Ask a process's /health: (healthy, one line saying why). Unreachable is unhealthy."""
    url = f"http://{host}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return True, json.loads(resp.read())["reason"]
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return False, json.loads(body)["reason"]
        except (ValueError, KeyError):
            return False, f"{url} answered {exc.code}"
    except (OSError, ValueError, KeyError) as exc:
        return False, f"cannot ask {url}: {getattr(exc, 'reason', exc)}"

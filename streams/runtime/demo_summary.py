"""What `make demo` saw, tallied from the records it read, and the table it prints at the end.

Pure (no Kafka, no HTTP): scripts/demo.py feeds it the events it sent and the score, alert and
dead-letter documents it read back, plus the worker's /metrics text; tests feed it dicts.

Latency is per event: from the wall-clock moment the demo produced it to the arrival of the
first score whose window covers it (same user, window end ≥ event time). The worker scores a
user's whole micro-batch at once, so the score's newest event alone would understate it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from streams.core.quantiles import percentile

STRENGTH_ORDER = ("strong", "medium", "weak")  # inference.heads.STRENGTH_LABELS, display order
ALERT_HEAD_ORDER = ("intent", "churn")
EXAMPLES_PER_HEAD = 3
BATCH_METRIC = "intentstream_batch_texts"
LAG_METRIC = "intentstream_consumer_lag"


def batch_texts_from_metrics(text: str) -> tuple[float, float] | None:
    """(texts, scoring calls) from the worker's Prometheus text; None if it has no such series
    or no call yet."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in (f"{BATCH_METRIC}_sum", f"{BATCH_METRIC}_count"):
            try:
                found[name.rsplit("_", 1)[1]] = float(value.split()[0])
            except (ValueError, IndexError):
                return None
    if "sum" not in found or not found.get("count"):
        return None
    return found["sum"], found["count"]


def assigned_partitions(text: str, topic: str) -> int:
    """How many partitions of `topic` the worker reports a consumer lag for: it does so only
    once the partition is assigned and fetched, so > 0 means it is consuming."""
    prefix, label = f"{LAG_METRIC}{{", f'topic="{topic}"'
    return sum(1 for line in text.splitlines() if line.startswith(prefix) and label in line)


def format_score(doc: dict[str, Any]) -> str:
    strength = doc["strength"]
    return (
        f"{doc['user_id']:>12}  strength={strength['label']:<6} "
        f"p(strong)={strength['probs'].get('strong', 0):.2f}  "
        f"type={doc['intent_type']['label']:<9} churn={doc['churn']:.2f}  "
        f"events={doc['window']['n_events']:>3}  v{doc['model']['version']}  "
        f"| {doc['text'][-70:]}"
    )


def format_alert(doc: dict[str, Any]) -> str:
    """One live line per alert: head, user, probability, reason."""
    explored = " (explore)" if doc.get("explored") else ""
    return (f"{'ALERT ' + doc['head']:>12}  {doc['user_id']}  p={doc['probability']:.2f}"
            f"{explored}  {doc['reason']}")


def format_dead_letter(doc: dict[str, Any]) -> str:
    return f"{'DLQ':>12}  reason={doc['reason']}  {str(doc.get('detail', ''))[:60]}"


@dataclass
class DemoTally:
    events: int = 0
    malformed: int = 0
    users: set[str] = field(default_factory=set)
    strength: Counter[str] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)
    alert_examples: dict[str, list[str]] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    # user -> [(event time, produced at ms)] not yet covered by a score
    uncovered: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    # (scored_at, latency_ms) identify one scoring call: the fallback for the mean batch
    score_calls: set[tuple[Any, Any]] = field(default_factory=set)

    @property
    def scores(self) -> int:
        return sum(self.strength.values())

    def event_sent(self, user_id: str, ts: int, sent_ms: float) -> None:
        self.events += 1
        self.users.add(user_id)
        self.uncovered.setdefault(user_id, []).append((ts, sent_ms))

    def malformed_sent(self) -> None:
        self.malformed += 1

    def score_arrived(self, doc: dict[str, Any], arrived_ms: float) -> None:
        self.strength[doc["strength"]["label"]] += 1
        self.score_calls.add((doc.get("scored_at"), doc.get("latency_ms")))
        waiting = self.uncovered.get(doc["user_id"])
        if not waiting:
            return
        end = doc["window"]["end"]
        self.latencies_ms.extend(arrived_ms - sent for ts, sent in waiting if ts <= end)
        rest = [(ts, sent) for ts, sent in waiting if ts > end]
        if rest:
            self.uncovered[doc["user_id"]] = rest
        else:
            del self.uncovered[doc["user_id"]]

    def alert_arrived(self, doc: dict[str, Any]) -> None:
        head = doc["head"]
        self.alerts[head] += 1
        examples = self.alert_examples.setdefault(head, [])
        if len(examples) < EXAMPLES_PER_HEAD:
            examples.append(f"{doc['user_id']} p={doc['probability']:.2f}: {doc['reason']}")

    def dead_letter_arrived(self, doc: dict[str, Any]) -> None:
        self.dead_letters[str(doc.get("reason", "unknown"))] += 1

    def mean_batch(self, metrics_text: str | None) -> tuple[float, str] | None:
        """Mean texts per Triton call and where it came from: the worker's histogram, or
        else the distinct scoring calls seen in the scores."""
        parsed = batch_texts_from_metrics(metrics_text) if metrics_text else None
        if parsed:
            texts, calls = parsed
            return texts / calls, f"{calls:.0f} calls, worker /metrics"
        if self.score_calls:
            calls = len(self.score_calls)
            return self.scores / calls, f"{calls} calls, counted from scores"
        return None


def _counts(counter: Counter[str], order: tuple[str, ...] = ()) -> str:
    if not counter:
        return "none"
    keys = [k for k in order if k in counter] + sorted(k for k in counter if k not in order)
    return " · ".join(f"{k} {counter[k]}" for k in keys)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


def format_summary(tally: DemoTally, elapsed_s: float, metrics_text: str | None = None,
                   width: int = 110) -> str:
    """The end-of-demo table, one row per measure."""
    rows: list[tuple[str, str]] = [
        ("events", f"{tally.events} (+{tally.malformed} malformed) over {elapsed_s:.0f} s"),
        ("users", str(len(tally.users))),
        ("scores", f"{tally.scores}: {_counts(tally.strength, STRENGTH_ORDER)}"),
        ("alerts", f"{sum(tally.alerts.values())}: {_counts(tally.alerts, ALERT_HEAD_ORDER)}"),
    ]
    for head in [*ALERT_HEAD_ORDER, *sorted(set(tally.alert_examples) - set(ALERT_HEAD_ORDER))]:
        for example in tally.alert_examples.get(head, []):
            rows.append((f"  e.g. {head}", example))
    rows.append(("dead letters",
                 f"{sum(tally.dead_letters.values())}: {_counts(tally.dead_letters)}"))
    lat = tally.latencies_ms
    waiting = sum(len(events) for events in tally.uncovered.values())
    # after a Ctrl-C, events still queued have no latency yet: say how many, not hide them
    queued = f", {waiting} not scored yet" if waiting else ""
    rows.append(("event→score", f"p50 {_ms(percentile(lat, 0.5))} · p99 "
                                f"{_ms(percentile(lat, 0.99))} ({len(lat)} events{queued})"))
    batch = tally.mean_batch(metrics_text)
    rows.append(("Triton batch", "n/a" if batch is None
                 else f"mean {batch[0]:.1f} texts per call ({batch[1]})"))
    label_width = max(len(label) for label, _ in rows)
    rule = "─" * min(width, 72)
    lines = [f"── demo summary {rule[16:]}"]
    for label, value in rows:
        line = f"{label:<{label_width}}  {value}"
        lines.append(line if len(line) <= width else line[: width - 1] + "…")
    lines.append(rule)
    return "\n".join(lines)

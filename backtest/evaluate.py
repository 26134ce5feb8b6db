"""What a replay is worth: per-head quality, alert precision/recall vs threshold, alert lead
time and volume. Pure: replay results in, metrics (JSON-able) and plot data out.

Per head, the metrics are `training.evaluate.metrics.head_metrics`, the ones the model card reports:

- strength: predictions whose H has passed (`strong` = a purchase within H after the window);
- intent type: every prediction (the label is a rule over the window itself);
- churn: predictions whose D has passed; its decision threshold is the live alert threshold.

Alerts are judged with the live policy (`streams.core.alerts.decide`: threshold, event-time
cooldown, exploration), re-run over the replay's scores at each threshold of the sweep:

- precision: alerts whose window got the positive label (`strong`; churned), among alerts with
  a settled label;
- recall: outcomes with an alert of that head for the same user in the H before them. An
  outcome is a purchase (intent), or a churn onset (churn): the user's last event before at
  least D of silence. The alert must come strictly before a purchase; a churn alert may come
  with the last event itself (lead time 0). Only outcomes with a whole H of scored time before
  them count.
- lead time: for each covered outcome at the live thresholds, how long before it the earliest
  covering alert came.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from inference.heads import CHURN_LABELS, INTENT_TYPE_LABELS, STRENGTH_LABELS
from streams.core.alerts import ALERT_HEADS, Alert, AlertPolicy, Head, decide
from streams.core.records import IntentScore
from streams.core.timeunits import HOUR_MS
from training.evaluate.metrics import binary_columns, head_metrics

from .labels import Labelled, Labelling, Outcomes

THRESHOLDS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(1, 20))

# Which prediction head each alert head reads, and what a hit is.
ALERT_SOURCE: dict[Head, str] = {"intent": "strength", "churn": "churn"}


@dataclass(frozen=True, slots=True)
class Binary:
    """One binary scoring problem: labels (0/1) and the probability of 1."""

    y: np.ndarray
    p: np.ndarray

    @staticmethod
    def of(y: Sequence[bool | int], p: Sequence[float]) -> Binary:
        return Binary(np.asarray(y, dtype=np.int64), np.asarray(p, dtype=np.float64))


@dataclass
class Evaluation:
    """One model version's results: metrics for metrics.json, arrays for the plots."""

    name: str  # legend and table label, e.g. "intent_bert v2"
    metrics: dict[str, Any]
    curves: dict[str, Binary] = field(default_factory=dict)  # head -> its alert-relevant problem
    class_curves: dict[str, Binary] = field(default_factory=dict)  # intent type, one-vs-rest
    calibration: dict[str, Binary] = field(default_factory=dict)  # head -> (correct, confidence)
    sweep: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # alert head -> rows
    lead_times_h: dict[str, list[float]] = field(default_factory=dict)
    volume: dict[str, dict[int, int]] = field(default_factory=dict)  # head -> hour ms -> alerts


# --- prediction heads --------------------------------------------------------------------------


def head_evaluation(evaluation: Evaluation, predictions: Sequence[Labelled],
                    policy: AlertPolicy) -> dict[str, Any]:
    """Metrics of the three heads; fills the evaluation's curves. Returns the metrics."""
    out: dict[str, Any] = {}
    rows = [p for p in predictions if p.label_strength is not None]
    probs = np.array([[p.strength[c] for c in STRENGTH_LABELS] for p in rows]).reshape(-1, 3)
    y = [STRENGTH_LABELS.index(p.label_strength or "") for p in rows]
    out["strength"] = _metrics(y, probs, STRENGTH_LABELS)
    evaluation.curves["strength"] = Binary.of([v == 0 for v in y], probs[:, 0])
    evaluation.calibration["strength"] = evaluation.curves["strength"]

    probs = np.array([[p.intent_type[c] for c in INTENT_TYPE_LABELS] for p in predictions])
    probs = probs.reshape(-1, len(INTENT_TYPE_LABELS))
    y = [INTENT_TYPE_LABELS.index(p.label_intent_type) for p in predictions]
    out["intent_type"] = _metrics(y, probs, INTENT_TYPE_LABELS)
    for c, label in enumerate(INTENT_TYPE_LABELS):
        if c in y:
            evaluation.class_curves[label] = Binary.of([v == c for v in y], probs[:, c])
    if len(y):
        evaluation.calibration["intent_type"] = Binary.of(
            probs.argmax(axis=1) == np.asarray(y), probs.max(axis=1))

    rows = [p for p in predictions if p.label_churn is not None]
    y = [int(bool(p.label_churn)) for p in rows]
    p_churn = np.array([p.churn for p in rows], dtype=np.float64)
    out["churn"] = _metrics(y, binary_columns(p_churn), CHURN_LABELS,
                            threshold=policy.churn_threshold)
    evaluation.curves["churn"] = Binary.of(y, p_churn)
    evaluation.calibration["churn"] = evaluation.curves["churn"]
    return out


def _metrics(y: Sequence[int], probs: np.ndarray, labels: Sequence[str],
             threshold: float | None = None) -> dict[str, Any]:
    if not len(y):
        return {"n": 0}  # nothing settled for this head in the range
    return head_metrics(y, probs, labels, threshold=threshold)


# --- alerts -------------------------------------------------------------------------------------


def unique_scores(records: Sequence[IntentScore]) -> list[IntentScore]:
    """Each prediction once, in score order (a closed session's final scoring repeats the id
    of its last open one; the live policy decides the repeat the same way)."""
    seen: set[str] = set()
    out = []
    for record in records:
        if record.prediction_id not in seen:
            seen.add(record.prediction_id)
            out.append(record)
    return out


def probability(record: IntentScore, head: Head) -> float:
    return record.strength.probs["strong"] if head == "intent" else record.churn


def is_hit(prediction: Labelled, head: Head) -> bool | None:
    """Whether an alert of this head on this prediction was right (None: not settled)."""
    if head == "intent":
        return None if prediction.label_strength is None else prediction.label_strength == "strong"
    return prediction.label_churn


def policy_alerts(records: Sequence[IntentScore], policy: AlertPolicy,
                  head: Head) -> list[IntentScore]:
    """The scores the live policy alerts on for one head (cooldown per user in event time)."""
    last: dict[str, int] = {}
    alerted = []
    for record in records:
        previous = last.get(record.user_id)
        state = None if previous is None else {"at": previous, "alert_id": ""}
        decision = decide(head, probability(record, head), record.prediction_id,
                          record.window.end, state, policy)
        if decision.send:
            alerted.append(record)
            last[record.user_id] = record.window.end
    return alerted


def outcome_times(outcomes: Outcomes, head: Head) -> dict[str, list[int]]:
    return outcomes.purchases if head == "intent" else outcomes.churn_onsets


def covering_alert(alert_times: Sequence[int], outcome: int, head: Head,
                   lookback_ms: int) -> int | None:
    """The earliest alert time within the lookback before the outcome, if any."""
    lo = bisect.bisect_left(alert_times, outcome - lookback_ms)
    hi = (bisect.bisect_left if head == "intent" else bisect.bisect_right)(alert_times, outcome)
    return alert_times[lo] if lo < hi else None


def recall_and_leads(alert_times: dict[str, list[int]], outcomes: dict[str, list[int]],
                     head: Head, lookback_ms: int) -> tuple[int, int, list[float]]:
    """(outcomes, covered, lead times in hours of the covered ones)."""
    total, leads = 0, []
    for user_id, times in outcomes.items():
        mine = sorted(alert_times.get(user_id, []))
        for outcome in times:
            total += 1
            first = covering_alert(mine, outcome, head, lookback_ms)
            if first is not None:
                leads.append((outcome - first) / HOUR_MS)
    return total, len(leads), leads


def alert_sweep(records: Sequence[IntentScore], labelled: dict[str, Labelled],
                outcomes: Outcomes, policy: AlertPolicy, lookback_ms: int) -> dict[str, Any]:
    """Per alert head and threshold: alerts, precision and recall under the live policy."""
    unique = unique_scores(records)
    out: dict[str, Any] = {}
    for head in ALERT_HEADS:
        rows = []
        for threshold in THRESHOLDS:
            swept = replace(policy, intent_threshold=threshold, churn_threshold=threshold)
            rows.append(_alert_quality(policy_alerts(unique, swept, head), labelled, outcomes,
                                       head, lookback_ms) | {"threshold": threshold})
        out[head] = rows
    return out


def _alert_quality(alerted: Sequence[IntentScore], labelled: dict[str, Labelled],
                   outcomes: Outcomes, head: Head, lookback_ms: int) -> dict[str, Any]:
    hits = [is_hit(labelled[r.prediction_id], head) for r in alerted
            if r.prediction_id in labelled]
    settled = [h for h in hits if h is not None]
    times: dict[str, list[int]] = defaultdict(list)
    for record in alerted:
        times[record.user_id].append(record.window.end)
    total, covered, _ = recall_and_leads(times, outcome_times(outcomes, head), head, lookback_ms)
    return {
        "alerts": len(alerted),
        "alerts_settled": len(settled),
        "precision": sum(settled) / len(settled) if settled else None,
        "outcomes": total,
        "recall": covered / total if total else None,
    }


def live_alerts(evaluation: Evaluation, alerts: Sequence[Alert], labelled: dict[str, Labelled],
                outcomes: Outcomes, policy: AlertPolicy, lookback_ms: int) -> dict[str, Any]:
    """The alerts the replay actually raised (decide_alerts): quality, lead time, volume."""
    out: dict[str, Any] = {}
    for head in ALERT_HEADS:
        mine = [a for a in alerts if a.head == head]
        times: dict[str, list[int]] = defaultdict(list)
        for alert in mine:
            times[alert.user_id].append(alert.event_time)
        total, covered, leads = recall_and_leads(times, outcome_times(outcomes, head), head,
                                                 lookback_ms)
        hits = [is_hit(labelled[a.prediction_id], head) for a in mine
                if a.prediction_id in labelled]
        settled = [h for h in hits if h is not None]
        per_hour = Counter(a.event_time // HOUR_MS * HOUR_MS for a in mine)
        evaluation.lead_times_h[head] = leads
        evaluation.volume[head] = dict(sorted(per_hour.items()))
        out[head] = {
            "threshold": policy.threshold(head),
            "alerts": len(mine),
            "explored": sum(a.explored for a in mine),
            "precision": sum(settled) / len(settled) if settled else None,
            "alerts_settled": len(settled),
            "outcomes": total,
            "recall": covered / total if total else None,
            "lead_time_h": _quantiles(leads),
            "per_hour": {"max": max(per_hour.values(), default=0),
                         "hours_with_alerts": len(per_hour)},
        }
    return out


def _quantiles(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    q = np.quantile(np.asarray(values), [0.25, 0.5, 0.75])
    return {"n": len(values), "p25": float(q[0]), "median": float(q[1]), "p75": float(q[2])}


# --- one run, evaluated -------------------------------------------------------------------------


def evaluate_run(name: str, records: Sequence[IntentScore], alerts: Sequence[Alert],
                 labelling: Labelling, policy: AlertPolicy, lookback_ms: int,
                 counts: dict[str, int]) -> Evaluation:
    evaluation = Evaluation(name=name, metrics={})
    predictions = labelling.predictions
    labelled = {p.prediction_id: p for p in predictions}
    evaluation.sweep = alert_sweep(records, labelled, labelling.outcomes, policy, lookback_ms)
    evaluation.metrics = {
        "counts": {
            **counts,
            "predictions_labelled": len(predictions),
            "predictions_settled": sum(p.settled for p in predictions),
            "strength_labelled": sum(p.label_strength is not None for p in predictions),
            "churn_labelled": sum(p.label_churn is not None for p in predictions),
            "expired": labelling.expired,
            "purchases": sum(map(len, labelling.outcomes.purchases.values())),
            "churn_onsets": sum(map(len, labelling.outcomes.churn_onsets.values())),
        },
        "heads": head_evaluation(evaluation, predictions, policy),
        "alerts": live_alerts(evaluation, alerts, labelled, labelling.outcomes, policy,
                              lookback_ms),
        "alert_sweep": evaluation.sweep,
    }
    return evaluation


def compare(primary: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Primary minus baseline, per head, for the headline metrics."""
    out: dict[str, Any] = {}
    for head, metrics in primary["heads"].items():
        other = baseline["heads"].get(head, {})
        out[head] = {
            key: metrics[key] - other[key]
            for key in ("macro_f1", "roc_auc", "pr_auc", "ece")
            if metrics.get(key) is not None and other.get(key) is not None
        }
    return out

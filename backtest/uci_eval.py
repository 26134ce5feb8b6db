"""The real-data backtest: UCI Online Shoppers sessions, replayed and scored, against `Revenue`.

Data: UCI Online Shoppers Purchasing Intention Dataset (Sakar, Polat, Katircioglu, Kastro
2019, Neural Computing and Applications 31, 6893-6908), CC BY 4.0.

The sessions become events with `training.data.uci` (the conversion training uses), go through the
replay engine with one tick for the whole file (so every session is scored once, at its end:
the window training evaluates), and P(strong) of each session's final score is read as
P(purchase). Evaluation is on the test part of the comparable split
(`train_test_split(test_size=0.3, stratify=Revenue, random_state=0)`). The peer, in the same
run, is gradient boosting on the original tabular columns, trained on the training part.

At each level of information (`training.data.uci.LEVELS`: page views only; + analytics; + context)
the same run sets side by side HistGradientBoosting (random_state=0) on the level's CSV columns
and ours: the stacked model (`training.data.uci.fit_stacker`) over the level's FEATURES, as the
replayed worker computed them (each score record's `features.values`), and the served text
model's strength probabilities of the same score, fitted on the training part
(`level_comparison`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from inference.heads import STRENGTH_LABELS
from streams.core.alerts import Alert, AlertPolicy
from streams.core.records import IntentScore
from training.data import uci
from training.evaluate.metrics import binary_columns, head_metrics

from .evaluate import THRESHOLDS, Binary, Evaluation
from .sources import UciRows

LABELS = ("no_revenue", "revenue")
CATEGORICAL = ("Month", "VisitorType", "Weekend")
TARGET = "Revenue"
PEER_NAME = "gradient boosting, tabular columns"


def final_scores(records: Sequence[IntentScore]) -> dict[str, IntentScore]:
    """Per user, the score of the newest window (last session, most events)."""
    best: dict[str, IntentScore] = {}
    for record in records:
        current = best.get(record.user_id)
        key = (record.window.end, record.window.n_events)
        if current is None or key >= (current.window.end, current.window.n_events):
            best[record.user_id] = record
    return best


def tabular_features(rows: Sequence[Mapping[str, str]],
                     columns: Sequence[str] | None = None) -> tuple[np.ndarray, list[bool]]:
    """The given columns (default: all but the target); categorical ones as sorted-vocabulary
    codes."""
    columns = [c for c in rows[0] if c != TARGET] if columns is None else list(columns)
    vocab = {c: {v: i for i, v in enumerate(sorted({r[c] for r in rows}))} for c in CATEGORICAL}
    matrix = np.array([[vocab[c][r[c]] if c in vocab else float(r[c]) for c in columns]
                       for r in rows], dtype=np.float64)
    return matrix, [c in vocab for c in columns]


def peer_probabilities(rows: Sequence[Mapping[str, str]], y: np.ndarray, train: np.ndarray,
                       test: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
    """Gradient boosting on the tabular columns, fitted on `train`: P(revenue) on `test`."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # ~1 s to import: UCI only

    features, categorical = tabular_features(rows, columns)
    model = HistGradientBoostingClassifier(random_state=0, categorical_features=categorical)
    model.fit(features[train], y[train])
    return np.asarray(model.predict_proba(features[test])[:, 1], dtype=np.float64)


def threshold_sweep(binary: Binary) -> list[dict[str, Any]]:
    """Precision and recall of `p >= t` against the label, per threshold."""
    rows = []
    for threshold in THRESHOLDS:
        chosen = binary.p >= threshold
        hits = int((chosen & (binary.y == 1)).sum())
        positives = int(binary.y.sum())
        rows.append({
            "threshold": threshold,
            "alerts": int(chosen.sum()),
            "precision": hits / int(chosen.sum()) if chosen.any() else None,
            "recall": hits / positives if positives else None,
        })
    return rows


def _evaluation(name: str, binary: Binary, threshold: float) -> Evaluation:
    evaluation = Evaluation(name=name, metrics={})
    evaluation.curves["revenue"] = binary
    evaluation.calibration["revenue"] = binary
    evaluation.sweep["revenue"] = threshold_sweep(binary)
    evaluation.metrics = {
        "heads": {"revenue": head_metrics(binary.y, binary_columns(binary.p), LABELS,
                                          threshold=threshold)},
        "alert_sweep": evaluation.sweep,
    }
    return evaluation


def evaluate_uci(name: str, records: Sequence[IntentScore], alerts: Sequence[Alert],
                 data: UciRows, policy: AlertPolicy,
                 counts: Mapping[str, int]) -> Evaluation:
    """Our model on the test part: P(strong) of each session's final score vs Revenue."""
    _, test = uci.comparable_split(data.revenue)
    finals = final_scores(records)
    missing = [data.users[i] for i in test if data.users[i] not in finals]
    if missing:
        raise RuntimeError(f"{len(missing)} UCI sessions were not scored, e.g. {missing[:3]}")
    y = np.array([int(data.revenue[i]) for i in test], dtype=np.int64)
    p = np.array([finals[data.users[i]].strength.probs["strong"] for i in test])
    evaluation = _evaluation(name, Binary(y, p), policy.intent_threshold)
    alerted = {a.user_id for a in alerts if a.head == "intent"}
    chosen = np.array([data.users[i] in alerted for i in test])
    hits = int((chosen & (y == 1)).sum())
    evaluation.metrics["counts"] = dict(counts)
    evaluation.metrics["live_alerts"] = {
        "threshold": policy.intent_threshold,
        "alerts_on_test_rows": int(chosen.sum()),
        "precision": hits / int(chosen.sum()) if chosen.any() else None,
        "recall": hits / int(y.sum()) if y.any() else None,
    }
    return evaluation


def evaluate_peer(data: UciRows, policy: AlertPolicy) -> Evaluation:
    train, test = uci.comparable_split(data.revenue)
    y = np.asarray(data.revenue, dtype=np.int64)
    p = peer_probabilities(data.rows, y, train, test)
    return _evaluation(PEER_NAME, Binary(y[test], p), policy.intent_threshold)


def split_summary(data: UciRows) -> dict[str, Any]:
    train, test = uci.comparable_split(data.revenue)
    return {
        "data": uci.ATTRIBUTION,
        "split": "train_test_split(test_size=0.3, stratify=Revenue, random_state=0)",
        "rows": len(data.revenue),
        "train_rows": len(train),
        "test_rows": len(test),
        "test_purchase_rate": float(np.mean([data.revenue[i] for i in test])),
        "score": "P(strong) of the session's final window (events only: page views, their "
                 "kind and dwell; no GA aggregates, month, visitor or traffic columns)",
    }


# --- each level of information: the tabular peer and ours, side by side --------------------------


def text_outputs(record: IntentScore) -> list[float]:
    """The text model's strength probabilities (strong, medium, weak): the head UCI fine-tuning
    trains on Revenue (`training.train.run_uci`). The intent-type and churn heads, which the
    served stacker also reads, learn nothing from UCI, and their 7 untrained columns cost the
    stacker (measured: docs/backtest.md)."""
    return [record.strength.probs[label] for label in STRENGTH_LABELS]


def _roc_pr(y: np.ndarray, p: np.ndarray) -> dict[str, float | None]:
    metrics = head_metrics(y, binary_columns(p), LABELS, threshold=0.5)
    return {"roc_auc": metrics["roc_auc"], "pr_auc": metrics["pr_auc"]}


def level_comparison(records: Sequence[IntentScore], data: UciRows) -> dict[str, Any]:
    """Per level (`training.data.uci.LEVELS`), ROC-AUC and PR-AUC on the test part of: the peer
    (HistGradientBoosting, random_state=0, on the level's CSV columns), ours (the stacker over
    the level's FEATURES and the text strength probabilities) and, to show what the text adds,
    the same stacker on the features alone."""
    finals = final_scores(records)
    scored = [finals[user] for user in data.users]
    unfeatured = [r.user_id for r in scored if r.features is None]
    if unfeatured:
        raise RuntimeError(f"{len(unfeatured)} UCI scores carry no feature row, e.g. "
                           f"{unfeatured[:3]}")
    features = np.array([r.features.values for r in scored if r.features is not None])
    text = np.array([text_outputs(r) for r in scored])
    y = np.asarray(data.revenue, dtype=np.int64)
    train, test = uci.comparable_split(data.revenue)
    # P(strong) alone on both parts: a text model fine-tuned on the training part scores it
    # better than the test part, and the stacker then trusts the text more than it should.
    out: dict[str, Any] = {"text_model_alone": {
        "train_part": _roc_pr(y[train], text[train, 0]), "test": _roc_pr(y[test], text[test, 0])}}
    for level in uci.LEVELS:
        own = features[:, uci.level_columns(level)]
        stacked = np.hstack([own, text])
        ours = uci.fit_stacker(stacked[train], y[train]).predict_proba(stacked[test])[:, 1]
        alone = uci.fit_stacker(own[train], y[train]).predict_proba(own[test])[:, 1]
        peer = peer_probabilities(data.rows, y, train, test, level.columns)
        row = {"peer": _roc_pr(y[test], peer), "ours": _roc_pr(y[test], ours),
               "ours_features_only": _roc_pr(y[test], alone),
               "peer_columns": list(level.columns), "our_features": list(level.features)}
        a, b = row["ours"]["roc_auc"], row["peer"]["roc_auc"]
        row["ours_minus_peer_roc_auc"] = None if a is None or b is None else a - b
        out[level.name] = row
    return out

"""The real-data backtest: UCI Online Shoppers sessions, replayed and scored, against `Revenue`.

Data: UCI Online Shoppers Purchasing Intention Dataset (Sakar, Polat, Katircioglu, Kastro
2019, Neural Computing and Applications 31, 6893-6908), CC BY 4.0.

The sessions become events with `training.uci` (the conversion training uses), go through the
replay engine with one tick for the whole file (so every session is scored once, at its end:
the window training evaluates), and P(strong) of each session's final score is read as
P(purchase). Evaluation is on the test part of the comparable split
(`train_test_split(test_size=0.3, stratify=Revenue, random_state=0)`). The peer, in the same
run, is gradient boosting on the original tabular columns, trained on the training part.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streams.core.alerts import Alert, AlertPolicy
from streams.core.records import IntentScore
from training import uci
from training.metrics import binary_columns, head_metrics

from .evaluate import THRESHOLDS, Binary, Evaluation
from .sources import UciRows

LABELS = ("no_revenue", "revenue")
CATEGORICAL = ("Month", "VisitorType", "Weekend")
TARGET = "Revenue"
PEER_NAME = "gradient boosting, tabular columns"
ATTRIBUTION = ("UCI Online Shoppers Purchasing Intention Dataset (Sakar, Polat, Katircioglu, "
               "Kastro 2019, Neural Computing and Applications 31, 6893-6908), CC BY 4.0.")


def final_scores(records: Sequence[IntentScore]) -> dict[str, IntentScore]:
    """Per user, the score of the newest window (last session, most events)."""
    best: dict[str, IntentScore] = {}
    for record in records:
        current = best.get(record.user_id)
        key = (record.window.end, record.window.n_events)
        if current is None or key >= (current.window.end, current.window.n_events):
            best[record.user_id] = record
    return best


def tabular_features(rows: Sequence[Mapping[str, str]]) -> tuple[np.ndarray, list[bool]]:
    """All columns but the target; categorical ones as sorted-vocabulary codes."""
    columns = [c for c in rows[0] if c != TARGET]
    vocab = {c: {v: i for i, v in enumerate(sorted({r[c] for r in rows}))} for c in CATEGORICAL}
    matrix = np.array([[vocab[c][r[c]] if c in vocab else float(r[c]) for c in columns]
                       for r in rows], dtype=np.float64)
    return matrix, [c in vocab for c in columns]


def peer_probabilities(rows: Sequence[Mapping[str, str]], y: np.ndarray, train: np.ndarray,
                       test: np.ndarray) -> np.ndarray:
    """Gradient boosting on the tabular columns, fitted on `train`: P(revenue) on `test`."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # ~1 s to import: UCI only

    features, categorical = tabular_features(rows)
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
        "data": ATTRIBUTION,
        "split": "train_test_split(test_size=0.3, stratify=Revenue, random_state=0)",
        "rows": len(data.revenue),
        "train_rows": len(train),
        "test_rows": len(test),
        "test_purchase_rate": float(np.mean([data.revenue[i] for i in test])),
        "score": "P(strong) of the session's final window (events only: page views, their "
                 "kind and dwell; no GA aggregates, month, visitor or traffic columns)",
    }

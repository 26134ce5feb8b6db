"""Per-head evaluation metrics. Pure: label indices and probability rows in, a JSON-able dict out.

Every head is scored the same way, binary churn included (as the two columns [no churn, churn]):
- macro-F1 of the predicted label (argmax, or for churn a threshold chosen on validation);
- ROC-AUC and PR-AUC (average precision), one-vs-rest and macro-averaged over the classes that
  occur in `y_true` (a class absent from the evaluated set has no defined AUC; it is listed);
- expected calibration error (ECE) of the top label's probability, equal-width bins;
- the confusion matrix (rows = true label, columns = predicted).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, confusion_matrix, f1_score, roc_auc_score

ECE_BINS = 15


def binary_columns(p_positive: np.ndarray) -> np.ndarray:
    """[n] probabilities of the positive class → [n, 2] rows (negative, positive)."""
    p = np.asarray(p_positive, dtype=np.float64)
    return np.stack([1 - p, p], axis=1)


def expected_calibration_error(
    y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS
) -> float:
    """Mean |accuracy - confidence| of the top label over equal-width confidence bins, weighted
    by how many rows fall in each bin."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(total)


def best_threshold(y_true: Sequence[int], p_positive: np.ndarray) -> float:
    """The decision threshold on P(positive) that maximises macro-F1 (chosen on validation)."""
    # Every distinct probability is a candidate; counts for all of them at once via one sort.
    p = np.asarray(p_positive, dtype=np.float64)
    y = np.asarray(y_true).astype(bool)
    order = np.argsort(p, kind="stable")
    p_sorted, positives_before = p[order], np.concatenate([[0], np.cumsum(y[order])])
    candidates = np.unique(p)
    first = np.searchsorted(p_sorted, candidates, side="left")  # rows below the threshold
    predicted = len(p) - first
    tp = y.sum() - positives_before[first]
    fp, fn = predicted - tp, y.sum() - tp
    tn = len(p) - tp - fp - fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_pos = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_neg = np.where(2 * tn + fp + fn > 0, 2 * tn / (2 * tn + fp + fn), 0.0)
    return float(candidates[int(np.argmax(f1_pos + f1_neg))])


def predicted_labels(probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Argmax, or for a binary head with a threshold: positive when P(positive) >= threshold."""
    if threshold is None:
        return np.asarray(probs).argmax(axis=1)
    if probs.shape[1] != 2:
        raise ValueError("a threshold applies to a binary head only")
    return (np.asarray(probs)[:, 1] >= threshold).astype(np.int64)


def head_metrics(
    y_true: Sequence[int],
    probs: np.ndarray,
    labels: Sequence[str],
    *,
    threshold: float | None = None,
) -> dict[str, Any]:
    """Metrics of one head. `probs` is [n, len(labels)]; `threshold` (binary heads only) turns
    P(labels[1]) into the predicted label instead of argmax."""
    y = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = len(labels)
    if probs.shape != (len(y), k):
        raise ValueError(f"probs shape {probs.shape} != ({len(y)}, {k})")
    pred = predicted_labels(probs, threshold)
    scored = [c for c in range(k) if 0 < (y == c).sum() < len(y)]
    columns = [1] if k == 2 else scored  # binary: the positive class's curve is the AUC
    roc = [roc_auc_score(y == c, probs[:, c]) for c in columns if c in scored]
    pr = [average_precision_score(y == c, probs[:, c]) for c in columns if c in scored]
    return {
        "n": len(y),
        "macro_f1": float(
            f1_score(y, pred, labels=list(range(k)), average="macro", zero_division=0)
        ),
        "roc_auc": float(np.mean(roc)) if roc else None,
        "pr_auc": float(np.mean(pr)) if pr else None,
        "ece": expected_calibration_error(y, probs),
        "accuracy": float((pred == y).mean()),
        "threshold": threshold,
        "support": {labels[c]: int((y == c).sum()) for c in range(k)},
        "absent_from_auc": [labels[c] for c in range(k) if c not in scored],
        "confusion_matrix": {
            "labels": list(labels),
            "rows_true_cols_pred": confusion_matrix(y, pred, labels=list(range(k))).tolist(),
        },
    }


def macro_f1_from_predictions(y_true: np.ndarray, pred: np.ndarray, k: int) -> float:
    """Macro-F1 over all k classes from a confusion count (fast enough to bootstrap)."""
    counts = np.bincount(y_true * k + pred, minlength=k * k).reshape(k, k)
    tp = np.diag(counts)
    denominator = counts.sum(axis=0) + counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(denominator > 0, 2 * tp / denominator, 0.0)
    return float(f1.mean())


def bootstrap_delta_interval(
    y_true: Sequence[int],
    pred_a: Sequence[int],
    pred_b: Sequence[int],
    k: int,
    groups: Sequence[str],
    *,
    rounds: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """95% interval of macro-F1(a) - macro-F1(b) over resamples of whole groups (users), so
    windows of one user move together, as they are not independent."""
    y, a, b = (np.asarray(v, dtype=np.int64) for v in (y_true, pred_a, pred_b))
    names, group_of_row = np.unique(np.asarray(groups), return_inverse=True)
    rows_of = [np.flatnonzero(group_of_row == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    deltas = np.empty(rounds)
    for r in range(rounds):
        rows = np.concatenate([rows_of[g] for g in rng.integers(0, len(names), len(names))])
        deltas[r] = macro_f1_from_predictions(y[rows], a[rows], k) - macro_f1_from_predictions(
            y[rows], b[rows], k
        )
    low, high = np.percentile(deltas, [2.5, 97.5])
    return float(low), float(high)

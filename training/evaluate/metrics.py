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

from inference.heads import MODEL_HEADS

ECE_BINS = 15
HEADLINE_METRIC = "macro_f1"  # the metric "beats the baseline" is judged on, every head


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


def user_resamples(users: Sequence[str], rounds: int, seed: int) -> list[np.ndarray]:
    """Row indices of `rounds` resamples of whole users (a user's windows move together, as
    they are not independent)."""
    names, group = np.unique(np.asarray(users), return_inverse=True)
    rows_of = [np.flatnonzero(group == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    return [np.concatenate([rows_of[g] for g in rng.integers(0, len(names), len(names))])
            for _ in range(rounds)]


def interval(values: Sequence[float | None]) -> list[float] | None:
    """The 95% percentile interval of the values that exist (None: none does)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    low, high = np.percentile(kept, [2.5, 97.5])
    return [float(low), float(high)]


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
    """95% interval of macro-F1(a) - macro-F1(b) over resamples of whole groups (users)."""
    y, a, b = (np.asarray(v, dtype=np.int64) for v in (y_true, pred_a, pred_b))
    deltas = [macro_f1_from_predictions(y[rows], a[rows], k)
              - macro_f1_from_predictions(y[rows], b[rows], k)
              for rows in user_resamples(groups, rounds, seed)]
    low, high = interval(deltas) or (0.0, 0.0)
    return float(low), float(high)


def ranked_roc_auc(y: np.ndarray, probs: np.ndarray) -> float | None:
    """ROC-AUC as head_metrics computes it (binary: the positive column; else one-vs-rest macro
    over classes present), by ranks: fast enough to bootstrap."""
    k = probs.shape[1]
    columns = [1] if k == 2 else range(k)
    values = [_binary_auc(y == c, probs[:, c]) for c in columns if 0 < (y == c).sum() < len(y)]
    return float(np.mean(values)) if values else None


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float:
    from scipy.stats import rankdata  # scikit-learn's dependency; only bootstraps need it

    ranks = rankdata(score)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# --- the model's heads, as the card reports them ----------------------------------------------


def columns(head: str, probs: np.ndarray) -> np.ndarray:
    """[n, classes] probabilities of a head (churn's [n] becomes two columns)."""
    return binary_columns(probs) if head == "churn" else probs


def compute_metrics(
    val_targets: dict[str, list[int]],
    val_probs: dict[str, np.ndarray],
    test_targets: dict[str, list[int]],
    test_probs: dict[str, np.ndarray],
) -> dict[str, dict[str, Any]]:
    """Test metrics per head; churn's decision threshold is chosen on validation."""
    out = {}
    for head, labels in MODEL_HEADS.items():
        threshold = None
        if head == "churn":
            threshold = best_threshold(val_targets[head], columns(head, val_probs[head])[:, 1])
        out[head] = head_metrics(
            test_targets[head], columns(head, test_probs[head]), labels, threshold=threshold
        )
    return out


def validation_score(head: str, y: Sequence[int], probs: np.ndarray) -> float:
    """The baseline's model-selection score: the headline metric on validation."""
    threshold = best_threshold(y, probs[:, 1]) if head == "churn" else None
    return head_metrics(y, probs, MODEL_HEADS[head], threshold=threshold)[HEADLINE_METRIC]


def compare(
    model: dict[str, Any],
    baseline: dict[str, Any],
    y: dict[str, list[int]],
    model_probs: dict[str, np.ndarray],
    baseline_probs: dict[str, np.ndarray],
    users: Sequence[str],
    seed: int,
) -> dict[str, Any]:
    """Per head and metric: both values, the difference, and who is better (ECE: lower); for
    the headline metric also a 95% interval of the difference, resampling test users."""
    out: dict[str, Any] = {}
    for head, labels in MODEL_HEADS.items():
        interval = bootstrap_delta_interval(
            y[head],
            predicted_labels(columns(head, model_probs[head]), model[head]["threshold"]),
            predicted_labels(columns(head, baseline_probs[head]), baseline[head]["threshold"]),
            len(labels), users, seed=seed,
        )
        rows = {}
        for metric in ("macro_f1", "roc_auc", "pr_auc", "ece"):
            a, b = model[head][metric], baseline[head][metric]
            if a is None or b is None:
                continue
            better = a < b if metric == "ece" else a > b
            rows[metric] = {"model": a, "baseline": b, "delta": a - b, "model_better": better}
        out[head] = {
            "metrics": rows,
            "beats_baseline": rows[HEADLINE_METRIC]["model_better"],
            "headline_delta_ci95": interval,
        }
    return out


def alert_precision_recall(users: Sequence[str], scores: np.ndarray, threshold: float,
                           positives: set[str], population: set[str]) -> dict[str, Any]:
    """Users alerted (any of their scores at or above `threshold`) against the users who truly
    are `positives`, among `population`: precision over the alerted, recall over the positives
    (None where there is no one to divide by), with the counts."""
    alerted = {u for u, s in zip(users, scores, strict=True) if s >= threshold} & population
    truth = positives & population
    hits = len(alerted & truth)
    return {"threshold": threshold, "users": len(population), "positives": len(truth),
            "alerted": len(alerted), "true_alerts": hits,
            "precision": hits / len(alerted) if alerted else None,
            "recall": hits / len(truth) if truth else None}

"""The gate: a candidate version is published only if it beats the live one.

Two rules, on the same shape (a mean gain over a margin, no head dropping past a limit):

- `gate` (`intentstream retrain`, on feedback): macro-F1 of each head at the networks' 0.5.
- `ranking_gate` (`intentstream train --events`, the platform's own history): ROC-AUC of the
  *served* ensembles (network + stacker step, training/served.py) per head that has
  labels on the history's latest settled part, each difference with a 95% interval over
  resampled users, log-loss beside it. A ranking metric, because the served heads are read
  as scores (alert thresholds are chosen on them), not at a fixed threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from inference.heads import MODEL_HEADS
from training.evaluate.metrics import interval, ranked_roc_auc, user_resamples

DEFAULT_MARGIN = 0.0  # mean macro-F1 the candidate must gain over live
DEFAULT_MAX_HEAD_DROP = 0.02  # largest macro-F1 loss allowed on any single head


@dataclass(frozen=True)
class GateResult:
    accepted: bool
    why: str
    live: dict[str, float]
    candidate: dict[str, float]


def gate(live: dict[str, float], candidate: dict[str, float],
         margin: float = DEFAULT_MARGIN, max_head_drop: float = DEFAULT_MAX_HEAD_DROP,
         ) -> GateResult:
    """Candidate wins when its mean macro-F1 beats live by `margin` and no head drops much."""
    drops = {h: live[h] - candidate[h] for h in MODEL_HEADS}
    worst = max(drops, key=drops.__getitem__)
    gain = float(np.mean([candidate[h] for h in MODEL_HEADS]) - np.mean(
        [live[h] for h in MODEL_HEADS]))
    if drops[worst] > max_head_drop:
        return GateResult(False, f"{worst} macro-F1 drops by {drops[worst]:.3f}", live, candidate)
    if gain <= margin:
        return GateResult(False, f"mean macro-F1 gain {gain:+.3f} <= margin {margin}", live,
                          candidate)
    return GateResult(True, f"mean macro-F1 gain {gain:+.3f}", live, candidate)


DEFAULT_AUC_MARGIN = 0.0  # mean ROC-AUC the candidate must gain over live
DEFAULT_MAX_AUC_DROP = 0.02  # largest ROC-AUC loss allowed on any single head
GATE_BOOTSTRAP_ROUNDS = 200


def head_comparison(y: Sequence[int], live: np.ndarray, candidate: np.ndarray,
                    users: Sequence[str], seed: int) -> dict[str, Any] | None:
    """ROC-AUC and log-loss of both on one head ([n, classes] each), the ROC-AUC difference
    with its 95% interval over resampled users; None when the rows hold a single label."""
    y = np.asarray(y, dtype=np.int64)
    aucs = [ranked_roc_auc(y, p) for p in (live, candidate)]
    if None in aucs:
        return None
    deltas = []
    for rows in user_resamples(users, GATE_BOOTSTRAP_ROUNDS, seed):
        a, b = ranked_roc_auc(y[rows], candidate[rows]), ranked_roc_auc(y[rows], live[rows])
        deltas.append(None if a is None or b is None else a - b)
    return {"live_roc_auc": aucs[0], "candidate_roc_auc": aucs[1],
            "delta": aucs[1] - aucs[0], "delta_ci95": interval(deltas),
            "live_log_loss": _log_loss(y, live), "candidate_log_loss": _log_loss(y, candidate)}


def _log_loss(y: np.ndarray, probs: np.ndarray) -> float:
    p = np.clip(probs, 1e-6, 1.0)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[np.arange(len(y)), y])))


def ranking_gate(heads: dict[str, dict[str, Any]], margin: float = DEFAULT_AUC_MARGIN,
                 max_head_drop: float = DEFAULT_MAX_AUC_DROP) -> GateResult:
    """Candidate wins when its mean ROC-AUC over the compared heads beats live by `margin`
    and no head's ROC-AUC drops by more than `max_head_drop`. No head with labels: rejected
    (nothing says the candidate is better)."""
    live = {h: c["live_roc_auc"] for h, c in heads.items()}
    candidate = {h: c["candidate_roc_auc"] for h, c in heads.items()}
    if not heads:
        return GateResult(False, "no head has two labels on the compared rows", live, candidate)
    worst = min(heads, key=lambda h: heads[h]["delta"])
    if -heads[worst]["delta"] > max_head_drop:
        return GateResult(False, f"{worst} ROC-AUC drops by {-heads[worst]['delta']:.3f}", live,
                          candidate)
    gain = float(np.mean([c["delta"] for c in heads.values()]))
    if gain <= margin:
        return GateResult(False, f"mean ROC-AUC gain {gain:+.3f} <= margin {margin}", live,
                          candidate)
    return GateResult(True, f"mean ROC-AUC gain {gain:+.3f}", live, candidate)

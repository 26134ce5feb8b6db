"""The gate: a candidate version is published only if it beats the live one.

Shared by `intentstream retrain` (feedback) and `intentstream train --events` (the platform's
own history): mean macro-F1 over the model's heads must gain more than a margin, and no single
head may lose more than its limit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inference.heads import MODEL_HEADS

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

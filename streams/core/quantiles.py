"""One percentile for every report (demo summary, bench, latency figures)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile, q in [0, 1] (0.99 is p99); None for no values."""
    if not 0 <= q <= 1:
        raise ValueError(f"percentile {q} is outside [0, 1]")
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]

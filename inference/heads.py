"""The three prediction heads and their label vocabularies: the single source of truth.

Column `i` of a head's output is the probability of label `i` here. Training, export, the
Triton model and the client all read these tuples; changing one means retraining.

This module imports nothing but the standard library: export copies it, with `model.py`, into
every built `intent_bert` version (see `inference/export.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

STRENGTH_LABELS: tuple[str, ...] = ("strong", "medium", "weak")
INTENT_TYPE_LABELS: tuple[str, ...] = (
    "purchase",
    "query",
    "complaint",
    "request",
    "advice",
    "notice",
)
# Churn is binary: one logit, read as the probability that the session ends in churn.
CHURN_LABEL = "churn"


def label_probabilities(labels: Sequence[str], probabilities: Sequence[float]) -> dict[str, float]:
    """Pair one row of a head's probabilities with its labels (lengths must match)."""
    if len(labels) != len(probabilities):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    return {label: float(p) for label, p in zip(labels, probabilities, strict=True)}


def top_label(probabilities: dict[str, float]) -> str:
    """The most probable label (the first one listed wins a tie)."""
    return max(probabilities, key=probabilities.__getitem__)

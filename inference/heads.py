"""The three prediction heads and their label vocabularies: the single source of truth.

Column `i` of a head's output is the probability of label `i` here. Training, export, the
Triton model and the client all read these tuples; changing one means retraining.

This module imports nothing but the standard library: export copies it, with `model.py`, into
every built `intent_bert` version (see `inference/model/export.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

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
CHURN_LABELS: tuple[str, ...] = ("no_churn", CHURN_LABEL)  # its two columns, where needed
# The model's output heads and their label columns (alert heads are streams.core.alerts').
# The customer value the stacker returns beside the heads (BG/NBD + Gamma-Gamma, over the churn
# horizon the version was trained with).
CUSTOMER_VALUE_FIELDS: tuple[str, ...] = ("p_alive", "expected_orders", "expected_value")
MODEL_HEADS: dict[str, tuple[str, ...]] = {
    "strength": STRENGTH_LABELS,
    "intent_type": INTENT_TYPE_LABELS,
    "churn": CHURN_LABELS,
}


def label_probabilities(labels: Sequence[str], probabilities: Sequence[float]) -> dict[str, float]:
    """Pair one row of a head's probabilities with its labels (lengths must match)."""
    if len(labels) != len(probabilities):
        raise ValueError(f"{len(probabilities)} probabilities for {len(labels)} labels")
    return {label: float(p) for label, p in zip(labels, probabilities, strict=True)}


def top_label(probabilities: dict[str, float]) -> str:
    """The most probable label (the first one listed wins a tie)."""
    return max(probabilities, key=probabilities.__getitem__)


@dataclass(frozen=True, slots=True)
class Prediction:
    strength: dict[str, float]  # over STRENGTH_LABELS, sums to 1
    intent_type: dict[str, float]  # over INTENT_TYPE_LABELS, sums to 1
    churn: float  # probability of churn
    model_name: str  # the model whose weights scored this text (intent_bert)
    model_version: int  # its version; exact per row, also during a hot swap
    # p_alive, expected_orders, expected_value (CUSTOMER_VALUE_FIELDS) where the served version
    # has a customer value model and the user has ordered; None otherwise.
    customer_value: dict[str, float] | None = field(default=None)

    @property
    def strength_label(self) -> str:
        return top_label(self.strength)

    @property
    def intent_type_label(self) -> str:
        return top_label(self.intent_type)

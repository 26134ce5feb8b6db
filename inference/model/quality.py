"""The quality bar a faster runtime must meet, and the choice of the fastest one that meets it.

A runtime other than torch fp32 serves a version only if, on held-out texts, every head's
ROC-AUC is within ROC_AUC_MARGIN and its macro-F1 within MACRO_F1_MARGIN of torch fp32's on
the same texts; otherwise it is refused with the head, metric and numbers that failed. The
metrics are defined as in training/metrics.py (one-vs-rest ROC-AUC macro-averaged over the
classes present, binary churn on its positive class; macro-F1 of argmax, churn at a
threshold).

Everything runs on a saved version's `artifacts/` directory through the same scorers the
Triton backend uses (inference/model/runtimes.py), so what is checked is what is served. A
network with a feature tower is checked on the held-out texts with their FEATURES rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

from inference.heads import INTENT_TYPE_LABELS, STRENGTH_LABELS

from .runtimes import (
    TORCH,
    Probabilities,
    RuntimeUnavailable,
    Scorer,
    available_runtimes,
    load_scorer,
)
from .tokenizer import encode, load_tokenizer

ROC_AUC_MARGIN = 0.005
MACRO_F1_MARGIN = 0.01
AUTO = "auto"  # the fastest available runtime that passes the bar
BATCH = 32  # the worker's SCORE_MAX_BATCH: speeds are measured at the batch it sends
HEAD_CLASSES = {"strength": len(STRENGTH_LABELS), "intent_type": len(INTENT_TYPE_LABELS),
                "churn": 2}


class QualityError(ValueError):
    """Held-out data the bar cannot be computed on."""


@dataclass(frozen=True)
class HeldOut:
    """Texts of held-out users and their labels: head -> one label index per text."""

    texts: list[str]
    labels: dict[str, list[int]]
    churn_threshold: float = 0.5  # training chooses it on validation
    features: list[list[float]] | None = None  # one FEATURES row per text (a tower network)

    def __post_init__(self) -> None:
        if not self.texts:
            raise QualityError("the quality bar needs held-out texts, got none")
        if self.features is not None and len(self.features) != len(self.texts):
            raise QualityError(f"{len(self.features)} FEATURES rows for {len(self.texts)} texts")
        for head, k in HEAD_CLASSES.items():
            y = self.labels.get(head)
            if y is None or len(y) != len(self.texts):
                raise QualityError(f"held-out labels for {head}: need one per text")
            if len(set(y)) < 2 or not all(0 <= v < k for v in y):
                raise QualityError(f"held-out labels for {head}: need 2+ classes in 0..{k - 1}")


@dataclass(frozen=True)
class Verdict:
    runtime: str
    passed: bool
    reason: str
    # head -> metric -> {"torch": …, "runtime": …, "delta": runtime - torch}
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Choice:
    runtime: str
    texts_per_s: dict[str, float]  # every runtime tried, on the held-out texts, batches of 32
    verdicts: dict[str, Verdict]

    def as_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "texts_per_s": self.texts_per_s,
                "margins": {"roc_auc": ROC_AUC_MARGIN, "macro_f1": MACRO_F1_MARGIN},
                "verdicts": {k: v.as_dict() for k, v in self.verdicts.items()}}


# --- pure: metrics and the verdict --------------------------------------------------------------


def head_scores(held_out: HeldOut, probs: Probabilities) -> dict[str, dict[str, float]]:
    """ROC-AUC and macro-F1 of every head on the held-out labels."""
    churn = np.asarray(probs.churn, dtype=np.float64)
    columns = {"strength": np.asarray(probs.strength, dtype=np.float64),
               "intent_type": np.asarray(probs.intent_type, dtype=np.float64),
               "churn": np.stack([1 - churn, churn], axis=1)}
    out = {}
    for head, k in HEAD_CLASSES.items():
        y = np.asarray(held_out.labels[head])
        p = columns[head]
        pred = (p[:, 1] >= held_out.churn_threshold).astype(int) if head == "churn" \
            else p.argmax(axis=1)
        present = [c for c in range(k) if 0 < (y == c).sum() < len(y)]
        curves = [1] if k == 2 else present
        out[head] = {
            "roc_auc": float(np.mean([roc_auc_score(y == c, p[:, c]) for c in curves])),
            "macro_f1": float(f1_score(y, pred, labels=list(range(k)), average="macro",
                                       zero_division=0)),
        }
    return out


def verdict_of(name: str, torch_scores: dict[str, dict[str, float]],
               scores: dict[str, dict[str, float]]) -> Verdict:
    """Pass when every head's metrics are within the margins of torch fp32's."""
    margins = {"roc_auc": ROC_AUC_MARGIN, "macro_f1": MACRO_F1_MARGIN}
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    failures = []
    for head, reference in torch_scores.items():
        metrics[head] = {}
        for metric, margin in margins.items():
            want, got = reference[metric], scores[head][metric]
            metrics[head][metric] = {"torch": want, "runtime": got, "delta": got - want}
            if abs(got - want) > margin:
                failures.append(f"{head} {metric} {got:.4f} vs torch {want:.4f} "
                                f"(|diff| {abs(got - want):.4f} > {margin})")
    if failures:
        return Verdict(name, False, "refused: " + "; ".join(failures), metrics)
    return Verdict(name, True, "within the margins of torch fp32 on every head", metrics)


def pick(texts_per_s: dict[str, float], verdicts: dict[str, Verdict]) -> str:
    """The fastest runtime whose verdict passed (torch, the reference, always does)."""
    passing = [r for r in texts_per_s if r == TORCH or (r in verdicts and verdicts[r].passed)]
    return max(passing, key=texts_per_s.__getitem__)


# --- running the runtimes -----------------------------------------------------------------------


Batch = tuple[np.ndarray, np.ndarray, np.ndarray | None]  # ids, mask, FEATURES (or None)


def token_batches(artifacts: Path, texts: Sequence[str], batch: int = BATCH,
                  features: Sequence[Sequence[float]] | None = None) -> list[Batch]:
    """The texts tokenized as the served tokenizer does (with their FEATURES rows, when given),
    in batches of `batch`, in order."""
    max_length = _max_length(artifacts)
    tokenizer = load_tokenizer(max_length=max_length)
    rows = None if features is None else np.asarray(features, dtype=np.float32)
    out: list[Batch] = []
    for start in range(0, len(texts), batch):
        ids, mask = encode(tokenizer, texts[start:start + batch], max_length=max_length)
        out.append((ids.numpy(), mask.numpy(),
                    None if rows is None else rows[start:start + batch]))
    return out


def timed_probabilities(scorer: Scorer, batches: list[Batch]) -> tuple[Probabilities, float]:
    """All batches' probabilities and the texts/s it took (after one untimed warm-up batch)."""
    scorer.probabilities(*batches[0])
    parts: list[Probabilities] = []
    started = time.perf_counter()
    for ids, mask, features in batches:
        parts.append(scorer.probabilities(ids, mask, features))
    seconds = time.perf_counter() - started
    rows = sum(len(ids) for ids, _, _ in batches)
    joined = Probabilities(*(np.concatenate([getattr(p, f) for p in parts])
                             for f in Probabilities._fields))
    return joined, rows / seconds


def check_runtime(artifacts: Path, held_out: HeldOut, runtime: str, *,
                  threads: int = 0) -> Verdict:
    """The quality bar for one runtime on a saved version's artifacts (with its ONNX files)."""
    return choose_runtime(artifacts, held_out, [runtime], threads=threads).verdicts[runtime]


def choose_runtime(artifacts: Path, held_out: HeldOut, candidates: Sequence[str] | None = None,
                   *, threads: int = 0) -> Choice:
    """Time torch and every candidate (default: all available here) on the held-out texts,
    check each against the bar, and pick the fastest that passes (torch at worst)."""
    candidates = [c for c in (candidates or available_runtimes()) if c != TORCH]
    reference_scorer = load_scorer(artifacts, TORCH, threads=threads)
    if reference_scorer.n_features and held_out.features is None:
        raise QualityError(f"the network reads FEATURES ({reference_scorer.n_features} columns): "
                           "the quality bar needs the held-out FEATURES rows")
    batches = token_batches(artifacts, held_out.texts,
                            features=held_out.features if reference_scorer.n_features else None)
    reference, torch_speed = timed_probabilities(reference_scorer, batches)
    torch_scores = head_scores(held_out, reference)
    speeds = {TORCH: torch_speed}
    verdicts = {TORCH: verdict_of(TORCH, torch_scores, torch_scores)}
    for name in candidates:
        try:
            scorer = load_scorer(artifacts, name, threads=threads)
        except RuntimeUnavailable as error:  # listed by onnxruntime, but it would not start
            verdicts[name] = Verdict(name, False, f"unavailable: {error}")
            continue
        probs, speeds[name] = timed_probabilities(scorer, batches)
        verdicts[name] = verdict_of(name, torch_scores, head_scores(held_out, probs))
    return Choice(pick(speeds, verdicts), speeds, verdicts)


def _max_length(artifacts: Path) -> int:
    heads = json.loads((Path(artifacts) / "heads.json").read_text(encoding="utf-8"))
    return int(heads["max_length"])

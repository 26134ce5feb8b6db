"""Fine-tune copies of the trained network on the UCI real sessions (Revenue as P(strong)) and
evaluate them on the test part of the comparable split: once on the events alone, and once with
the GA aggregates in the text."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inference.model.intent_bert import IntentBert
from training.data import uci
from training.data.windows import worker_session_policy
from training.evaluate.metrics import binary_columns, head_metrics
from training.fit.loop import FitConfig, Targets, fit, predict, strong_vs_rest_loss, tokenize

EVENTS_ONLY = "events_only"  # the variant whose text the live path renders


@dataclass(frozen=True, slots=True)
class UciRowSplit:
    train_part: np.ndarray  # the comparable split's training rows
    fit: np.ndarray  # the (sampled) rows fine-tuned on
    early_stopping: np.ndarray  # 10% of them, for early stopping, never the test part
    test: np.ndarray


@dataclass(frozen=True, slots=True)
class UciTuning:
    results: dict[str, Any]  # the model card's "uci" section
    events_only_model: IntentBert  # servable: replay renders the same text


def revenue_rows(rows: np.ndarray, tokens: Sequence[list[int]], revenue: Sequence[bool]
                 ) -> tuple[list[list[int]], Targets]:
    """UCI rows as training input: Revenue as strength strong (0) / weak (2); the other heads'
    targets are unused by `strong_vs_rest_loss`."""
    n = len(rows)
    strength = torch.tensor([0 if revenue[i] else 2 for i in rows], dtype=torch.long)
    return [tokens[i] for i in rows], Targets(
        strength, torch.zeros(n, dtype=torch.long), torch.zeros(n))


def split_rows(labels: Sequence[bool], train_limit: int | None, seed: int) -> UciRowSplit:
    """The comparable split; the training part sampled (stratified) down to `train_limit`."""
    train_part, test_rows = uci.comparable_split(labels)
    train_rows = train_part
    rng = np.random.default_rng(seed)
    if train_limit and len(train_rows) > train_limit:
        chosen = []  # the same purchase rate as the full training part
        for value in (True, False):
            rows = train_rows[[labels[i] == value for i in train_rows]]
            share = round(train_limit * len(rows) / len(train_rows))
            chosen.extend(rng.choice(rows, size=share, replace=False).tolist())
        train_rows = np.sort(np.asarray(chosen))
    shuffled = rng.permutation(train_rows)
    n_val = max(1, len(shuffled) // 10)
    return UciRowSplit(train_part, np.sort(shuffled[n_val:]), np.sort(shuffled[:n_val]),
                       test_rows)


def tune_variant(base_model: Path, tokens: list[list[int]], labels: Sequence[bool],
                 rows: UciRowSplit, config: FitConfig) -> tuple[IntentBert, dict[str, Any]]:
    """A fresh copy of the trained network fine-tuned on the fit rows; its test metrics."""
    tuned = IntentBert.load(base_model)
    started = time.monotonic()
    result = fit(tuned, *revenue_rows(rows.fit, tokens, labels),
                 *revenue_rows(rows.early_stopping, tokens, labels), config, strong_vs_rest_loss)
    p_buy = predict(tuned, [tokens[i] for i in rows.test])["strength"][:, 0]
    y_test = [int(labels[i]) for i in rows.test]
    metrics = head_metrics(y_test, binary_columns(p_buy), ("no_revenue", "revenue"),
                           threshold=0.5)
    return tuned, {"roc_auc": metrics["roc_auc"], "pr_auc": metrics["pr_auc"],
                   "ece": metrics["ece"], "steps": result.steps,
                   "seconds": round(time.monotonic() - started, 1)}


def tune_on_uci(csv: Path, base_model: Path, tokenizer: Any, max_length: int, *,
                train_limit: int | None, with_analytics: bool, config: FitConfig,
                seed: int) -> UciTuning:
    """Every variant tuned and evaluated; the card's section and the events-only network."""
    sessions = uci.load_sessions(csv)
    labels = [s.revenue for s in sessions]
    rows = split_rows(labels, train_limit, seed)
    policy = worker_session_policy()
    variants = {EVENTS_ONLY: False, **({"events_plus_ga_aggregates": True}
                                       if with_analytics else {})}
    results: dict[str, Any] = {
        "data": uci.ATTRIBUTION,
        "csv": str(csv),
        "split": "train_test_split(test_size=0.3, stratify=Revenue, random_state=0)",
        "rows": {"train_part": len(rows.train_part), "fine_tuned_on": len(rows.fit),
                 "early_stopping": len(rows.early_stopping), "test": len(rows.test)},
        "test_purchase_rate": float(np.mean([labels[i] for i in rows.test])),
        "peers": list(uci.PEERS),
        "variants": {},
    }
    events_only_model = None
    for name, analytics in variants.items():
        texts = [uci.session_text(s, policy, with_analytics=analytics) for s in sessions]
        tuned, measured = tune_variant(base_model, tokenize(tokenizer, texts, max_length),
                                       labels, rows, config)
        buyer = next(int(i) for i in rows.test if labels[i])
        results["variants"][name] = {**measured, "example_text": texts[buyer]}
        if name == EVENTS_ONLY:
            events_only_model = tuned
    assert events_only_model is not None  # EVENTS_ONLY is always a variant
    return UciTuning(results, events_only_model)

"""The gate judges what is served: the live version as Triton would serve it (network + its
stacked heads) against the candidate served the same way, by ROC-AUC per head with labels,
intervals over users. A candidate whose served churn ranks worse is rejected even though the
networks are the same; one that ranks better is accepted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

from inference.model.export import export_version
from inference.model.intent_bert import IntentBert
from inference.model.stacking import write_heads
from inference.model.tokenizer import load_tokenizer
from streams.core.features import N_FEATURES
from training.evaluate.gate import head_comparison, ranking_gate
from training.fit.stacking import N_TEXT_COLUMNS
from training.publish import gate_against_live
from training.served import ServedVersion

ROWS = 240


def rows(seed: int) -> tuple[list[str], np.ndarray, dict[str, list[int]], list[str]]:
    """Texts, FEATURES whose first column carries the churn label (with noise), labels
    (strength and intent type constant: no head but churn can be compared), users."""
    rng = np.random.default_rng(seed)
    churn = rng.integers(0, 2, ROWS)
    features = rng.normal(size=(ROWS, N_FEATURES))
    features[:, 0] = churn + rng.normal(scale=0.7, size=ROWS)
    texts = [f"purchase: item {i % 17}" for i in range(ROWS)]
    targets = {"strength": [2] * ROWS, "intent_type": [0] * ROWS, "churn": churn.tolist()}
    return texts, features, targets, [f"u{i // 3}" for i in range(ROWS)]


def heads(kind: str, seed: int) -> dict:
    """Stacked churn heads over the stacker's x: reading the telling column, or a prior."""
    _, features, targets, _ = rows(seed)
    x = np.hstack([features, np.zeros((ROWS, N_TEXT_COLUMNS))])
    clf = (LogisticRegression(max_iter=500) if kind == "good"
           else DummyClassifier(strategy="prior")).fit(x, targets["churn"])
    return {"n_features": N_FEATURES, "feature_schema": 2, "churn": clf}


@pytest.fixture(scope="module")
def network() -> IntentBert:
    torch.manual_seed(0)
    return IntentBert.tiny(len(load_tokenizer(max_length=128)))


def live_repo(repo: Path, network: IntentBert, kind: str) -> Path:
    export_version(network, repo, 1)
    write_heads(repo, 1, heads(kind, seed=1))
    return repo


@pytest.mark.parametrize(("live", "candidate", "accepted"),
                         [("prior", "good", True), ("good", "prior", False)])
def test_the_gate_compares_served_ensembles_by_ranking(repo: Path, network: IntentBert,
                                                       live: str, candidate: str,
                                                       accepted: bool) -> None:
    live_repo(repo, network, live)
    texts, features, targets, users = rows(seed=2)
    served = ServedVersion(network, heads(candidate, seed=1), None, repo)
    result = gate_against_live(repo, served, texts, targets, features, users, seed=0)
    assert result["accepted"] is accepted, result["why"]
    assert result["live_version"] == 1
    assert set(result["heads"]) == {"churn"}  # the others have one label on these rows
    assert set(result["skipped_heads"]) == {"strength", "intent_type"}
    churn = result["heads"]["churn"]
    low, high = churn["delta_ci95"]
    assert (low > 0) if accepted else (high < 0)  # the interval agrees with the verdict
    assert (churn["candidate_log_loss"] < churn["live_log_loss"]) is accepted


def test_a_drop_on_one_head_rejects_even_with_a_mean_gain() -> None:
    y = np.array([0, 1] * 50)
    good = np.column_stack([1 - y * 0.8, y * 0.8 + 0.1])
    flat = np.full((100, 2), 0.5)
    users = [f"u{i}" for i in range(100)]
    better = head_comparison(y, flat, good, users, 0)
    worse = {**better, "delta": -0.05, "live_roc_auc": 0.8, "candidate_roc_auc": 0.75}
    assert ranking_gate({"churn": better}).accepted
    verdict = ranking_gate({"churn": better, "strength": worse})
    assert not verdict.accepted and "strength" in verdict.why
    assert not ranking_gate({}).accepted
    assert head_comparison(np.zeros(100, dtype=int), flat, good, users, 0) is None

"""Stacked heads: fitted on validation rows, chosen by measurement, exported in the column order
the served stacker step builds, and measured against the peers on the test split."""

from __future__ import annotations

import importlib.util
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from inference.heads import MODEL_HEADS
from streams.core.features import FEATURE_NAMES, N_FEATURES
from training.fit.stacking import (
    FUSIONS,
    STACKED_HEADS,
    features_model,
    fit_stack,
    full_columns,
    new_fusion,
    stack_inputs,
)

STACKER = Path(__file__).resolve().parents[3] / "triton_models" / "stacker" / "model.py"


def synthetic(n_users: int, seed: int, *, strength_from_features: bool = True):
    """Windows whose strength (and churn) the features give away while the text probabilities
    are noise: a stack that reads its features must beat the network alone."""
    rng = np.random.default_rng(seed)
    users = [f"u{seed}-{i // 6}" for i in range(n_users * 6)]
    n = len(users)
    features = rng.normal(size=(n, N_FEATURES))
    strength = rng.integers(0, 3, n) if not strength_from_features else np.digitize(
        features[:, 0], [-0.5, 0.5])
    churn = (features[:, FEATURE_NAMES.index("profile_days_since_last_order")] > 0.3).astype(int)
    intent_type = rng.integers(0, 6, n)
    features[:, 0] += rng.normal(scale=0.1, size=n)
    text = {
        "strength": rng.dirichlet(np.ones(3), n),
        "intent_type": np.eye(6)[intent_type] * 0.9 + 0.1 / 6,  # the network knows intent type
        "churn": np.stack([1 - (p := rng.random(n)), p], axis=1),
    }
    targets = {"strength": strength.tolist(), "intent_type": intent_type.tolist(),
               "churn": churn.tolist()}
    return features, text, targets, users


def run(seed: int = 0, **kwargs):
    parts = {name: synthetic(n, seed + i, **kwargs)
             for i, (name, n) in enumerate((("train", 60), ("validation", 40), ("test", 40)))}
    features = {name: p[0] for name, p in parts.items()}
    text = {name: parts[name][1] for name in ("validation", "test")}
    targets = {name: p[2] for name, p in parts.items()}
    users = {name: p[3] for name, p in parts.items()}
    peers = {"tfidf_lr": {name: {h: np.full_like(text[name][h], 1 / text[name][h].shape[1])
                                 for h in MODEL_HEADS} for name in ("validation", "test")}}
    return fit_stack(MODEL_HEADS, features, text, targets, users, peers, seed), parts


def test_stack_inputs_are_the_stacker_steps_columns() -> None:
    features = np.arange(2 * 3, dtype=float).reshape(2, 3)
    text = {"strength": np.full((2, 3), 0.1), "intent_type": np.full((2, 6), 0.2),
            "churn": np.array([[0.7, 0.3], [0.4, 0.6]])}
    x = stack_inputs(features, text)
    assert x.shape == (2, 3 + 3 + 6 + 1) and x.dtype == np.float64
    assert x[:, :3].tolist() == features.tolist()
    assert x[:, -1].tolist() == pytest.approx([0.3, 0.6])  # P(churn), one column


@pytest.mark.parametrize("kind", FUSIONS)
def test_every_fusion_kind_fits_both_heads_and_survives_pickling(kind: str) -> None:
    features, text, targets, _ = synthetic(30, 4)
    train_features, _, train_targets, _ = synthetic(30, 5)
    x = stack_inputs(features, text)
    for head, k in (("strength", 3), ("churn", 2)):
        base = features_model(train_features, np.asarray(train_targets[head]), 0)
        clf = pickle.loads(pickle.dumps(new_fusion(kind, 0, base, head).fit(x, targets[head])))
        probs = full_columns(clf, x, k)
        assert probs.shape == (len(x), k) and np.allclose(probs.sum(axis=1), 1.0)


def test_an_unknown_fusion_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fusion"):
        new_fusion("mlp", 0)
    for kind in ("blend", "pool"):
        with pytest.raises(ValueError, match="features model"):
            new_fusion(kind, 0)


def test_the_blend_keeps_the_features_model_fitted_on_training_rows() -> None:
    """Fitting the blend on validation rows must not refit its features model: that model's
    trees come from the (larger) training split, the blend only learns how to weigh them."""
    train_features, _, train_targets, _ = synthetic(60, 6)
    features, text, targets, _ = synthetic(20, 7)
    base = features_model(train_features, np.asarray(train_targets["strength"]), 0)
    x = stack_inputs(features, text)
    before = base.predict_proba(x)
    blend = new_fusion("blend", 0, base).fit(x, targets["strength"])
    assert np.array_equal(blend.estimators_[0].predict_proba(x), before)
    assert np.array_equal(base.predict_proba(x), before)


def test_the_blend_fits_rows_that_miss_a_class_its_features_model_knows() -> None:
    """A CV fold of a small validation split can lack a rare class the training split has."""
    train_features, _, train_targets, _ = synthetic(60, 8)
    features, text, targets, _ = synthetic(20, 9)
    base = features_model(train_features, np.asarray(train_targets["strength"]), 0)
    y = np.asarray(targets["strength"])
    y = np.where(y == 2, 1, y)  # no class 2 in these rows
    x = stack_inputs(features, text)
    probs = full_columns(new_fusion("blend", 0, base).fit(x, y), x, 3)
    assert probs.shape == (len(x), 3) and not probs[:, 2].any()
    assert np.allclose(probs.sum(axis=1), 1.0)


@pytest.mark.parametrize("head", ["strength", "churn"])
def test_the_pool_reads_only_the_peers_and_the_networks_probabilities_of_its_head(
        head: str) -> None:
    """The pool weighs two experts, the peer and the network's probabilities for its head:
    another head's text probabilities must not move it, the head's own must."""
    train_features, _, train_targets, _ = synthetic(60, 10)
    features, text, targets, _ = synthetic(20, 11)
    base = features_model(train_features, np.asarray(train_targets[head]), 0)
    x = stack_inputs(features, text)
    pool = new_fusion("pool", 0, base, head).fit(x, targets[head])
    final = pool.final_estimator_[-1]
    assert final.n_features_in_ == (3 + 3 if head == "strength" else 1 + 1)
    before = pool.predict_proba(x)
    other = x.copy()
    other[:, -4:-1] = np.roll(other[:, -4:-1], 1, axis=0)  # intent type: no head pools it
    assert np.array_equal(pool.predict_proba(other), before)
    own = x.copy()
    own[:, -10 if head == "strength" else -1] = 0.999
    assert not np.allclose(pool.predict_proba(own), before)


def test_the_pool_fits_rows_that_miss_a_class_its_features_model_knows() -> None:
    train_features, _, train_targets, _ = synthetic(60, 12)
    features, text, targets, _ = synthetic(20, 13)
    base = features_model(train_features, np.asarray(train_targets["strength"]), 0)
    y = np.where(np.asarray(targets["strength"]) == 2, 1, targets["strength"])
    probs = full_columns(new_fusion("pool", 0, base, "strength").fit(
        stack_inputs(features, text), y), stack_inputs(features, text), 3)
    assert probs.shape == (len(y), 3) and not probs[:, 2].any()
    assert np.allclose(probs.sum(axis=1), 1.0)


def test_features_that_carry_the_labels_make_the_stack_win_and_beat_the_peers() -> None:
    result, _ = run()
    card = result.card
    assert set(result.heads) == set(STACKED_HEADS) == set(card["selection"]["chosen"])
    served, text_alone = card["test"]["served"], card["test"]["text_model"]
    for head in STACKED_HEADS:
        assert served[head]["macro_f1"] > text_alone[head]["macro_f1"] + 0.2
        low, high = served[head]["macro_f1_ci95"]
        assert low <= served[head]["macro_f1"] <= high
        assert card["served_vs_peers"][head]["tfidf_lr"]["beats"]
    assert "recency_frequency" in card["served_vs_peers"]["churn"]
    assert served["intent_type"] == text_alone["intent_type"]  # intent type stays the network's
    assert result.thresholds["churn"] is not None


def test_a_head_is_stacked_only_where_a_fusion_measured_best_on_validation() -> None:
    result, _ = run(seed=5, strength_from_features=False)
    # Strength is noise to every candidate: whichever is chosen, it was chosen by validation.
    scores = result.card["selection"]["scores"]["strength"]
    chosen = result.card["selection"]["chosen"].get("strength", "text_model")
    assert scores[chosen] == min(scores.values())  # log-loss
    assert ("strength" in result.heads) == (chosen != "text_model")


def test_a_label_missing_from_validation_is_not_stacked() -> None:
    features, text, targets, users = synthetic(40, 1)
    targets = {**targets, "strength": [0 if s == 1 else s for s in targets["strength"]]}
    parts = {"train": synthetic(60, 2), "test": synthetic(40, 3)}
    result = fit_stack(
        MODEL_HEADS, {"train": parts["train"][0], "validation": features, "test": parts["test"][0]},
        {"validation": text, "test": parts["test"][1]},
        {"train": parts["train"][2], "validation": targets, "test": parts["test"][2]},
        {"train": parts["train"][3], "validation": users, "test": parts["test"][3]},
        {}, 0)
    assert "strength" not in result.heads and "strength" in result.card["skipped"]
    assert "churn" in result.heads


@pytest.fixture
def stacker_step():
    """The served stacker's code, imported with a stand-in for Triton's utility module (only
    its pure `_stack` is called)."""
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("pb_utils"))
    spec = importlib.util.spec_from_file_location("stacker_model", STACKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TritonPythonModel


def test_exported_heads_give_the_served_step_the_measured_probabilities(stacker_step) -> None:
    result, parts = run()
    features, text, _, _ = parts["test"]
    heads = pickle.loads(pickle.dumps({"n_features": N_FEATURES, "feature_schema": 1,
                                       **result.heads}))
    strength = text["strength"].astype(np.float32)
    churn = text["churn"][:, 1:2].astype(np.float32)
    rows = np.ones(len(features), dtype=bool)
    stacker_step._stack(heads, features.astype(np.float32), strength,
                        text["intent_type"].astype(np.float32), churn, rows)
    assert np.allclose(strength, result.test_probs["strength"], atol=1e-4)
    assert np.allclose(churn[:, 0], result.test_probs["churn"][:, 1], atol=1e-4)


def test_the_tower_fusion_fits_no_stack_and_serves_the_network() -> None:
    parts = {name: synthetic(n, i) for i, (name, n) in
             enumerate((("train", 60), ("validation", 40), ("test", 40)))}
    text = {name: parts[name][1] for name in ("validation", "test")}
    result = fit_stack(MODEL_HEADS, {n: p[0] for n, p in parts.items()}, text,
                       {n: p[2] for n, p in parts.items()}, {n: p[3] for n, p in parts.items()},
                       {}, 0, stack=False)
    assert result.heads == {} and result.card["selection"]["chosen"] == {}
    assert set(result.card["skipped"]) == set(STACKED_HEADS)
    for head in MODEL_HEADS:  # the served model is the network, measured against the peers
        np.testing.assert_array_equal(result.test_probs[head], text["test"][head])
    assert "features_gb" in result.card["served_vs_peers"]["strength"]

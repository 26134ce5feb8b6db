"""TF-IDF + LR on a head with one class in training (an order table: every intent is a
purchase) is a constant predictor, not a crash."""

from __future__ import annotations

import numpy as np

from training.fit.baseline import fit_baseline


def test_a_single_class_head_gets_the_prior_and_the_others_are_fitted() -> None:
    texts = [f"view item{i % 5} add_to_cart purchase" for i in range(40)]
    targets = {"intent_type": [0] * 40, "churn": [i % 2 for i in range(40)]}
    baseline = fit_baseline(texts, targets, {"intent_type": 6, "churn": 2}, texts, targets,
                            score=lambda head, y, p: float(np.mean(p.argmax(1) == y)), seed=0)
    probs = baseline.predict_proba(texts[:3])
    assert probs["intent_type"].shape == (3, 6)
    assert np.allclose(probs["intent_type"][:, 0], 1.0)
    assert baseline.chosen_c["intent_type"] is None and baseline.chosen_c["churn"] is not None

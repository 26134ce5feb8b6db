from __future__ import annotations

import numpy as np
import pytest

from training.evaluate.metrics import (
    alert_precision_recall,
    best_threshold,
    binary_columns,
    expected_calibration_error,
    head_metrics,
)


def test_perfect_predictions() -> None:
    y = [0, 1, 2, 2, 1, 0]
    probs = np.eye(3)[y]
    m = head_metrics(y, probs, ("a", "b", "c"))
    assert (m["macro_f1"], m["roc_auc"], m["pr_auc"], m["ece"]) == (1.0, 1.0, 1.0, 0.0)
    assert m["confusion_matrix"]["rows_true_cols_pred"] == [[2, 0, 0], [0, 2, 0], [0, 0, 2]]


def test_a_class_absent_from_the_evaluated_rows_is_left_out_of_auc() -> None:
    y = [0, 1, 0, 1]
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1]])
    m = head_metrics(y, probs, ("a", "b", "c"))
    assert m["absent_from_auc"] == ["c"]
    assert m["roc_auc"] == pytest.approx(1.0)


def test_calibration_error_of_overconfident_predictions() -> None:
    # Always 90% sure, right half the time: ECE = |0.5 - 0.9| = 0.4.
    y = np.array([0, 1] * 50)
    probs = np.tile([0.9, 0.1], (100, 1))
    assert expected_calibration_error(y, probs) == pytest.approx(0.4)


def test_binary_threshold_from_validation() -> None:
    p = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.4])
    y = [0, 0, 0, 1, 1, 1]
    t = best_threshold(y, p)
    assert 0.2 < t <= 0.3
    m = head_metrics(y, binary_columns(p), ("no", "yes"), threshold=t)
    assert m["macro_f1"] == 1.0 and m["roc_auc"] == 1.0


def test_alerts_are_judged_per_user_against_the_positives_of_the_population() -> None:
    users = ["a", "a", "b", "c", "d", "x"]  # x: not in the population (another split)
    scores = np.array([0.2, 0.7, 0.9, 0.1, 0.65, 0.99])
    out = alert_precision_recall(users, scores, 0.6, positives={"a", "c", "e"},
                                 population={"a", "b", "c", "d", "e"})
    # alerted a, b, d; positives a, c, e (e never silent): one hit of three, one of three
    assert (out["alerted"], out["positives"], out["true_alerts"]) == (3, 3, 1)
    assert out["precision"] == out["recall"] == 1 / 3
    none = alert_precision_recall([], np.array([]), 0.6, positives=set(), population={"a"})
    assert none["precision"] is None and none["recall"] is None

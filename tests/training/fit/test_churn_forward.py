"""Churn on a history is chosen forward, and the BG/NBD fusion reads only the value columns.

A history's churn scores are served after every labelled window (at a calibration end, a
horizon or more later), so a churn fusion is judged on later windows by a fit on earlier ones;
the BG/NBD fusion (log P(alive), log expected orders) extrapolates where
raw age and recency do not."""

from __future__ import annotations

import pickle

import numpy as np

from streams.core.features import N_FEATURES
from training.fit.stacking import (
    N_TEXT_COLUMNS,
    forward_out_of_fold,
    fusion,
    out_of_fold,
    selection_loss,
)

ALIVE = N_FEATURES + N_TEXT_COLUMNS  # the value columns follow the stacker's x
ORDERS = ALIVE + 1


def value_rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """x with value columns, churn drawn from P(alive) and expected orders; six rows a user."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, ALIVE + 3))
    x[:, ALIVE] = rng.uniform(0.05, 1.0, n)
    x[:, ORDERS] = rng.gamma(0.5, 1.0, n) * x[:, ALIVE]
    quiet = (1 - x[:, ALIVE]) + x[:, ALIVE] * np.exp(-x[:, ORDERS])  # P(no order)
    churn = (rng.random(n) < quiet).astype(int)
    return x, churn, [f"u{i // 6}" for i in range(n)]


def test_the_bgnbd_fusion_ranks_by_the_value_columns_and_survives_pickling() -> None:
    x, y, _ = value_rows(1200, 0)
    model = pickle.loads(pickle.dumps(fusion("bgnbd+value", 0).fit(x, y)))
    probe = np.zeros((3, x.shape[1]))
    probe[:, ALIVE] = [0.95, 0.5, 0.1]  # ever less likely alive, the same expected orders
    probe[:, ORDERS] = 0.3
    assert np.all(np.diff(model.predict_proba(probe)[:, 1]) > 0)
    noise = probe.copy()
    noise[:, :ALIVE] = np.random.default_rng(1).normal(size=(3, ALIVE))  # other columns
    assert np.allclose(model.predict_proba(noise), model.predict_proba(probe))
    held, y_held, _ = value_rows(1200, 2)
    assert selection_loss(y_held, model.predict_proba(held)) < selection_loss(
        y_held, np.full((len(y_held), 2), 0.5))


def test_a_never_ordered_row_gets_one_score_whatever_its_clipped_columns() -> None:
    x, y, _ = value_rows(600, 3)
    x[:50, [ALIVE, ORDERS, ORDERS + 1]] = -1.0  # no order yet: the stacker's NO_VALUE
    model = fusion("bgnbd+value", 0).fit(x, y)
    p = model.predict_proba(x[:50])[:, 1]
    assert np.allclose(p, p[0]) and 0 < p[0] < 1


def test_forward_rows_are_the_later_half_scored_by_fits_on_the_earlier() -> None:
    """A relation that reverses at the median as-of time: the ordinary out-of-fold loss hides
    it (both halves are in every fit), the forward one shows it."""
    rng = np.random.default_rng(4)
    n = 800
    x = np.zeros((n, ALIVE + 3))
    x[:, 0] = rng.normal(size=n)
    as_of = np.repeat(np.arange(n // 4), 4)
    late = as_of >= np.median(as_of)
    y = ((x[:, 0] > 0) ^ late).astype(int)  # the sign of column 0 flips for late windows
    x[:, 1] = late  # ordinary folds can learn the flip from this column
    users = [f"u{i // 4}" for i in range(n)]
    rows, probs = forward_out_of_fold("logistic", x, y, users, as_of, 2, 0)
    assert set(rows) == set(np.flatnonzero(late))
    ordinary = out_of_fold("logistic", x, y, users, 2, 0)
    assert selection_loss(y[rows], probs) > 1.0 > selection_loss(y[rows], ordinary[rows])


def test_no_earlier_window_means_no_forward_judgement() -> None:
    x, y, users = value_rows(120, 5)
    assert forward_out_of_fold("logistic", x, y, users, np.zeros(len(y)), 2, 0) is None

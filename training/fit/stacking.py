"""Stacked heads over [FEATURES, the text model's probabilities], and the peers they must beat.

The served ensemble ends in a stacker step (triton_models/stacker/model.py) that replaces the
network's strength and churn with classifiers over x = [FEATURES, text strength (3), text
intent_type (6), text churn (1)]. Those classifiers are fitted here on the validation split:
the network never trained on it, so its probabilities there are what it gives unseen traffic
(training rows would teach the stack to trust over-fitted probabilities). Intent type stays the
network's.

Five fusions compete, measured by grouped cross-validation on the validation split (a user's
windows in one fold): gradient-boosted trees (HistGradientBoosting), boosted stumps-and-pairs
(depth 2, slower rate, bigger leaves: for a rare label such as churn, where deep trees fit
noise), a logistic regression over standardised inputs, and two that reuse gradient boosting on
the features fitted on the *training* split (the features peer, frozen), so the trees learn from
five times the rows the validation split has while the text probabilities still enter only
through a fit on rows the network never saw: the blend (that logistic regression also reading
the peer's probabilities) and the pool (a logistic regression over the log-probabilities of
the peer and of the network for the same head only: a learned product of the two experts, a
few weights, which 1,000 validation rows fit with little noise). The network alone competes too,
so a head is replaced only where a fusion measured better (what else competed and lost:
docs/model.md). The chosen fusion is refitted on the whole
validation split and exported.

The choice is by out-of-fold log-loss, a proper score: macro-F1 of ~1,000 rows moves by a few
hundredths between folds and picked the noisier fusion (docs/model.md).

With `--fusion tower` (training/train.py) the network reads FEATURES itself through a feature
tower and no stack is fitted (`stack=False`): the same peers and intervals measure it; with
`both` the stack is fitted over the tower network's probabilities.

On the test split the same run measures, per head: the text model alone; the stack (and the
fusions not chosen); and the peers a user would try first: HistGradientBoosting on the features
alone and TF-IDF + logistic regression on the text (both fitted on the training split), and for
churn a recency/frequency logistic regression on the profile. Every number carries a 95%
interval over resampled test users.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier, StackingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from streams.core.features import FEATURE_NAMES
from training.evaluate.metrics import (
    best_threshold,
    head_metrics,
    interval,
    macro_f1_from_predictions,
    predicted_labels,
    ranked_roc_auc,
    user_resamples,
)
from training.fit.baseline import full_columns

STACKED_HEADS = ("strength", "churn")  # the heads the stacker step replaces
FUSIONS = ("hgb", "hgb_shallow", "logistic", "blend", "pool")
# Churn only, where the version has a customer value model: the same fusion over x plus the
# stacker's three value columns (p_alive, expected orders, expected value), kept only where
# it measures better on validation (`churn_reads_customer_value` in the exported heads).
VALUE_SUFFIX = "+value"
VALUE_FUSIONS = ("hgb", "hgb_shallow", "logistic", "recency", "bgnbd")
# Churn only: a logistic regression over a few monotone columns (recency, frequency, age,
# silence; asinh-compressed) and the network's P(churn): where the windows to fit on are
# younger than the ones it serves (a short history), a few weights extrapolate where trees
# cannot. With VALUE_SUFFIX it reads the customer value columns too.
RECENCY = "recency"
RECENCY_COLUMNS = ("profile_days_since_last_order", "profile_orders", "profile_sessions",
                   "profile_days_since_first_seen", "profile_mean_days_between_orders",
                   "silence_days")
# Churn only, with the value columns: a logistic regression over BG/NBD's own answers alone
# (log P(alive), log expected orders in the horizon, ordered or not). Those
# columns mean the same at any customer age, where raw recency and age do not: a 180-day horizon
# on 9 months of orders labels windows as of day 94 at the latest and is asked at day 274.
BGNBD = "bgnbd"
# Churn is served at as-of times later than every labelled window (a history's newest windows
# wait for their labels), so its fusions are chosen forward: fitted on validation windows as of
# before the median as-of time, scored on other users' windows at or after it, by ranking
# (1 - ROC-AUC): the base rate moves between the two halves (a cohort ages), and a proper score
# there rewards the network's near-constant P(churn) for guessing it, not for telling anyone
# apart (on a simulated order log it chose the network at 0.61 log-loss, which ranks at 0.5).
FORWARD_HEADS = ("churn",)
# Where the scores served lie a horizon or more beyond every labelled window (a history trained
# at an earlier cut), churn's candidates are the fusions that extrapolate in age: forward
# checks inside the labelled span chose trees and the pool (over the trees of the features
# peer), which then ranked 9-month-old customers at 0.64-0.70 against recency's 0.74-0.75.
EXTRAPOLATING = (BGNBD + VALUE_SUFFIX,)
# Churn peers from the customer value stage (training/fit/served_value.peer_scores).
VALUE_PEERS = ("bgnbd_p_alive", "days_since_last_order")
ON_THE_PEER = ("blend", "pool")  # fusions that read the features peer (fitted on training rows)
N_TEXT_COLUMNS = 3 + 6 + 1  # the stacker's x after FEATURES: strength, intent_type, P(churn)
CV_FOLDS = 4
BOOTSTRAP_ROUNDS = 300
# Recency/frequency churn baseline: the profile columns RFM-style churn models start from.
RF_COLUMNS = ("profile_days_since_last_order", "profile_orders", "profile_sessions")

# Head -> label names; probability arrays are [n, classes] (churn: [n, 2]).
Probs = dict[str, np.ndarray]


def stack_inputs(features: np.ndarray, text: Probs) -> np.ndarray:
    """The stacker step's x, column for column: [FEATURES, strength, intent_type, churn]."""
    churn = text["churn"][:, 1:2] if text["churn"].ndim == 2 else text["churn"][:, None]
    # Through float32 first, as the tensors reach the served step: a tree's split must see the
    # same value in training as in serving.
    parts = [np.asarray(a, dtype=np.float32)
             for a in (features, text["strength"], text["intent_type"], churn)]
    return np.hstack(parts).astype(np.float64)


def new_fusion(kind: str, seed: int, base: Any = None, head: str = "strength") -> Any:
    """An unfitted classifier of one fusion kind for `head` (a plain scikit-learn object: the
    stacker's stub unpickles it with nothing but scikit-learn). "blend" and "pool" need `base`,
    the features model fitted on the training split (`features_model`), which their fit leaves
    as it is."""
    if kind == "hgb":
        return HistGradientBoostingClassifier(learning_rate=0.1, max_iter=60, max_leaf_nodes=15,
                                              l2_regularization=1.0, random_state=seed)
    if kind == "hgb_shallow":  # churn: ~8% positives, most of it chance; depth 2 fits less noise
        return HistGradientBoostingClassifier(learning_rate=0.05, max_iter=200, max_depth=2,
                                              min_samples_leaf=30, l2_regularization=1.0,
                                              random_state=seed)
    if kind == "logistic":  # a monotone read of a rare, telling column, where trees need rows
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.3, max_iter=2000,
                                                                  random_state=seed))
    if kind in ON_THE_PEER:
        if base is None:
            raise ValueError(f"the {kind} fusion needs the features model fitted on training rows")
        final = new_fusion("logistic", seed) if kind == "blend" else pooled_logistic(
            base, head, seed)
        # "prefit": the features model is used as fitted, never refitted, and without an inner
        # CV (whose folds could miss a rare class the training split has).
        return StackingClassifier(
            [("features_gb", base)], final_estimator=final, stack_method="predict_proba",
            passthrough=True, cv="prefit")
    raise ValueError(f"unknown fusion {kind!r}")


def fusion(kind: str, seed: int, base: Any = None, head: str = "strength",
           n_features: int = len(FEATURE_NAMES)) -> Any:
    """`new_fusion` for a kind that may read the value columns (VALUE_SUFFIX) or be the
    recency fusion, whose columns depend on whether it does."""
    plain = kind.removesuffix(VALUE_SUFFIX)
    if plain == BGNBD:
        return bgnbd_logistic(seed, n_features)
    if plain == RECENCY:
        return recency_logistic(seed, n_features, with_value=kind.endswith(VALUE_SUFFIX))
    return new_fusion(plain, seed, base, head)


def recency_logistic(seed: int, n_features: int, *, with_value: bool) -> Pipeline:
    """The recency fusion over the stacker's x ([FEATURES, text strength, intent type,
    P(churn)] and, with_value, the three value columns after them). numpy ufuncs only, so the
    stacker's stub unpickles it with scikit-learn alone."""
    text_churn = n_features + N_TEXT_COLUMNS - 1
    columns = [FEATURE_NAMES.index(c) for c in RECENCY_COLUMNS] + [text_churn]
    if with_value:
        columns += [text_churn + 1, text_churn + 2, text_churn + 3]
    return make_pipeline(
        ColumnTransformer([("recency", "passthrough", columns)]),
        FunctionTransformer(np.arcsinh), StandardScaler(),
        LogisticRegression(C=1.0, max_iter=2000, random_state=seed))


def bgnbd_logistic(seed: int, n_features: int) -> Pipeline:
    """The BG/NBD fusion over the stacker's x with the value columns after it ([FEATURES, text
    (10), p_alive, expected orders, expected value]): log P(alive) and log expected orders
    (P(no order in the horizon) is a function of the two for a given age), and the sign of
    P(alive) (-1: no order yet, whose clipped logs are one constant). log(1 - P(alive)) is
    left out: it is -inf for every customer without a repeat order (P(alive) 1), and clipped
    it set those apart and cost 0.02 ROC-AUC at the calibration end. numpy ufuncs only, so the
    stacker's stub unpickles it with scikit-learn alone."""
    alive = n_features + N_TEXT_COLUMNS
    orders = alive + 1

    def clip(low: float, high: float | None = None) -> FunctionTransformer:
        return FunctionTransformer(np.clip, kw_args={"a_min": low, "a_max": high})

    columns = ColumnTransformer([
        ("log_alive", make_pipeline(clip(1e-6, 1.0), FunctionTransformer(np.log)), [alive]),
        ("log_orders", make_pipeline(clip(1e-6), FunctionTransformer(np.log)), [orders]),
        ("customer", FunctionTransformer(np.sign), [alive]),
    ])
    return make_pipeline(columns, StandardScaler(),
                         LogisticRegression(C=1.0, max_iter=2000, random_state=seed))


def pooled_logistic(base: Any, head: str, seed: int) -> Pipeline:
    """The pool's final step: a logistic regression over the log-probabilities of the features
    peer and of the network for `head`. Its input is StackingClassifier's [peer's columns, x],
    x = [FEATURES, text strength, intent_type, churn]; the peer's column count varies (binary:
    one), so its columns are found as all but x's, and the network's counted from x's end."""
    x_width = base.n_features_in_  # the stacker's x: the features model reads it padded
    text = {"strength": [-N_TEXT_COLUMNS, -N_TEXT_COLUMNS + 1, -N_TEXT_COLUMNS + 2],
            "churn": [-1]}[head]
    pick = ColumnTransformer([("peer", "passthrough", slice(0, -x_width)),
                              ("network", "passthrough", text)])
    return make_pipeline(
        pick, FunctionTransformer(np.clip, kw_args={"a_min": 1e-6, "a_max": 1.0}),
        FunctionTransformer(np.log),
        LogisticRegression(max_iter=2000, random_state=seed))


def features_model(features: np.ndarray, y: np.ndarray, seed: int) -> Pipeline:
    """The features peer (gradient boosting on FEATURES alone) as a model of the stacker's x:
    it reads the FEATURES columns and ignores the text probabilities after them."""
    pick = ColumnTransformer([("features", "passthrough", list(range(features.shape[1])))])
    return make_pipeline(pick, HistGradientBoostingClassifier(random_state=seed)).fit(
        features_only(features), y)


def features_only(features: np.ndarray) -> np.ndarray:
    """FEATURES padded to the stacker's x, for a model that reads only them."""
    return np.hstack([features, np.zeros((len(features), N_TEXT_COLUMNS))])


def out_of_fold(kind: str, x: np.ndarray, y: np.ndarray, groups: Sequence[str], k: int,
                seed: int, base: Any = None, head: str = "strength") -> np.ndarray:
    """Probabilities of every row from a fusion fitted on the other folds (grouped by user)."""
    folds = min(CV_FOLDS, len(set(groups)))
    out = np.zeros((len(x), k))
    for fit_rows, held_rows in GroupKFold(n_splits=folds).split(x, y, groups):
        seen = np.unique(y[fit_rows])
        if len(seen) < 2:  # a fold of few users can hold one label: it predicts that label
            out[np.ix_(held_rows, seen)] = 1.0
            continue
        clf = fusion(kind, seed, base, head).fit(x[fit_rows], y[fit_rows])
        out[held_rows] = full_columns(clf, x[held_rows], k)
    return out


def forward_out_of_fold(kind: str, x: np.ndarray, y: np.ndarray, groups: Sequence[str],
                        as_of: np.ndarray, k: int, seed: int, base: Any = None,
                        head: str = "strength") -> tuple[np.ndarray, np.ndarray] | None:
    """(rows, their probabilities): every window as of the median as-of time or later, from a
    fusion fitted on other users' windows as of before it (grouped folds, as `out_of_fold`).
    None where no window is as of before the median (nothing earlier to fit on)."""
    middle = float(np.median(as_of))
    early = as_of < middle
    if not early.any():
        return None
    folds = min(CV_FOLDS, len(set(groups)))
    rows, probs = [], []
    for fit_rows, held_rows in GroupKFold(n_splits=folds).split(x, y, groups):
        fit_rows, held_rows = fit_rows[early[fit_rows]], held_rows[~early[held_rows]]
        if len(held_rows) == 0:
            continue
        out = np.zeros((len(held_rows), k))
        seen = np.unique(y[fit_rows])
        if len(seen) < 2:  # one label (or none) before the median: it predicts that label
            out[:, seen] = 1.0
        else:
            clf = fusion(kind, seed, base, head).fit(x[fit_rows], y[fit_rows])
            out = full_columns(clf, x[held_rows], k)
        rows.append(held_rows)
        probs.append(out)
    if not rows:
        return None
    return np.concatenate(rows), np.vstack(probs)


@dataclass
class StackResult:
    card: dict[str, Any]  # the model card's "stacking" section
    heads: dict[str, Any]  # head -> fitted classifier to export (only heads that fit)
    thresholds: dict[str, float | None]  # churn's decision threshold, chosen on validation
    test_probs: Probs  # the served model on the test split: stacked heads + text intent_type


def rf_matrix(features: np.ndarray) -> np.ndarray:
    """Recency, frequency and a never-ordered flag (recency -1 means no order yet)."""
    cols = [FEATURE_NAMES.index(c) for c in RF_COLUMNS]
    x = features[:, cols].astype(np.float64)
    never = (x[:, 0] < 0).astype(np.float64)
    x[:, 0] = np.where(never > 0, 0.0, x[:, 0])
    return np.hstack([x, never[:, None]])


def fit_rf_baseline(features: np.ndarray, churn: np.ndarray, seed: int) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)
                         ).fit(rf_matrix(features), churn)


def selection_loss(y: Sequence[int], probs: np.ndarray) -> float:
    """Log-loss of a head's probabilities (clipped: a class a fold never saw has p = 0)."""
    p = np.clip(probs, 1e-6, 1.0)
    return float(log_loss(y, p / p.sum(axis=1, keepdims=True), labels=list(range(p.shape[1]))))


def _threshold(head: str, y: Sequence[int], probs: np.ndarray) -> float | None:
    return best_threshold(y, probs[:, 1]) if head == "churn" else None


def fit_stack(*args: Any, **kwargs: Any) -> StackResult:
    """`_fit_stack` on one OpenMP thread: on small tables the trees' threads mostly wait on
    each other, and on shared cores they ran ~5x slower than on one."""
    with threadpool_limits(limits=1, user_api="openmp"):
        return _fit_stack(*args, **kwargs)


@dataclass
class HeadFit:
    """One stacked head: every fusion's out-of-fold loss, the one chosen, its classifier."""

    selection: dict[str, float] = field(default_factory=dict)
    chosen: str | None = None
    head: Any = None  # the chosen fusion, refitted on the whole validation split
    threshold: float | None = None
    test: dict[str, np.ndarray] = field(default_factory=dict)  # fusion -> test probabilities
    validation: dict[str, np.ndarray] = field(default_factory=dict)  # fusion -> out of fold
    skipped: str | None = None
    forward: dict[str, Any] = field(default_factory=dict)  # rows scored forward, if chosen so


def _fit_stack(
    labels: dict[str, tuple[str, ...]],
    features: dict[str, np.ndarray],
    text: dict[str, Probs],
    targets: dict[str, dict[str, list[int]]],
    users: dict[str, Sequence[str]],
    peers: dict[str, dict[str, Probs]],
    seed: int,
    stack: bool = True,
    value: dict[str, np.ndarray] | None = None,
    as_of: np.ndarray | None = None,
    extrapolate: bool = False,
) -> StackResult:
    """Fit, choose and measure the stacked heads. Every mapping is keyed by split name
    ("train", "validation", "test") where it is per split; `text` holds the network's
    probabilities, `peers` the text baseline's (`peers["tfidf_lr"][split][head]`), churn as
    [n, 2] everywhere. `stack=False` (fusion "tower": the network reads FEATURES itself) fits
    no stack: the network is served as it is and measured against the same peers. `value`:
    the customer value columns per split ("validation", "test", and "train" for the fusions
    that read no network output), where the version has a customer value model: churn fusions
    may read them too (VALUE_FUSIONS). `as_of`: the
    validation windows' as-of times, where the scores served come after them (a history):
    churn's fusion is then chosen forward (FORWARD_HEADS). `extrapolate`: the scores served lie
    a horizon or more beyond every labelled window: churn's candidates are EXTRAPOLATING (where
    the value columns are given)."""
    x = {s: stack_inputs(features[s], text[s]) for s in ("validation", "test")}
    x_value = None if value is None else {
        s: np.hstack([x[s], np.asarray(value[s], dtype=np.float64)]) for s in x}
    y = {s: {h: np.asarray(v, dtype=np.int64) for h, v in targets[s].items()} for s in targets}
    # A fusion that reads no network output (EXTRAPOLATING) may learn from the training rows
    # too: five times the rows, and no over-fitted probability among its inputs.
    more_rows = None if value is None or value.get("train") is None else (
        np.hstack([features_only(features["train"]),
                   np.asarray(value["train"], dtype=np.float64)]), y["train"]["churn"])
    # The features peer, fitted on the training split: measured as a peer below, and frozen
    # inside the fusions on it.
    bases = {head: features_model(features["train"], y["train"][head], seed)
             for head in labels if len(np.unique(y["train"][head])) >= 2}
    fits = {head: _fit_head(head, labels[head], x, x_value, y["validation"][head], text,
                            users["validation"], bases.get(head), seed, stack,
                            schema_rows=features["validation"].shape[1] == len(FEATURE_NAMES),
                            as_of=as_of if head in FORWARD_HEADS else None,
                            extrapolate=extrapolate and head in FORWARD_HEADS,
                            more_rows=more_rows if head == "churn" else None)
            for head in STACKED_HEADS}
    chosen = {head: fit.chosen for head, fit in fits.items() if fit.chosen}
    heads: dict[str, Any] = {head: fits[head].head for head in chosen}
    if chosen.get("churn", "").endswith(VALUE_SUFFIX):
        heads["churn_reads_customer_value"] = True
    thresholds: dict[str, float | None] = {h: None for h in labels}
    thresholds.update({head: fits[head].threshold for head in chosen})
    test_models, val_models = _served_and_peers(labels, features, text, y, peers, bases, fits,
                                                seed)
    measured = measure(labels, test_models, val_models, y["validation"], y["test"], users["test"],
                       thresholds, seed)
    card = {
        "inputs": "[FEATURES (schema columns), text strength (3), text intent_type (6), "
                  "text churn (1)]",
        "fitted_on": {"split": "validation", "rows": len(x["validation"]),
                      "users": len(set(users["validation"]))},
        "selection": {"method": f"{CV_FOLDS}-fold cross-validation on the validation split, "
                                "grouped by user, out-of-fold log-loss (lower is better)" + (
                                    "; churn forward: fitted on windows as of before the "
                                    "median as-of time, 1 - ROC-AUC on the later ones"
                                    if as_of is not None else "") + (
                                    f"; churn candidates: {', '.join(EXTRAPOLATING)} (served "
                                    "a horizon or more beyond every labelled window)"
                                    if extrapolate and value is not None else ""),
                      "forward": {h: f.forward for h, f in fits.items() if f.forward},
                      "scores": {h: f.selection for h, f in fits.items() if f.selection},
                      "chosen": chosen},
        "skipped": {h: f.skipped for h, f in fits.items() if f.skipped},
        **measured,
    }
    return StackResult(card, heads, thresholds, test_models["served"])


def _fit_head(head: str, head_labels: tuple[str, ...], x: dict[str, np.ndarray],
              x_value: dict[str, np.ndarray] | None, y_val: np.ndarray, text: dict[str, Probs],
              val_users: Sequence[str], base: Any, seed: int, stack: bool, *,
              schema_rows: bool, as_of: np.ndarray | None = None,
              extrapolate: bool = False,
              more_rows: tuple[np.ndarray, np.ndarray] | None = None) -> HeadFit:
    """Every fusion that applies to the head, by out-of-fold loss on validation against the
    network alone (forward where `as_of` is given: `forward_out_of_fold`); each refitted on
    the whole split and measured on test."""
    k = len(head_labels)
    if not stack:
        return HeadFit(skipped="fusion 'tower': the network reads FEATURES itself, no stack")
    if len(np.unique(y_val)) < k or len(set(val_users)) < 2:
        return HeadFit(skipped="a label is missing from the validation split (or one user only)")
    kinds = [kind for kind in FUSIONS if kind not in ON_THE_PEER or base is not None]
    if head == "churn" and schema_rows:  # the recency fusion reads the schema's columns
        kinds.append(RECENCY)
    if head == "churn" and x_value is not None:
        kinds += [kind + VALUE_SUFFIX for kind in VALUE_FUSIONS if kind != RECENCY or schema_rows]
    candidates = [kind for kind in kinds if kind in EXTRAPOLATING] if extrapolate else kinds
    candidates = candidates or kinds  # no value columns: nothing extrapolates, all compete

    def inputs(kind: str, split: str) -> np.ndarray:
        return x_value[split] if kind.endswith(VALUE_SUFFIX) else x[split]  # type: ignore[index]

    fit = HeadFit()
    fit.validation = {kind: out_of_fold(kind, inputs(kind, "validation"), y_val, val_users, k,
                                        seed, base, head) for kind in kinds}
    fit.selection = {kind: selection_loss(y_val, fit.validation[kind]) for kind in kinds}
    fit.selection["text_model"] = selection_loss(y_val, text["validation"][head])
    if as_of is not None:
        forward = _forward_selection(kinds, inputs, y_val, val_users, np.asarray(as_of), k,
                                     seed, base, head, text["validation"][head])
        if forward is not None:
            fit.selection, fit.forward = forward
    best = min((kind for kind in fit.selection if kind in candidates or kind == "text_model"),
               key=lambda kind: fit.selection[kind])
    if best == "text_model":
        fit.skipped = "no fusion measured better than the network alone on validation"
    else:
        fit.chosen = best
        fit.threshold = _threshold(head, y_val, fit.validation[best])
    for kind in kinds:
        rows, labels = inputs(kind, "validation"), y_val
        if more_rows is not None and kind in EXTRAPOLATING:
            rows, labels = np.vstack([more_rows[0], rows]), np.concatenate([more_rows[1], y_val])
        clf = fusion(kind, seed, base, head).fit(rows, labels)
        fit.test[kind] = full_columns(clf, inputs(kind, "test"), k)
        if kind == fit.chosen:
            fit.head = clf
    return fit


def _forward_selection(kinds: Sequence[str], inputs: Any, y_val: np.ndarray,
                       val_users: Sequence[str], as_of: np.ndarray, k: int, seed: int,
                       base: Any, head: str, text_probs: np.ndarray,
                       ) -> tuple[dict[str, float], dict[str, Any]] | None:
    """Each fusion's forward 1 - ROC-AUC (and the network's on the same rows; 0.5 where the
    rows hold one label), with what was scored; None where a fusion has nothing earlier to
    fit on."""
    losses: dict[str, float] = {}
    rows = None
    for kind in kinds:
        scored = forward_out_of_fold(kind, inputs(kind, "validation"), y_val, val_users, as_of,
                                     k, seed, base, head)
        if scored is None:
            return None
        rows, probs = scored
        losses[kind] = 1 - (ranked_roc_auc(y_val[rows], probs) or 0.5)
    if rows is None:
        return None
    losses["text_model"] = 1 - (ranked_roc_auc(y_val[rows], text_probs[rows]) or 0.5)
    return losses, {"rows": len(rows), "as_of_from_ms": int(np.median(as_of))}


def _served_and_peers(labels: dict[str, tuple[str, ...]], features: dict[str, np.ndarray],
                      text: dict[str, Probs], y: dict[str, dict[str, np.ndarray]],
                      peers: dict[str, dict[str, Probs]], bases: dict[str, Any],
                      fits: dict[str, HeadFit], seed: int,
                      ) -> tuple[dict[str, Probs], dict[str, Probs]]:
    """Test and validation probabilities of every model measured: the network, each fusion,
    the served model (stacked heads where chosen, the network's elsewhere) and the peers
    fitted on the training split."""
    test_models: dict[str, Probs] = {"text_model": dict(text["test"])}
    val_models: dict[str, Probs] = {"text_model": dict(text["validation"])}
    for head, fit in fits.items():
        for kind in fit.test:
            test_models.setdefault(f"stack_{kind}", {})[head] = fit.test[kind]
            val_models.setdefault(f"stack_{kind}", {})[head] = fit.validation[kind]
    chosen = {head: fit.chosen for head, fit in fits.items() if fit.chosen}
    rf = (fit_rf_baseline(features["train"], y["train"]["churn"], seed)
          if len(np.unique(y["train"]["churn"])) == 2 else None)
    for split, models in (("test", test_models), ("validation", val_models)):
        models["served"] = {h: models[f"stack_{chosen[h]}"][h] if h in chosen
                            else text[split][h] for h in labels}
        models["features_gb"] = {head: full_columns(base, features_only(features[split]),
                                                    len(labels[head]))
                                 for head, base in bases.items()}
        if rf is not None:
            models["recency_frequency"] = {"churn": rf.predict_proba(rf_matrix(features[split]))}
    for name, by_split in peers.items():
        test_models[name], val_models[name] = dict(by_split["test"]), dict(by_split["validation"])
    return test_models, val_models


def auc_delta(y: np.ndarray, served: np.ndarray, peer: np.ndarray,
              resamples: Sequence[np.ndarray]) -> dict[str, Any]:
    """ROC-AUC of the served model minus the peer's (ranked_roc_auc: binary, the positive
    column; else one-vs-rest macro), with its interval over the same resampled users."""
    whole = [ranked_roc_auc(y, p) for p in (served, peer)]
    if None in whole:
        return {}
    deltas = []
    for r in resamples:
        a, b = ranked_roc_auc(y[r], served[r]), ranked_roc_auc(y[r], peer[r])
        deltas.append(None if a is None or b is None else a - b)
    return {"roc_auc_delta": whole[0] - whole[1], "roc_auc_delta_ci95": interval(deltas)}


def measure(
    labels: dict[str, tuple[str, ...]],
    test_models: dict[str, Probs],
    val_models: dict[str, Probs],
    y_val: dict[str, np.ndarray],
    y_test: dict[str, np.ndarray],
    users: Sequence[str],
    served_thresholds: dict[str, float | None],
    seed: int,
) -> dict[str, Any]:
    """Test metrics of every model on every head it has, with 95% intervals over resampled
    test users; and the served model's headline difference to each peer, with its interval."""
    resamples = user_resamples(users, BOOTSTRAP_ROUNDS, seed)
    out: dict[str, dict[str, Any]] = {}
    preds: dict[str, dict[str, np.ndarray]] = {}
    for name, probs in test_models.items():
        for head, p in probs.items():
            if name == "served":
                threshold = served_thresholds.get(head)
                if head == "churn" and threshold is None:
                    threshold = _threshold(head, y_val[head], val_models[name][head])
            else:
                threshold = _threshold(head, y_val[head], val_models[name][head])
            metrics = head_metrics(y_test[head], p, labels[head], threshold=threshold)
            pred = predicted_labels(p, threshold)
            preds.setdefault(name, {})[head] = pred
            out.setdefault(name, {})[head] = {
                **{m: metrics[m] for m in ("macro_f1", "roc_auc", "pr_auc", "ece", "threshold")},
                "macro_f1_ci95": interval([
                    macro_f1_from_predictions(y_test[head][r], pred[r], len(labels[head]))
                    for r in resamples]),
                "roc_auc_ci95": interval([ranked_roc_auc(y_test[head][r], p[r])
                                          for r in resamples]),
            }
    versus: dict[str, dict[str, Any]] = {}
    for head in labels:
        k = len(labels[head])
        served = [macro_f1_from_predictions(y_test[head][r], preds["served"][head][r], k)
                  for r in resamples]
        for peer in ("tfidf_lr", "features_gb", "recency_frequency", *VALUE_PEERS):
            if head not in preds.get(peer, {}):
                continue
            deltas = [a - macro_f1_from_predictions(y_test[head][r], preds[peer][head][r], k)
                      for a, r in zip(served, resamples, strict=True)]
            delta = out["served"][head]["macro_f1"] - out[peer][head]["macro_f1"]
            auc = auc_delta(y_test[head], test_models["served"][head], test_models[peer][head],
                            resamples)
            versus.setdefault(head, {})[peer] = {"delta": delta, "ci95": interval(deltas),
                                                 "beats": delta > 0, **auc}
    return {"test": out, "served_vs_peers": versus,
            "beats_peers": {h: all(v["beats"] for v in versus.get(h, {}).values())
                            for h in labels}}

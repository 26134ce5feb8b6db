"""The baseline users would try first: TF-IDF + logistic regression, one per head, same texts.

It sees exactly the text the model sees (the rendered window; it is not cut to 128 tokens, so it
may read older events than the model can) and the same user split. Its regularisation strength
is picked per head on the validation split by the same headline metric the model is judged by,
so it is a tuned baseline, not a straw man.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.dummy import DummyClassifier
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)


@dataclass
class TfidfBaseline:
    vectorizer: TfidfVectorizer
    heads: dict[str, LogisticRegression | DummyClassifier]
    n_classes: dict[str, int]
    chosen_c: dict[str, float | None]  # None: one class in training, a constant predictor

    def predict_proba(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Per head, [n, classes] probabilities with columns in label-index order."""
        features = self.vectorizer.transform(texts)
        return {
            name: full_columns(clf, features, self.n_classes[name])
            for name, clf in self.heads.items()
        }


def full_columns(clf: Any, x: Any, k: int) -> np.ndarray:
    """predict_proba with one column per label index: a class missing from the training split
    gets a zero column, so indices stay label indices (a Pipeline: its last step's classes)."""
    probs = clf.predict_proba(x)
    classes = clf[-1].classes_ if isinstance(clf, Pipeline) else clf.classes_
    out = np.zeros((probs.shape[0], k))
    if len(classes) == 1:  # fitted on one class (a fold can hold one): it is certain of it
        out[:, int(classes[0])] = 1.0  # (HistGradientBoosting still answers two columns)
        return out
    out[:, np.asarray(classes, dtype=np.int64)] = probs
    return out


def fit_baseline(
    train_texts: Sequence[str],
    train_targets: dict[str, Sequence[int]],
    n_classes: dict[str, int],
    val_texts: Sequence[str],
    val_targets: dict[str, Sequence[int]],
    score: Callable[[str, Sequence[int], np.ndarray], float],
    seed: int,
) -> TfidfBaseline:
    """Fit one vocabulary and, per head, the C in C_GRID with the best validation `score`
    (head name, true indices, probabilities → higher is better)."""
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    train_x = vectorizer.fit_transform(train_texts)
    val_x = vectorizer.transform(val_texts)
    heads: dict[str, LogisticRegression | DummyClassifier] = {}
    chosen: dict[str, float | None] = {}
    for name, y in train_targets.items():
        if len(set(y)) < 2:  # e.g. an order table: every intent is a purchase
            heads[name] = DummyClassifier(strategy="prior").fit(train_x, y)
            chosen[name] = None
            continue
        best: tuple[float, float, LogisticRegression] | None = None
        for c in C_GRID:
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
            clf.fit(train_x, y)
            value = score(name, val_targets[name], full_columns(clf, val_x, n_classes[name]))
            if best is None or value > best[0]:
                best = (value, c, clf)
        assert best is not None
        heads[name], chosen[name] = best[2], best[1]
    return TfidfBaseline(vectorizer, heads, n_classes, chosen)

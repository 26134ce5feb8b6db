"""The ensemble's stacker step on the real tritonserver: heads fitted for a network version
replace its strength and churn where FEATURES come with the request; without FEATURES, or for a
version with no heads, the network's probabilities pass through; a FEATURES row of the wrong
width is an error about that request."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from inference.client import ScoringError, TritonScorer
from inference.model.stacking import write_heads
from inference.tritonserver import tiny_triton_server

WIDTH = 5  # features in this test's heads (the live schema has more)


def fitted(labels: list[int]) -> DummyClassifier:
    return DummyClassifier(strategy="prior").fit(np.zeros((len(labels), WIDTH + 10)), labels)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with tiny_triton_server(tmp_path_factory.mktemp("stacker")) as running:
        # Version 1 gets heads: strength priors 1/4, 1/4, 1/2; churn prior 3/4.
        write_heads(running.repo, 1, {"n_features": WIDTH, "feature_schema": 1,
                                      "strength": fitted([0, 1, 2, 2]),
                                      "churn": fitted([0, 1, 1, 1])})
        yield running


def score(server, texts, features=None):
    async def go():
        async with TritonScorer(server.grpc_url) as scorer:
            return await scorer.score(texts, features)
    return asyncio.run(go())


def test_heads_replace_strength_and_churn_when_features_come(server):
    (text_only,) = score(server, ["view: trail shoe"])
    (stacked,) = score(server, ["view: trail shoe"], [[1.0] * WIDTH])
    assert stacked.strength == pytest.approx({"strong": 0.25, "medium": 0.25, "weak": 0.5})
    assert stacked.churn == pytest.approx(0.75)
    assert stacked.intent_type == pytest.approx(text_only.intent_type)  # the network's
    assert text_only.strength != stacked.strength
    assert stacked.model_version == text_only.model_version == 1


def test_a_row_of_the_wrong_width_is_an_error_about_the_request(server):
    with pytest.raises(ScoringError) as error:
        score(server, ["view: trail shoe"], [[1.0] * (WIDTH - 2)])
    assert not error.value.transient and "trained on 5" in str(error.value)

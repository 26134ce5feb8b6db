"""The stacker's cheap stage on the real tritonserver (issue #27): with CASCADE, mode-2 rows are
answered by the version's features-only heads, and NETWORK_WANTED says which cheap answers the
version's cascade policy sends to the network; exact rows (mode 0) always stand, and a version
without a policy sends every cheap answer on."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from inference.client import NetworkOutputs, TritonScorer
from inference.model.stacking import write_heads
from inference.tritonserver import tiny_triton_server
from streams.core.cascade import (
    MODE_EXACT,
    MODE_FEATURES,
    MODE_STALE,
    WANTED_BAND,
    WANTED_FEATURES_OFF,
    WANTED_NO,
    WANTED_NO_POLICY,
    WANTED_REFRESH,
    CascadePolicy,
)

WIDTH = 5
POLICY = CascadePolicy(strength_band=(0.3, 0.45), refresh_events=4, features=True)


def prior(labels: list[int]) -> DummyClassifier:
    return DummyClassifier(strategy="prior").fit(np.zeros((len(labels), WIDTH + 10)), labels)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with tiny_triton_server(tmp_path_factory.mktemp("cascade")) as running:
        write_heads(running.repo, 1, {
            "n_features": WIDTH, "feature_schema": 1,
            "strength": prior([0, 1, 2, 2]),  # stacked: p(strong) 0.25, outside the band
            "churn": prior([0, 1, 1, 1]),
            "features_only": {"strength": prior([0, 0, 1, 2, 2]),  # p(strong) 0.4: in it
                              "intent_type": prior([3, 3, 3, 1]),
                              "churn": prior([0, 0, 0, 1])},
            "cascade": POLICY.to_json(),
        })
        yield running


def stacked(server, rows: list[tuple[int, int]], version: int = 1):
    net = NetworkOutputs((0.2, 0.3, 0.5), (1.0, 0, 0, 0, 0, 0), 0.5, version)

    async def go():
        async with TritonScorer(server.grpc_url) as scorer:
            assert await scorer.cascades()
            return await scorer.score_stacked([net] * len(rows), [[1.0] * WIDTH] * len(rows),
                                              rows)
    return asyncio.run(go())


def test_features_only_heads_answer_mode_two_rows_and_the_band_sends_them_on(server):
    exact, stale, features = stacked(server, [(MODE_EXACT, 0), (MODE_STALE, 1),
                                              (MODE_FEATURES, 0)])
    assert features.strength == pytest.approx({"strong": 0.4, "medium": 0.2, "weak": 0.4})
    assert features.intent_type["request"] == pytest.approx(0.75)  # label index 3
    assert features.churn == pytest.approx(0.25)
    assert features.wanted == WANTED_BAND
    for row in (exact, stale):  # the stacked heads over the kept outputs
        assert row.strength == pytest.approx({"strong": 0.25, "medium": 0.25, "weak": 0.5})
        assert row.intent_type["purchase"] == pytest.approx(1.0)
        assert row.wanted == WANTED_NO


def test_kept_outputs_as_old_as_the_refresh_bound_ask_for_the_network(server):
    fresh, old, exact_old = stacked(server, [(MODE_STALE, 3), (MODE_STALE, 4), (MODE_EXACT, 9)])
    assert (fresh.wanted, old.wanted, exact_old.wanted) == (WANTED_NO, WANTED_REFRESH, WANTED_NO)


def test_a_policy_that_lets_no_features_only_answer_stand_sends_those_rows_on(server):
    write_heads(server.repo, 2, {  # heads of a version not served yet: the stacker reads them
        "n_features": WIDTH, "feature_schema": 1,
        "features_only": {"strength": prior([2, 2]), "intent_type": prior([3]),
                          "churn": prior([0, 1])},
        "cascade": CascadePolicy(refresh_events=4).to_json()})
    stale, features = stacked(server, [(MODE_STALE, 1), (MODE_FEATURES, 0)], version=2)
    assert (stale.wanted, features.wanted) == (WANTED_NO, WANTED_FEATURES_OFF)


def test_a_version_without_a_policy_sends_every_cheap_answer_on(server):
    rows = stacked(server, [(MODE_EXACT, 0), (MODE_STALE, 0), (MODE_FEATURES, 0)], version=7)
    assert [r.wanted for r in rows] == [WANTED_NO, WANTED_NO_POLICY, WANTED_NO_POLICY]


def test_without_cascade_the_stacker_answers_as_before(server):
    async def go():
        async with TritonScorer(server.grpc_url) as scorer:
            net = NetworkOutputs((0.2, 0.3, 0.5), (1.0, 0, 0, 0, 0, 0), 0.5, 1)
            (row,) = await scorer.score_stacked([net], [[1.0] * WIDTH])
            (whole,) = await scorer.score(["view: trail shoe"], [[1.0] * WIDTH])
            return row, whole
    row, whole = asyncio.run(go())
    assert row.wanted == WANTED_NO and whole.wanted == WANTED_NO
    assert row.strength == pytest.approx(whole.strength)  # the same heads

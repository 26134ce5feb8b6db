"""The stacker's cheap stage on the real tritonserver (issue #27): with CASCADE, mode-2 rows read
the version's prototype for their kinds of event in place of the network's outputs, and
NETWORK_WANTED says which cheap answers the version's cascade policy sends to the network;
exact rows (mode 0) always stand, and a version without a policy sends every cheap answer on."""

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
    MODE_STALE,
    MODE_TYPICAL,
    WANTED_BAND,
    WANTED_NO,
    WANTED_NO_POLICY,
    WANTED_REFRESH,
    WANTED_TYPICAL_OFF,
    WANTED_UNSEEN,
    CascadePolicy,
)

WIDTH = 5
POLICY = CascadePolicy(churn_band=(0.7, 0.8), refresh_events=4, typical=True)
VIEWS, CARTS = 0b1, 0b1001  # kinds_mask: view; view and add_to_cart
# What the stacked heads below read from the network's outputs: churn = its P(churn), so a
# row's answer shows which outputs it was given.
PROTOTYPES = {str(VIEWS): {"strength": [0.2, 0.3, 0.5], "intent_type": [0, 0, 0, 1.0, 0, 0],
                           "churn": 0.75}}


def prior(labels: list[int]) -> DummyClassifier:
    return DummyClassifier(strategy="prior").fit(np.zeros((len(labels), WIDTH + 10)), labels)


class NetworkChurn:
    """A churn head that answers the network's own P(churn) (the last column of x)."""

    classes_ = np.array([0, 1])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([1 - x[:, -1], x[:, -1]])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with tiny_triton_server(tmp_path_factory.mktemp("cascade")) as running:
        write_heads(running.repo, 1, {
            "n_features": WIDTH, "feature_schema": 1,
            "strength": prior([0, 1, 2, 2]), "churn": NetworkChurn(),
            "prototypes": PROTOTYPES, "cascade": POLICY.to_json(),
        })
        yield running


def stacked(server, rows: list[tuple[int, int, int]], version: int = 1):
    net = NetworkOutputs((0.2, 0.3, 0.5), (1.0, 0, 0, 0, 0, 0), 0.5, version)

    async def go():
        async with TritonScorer(server.grpc_url) as scorer:
            assert await scorer.cascades()
            return await scorer.score_stacked([net] * len(rows), [[1.0] * WIDTH] * len(rows),
                                              rows)
    return asyncio.run(go())


def test_mode_two_rows_read_the_prototype_of_their_kinds_and_the_band_sends_them_on(server):
    exact, stale, typical, unseen = stacked(server, [(MODE_EXACT, 0, 0), (MODE_STALE, 1, 0),
                                                     (MODE_TYPICAL, 0, VIEWS),
                                                     (MODE_TYPICAL, 0, CARTS)])
    assert typical.churn == pytest.approx(0.75)  # the stacked head over the prototype's
    assert typical.intent_type["request"] == pytest.approx(1.0)  # label index 3: its own
    assert typical.wanted == WANTED_BAND  # 0.75 lies in the churn band
    assert unseen.wanted == WANTED_UNSEEN  # no prototype for view + add_to_cart
    for row in (exact, stale):  # the stacked heads over the kept outputs
        assert row.strength == pytest.approx({"strong": 0.25, "medium": 0.25, "weak": 0.5})
        assert row.churn == pytest.approx(0.5) and row.intent_type["purchase"] == 1.0
        assert row.wanted == WANTED_NO


def test_kept_outputs_as_old_as_the_refresh_bound_ask_for_the_network(server):
    fresh, old, exact_old = stacked(server, [(MODE_STALE, 3, 0), (MODE_STALE, 4, 0),
                                             (MODE_EXACT, 9, 0)])
    assert (fresh.wanted, old.wanted, exact_old.wanted) == (WANTED_NO, WANTED_REFRESH, WANTED_NO)


def test_a_policy_that_lets_no_typical_answer_stand_sends_those_rows_on(server):
    write_heads(server.repo, 2, {  # heads of a version not served yet: the stacker reads them
        "n_features": WIDTH, "feature_schema": 1, "prototypes": PROTOTYPES,
        "cascade": CascadePolicy(refresh_events=4).to_json()})
    stale, typical = stacked(server, [(MODE_STALE, 1, 0), (MODE_TYPICAL, 0, VIEWS)], version=2)
    assert (stale.wanted, typical.wanted) == (WANTED_NO, WANTED_TYPICAL_OFF)


def test_a_version_without_a_policy_sends_every_cheap_answer_on(server):
    rows = stacked(server, [(MODE_EXACT, 0, 0), (MODE_STALE, 0, 0), (MODE_TYPICAL, 0, VIEWS)],
                   version=7)
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

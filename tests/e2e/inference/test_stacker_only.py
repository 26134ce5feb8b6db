"""The ensemble's last step called on its own, on a real tritonserver: given the network
outputs the ensemble returned for a text and a new FEATURES row, the `stacker` model alone
answers what the whole ensemble answers for that text and row (to float tolerance), in one
request, without the tokenizer or the network."""

from __future__ import annotations

import asyncio
from collections import Counter

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from inference.client import TritonScorer
from inference.model.stacking import write_heads
from inference.repository import REPOSITORY_TEMPLATE
from inference.tritonserver import tiny_triton_server
from tests.e2e.inference.network_outputs import template_exposing_network

pytestmark = pytest.mark.e2e

WIDTH = 5  # FEATURES columns of this test's heads


def head(classes: int, seed: int) -> LogisticRegression:
    """A head over [FEATURES, the network's 10 probabilities] that reads both."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, WIDTH + 10))
    y = (x[:, 0] + x[:, WIDTH + 2] > 0).astype(int) + (classes > 2) * (x[:, 1] > 1)
    return LogisticRegression().fit(x, y)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    work = tmp_path_factory.mktemp("stacker_only")
    template = template_exposing_network(REPOSITORY_TEMPLATE, work / "template")
    with tiny_triton_server(work, template=template) as running:
        write_heads(running.repo, 1, {"n_features": WIDTH, "feature_schema": 1,
                                      "strength": head(3, 1), "churn": head(2, 2)})
        yield running


TEXTS = ["view: Speedcross 6 | search: trail shoes", "add_to_cart: Nano Puff", "view: Talon 22"]
FIRST = [[0.0, 1.0, 2.0, 0.5, 1.0], [3.0, 0.0, 1.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0]]
LATER = [[5.0, -1.0, 2.0, 7.0, 0.0], [0.5, 2.0, 9.0, 1.0, 1.0], [-2.0, 0.0, 4.0, 3.0, 3.0]]


def test_the_stacker_alone_on_kept_network_outputs_equals_the_whole_ensemble(server):
    async def go():
        async with TritonScorer(server.grpc_url, max_batch=8, concurrency=1) as scorer:
            calls: Counter[str] = Counter()
            scorer.on_request = lambda model: calls.update([model])
            first = await scorer.score(TEXTS, FIRST)
            kept = [p.network for p in first]
            again = await scorer.score(TEXTS, LATER)  # what the ensemble gives now
            calls.clear()
            alone = await scorer.score_stacked(kept, LATER)
            return first, kept, again, alone, calls, await scorer.network_version()

    first, kept, again, alone, calls, version = asyncio.run(go())
    assert all(k is not None and k.version == 1 for k in kept) and version == 1
    assert calls == {"stacker": 1}  # one request, the stacker's: no tokenizer, no network
    assert [p.strength for p in first] != [p.strength for p in again]  # FEATURES matter
    for ensemble, stacker in zip(again, alone, strict=True):
        assert stacker.model_version == ensemble.model_version == 1
        assert stacker.strength == pytest.approx(ensemble.strength, abs=1e-6)
        assert stacker.intent_type == pytest.approx(ensemble.intent_type, abs=1e-6)
        assert stacker.churn == pytest.approx(ensemble.churn, abs=1e-6)
        assert stacker.customer_value == ensemble.customer_value

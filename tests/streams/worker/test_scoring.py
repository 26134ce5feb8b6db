"""Scoring never stalls on a text the model rejects, and never gives up on a server outage."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from inference.client import ScoringError, predictions_from_outputs
from inference.heads import Prediction
from streams.worker.scoring import ScoringMetrics, score_isolating


def prediction() -> Prediction:
    return Prediction(strength={"strong": 0.2, "medium": 0.3, "weak": 0.5},
                      intent_type={"purchase": 1.0}, churn=0.1, model_name="intent_bert",
                      model_version=1)


class Scorer:
    """Rejects any request holding a poisoned text (as Triton answers a model's error, one
    error for the whole request); fails `outages` calls first as an unreachable server."""

    def __init__(self, outages: int = 0) -> None:
        self.outages = outages
        self.calls: list[list[str]] = []

    async def score(self, texts: list[str], features=None) -> list[Prediction]:
        self.calls.append(list(texts))
        if self.outages:
            self.outages -= 1
            raise ScoringError("unavailable", transient=True)
        if any("POISON" in t for t in texts):
            raise ScoringError("in ensemble 'intent', poisoned", transient=False)
        return [prediction() for _ in texts]


def run(scorer: Scorer, texts: list[str], **kwargs) -> tuple[list, dict, dict]:
    counts = {"retry": 0, "failed": 0}
    observe = ScoringMetrics(retry=lambda: counts.__setitem__("retry", counts["retry"] + 1),
                             failed=lambda n: counts.__setitem__("failed", counts["failed"] + n))
    results, errors = asyncio.run(score_isolating(
        scorer, texts, retry_max_s=0.01, observe=observe, first_delay_s=0.001, **kwargs))
    return results, errors, counts


@pytest.mark.parametrize("poisoned", [[0], [5], [3, 17], [0, 1, 2, 3]])
def test_a_rejected_text_is_isolated_tried_a_bounded_number_of_times_and_given_up(poisoned):
    texts = [("POISON " if i in poisoned else "") + f"view: item {i}" for i in range(20)]
    scorer = Scorer()
    results, errors, counts = run(scorer, texts, max_attempts=3)
    assert sorted(errors) == poisoned
    assert all((r is None) == (i in poisoned) for i, r in enumerate(results))
    tries = {i: sum(1 for call in scorer.calls if call == [texts[i]]) for i in poisoned}
    assert tries == dict.fromkeys(poisoned, 3)  # alone, three times, then given up
    assert counts["failed"] == len(poisoned)


def test_an_outage_is_retried_until_the_server_answers_and_nothing_is_given_up():
    texts = [f"view: item {i}" for i in range(10)]
    results, errors, counts = run(Scorer(outages=12), texts, max_attempts=1)
    assert errors == {} and all(r is not None for r in results)
    assert counts["retry"] == 12 and counts["failed"] == 0


def outputs(rows: int, churn: float = 0.5) -> dict[str, np.ndarray]:
    return {"STRENGTH": np.full((rows, 3), 1 / 3, np.float32),
            "INTENT_TYPE": np.full((rows, 6), 1 / 6, np.float32),
            "CHURN": np.full((rows, 1), churn, np.float32),
            "MODEL_VERSION": np.ones((rows, 1), np.int64)}


def test_non_finite_or_misshapen_outputs_are_an_answer_about_the_texts():
    with pytest.raises(ScoringError) as nan:
        predictions_from_outputs(outputs(2, churn=float("nan")), 2)
    with pytest.raises(ScoringError) as shape:
        predictions_from_outputs(outputs(2), 3)
    assert not nan.value.transient and not shape.value.transient
    assert len(predictions_from_outputs(outputs(2), 2)) == 2

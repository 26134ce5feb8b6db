"""TritonScorer without a server: output decoding, request splitting, empty input, unreachable
server."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest

from inference.client import (
    ScoringError,
    TritonScorer,
    instance_count,
    length_chunks,
    predictions_from_outputs,
)
from inference.heads import Prediction
from inference.tritonserver import free_port


def _outputs(rows: int) -> dict[str, np.ndarray]:
    strength = np.tile(np.array([0.1, 0.7, 0.2], np.float32), (rows, 1))
    intent_type = np.zeros((rows, 6), np.float32)
    intent_type[np.arange(rows), np.arange(rows) % 6] = 1.0
    return {
        "STRENGTH": strength,
        "INTENT_TYPE": intent_type,
        "CHURN": np.arange(rows, dtype=np.float32).reshape(-1, 1) / rows,
        "MODEL_VERSION": np.full((rows, 1), 3, np.int64),
    }


def test_rows_become_predictions_in_order() -> None:
    predictions = predictions_from_outputs(dict(_outputs(4)), 4)
    assert [p.churn for p in predictions] == [0.0, 0.25, 0.5, 0.75]
    assert [p.intent_type_label for p in predictions] == [
        "purchase",
        "query",
        "complaint",
        "request",
    ]
    first = predictions[0]
    assert first.strength_label == "medium"
    assert first.strength == pytest.approx({"strong": 0.1, "medium": 0.7, "weak": 0.2})
    assert (first.model_name, first.model_version) == ("intent_bert", 3)
    with pytest.raises(AttributeError):
        first.churn = 1.0  # type: ignore[misc]  # frozen


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("STRENGTH", np.zeros((4, 2), np.float32)),
        ("CHURN", np.zeros((3, 1), np.float32)),
        ("MODEL_VERSION", None),
    ],
)
def test_malformed_outputs_raise_scoring_error(name: str, bad: np.ndarray | None) -> None:
    outputs: dict[str, np.ndarray | None] = dict(_outputs(4))
    outputs[name] = bad
    with pytest.raises(ScoringError, match=name):
        predictions_from_outputs(outputs, 4)


def _with_network(rows: int) -> dict[str, np.ndarray]:
    strength = np.tile(np.array([0.3, 0.3, 0.4], np.float32), (rows, 1))
    return {**_outputs(rows), "TEXT_STRENGTH": strength,
            "TEXT_INTENT_TYPE": np.full((rows, 6), 1 / 6, np.float32),
            "TEXT_CHURN": np.full((rows, 1), 0.125, np.float32)}


def test_the_network_outputs_come_with_each_row_where_the_ensemble_gives_them() -> None:
    (first, *_) = predictions_from_outputs(_with_network(3), 3)
    network = first.network
    assert network is not None and network.version == 3 and network.churn == 0.125
    # exactly the float32 values, as the stacker got them (kept, they are sent back as such)
    assert tuple(np.array(network.strength, np.float32).tolist()) == network.strength == (
        np.float32(0.3).item(), np.float32(0.3).item(), np.float32(0.4).item())
    assert first.strength == pytest.approx({"strong": 0.1, "medium": 0.7, "weak": 0.2})
    assert all(p.network is None for p in predictions_from_outputs(_outputs(3), 3))


def test_misshapen_network_outputs_are_an_answer_about_the_texts() -> None:
    outputs = _with_network(3)
    outputs["TEXT_INTENT_TYPE"] = np.zeros((3, 5), np.float32)
    with pytest.raises(ScoringError, match="TEXT_INTENT_TYPE") as error:
        predictions_from_outputs(outputs, 3)
    assert not error.value.transient


def test_nothing_to_stack_no_request() -> None:
    async def stack_nothing() -> list[Prediction]:
        async with TritonScorer(f"127.0.0.1:{free_port()}") as scorer:
            result = await scorer.score_stacked([], [])
            assert scorer._client is None  # never connected
            return result

    assert asyncio.run(stack_nothing()) == []


def test_no_texts_no_request() -> None:
    async def score_nothing() -> list[Prediction]:
        async with TritonScorer(f"127.0.0.1:{free_port()}") as scorer:
            result = await scorer.score([])
            assert scorer._client is None  # never connected
            return result

    assert asyncio.run(score_nothing()) == []


def test_unreachable_server_is_not_ready_and_raises_one_error_type() -> None:
    url = f"127.0.0.1:{free_port()}"

    async def check() -> None:
        async with TritonScorer(url, max_batch=2, timeout_s=5) as scorer:
            assert not await scorer.ready()
            with pytest.raises(ScoringError, match=f"intent at {re.escape(url)}"):
                await scorer.score(["a", "b", "c", "d", "e"])  # three concurrent requests

    asyncio.run(check())


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        TritonScorer("127.0.0.1:1", max_batch=0)


def test_concurrency_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        TritonScorer("127.0.0.1:1", concurrency=-1)


def _check_chunks(lengths: list[int], max_batch: int, concurrency: int) -> list[list[int]]:
    chunks = length_chunks(lengths, max_batch, concurrency)
    flat = [i for chunk in chunks for i in chunk]
    assert sorted(flat) == list(range(len(lengths)))  # every text once
    assert [lengths[i] for i in flat] == sorted(lengths)  # in length order
    assert all(1 <= len(chunk) <= max_batch for chunk in chunks)
    return chunks


@pytest.mark.parametrize("concurrency", [1, 2, 3, 8])
@pytest.mark.parametrize("n", [1, 2, 5, 31, 32, 33, 64, 65, 200])
def test_chunks_cover_every_text_in_length_order_within_max_batch(n: int,
                                                                   concurrency: int) -> None:
    lengths = [(7 * i) % 41 for i in range(n)]
    chunks = _check_chunks(lengths, 32, concurrency)
    assert len(chunks) == min(n, max(-(-n // 32), concurrency))


def test_one_request_per_max_batch_without_concurrency() -> None:
    sizes = [len(c) for c in _check_chunks([5] * 70, 32, 1)]
    assert len(sizes) == 3 and max(sizes) - min(sizes) <= 1
    assert _check_chunks([5, 1, 3], 32, 1) == [[1, 2, 0]]


def test_parallel_requests_carry_about_the_same_characters() -> None:
    lengths = [10, 12, 20, 30, 40, 60, 200, 210, 220, 230]
    chunks = _check_chunks(lengths, 32, 2)
    sizes = [sum(lengths[i] for i in chunk) for chunk in chunks]
    # Equal counts would put 112 characters in one request and 920 in the other.
    assert len(chunks) == 2 and max(sizes) < 1.4 * min(sizes)
    # One text longer than all the others together goes alone.
    assert _check_chunks([1] * 9 + [500], 32, 2)[1] == [9]


def test_instances_counted_over_groups_and_gpus() -> None:
    assert instance_count({}) == 1
    assert instance_count({"instance_group": [{"kind": "KIND_CPU", "count": 2}]}) == 2
    assert instance_count({"instance_group": [{"kind": "KIND_GPU", "count": 2, "gpus": [0, 1]},
                                              {"kind": "KIND_CPU"}]}) == 5

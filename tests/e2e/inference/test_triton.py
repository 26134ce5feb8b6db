"""The real tritonserver, the real ensemble, a tiny model: scores, order, versions, hot swap."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerBase
from tritonclient.grpc import aio as grpcaio

from inference import repository
from inference.client import TritonScorer
from inference.heads import INTENT_TYPE_LABELS, STRENGTH_LABELS, Prediction
from inference.model.export import export_version
from inference.model.intent_bert import IntentBert
from inference.model.tokenizer import encode
from inference.tritonserver import TritonServer, tiny_triton_server

pytestmark = pytest.mark.e2e

# ~50 texts of varied lengths (so requests in one dynamic batch are ragged), with repeats,
# and one far longer than max_length (truncated on the left by the tokenizer model).
BASE_TEXTS = [
    f"viewed product {i} " * (1 + i % 7) + ("added to cart " if i % 3 == 0 else "")
    for i in range(44)
]
TEXTS = [
    *BASE_TEXTS,
    BASE_TEXTS[5],
    "searched for a refund policy " * 80 + "asked for the manager",
    BASE_TEXTS[0],
    "",
    "ünïcödé and emoji 🛒",
    BASE_TEXTS[5],
]


def _score(url: str, texts: Sequence[str], max_batch: int) -> list[Prediction]:
    async def run() -> list[Prediction]:
        async with TritonScorer(url, max_batch=max_batch, timeout_s=60) as scorer:
            assert await scorer.ready()
            return await scorer.score(texts)

    return asyncio.run(run())


def _as_rows(prediction: Prediction) -> list[float]:
    return [
        *(prediction.strength[label] for label in STRENGTH_LABELS),
        *(prediction.intent_type[label] for label in INTENT_TYPE_LABELS),
        prediction.churn,
    ]


def _in_process_rows(
    model: IntentBert, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]
) -> torch.Tensor:
    ids, mask = encode(tokenizer, texts, max_length=model.max_length)
    with torch.inference_mode():
        probs = model.probabilities(ids, mask)
    return torch.cat([probs.strength, probs.intent_type, probs.churn[:, None]], dim=1)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_scores_match_in_process_model(
    triton_server: TritonServer, tokenizer: PreTrainedTokenizerBase
) -> None:
    version = repository.versions(triton_server.repo / "intent_bert")[-1]
    model = IntentBert.load(triton_server.repo / "intent_bert" / str(version) / "artifacts")

    predictions = _score(triton_server.grpc_url, TEXTS, max_batch=8)  # 7 concurrent requests

    assert len(predictions) == len(TEXTS)
    for p in predictions:
        assert sum(p.strength.values()) == pytest.approx(1, abs=1e-5)
        assert sum(p.intent_type.values()) == pytest.approx(1, abs=1e-5)
        assert 0 < p.churn < 1
        assert (p.model_name, p.model_version) == ("intent_bert", version)
    # Order: repeated texts land on equal rows (up to float noise from padding in differently
    # shaped batches), and every row matches torch in-process.
    served = torch.tensor([_as_rows(p) for p in predictions])
    for repeat, original in [(44, 5), (49, 5), (46, 0)]:
        torch.testing.assert_close(served[repeat], served[original], atol=1e-6, rtol=0)
    assert not torch.allclose(served[5], served[0], atol=1e-3)
    torch.testing.assert_close(served, _in_process_rows(model, tokenizer, TEXTS), atol=1e-4, rtol=0)


def test_a_batch_is_split_over_the_served_instances(triton_server: TritonServer) -> None:
    """The scorer asks how many instances serve the ensemble's steps (intent_bert's two) and
    sends that many requests at once; intent_bert runs them as they were sent (no batcher
    merges them: replay's determinism relies on it), and the rows match one request per text."""
    texts = BASE_TEXTS[:10]

    async def executions() -> tuple[int, int]:
        client = grpcaio.InferenceServerClient(triton_server.grpc_url)
        try:
            stats = await client.get_inference_statistics("intent_bert", as_json=True)
        finally:
            await client.close()
        entry = stats["model_stats"][0]
        return int(entry.get("execution_count", 0)), int(entry.get("inference_count", 0))

    async def run() -> tuple[int, tuple[int, int], list[Prediction], list[Prediction]]:
        async with TritonScorer(triton_server.grpc_url, max_batch=32, timeout_s=60) as scorer:
            concurrency = await scorer.concurrency()
            before = await executions()
            split = await scorer.score(texts)
            after = await executions()
        async with TritonScorer(triton_server.grpc_url, max_batch=1, timeout_s=60,
                                concurrency=1) as single:
            alone = await single.score(texts)
        return concurrency, (after[0] - before[0], after[1] - before[1]), split, alone

    concurrency, (ran, rows), split, alone = asyncio.run(run())
    assert concurrency == 2
    assert (ran, rows) == (2, len(texts))  # two executions of the ten rows, not one
    torch.testing.assert_close(torch.tensor([_as_rows(p) for p in split]),
                               torch.tensor([_as_rows(p) for p in alone]), atol=1e-5, rtol=0)


def test_hot_swap_then_stop_by_pid(tmp_path: Path, tokenizer: PreTrainedTokenizerBase) -> None:
    texts = ["added to cart twice", "asked about delivery"]
    with tiny_triton_server(tmp_path) as server:
        pid = server.pid
        assert pid is not None
        before = _score(server.grpc_url, texts, max_batch=32)
        assert {p.model_version for p in before} == {1}

        torch.manual_seed(1)
        new_version = export_version(IntentBert.tiny(len(tokenizer)), server.repo)
        server.load_model("intent_bert")  # explicit model control: swap to the newest
        after = _score(server.grpc_url, texts, max_batch=32)

        assert {p.model_version for p in after} == {new_version} == {2}
        assert [p.churn for p in after] != [p.churn for p in before]
    assert not server.is_running()
    assert not _process_exists(pid)

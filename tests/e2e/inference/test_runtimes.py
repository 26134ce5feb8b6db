"""A version exported on onnxruntime-int8, served by the real tritonserver: swapped in over a
torch version, scoring exactly as the int8 graph does; a runtime that cannot start here is
refused at load, and the version already served stays."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from inference import repository
from inference.client import TritonScorer
from inference.heads import INTENT_TYPE_LABELS, STRENGTH_LABELS, Prediction
from inference.model.export import export_version
from inference.model.runtimes import available_runtimes, load_scorer, write_runtime
from inference.model.tokenizer import encode, load_tokenizer
from inference.tritonserver import TritonError, tiny_triton_server
from tests.inference.runtime_fixtures import simulated_held_out, trained_tiny

pytestmark = pytest.mark.e2e
TEXTS = ["search: trail running shoes | add_to_cart: Speedcross 6 (shoes, 129.99)",
         "support: where is my order, it is late again",
         "view: home page 3s | view: cart page 12s | purchase: order of 2 items",
         "review: 1 stars, broke after a week"]


def _score_one_by_one(url: str, texts: Sequence[str]) -> list[Prediction]:
    """One request per text, in turn: each forms its own batch, unpadded, as in process."""
    async def run() -> list[Prediction]:
        async with TritonScorer(url, max_batch=1, timeout_s=60) as scorer:
            return [(await scorer.score([text]))[0] for text in texts]

    return asyncio.run(run())


def _rows(predictions: Sequence[Prediction]) -> np.ndarray:
    return np.array([[*(p.strength[label] for label in STRENGTH_LABELS),
                      *(p.intent_type[label] for label in INTENT_TYPE_LABELS), p.churn]
                     for p in predictions])


def _in_process(artifacts: Path, runtime: str, texts: Sequence[str]) -> np.ndarray:
    scorer, tokenizer = load_scorer(artifacts, runtime), load_tokenizer()
    rows = []
    for text in texts:
        ids, mask = encode(tokenizer, [text], max_length=128)
        p = scorer.probabilities(ids.numpy(), mask.numpy())
        rows.append([*p.strength[0], *p.intent_type[0], p.churn[0]])
    return np.array(rows)


def test_an_int8_version_is_served_and_an_unstartable_runtime_is_refused(tmp_path: Path):
    model = trained_tiny()
    held_out = simulated_held_out(40, seed=9)
    with tiny_triton_server(tmp_path) as server:
        assert {p.model_version for p in _score_one_by_one(server.grpc_url, TEXTS)} == {1}
        version = export_version(model, server.repo, runtime="onnxruntime-int8",
                                 held_out=held_out)
        server.load_model("intent_bert")  # explicit control: the int8 version replaces v1
        served = _score_one_by_one(server.grpc_url, TEXTS)
        assert {(p.model_name, p.model_version) for p in served} == {("intent_bert", version)}

        artifacts = server.repo / "intent_bert" / str(version) / "artifacts"
        rows = _rows(served)
        np.testing.assert_allclose(rows, _in_process(artifacts, "onnxruntime-int8", TEXTS),
                                   atol=1e-5, rtol=0)
        # ... and not torch: int8 rounding moves the probabilities a little.
        assert np.abs(rows - _in_process(artifacts, "torch", TEXTS)).max() > 1e-4
        assert "runtime onnxruntime-int8" in server.log_tail(200)

        if "onnxruntime-cuda" not in available_runtimes():
            broken = server.repo / "intent_bert" / str(version + 1)
            repository.copy_version(artifacts.parent, broken)
            write_runtime(broken, "onnxruntime-cuda", {"requested": "onnxruntime-cuda"})
            with pytest.raises(TritonError, match="CUDAExecutionProvider"):
                server.load_model("intent_bert")
            still = _score_one_by_one(server.grpc_url, TEXTS[:1])
            assert [p.model_version for p in still] == [version]

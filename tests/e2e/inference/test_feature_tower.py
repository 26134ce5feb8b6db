"""A feature-tower version on the real tritonserver and the real ensemble, rolled out over a
text-only one: the text-only version ignores FEATURES, the tower version reads them (on torch
and on onnxruntime, matching the model in process), and a tower version asked without FEATURES
answers with an error that names them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import PreTrainedTokenizerBase

from inference.client import ScoringError, TritonScorer
from inference.heads import INTENT_TYPE_LABELS, STRENGTH_LABELS, Prediction
from inference.model.export import export_version
from inference.model.intent_bert import IntentBert
from inference.model.runtimes import read_inputs
from inference.model.tokenizer import encode
from inference.tritonserver import tiny_triton_server
from streams.core.features import FEATURE_SCHEMA_VERSION, N_FEATURES, feature_schema
from tests.inference.runtime_fixtures import simulated_held_out

pytestmark = pytest.mark.e2e

TEXTS = ["view: trail shoe | add_to_cart: trail shoe", "search: refund policy",
         "view: tent " * 20, "support_message: broken zip"]


def rows(seed: int) -> list[list[float]]:
    rng = np.random.default_rng(seed)
    values = np.round(rng.lognormal(1.0, 1.5, size=(len(TEXTS), N_FEATURES)), 2)
    values[:, ::7] = -1.0  # missing values, as the worker sends them
    return values.tolist()


def score(url: str, texts: Sequence[str], features: Sequence[Sequence[float]] | None
          ) -> list[Prediction]:
    async def go() -> list[Prediction]:
        async with TritonScorer(url, timeout_s=60) as scorer:
            return await scorer.score(texts, features)
    return asyncio.run(go())


def as_rows(predictions: Sequence[Prediction]) -> torch.Tensor:
    return torch.tensor([[*(p.strength[k] for k in STRENGTH_LABELS),
                          *(p.intent_type[k] for k in INTENT_TYPE_LABELS), p.churn]
                         for p in predictions])


def in_process(model: IntentBert, tokenizer: PreTrainedTokenizerBase,
               features: Sequence[Sequence[float]]) -> torch.Tensor:
    ids, mask = encode(tokenizer, TEXTS, max_length=model.max_length)
    with torch.inference_mode():
        p = model.probabilities(ids, mask, torch.tensor(features, dtype=torch.float32))
    return torch.cat([p.strength, p.intent_type, p.churn[:, None]], dim=1)


def tower_model(tokenizer: PreTrainedTokenizerBase, seed: int) -> IntentBert:
    torch.manual_seed(seed)
    model = IntentBert.tiny(len(tokenizer), n_features=N_FEATURES,
                            feature_schema=feature_schema())
    model.fit_normalisation(torch.tensor(rows(100) + rows(101), dtype=torch.float32))
    return model.eval()


def test_a_tower_version_rolls_out_over_a_text_only_one(
    tmp_path: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    features = rows(0)
    with tiny_triton_server(tmp_path) as server:
        # Version 1 is text-only (no inputs.json): FEATURES sent along are ignored.
        assert read_inputs(server.repo / "intent_bert" / "1").names == ("INPUT_IDS",
                                                                        "ATTENTION_MASK")
        text_only = score(server.grpc_url, TEXTS, None)
        with_features = score(server.grpc_url, TEXTS, features)
        assert {p.model_version for p in with_features} == {1}
        torch.testing.assert_close(as_rows(with_features), as_rows(text_only), atol=1e-6, rtol=0)

        # Version 2 has a tower (torch runtime): it reads FEATURES.
        model = tower_model(tokenizer, seed=2)
        assert export_version(model, server.repo) == 2
        declared = read_inputs(server.repo / "intent_bert" / "2")
        assert declared.names == ("INPUT_IDS", "ATTENTION_MASK", "FEATURES")
        assert (declared.n_features, declared.feature_schema) == (N_FEATURES,
                                                                  FEATURE_SCHEMA_VERSION)
        server.load_model("intent_bert")
        served = score(server.grpc_url, TEXTS, features)
        assert {p.model_version for p in served} == {2}
        torch.testing.assert_close(as_rows(served), in_process(model, tokenizer, features),
                                   atol=1e-4, rtol=0)
        other = score(server.grpc_url, TEXTS, rows(1))  # the features reach the network
        assert not torch.allclose(as_rows(other), as_rows(served), atol=1e-4)

        with pytest.raises(ScoringError, match="FEATURES") as error:
            score(server.grpc_url, TEXTS, None)
        assert not error.value.transient

        # Version 3: a tower version on onnxruntime (the quality bar reads the held-out
        # windows' FEATURES) serves the same probabilities.
        model = tower_model(tokenizer, seed=3)
        held_out = simulated_held_out(12, seed=4)
        assert export_version(model, server.repo, runtime="onnxruntime-fp32",
                              held_out=held_out) == 3
        server.load_model("intent_bert")
        served = score(server.grpc_url, TEXTS, features)
        assert {p.model_version for p in served} == {3}
        torch.testing.assert_close(as_rows(served), in_process(model, tokenizer, features),
                                   atol=1e-4, rtol=0)

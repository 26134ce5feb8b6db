"""ONNX parity: the onnxruntime graph gives PyTorch's probabilities within 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from inference.model.export import ExportError
from inference.model.intent_bert import IntentBert
from inference.model.onnx import (
    INT8_FILE,
    INTENT_BERT_ONNX,
    ONNX_FILE,
    PARITY_TOLERANCE,
    export_onnx,
    export_onnx_version,
    max_abs_difference,
)
from inference.model.runtimes import INPUTS_FILE, read_inputs
from inference.model.tokenizer import encode, load_tokenizer
from streams.core.features import N_FEATURES, feature_schema

from .conftest import TEMPLATE_REPO


@pytest.fixture(scope="module")
def tiny_model() -> IntentBert:
    torch.manual_seed(0)
    return IntentBert.tiny(len(load_tokenizer())).eval()


def test_onnx_matches_pytorch_on_real_session_texts(tiny_model: IntentBert, tmp_path: Path):
    path = export_onnx(tiny_model, tmp_path / ONNX_FILE, version=7)
    texts = ["view: home page 3s", "search: wireless headphones | add_to_cart: Auralis Wireless "
             "Headphones (audio, 129.99) | view: cart page 12s", "support: " + "where is it? " * 60]
    ids, mask = encode(load_tokenizer(), texts, max_length=128)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    strength, intent_type, churn, version = session.run(
        None, {"INPUT_IDS": ids.numpy(), "ATTENTION_MASK": mask.numpy()}
    )
    with torch.inference_mode():
        want = tiny_model.probabilities(ids, mask)
    assert np.abs(strength - want.strength.numpy()).max() <= PARITY_TOLERANCE
    assert np.abs(intent_type - want.intent_type.numpy()).max() <= PARITY_TOLERANCE
    assert np.abs(churn[:, 0] - want.churn.numpy()).max() <= PARITY_TOLERANCE
    assert version.tolist() == [[7], [7], [7]]
    assert max_abs_difference(tiny_model, path) <= PARITY_TOLERANCE  # padded random batches


def test_a_tower_graph_takes_features_and_matches_pytorch(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = IntentBert.tiny(len(load_tokenizer()), n_features=N_FEATURES,
                            feature_schema=feature_schema())
    rng = np.random.default_rng(0)
    model.fit_normalisation(torch.from_numpy(
        rng.lognormal(1.0, 2.0, (64, N_FEATURES)).astype(np.float32)))
    model.eval()
    path = export_onnx(model, tmp_path / ONNX_FILE, version=2)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["INPUT_IDS", "ATTENTION_MASK", "FEATURES"]
    texts = ["view: tent | add_to_cart: tent (camping, 89.0)", "search: refund " * 40]
    ids, mask = encode(load_tokenizer(), texts, max_length=128)
    feeds = {"INPUT_IDS": ids.numpy(), "ATTENTION_MASK": mask.numpy()}
    churns = []
    for row in (np.full(N_FEATURES, -1.0), np.arange(N_FEATURES) * 10.0):
        features = np.stack([row, row[::-1]]).astype(np.float32)
        _, _, churn, _ = session.run(None, {**feeds, "FEATURES": features})
        with torch.inference_mode():
            want = model.probabilities(ids, mask, torch.from_numpy(features)).churn.numpy()
        assert np.abs(churn[:, 0] - want).max() <= PARITY_TOLERANCE
        churns.append(churn)
    assert not np.allclose(*churns, atol=1e-4)  # the graph reads FEATURES, not a constant
    assert max_abs_difference(model, path) <= PARITY_TOLERANCE  # padded batches with FEATURES


def test_versions_go_into_the_repository_with_the_committed_config(
    tiny_model: IntentBert, repo: Path
) -> None:
    first = export_onnx_version(tiny_model, repo, int8=True)
    second = export_onnx_version(tiny_model, repo)
    assert (first["version"], second["version"]) == (1, 2)
    assert first["max_abs_diff"] <= PARITY_TOLERANCE
    assert first["int8_max_abs_diff"] < 0.2  # lossy by design: reported, not held to 1e-4
    assert sorted(p.name for p in (repo / INTENT_BERT_ONNX / "1").iterdir()) == [
        INPUTS_FILE, INT8_FILE, ONNX_FILE,
    ]
    assert read_inputs(repo / INTENT_BERT_ONNX / "1").names == ("INPUT_IDS", "ATTENTION_MASK")
    with pytest.raises(ExportError):
        export_onnx_version(tiny_model, repo, version=2)


def test_committed_config_names_the_served_inputs_and_outputs() -> None:
    config = (TEMPLATE_REPO / INTENT_BERT_ONNX / "config.pbtxt").read_text(encoding="utf-8")
    assert 'platform: "onnxruntime_onnx"' in config and "KIND_GPU" in config
    for name in ("INPUT_IDS", "ATTENTION_MASK", "STRENGTH", "INTENT_TYPE", "CHURN",
                 "MODEL_VERSION"):
        assert f'"{name}"' in config

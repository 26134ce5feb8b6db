from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerBase

from inference.heads import INTENT_TYPE_LABELS, STRENGTH_LABELS, label_probabilities, top_label
from inference.model.intent_bert import HEADS_FILE, IntentBert
from inference.model.tokenizer import base_path, encode

TEXTS = ["viewed running shoes", "added to cart: red sneakers, size 42 " * 3, "hi"]


def _probabilities(model: IntentBert, tokenizer: PreTrainedTokenizerBase, texts: list[str]):
    ids, mask = encode(tokenizer, texts, max_length=model.max_length)
    with torch.inference_mode():
        return model.probabilities(ids, mask)


def test_forward_shapes(tiny_model: IntentBert, tokenizer: PreTrainedTokenizerBase) -> None:
    ids, mask = encode(tokenizer, TEXTS, max_length=32)
    with torch.inference_mode():
        strength, intent_type, churn = tiny_model(ids, mask)
    assert strength.shape == (3, len(STRENGTH_LABELS))
    assert intent_type.shape == (3, len(INTENT_TYPE_LABELS))
    assert churn.shape == (3,)


def test_probabilities_are_distributions(
    tiny_model: IntentBert, tokenizer: PreTrainedTokenizerBase
) -> None:
    probs = _probabilities(tiny_model, tokenizer, TEXTS)
    torch.testing.assert_close(probs.strength.sum(-1), torch.ones(3))
    torch.testing.assert_close(probs.intent_type.sum(-1), torch.ones(3))
    assert ((probs.churn > 0) & (probs.churn < 1)).all()


def test_padding_does_not_change_a_row(
    tiny_model: IntentBert, tokenizer: PreTrainedTokenizerBase
) -> None:
    alone = _probabilities(tiny_model, tokenizer, TEXTS[2:])
    padded = _probabilities(tiny_model, tokenizer, TEXTS)  # "hi" padded to the longest
    torch.testing.assert_close(padded.strength[2:], alone.strength, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.churn[2:], alone.churn, atol=1e-5, rtol=0)


def test_same_seed_same_weights(tokenizer: PreTrainedTokenizerBase) -> None:
    models = []
    for _ in range(2):
        torch.manual_seed(7)
        models.append(IntentBert.tiny(len(tokenizer)))
    first, second = (m.state_dict() for m in models)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_save_load_round_trip(
    tiny_model: IntentBert, tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    tiny_model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "heads.json",
        "model.safetensors",
    ]
    heads = json.loads((tmp_path / HEADS_FILE).read_text())
    assert heads["strength"] == list(STRENGTH_LABELS)
    assert heads["max_length"] == tiny_model.max_length

    loaded = IntentBert.load(tmp_path)
    assert not loaded.training
    before = _probabilities(tiny_model, tokenizer, TEXTS)
    after = _probabilities(loaded, tokenizer, TEXTS)
    for expected, got in zip(before, after, strict=True):
        assert torch.equal(expected, got)


def test_load_refuses_other_labels(tiny_model: IntentBert, tmp_path: Path) -> None:
    tiny_model.save(tmp_path)
    heads = json.loads((tmp_path / HEADS_FILE).read_text())
    heads["strength"] = ["high", "low", "none"]
    (tmp_path / HEADS_FILE).write_text(json.dumps(heads))
    with pytest.raises(ValueError, match="labels"):
        IntentBert.load(tmp_path)


def test_from_base_takes_minilm_encoder_weights() -> None:
    model = IntentBert.from_base(base_path())
    base = load_file(base_path() / "model.safetensors")
    key = "encoder.layer.5.output.dense.weight"
    assert torch.equal(model.encoder.state_dict()[key], base[key])
    assert model.encoder.config.num_hidden_layers == 6


def test_left_truncation_keeps_the_end(tokenizer: PreTrainedTokenizerBase) -> None:
    text = "browsing old items " * 200 + "payment failed again"
    ids, mask = encode(tokenizer, [text], max_length=16)
    assert ids.shape == (1, 16)
    assert int(mask.sum()) == 16
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert tokens[0] == "[CLS]"
    assert tokens[-4:] == ["payment", "failed", "again", "[SEP]"]


def test_max_length_must_fit_positions(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError, match="max_length"):
        IntentBert.tiny(len(tokenizer), max_length=513)


def test_label_helpers() -> None:
    probs = label_probabilities(STRENGTH_LABELS, [0.2, 0.5, 0.3])
    assert probs == {"strong": 0.2, "medium": 0.5, "weak": 0.3}
    assert top_label(probs) == "medium"
    with pytest.raises(ValueError):
        label_probabilities(STRENGTH_LABELS, [1.0])


# --- the feature tower ----------------------------------------------------------------------------

N = 4  # feature columns in these tests (the live schema has more)
SCHEMA = {"version": 9, "features": [{"name": f"f{i}", "unit": "count"} for i in range(N)]}


def _tower(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> IntentBert:
    torch.manual_seed(seed)
    return IntentBert.tiny(len(tokenizer), n_features=N, feature_schema=SCHEMA).eval()


def _rows(*values: float) -> torch.Tensor:
    return torch.tensor([[v, 2 * v, -1.0, 7.0] for v in values], dtype=torch.float32)


def test_without_a_tower_the_network_is_the_text_only_one(
    tiny_model: IntentBert, tokenizer: PreTrainedTokenizerBase
) -> None:
    torch.manual_seed(0)
    text_only = IntentBert.tiny(len(tokenizer), n_features=0)
    assert text_only.state_dict().keys() == tiny_model.state_dict().keys()
    assert not any(k.startswith("feature_tower") for k in text_only.state_dict())
    assert "features" not in text_only.heads_metadata()


def test_the_tower_reads_features_fused_before_the_heads(
    tokenizer: PreTrainedTokenizerBase
) -> None:
    model = _tower(tokenizer)
    ids, mask = encode(tokenizer, TEXTS, max_length=32)
    with torch.inference_mode():
        one = model.probabilities(ids, mask, _rows(0, 3, 50))
        other = model.probabilities(ids, mask, _rows(9, 300, 1))
    assert model.strength_head.in_features == model.encoder.config.hidden_size + 32
    assert not torch.allclose(one.churn, other.churn)  # the features reach every head
    torch.testing.assert_close(one.strength.sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match="reads FEATURES"):
        model(ids, mask)
    with pytest.raises(ValueError, match=r"this model reads \[3, 4\]"):
        model(ids, mask, _rows(0, 3))


def test_normalisation_is_fitted_on_the_rows_given(tokenizer: PreTrainedTokenizerBase) -> None:
    model = _tower(tokenizer)
    rows = _rows(0, 10, 1000, 5)
    model.fit_normalisation(rows)
    normalised = model.feature_tower.normalise(rows)
    torch.testing.assert_close(normalised.mean(0), torch.zeros(N), atol=1e-5, rtol=0)
    # A constant column normalises to 0 (scale 1), and a far outlier is clipped.
    assert model.feature_tower.scale[3] == 1 and (normalised[:, 3] == 0).all()
    assert model.feature_tower.normalise(_rows(1e30)).abs().max() == 5.0
    with pytest.raises(ValueError, match="no feature tower"):
        IntentBert.tiny(len(tokenizer)).fit_normalisation(rows)


def test_a_tower_round_trips_with_its_schema_and_statistics(
    tokenizer: PreTrainedTokenizerBase, tmp_path: Path
) -> None:
    model = _tower(tokenizer)
    model.fit_normalisation(_rows(0, 10, 1000))
    model.save(tmp_path)
    saved = json.loads((tmp_path / HEADS_FILE).read_text())["features"]
    assert saved["n_features"] == N and saved["schema"] == SCHEMA
    assert saved["normalisation"]["clip"] == 5.0
    loaded = IntentBert.load(tmp_path)
    torch.testing.assert_close(loaded.feature_tower.mean, model.feature_tower.mean)
    ids, mask = encode(tokenizer, TEXTS, max_length=32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.probabilities(ids, mask, _rows(1, 2, 3)).churn,
                                   model.probabilities(ids, mask, _rows(1, 2, 3)).churn)


def test_a_tower_needs_the_schema_of_its_columns(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError, match="needs the feature schema"):
        IntentBert.tiny(len(tokenizer), n_features=N)
    with pytest.raises(ValueError, match="4 named features"):
        IntentBert.tiny(len(tokenizer), n_features=N,
                        feature_schema={"version": 1, "features": []})
    with pytest.raises(ValueError, match="without a feature tower"):
        IntentBert.tiny(len(tokenizer), feature_schema=SCHEMA)

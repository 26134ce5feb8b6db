"""The training command end to end on the tiny model, and a tiny model learning an easy signal."""

from __future__ import annotations

import json
import math
import pickle
import random
from pathlib import Path

import torch

from inference.model.intent_bert import IntentBert
from inference.model.tokenizer import load_tokenizer
from streams.core.cascade import CascadePolicy
from streams.core.features import N_FEATURES
from training.cli import main
from training.fit.loop import FitConfig, Targets, fit, multitask_loss, predict, tokenize


def test_train_command_with_the_tiny_model(tmp_path: Path, repo: Path) -> None:
    out = tmp_path / "run"
    stale = repo / "stacker" / "heads" / "1"  # left by a run stopped before its export
    stale.mkdir(parents=True)
    (stale / "heads.pkl").write_bytes(pickle.dumps({"n_features": 3, "feature_schema": 0}))
    code = main([
        "--tiny", "--users", "60", "--max-steps", "30", "--no-uci", "--progress", "false",
        "--out", str(out), "--repo", str(repo), "--seed", "1",
    ])
    assert code == 0
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert (out / "model_card.md").read_text(encoding="utf-8").startswith("# IntentBert")
    history = card["training"]["history"]
    # It learned: below the loss of uniform guesses on the three heads (fresh heads start about
    # there; their starting weights are not validated, see FitConfig.initial_check).
    assert history[-1]["val_loss"] < math.log(3) + math.log(6) + math.log(2)
    assert set(card["test"]["comparison"]) == {"strength", "intent_type", "churn"}
    assert card["exported"]["intent_bert"] == 1
    assert card["exported"]["intent_bert_onnx"]["version"] == 1
    assert (repo / "intent_bert" / "1" / "artifacts" / "model.safetensors").is_file()
    assert (repo / "intent_bert_onnx" / "1" / "model.onnx").is_file()
    assert IntentBert.load(out / "model").heads_metadata()["max_length"] == 128
    stacking = card["stacking"]
    assert set(stacking["test"]["served"]) == {"strength", "intent_type", "churn"}
    value_fitted = "bgnbd" in stacking["customer_value"]
    assert set(stacking["served_vs_peers"]["churn"]) == {
        "tfidf_lr", "features_gb", "recency_frequency", "days_since_last_order",
        *(["bgnbd_p_alive"] if value_fitted else [])}
    # Heads are written for the version exported with them, and only the heads that fitted.
    heads_file = repo / "stacker" / "heads" / "1" / "heads.pkl"
    # the stale file is gone
    cascade = stacking["cascade"]  # the cascade's policy joins the heads where one was chosen
    assert set(cascade["exported"]) <= {"cascade", "prototypes"}
    assert heads_file.is_file() == bool(stacking["exported_heads"] or value_fitted
                                        or cascade["exported"])
    assert (heads_file.parent / "customer_value.json").is_file() == value_fitted
    if heads_file.is_file():
        heads = pickle.loads(heads_file.read_bytes())
        assert heads["n_features"] == N_FEATURES
        assert set(heads) - {"n_features", "feature_schema", "churn_reads_customer_value",
                             "cascade", "prototypes"} == set(stacking["exported_heads"])
        assert set(heads) & {"cascade", "prototypes"} == set(cascade["exported"])
        if "cascade" in heads:
            assert CascadePolicy.from_json(heads["cascade"]).to_json() == cascade["policy"]
        # Prototypes travel only with a policy that lets typical answers stand, in the
        # stacker's form: str(kinds_mask) -> the network's mean outputs.
        assert ("prototypes" in heads) == bool(cascade["policy"]
                                                and cascade["policy"]["typical"])
        for mask, prototype in heads.get("prototypes", {}).items():
            assert int(mask) > 0 and len(prototype["strength"]) == 3
            assert len(prototype["intent_type"]) == 6 and 0 <= prototype["churn"] <= 1
    assert 0 < cascade["test"]["network_share"] <= 1


def test_tiny_model_learns_an_easy_signal() -> None:
    # Intent type given away by one word: a working loop gets it right on unseen rows.
    rng = random.Random(0)
    words = {0: "cart", 1: "search", 2: "broken"}
    rows = [(k, f"view: item {rng.randint(1, 99)} | {words[k]} {rng.randint(1, 99)}")
            for k in (rng.randrange(3) for _ in range(400))]
    tokenizer = load_tokenizer()
    tokens = tokenize(tokenizer, [t for _, t in rows], 32)
    k = torch.tensor([k for k, _ in rows])
    targets = Targets(k, k, (k == 2).float())
    torch.manual_seed(0)
    model = IntentBert.tiny(len(tokenizer))
    config = FitConfig(epochs=3, max_steps=None, batch_size=16, learning_rate=2e-3,
                       warmup_ratio=0.1, weight_decay=0.0, checks_per_epoch=1, patience=3, seed=0,
                       progress=False)
    fit(model, tokens[:300], targets.rows(range(300)), tokens[300:350],
        targets.rows(range(300, 350)), config, multitask_loss)
    probs = predict(model, tokens[350:])
    accuracy = (probs["intent_type"].argmax(1) == k[350:].numpy()).mean()
    assert accuracy > 0.9


def test_train_with_the_tower_and_the_stack_over_it(tmp_path: Path, repo: Path) -> None:
    import onnxruntime as ort

    from inference.model.runtimes import read_inputs

    out = tmp_path / "run"
    code = main([
        "--tiny", "--users", "60", "--max-steps", "10", "--no-uci", "--progress", "false",
        "--out", str(out), "--repo", str(repo), "--fusion", "both",
    ])
    assert code == 0
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert card["model"]["fusion"] == "both"
    assert card["model"]["feature_tower"]["n_features"] == N_FEATURES
    model = IntentBert.load(out / "model")
    assert model.n_features == N_FEATURES
    assert not torch.equal(model.feature_tower.scale, torch.ones(N_FEATURES))  # fitted
    assert read_inputs(repo / "intent_bert" / "1").n_features == N_FEATURES
    graph = ort.InferenceSession(str(repo / "intent_bert_onnx" / "1" / "model.onnx"))
    assert [i.name for i in graph.get_inputs()][-1] == "FEATURES"


def test_an_unknown_fusion_is_refused(capsys) -> None:
    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["--tiny", "--fusion", "mlp"])
    assert exit_.value.code == 2 and "--fusion must be one of" in capsys.readouterr().err


def test_a_diverged_fine_tune_is_a_one_line_error_and_exit_1(monkeypatch, capsys) -> None:
    import training.train

    def diverged(*_args):
        raise FloatingPointError("no finite validation loss in 2 checks (last: nan)")

    monkeypatch.setattr(training.train, "run", diverged)
    assert main(["--tiny", "--no-uci", "--out", "unused"]) == 1
    assert "intentstream train: no finite validation loss" in capsys.readouterr().err

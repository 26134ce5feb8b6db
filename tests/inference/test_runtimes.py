"""Runtime selection and the quality bar: which runtimes a machine has, what a version serves,
the verdict (pass and refusal), and export writing only a runtime that passed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from inference import repository
from inference.model import onnx as onnx_module
from inference.model.export import ExportError, export_version, runtime_report
from inference.model.intent_bert import IntentBert
from inference.model.onnx import export_onnx, write_onnx_files
from inference.model.quality import (
    MACRO_F1_MARGIN,
    ROC_AUC_MARGIN,
    HeldOut,
    QualityError,
    check_runtime,
    head_scores,
    pick,
    verdict_of,
)
from inference.model.runtimes import (
    INT8_FILE,
    ONNX_FILE,
    RUNTIME_FILE,
    Probabilities,
    RuntimeUnavailable,
    available_runtimes,
    load_scorer,
    read_inputs,
    read_runtime,
    served_runtime,
    write_runtime,
)
from inference.model.tokenizer import encode
from streams.core.features import FEATURE_SCHEMA_VERSION, N_FEATURES

from .runtime_fixtures import simulated_held_out, trained_tiny

CPU = ["CPUExecutionProvider"]
GPU = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.fixture(scope="module")
def held_out() -> HeldOut:
    """Labelled windows of 40 simulated users (about 400 texts)."""
    return simulated_held_out(40, seed=9)


@pytest.fixture(scope="module")
def trained() -> IntentBert:
    return trained_tiny()


@pytest.fixture(scope="module")
def trained_tower() -> IntentBert:
    return trained_tiny(tower=True)


def scores(strength_auc: float = 0.8, f1: float = 0.6) -> dict[str, dict[str, float]]:
    return {head: {"roc_auc": strength_auc if head == "strength" else 0.7, "macro_f1": f1}
            for head in ("strength", "intent_type", "churn")}


# --- which runtimes, and what a version serves ---------------------------------------------------


def test_available_runtimes_follow_the_execution_providers() -> None:
    assert available_runtimes([]) == ["torch"]
    assert available_runtimes(CPU) == ["torch", "onnxruntime-fp32", "onnxruntime-int8"]
    assert available_runtimes(GPU) == ["torch", "onnxruntime-fp32", "onnxruntime-int8",
                                       "onnxruntime-cuda", "tensorrt-fp16"]
    assert available_runtimes(["CUDAExecutionProvider"]) == ["torch", "onnxruntime-cuda"]


def test_a_version_serves_its_runtime_file_unless_the_config_names_one(tmp_path: Path) -> None:
    model_dir = tmp_path / "intent_bert"
    (model_dir / "1").mkdir(parents=True)
    (model_dir / "2").mkdir()
    config = 'parameters [ { key: "runtime", value: { string_value: "" } } ]\n'
    (model_dir / "config.pbtxt").write_text(config)
    write_runtime(model_dir / "2", "onnxruntime-int8", {"why": "test"})
    assert read_runtime(model_dir / "1") == "torch"  # no runtime.json: torch
    assert (served_runtime(model_dir, 1), served_runtime(model_dir, 2)) == (
        "torch", "onnxruntime-int8")
    (model_dir / "config.pbtxt").write_text(config.replace('""', '"onnxruntime-fp32"'))
    assert served_runtime(model_dir, 2) == "onnxruntime-fp32"
    (model_dir / "2" / RUNTIME_FILE).write_text(json.dumps({"runtime": "tensorflow"}))
    with pytest.raises(RuntimeUnavailable, match="unknown runtime 'tensorflow'"):
        read_runtime(model_dir / "2")


def test_a_runtime_this_machine_lacks_or_a_missing_file_is_refused(tmp_path: Path) -> None:
    missing = [name for name in ("onnxruntime-cuda", "tensorrt-fp16")
               if name not in available_runtimes()]
    for name in missing:  # on a CPU machine: both
        with pytest.raises(RuntimeUnavailable, match="which this machine lacks"):
            load_scorer(tmp_path, name)
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    with pytest.raises(RuntimeUnavailable, match=f"needs {tmp_path / INT8_FILE}"):
        load_scorer(tmp_path, "onnxruntime-int8")


# --- the verdict (pure) ---------------------------------------------------------------------------


def test_within_the_margins_passes() -> None:
    got = scores(0.8 - ROC_AUC_MARGIN * 0.9, 0.6 + MACRO_F1_MARGIN * 0.9)
    verdict = verdict_of("onnxruntime-int8", scores(), got)
    assert verdict.passed, verdict.reason
    assert verdict.metrics["strength"]["roc_auc"]["delta"] == pytest.approx(-0.9 * ROC_AUC_MARGIN)


@pytest.mark.parametrize(("got", "failed"), [
    (scores(0.8 - 0.006), "strength roc_auc 0.7940 vs torch 0.8000"),
    (scores(f1=0.6 - 0.011), "intent_type macro_f1 0.5890 vs torch 0.6000"),
    (scores(0.8 + 0.006), "strength roc_auc"),  # a different model, even if "better"
])
def test_beyond_a_margin_is_refused_with_the_reason(got, failed) -> None:
    verdict = verdict_of("onnxruntime-int8", scores(), got)
    assert not verdict.passed
    assert verdict.reason.startswith("refused: ") and failed in verdict.reason


def test_the_fastest_passing_runtime_is_picked() -> None:
    ok, refused = verdict_of("x", scores(), scores()), verdict_of("x", scores(), scores(0.5))
    speeds = {"torch": 60.0, "onnxruntime-fp32": 55.0, "onnxruntime-int8": 90.0}
    assert pick(speeds, {"onnxruntime-fp32": ok, "onnxruntime-int8": ok}) == "onnxruntime-int8"
    assert pick(speeds, {"onnxruntime-fp32": ok, "onnxruntime-int8": refused}) == "torch"
    assert pick({**speeds, "onnxruntime-fp32": 70.0},
                {"onnxruntime-fp32": ok, "onnxruntime-int8": refused}) == "onnxruntime-fp32"
    assert pick(speeds, {}) == "torch"  # an unchecked runtime never wins
    assert pick(speeds, {"onnxruntime-int8": refused}) == "torch"


def test_head_scores_of_perfect_and_of_inverted_predictions() -> None:
    labels = {"strength": [0, 1, 2, 0, 1, 2], "intent_type": [0, 1, 2, 3, 4, 5],
              "churn": [0, 1, 0, 1, 0, 1]}
    held = HeldOut(list("abcdef"), labels)
    perfect = Probabilities(np.eye(3, dtype=np.float32)[labels["strength"]],
                            np.eye(6, dtype=np.float32)[labels["intent_type"]],
                            np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7]))
    assert all(v == {"roc_auc": 1.0, "macro_f1": 1.0} for v in head_scores(held, perfect).values())
    inverted = perfect._replace(churn=1 - perfect.churn)
    assert head_scores(held, inverted)["churn"] == {"roc_auc": 0.0, "macro_f1": 0.0}


def test_held_out_data_must_fit_the_heads() -> None:
    labels = {"strength": [0, 1], "intent_type": [0, 1], "churn": [0, 1]}
    with pytest.raises(QualityError, match="need one per text"):
        HeldOut(["only one"], labels)
    with pytest.raises(QualityError, match="2\\+ classes"):
        HeldOut(["a", "b"], {**labels, "churn": [1, 1]})
    with pytest.raises(QualityError, match="none"):
        HeldOut([], labels)


# --- on real files: a faithful int8 passes, a wrong graph is refused ------------------------------


def test_int8_of_the_same_model_passes_and_another_models_graph_is_refused(
    repo: Path, trained: IntentBert, tokenizer, held_out: HeldOut
) -> None:
    version = export_version(trained, repo, runtime="onnxruntime-int8", held_out=held_out)
    version_dir = repo / "intent_bert" / str(version)
    artifacts = version_dir / "artifacts"
    assert {ONNX_FILE, INT8_FILE} <= {p.name for p in artifacts.iterdir()}
    assert read_runtime(version_dir) == "onnxruntime-int8"
    report = runtime_report(repo, version)
    assert report["requested"] == "onnxruntime-int8"
    assert report["quality"]["verdicts"]["onnxruntime-int8"]["passed"]
    assert set(report["quality"]["texts_per_s"]) == {"torch", "onnxruntime-int8"}

    torch.manual_seed(5)  # a different network where the int8 graph should be
    export_onnx(IntentBert.tiny(len(tokenizer)).eval(), artifacts / INT8_FILE, version)
    verdict = check_runtime(artifacts, held_out, "onnxruntime-int8")
    assert not verdict.passed and verdict.reason.startswith("refused: ")


def test_export_refuses_a_runtime_that_fails_the_bar_and_writes_nothing(
    repo: Path, trained: IntentBert, tokenizer, held_out: HeldOut,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def wrong_int8(source: Path, target: Path) -> Path:
        torch.manual_seed(5)
        return export_onnx(IntentBert.tiny(len(tokenizer)).eval(), target, 1)

    monkeypatch.setattr(onnx_module, "quantize_int8", wrong_int8)
    with pytest.raises(ExportError, match="runtime onnxruntime-int8 refused: "):
        export_version(trained, repo, runtime="onnxruntime-int8", held_out=held_out)
    assert repository.versions(repo / "intent_bert") == []
    # auto: the refused runtime is passed over, with its reason on record.
    version = export_version(trained, repo, runtime="auto", held_out=held_out)
    report = runtime_report(repo, version)
    assert report["runtime"] in ("torch", "onnxruntime-fp32")
    assert report["quality"]["verdicts"]["onnxruntime-int8"]["reason"].startswith("refused: ")
    assert report["quality"]["verdicts"]["onnxruntime-fp32"]["passed"]


def test_export_checks_the_request_before_any_work(repo: Path, tiny_model: IntentBert,
                                                   held_out: HeldOut) -> None:
    with pytest.raises(ExportError, match="needs held-out texts"):
        export_version(tiny_model, repo, runtime="onnxruntime-int8")
    with pytest.raises(ExportError, match="unknown runtime 'fast'"):
        export_version(tiny_model, repo, runtime="fast", held_out=held_out)
    if "onnxruntime-cuda" not in available_runtimes():
        with pytest.raises(ExportError, match="not available on this machine"):
            export_version(tiny_model, repo, runtime="onnxruntime-cuda", held_out=held_out)
    assert repository.versions(repo / "intent_bert") == []
    # torch needs no data and writes no runtime file, no ONNX files.
    version_dir = repo / "intent_bert" / str(export_version(tiny_model, repo))
    assert not (version_dir / RUNTIME_FILE).exists()
    assert not (version_dir / "artifacts" / ONNX_FILE).exists()
    assert runtime_report(repo, 1) == {"runtime": "torch"}


def test_an_onnx_runtime_runs_from_the_version_alone_without_torch(
    repo: Path, tiny_model: IntentBert, tokenizer
) -> None:
    """What Triton's stub does for an onnxruntime version: import the copied runtimes module
    from the artifacts, without the `inference` package, and never load torch."""
    artifacts = repo / "intent_bert" / str(export_version(tiny_model, repo)) / "artifacts"
    write_onnx_files(tiny_model, artifacts, version=1)
    ids, mask = encode(tokenizer, ["added to cart", "checkout"], max_length=32)
    script = f"""
import json, sys
import numpy as np
sys.path.insert(0, {str(artifacts)!r})
from intentbert.runtimes import load_scorer
scorer = load_scorer({str(artifacts)!r}, "onnxruntime-fp32")
p = scorer.probabilities(np.array({ids.tolist()}), np.array({mask.tolist()}))
print(json.dumps({{"churn": p.churn.tolist(), "runtime": scorer.runtime,
                  "leaked": [m for m in ("inference", "torch") if m in sys.modules]}}))
"""
    done = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True, text=True,
                          check=True)
    result = json.loads(done.stdout)
    assert result["leaked"] == [] and result["runtime"] == "onnxruntime-fp32"
    with torch.inference_mode():
        expected = tiny_model.probabilities(ids, mask).churn
    torch.testing.assert_close(torch.tensor(result["churn"]), expected, atol=1e-4, rtol=0)


# --- a version with a feature tower --------------------------------------------------------------


@pytest.mark.parametrize("name", ["torch", "onnxruntime-fp32", "onnxruntime-int8"])
def test_every_cpu_runtime_serves_a_tower_version(
    repo: Path, trained_tower: IntentBert, tokenizer, held_out: HeldOut, name: str
) -> None:
    version = export_version(trained_tower, repo, runtime=name,
                             held_out=None if name == "torch" else held_out)
    version_dir = repo / "intent_bert" / str(version)
    declared = read_inputs(version_dir)
    assert declared.names == ("INPUT_IDS", "ATTENTION_MASK", "FEATURES")
    assert (declared.n_features, declared.feature_schema) == (N_FEATURES, FEATURE_SCHEMA_VERSION)
    assert read_runtime(version_dir) == name
    if name != "torch":  # the bar scored it on the held-out texts with their FEATURES
        assert runtime_report(repo, version)["quality"]["verdicts"][name]["passed"]
    scorer = load_scorer(version_dir / "artifacts", name)
    assert scorer.n_features == N_FEATURES
    ids, mask = encode(tokenizer, held_out.texts[:16], max_length=trained_tower.max_length)
    features = np.asarray(held_out.features[:16], dtype=np.float32)
    got = scorer.probabilities(ids.numpy(), mask.numpy(), features)
    with torch.inference_mode():
        want = trained_tower.probabilities(ids, mask, torch.from_numpy(features))
    tolerance = 0.05 if name == "onnxruntime-int8" else 1e-4  # int8 is lossy (the bar judges)
    assert np.abs(got.churn - want.churn.numpy()).max() <= tolerance
    assert np.abs(got.strength - want.strength.numpy()).max() <= tolerance
    with pytest.raises(ValueError, match="reads FEATURES"):
        scorer.probabilities(ids.numpy(), mask.numpy())
    with pytest.raises(ValueError, match="FEATURES"):
        scorer.probabilities(ids.numpy(), mask.numpy(), features[:, :5])


def test_the_bar_of_a_tower_version_needs_the_held_out_features(
    repo: Path, trained_tower: IntentBert, held_out: HeldOut
) -> None:
    texts_only = HeldOut(held_out.texts, held_out.labels)
    with pytest.raises(QualityError, match="held-out FEATURES rows"):
        export_version(trained_tower, repo, runtime="onnxruntime-fp32", held_out=texts_only)
    with pytest.raises(QualityError, match="FEATURES rows for"):
        HeldOut(held_out.texts, held_out.labels, features=held_out.features[:3])


def test_a_version_without_an_inputs_file_is_text_only(tmp_path: Path) -> None:
    assert read_inputs(tmp_path).names == ("INPUT_IDS", "ATTENTION_MASK")
    (tmp_path / "inputs.json").write_text(json.dumps({"inputs": ["INPUT_IDS", "FEATURES"]}))
    with pytest.raises(RuntimeUnavailable, match="inputs"):
        read_inputs(tmp_path)

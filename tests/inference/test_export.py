from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from inference import repository
from inference.model import export
from inference.model.export import ExportError, ensure_model, export_version
from inference.model.intent_bert import IntentBert
from inference.model.tokenizer import encode


def _entries(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_layout_of_a_version(repo: Path, tiny_model: IntentBert) -> None:
    assert export_version(tiny_model, repo) == 1

    version = repo / "intent_bert" / "1"
    assert _entries(version) == ["artifacts", "inputs.json", "model.py"]
    assert json.loads((version / "inputs.json").read_text()) == {
        "inputs": ["INPUT_IDS", "ATTENTION_MASK"]}  # text only: no FEATURES
    assert (version / "model.py").read_bytes() == (repo / "intent_bert" / "model.py").read_bytes()
    assert _entries(version / "artifacts") == [
        "config.json",
        "heads.json",
        "intentbert",
        "model.safetensors",
    ]
    assert _entries(version / "artifacts" / "intentbert") == [
        "__init__.py", "heads.py", "model.py", "runtimes.py",
    ]
    # The tokenizer's version comes with the first export.
    tokenizer_version = repo / "tokenizer" / "1"
    assert (tokenizer_version / "model.py").is_file()
    assert (tokenizer_version / "artifacts" / "tokenizer_config.json").is_file()
    # Nothing left behind but the canonical files and numbered versions.
    assert _entries(repo / "intent_bert") == ["1", "config.pbtxt", "model.py"]


def test_versions_number_up(repo: Path, tiny_model: IntentBert) -> None:
    assert [export_version(tiny_model, repo) for _ in range(2)] == [1, 2]
    assert export_version(tiny_model, repo, version=7) == 7
    assert export_version(tiny_model, repo) == 8
    assert repository.versions(repo / "intent_bert") == [1, 2, 7, 8]
    with pytest.raises(ExportError, match="already exists"):
        export_version(tiny_model, repo, version=2)


def test_failed_export_leaves_nothing(
    repo: Path, tiny_model: IntentBert, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_copy(package_dir: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(export, "_copy_architecture", broken_copy)
    with pytest.raises(OSError, match="disk full"):
        export_version(tiny_model, repo)
    assert _entries(repo / "intent_bert") == ["config.pbtxt", "model.py"]


def test_ensure_model_builds_once(repo: Path) -> None:
    assert ensure_model(repo, tiny=True) == 1
    assert ensure_model(repo, tiny=True) == 1
    assert repository.versions(repo / "intent_bert") == [1]
    assert repository.versions(repo / "tokenizer") == [1]


def test_exported_code_runs_without_the_inference_package(
    repo: Path, tiny_model: IntentBert, tokenizer: PreTrainedTokenizerBase
) -> None:
    """What Triton's stub does: import the copied architecture and load the weights."""
    artifacts = repo / "intent_bert" / str(export_version(tiny_model, repo)) / "artifacts"
    ids, mask = encode(tokenizer, ["added to cart", "checkout"], max_length=32)
    script = f"""
import json, sys, torch
sys.path.insert(0, {str(artifacts)!r})
from intentbert.model import IntentBert
model = IntentBert.load({str(artifacts)!r})
with torch.inference_mode():
    churn = model.probabilities(torch.tensor({ids.tolist()}), torch.tensor({mask.tolist()})).churn
print(json.dumps({{"churn": churn.tolist(), "leaked": "inference" in sys.modules}}))
"""
    done = subprocess.run(
        [sys.executable, "-I", "-c", script], capture_output=True, text=True, check=True
    )
    result = json.loads(done.stdout)
    assert not result["leaked"]
    with torch.inference_mode():
        expected = tiny_model.probabilities(ids, mask).churn
    torch.testing.assert_close(torch.tensor(result["churn"]), expected)


def test_cli_exports_and_reports(repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert export.main(["--repo", str(repo), "--tiny"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1
    assert export.main(["--repo", str(repo), "--tiny", "--if-missing"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tiny"], "lacks config.pbtxt"),  # not a model repository
        (["--from", "no/such/dir"], "No such file"),
    ],
)
def test_cli_errors_exit_non_zero(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export.main(["--repo", str(tmp_path), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err


def test_cli_rejects_if_missing_with_from(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export.main(["--repo", str(tmp_path), "--if-missing", "--from", str(tmp_path)])
    assert exit_info.value.code == 2


def test_refuses_a_max_length_the_tokenizer_does_not_serve(
    repo: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    model = IntentBert.tiny(len(tokenizer), max_length=64)
    with pytest.raises(ExportError, match="max_length 64 differs from the tokenizer's 128"):
        export_version(model, repo)
    assert repository.versions(repo / "intent_bert") == []

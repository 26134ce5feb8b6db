"""docker/triton/assemble_repository.py on a fake source repository: the committed configs of
triton_models/ with small stand-in version directories (no weights needed)."""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.conftest import ROOT

TEMPLATE = ROOT / "triton_models"
MODELS = ("intent", "tokenizer", "intent_bert", "intent_bert_onnx", "stacker")


def tree(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


def step_models(config: str) -> list[str]:
    return re.findall(r'model_name:\s*"([^"]+)"', config)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    repo = tmp_path / "triton_models"
    for name in MODELS:
        (repo / name).mkdir(parents=True)
        shutil.copy2(TEMPLATE / name / "config.pbtxt", repo / name / "config.pbtxt")
    (repo / "intent" / "1").mkdir()
    (repo / "tokenizer" / "model.py").write_text("# canonical copy\n")
    tokenizer = repo / "tokenizer" / "1"
    (tokenizer / "artifacts").mkdir(parents=True)
    (tokenizer / "model.py").write_text("# tokenizer backend\n")
    (tokenizer / "artifacts" / "tokenizer.json").write_text("{}")
    (tokenizer / "__pycache__").mkdir()
    (tokenizer / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"\0")
    (repo / "intent_bert" / "1").mkdir()
    (repo / "intent_bert" / "1" / "model.py").write_text("# torch, CPU only\n")
    for version in (1, 2):
        (repo / "intent_bert_onnx" / str(version)).mkdir()
        (repo / "intent_bert_onnx" / str(version) / "model.onnx").write_bytes(b"onnx %d" % version)
    (repo / "intent_bert_onnx" / ".staging-3-abc").mkdir()  # an export in progress
    (repo / "stacker" / "1").mkdir()
    (repo / "stacker" / "1" / "model.py").write_text("# stacker backend\n")
    (repo / "stacker" / "heads" / "2").mkdir(parents=True)
    (repo / "stacker" / "heads" / "2" / "heads.pkl").write_bytes(b"heads 2")
    return repo


def test_layout_of_the_gpu_repository(assemble: ModuleType, source: Path, tmp_path: Path) -> None:
    dest = tmp_path / "deploy"
    report = assemble.assemble(source, dest)

    assert report == {
        "copied": ["tokenizer/1", "intent_bert_onnx/1", "intent_bert_onnx/2", "stacker/1",
                   "stacker/heads/2"],
        "kept": [],
    }
    assert tree(dest) == [
        "intent",
        "intent/1",
        "intent/config.pbtxt",
        "intent_bert_onnx",
        "intent_bert_onnx/1",
        "intent_bert_onnx/1/model.onnx",
        "intent_bert_onnx/2",
        "intent_bert_onnx/2/model.onnx",
        "intent_bert_onnx/config.pbtxt",
        "stacker",
        "stacker/1",
        "stacker/1/model.py",
        "stacker/config.pbtxt",
        "stacker/heads",
        "stacker/heads/2",
        "stacker/heads/2/heads.pkl",
        "tokenizer",
        "tokenizer/1",
        "tokenizer/1/artifacts",
        "tokenizer/1/artifacts/tokenizer.json",
        "tokenizer/1/model.py",
        "tokenizer/config.pbtxt",
    ]  # no python intent_bert, no bytecode, no staging directory
    ensemble = (dest / "intent" / "config.pbtxt").read_text()
    assert step_models(ensemble) == ["tokenizer", "intent_bert_onnx", "stacker"]
    onnx = (dest / "intent_bert_onnx" / "config.pbtxt").read_text()
    assert onnx == (source / "intent_bert_onnx" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in onnx
    assert "KIND_GPU" in onnx
    assert (dest / "intent_bert_onnx" / "2" / "model.onnx").read_bytes() == b"onnx 2"


def test_only_the_network_step_changes(assemble: ModuleType) -> None:
    ensemble = (TEMPLATE / "intent" / "config.pbtxt").read_text()
    network = (TEMPLATE / "intent_bert_onnx" / "config.pbtxt").read_text()
    rewritten = assemble.gpu_ensemble_config(ensemble, network)
    assert rewritten.startswith(assemble.HEADER)
    # The text-only onnx graph takes no FEATURES: only the network step's mapping goes (the
    # first; the stacker's stays).
    features = '      input_map { key: "FEATURES", value: "FEATURES" }\n'
    assert ensemble.count(features) == 2
    assert rewritten.removeprefix(assemble.HEADER) == ensemble.replace(
        'model_name: "intent_bert"', 'model_name: "intent_bert_onnx"'
    ).replace(features, "", 1)
    assert rewritten.count(features) == 1


def test_an_onnx_graph_with_features_keeps_the_network_steps_mapping(
    assemble: ModuleType,
) -> None:
    ensemble = (TEMPLATE / "intent" / "config.pbtxt").read_text()
    network = (TEMPLATE / "intent_bert_onnx" / "config.pbtxt").read_text().replace(
        "input [", 'input [\n  { name: "FEATURES", data_type: TYPE_FP32, dims: [ 47 ] },', 1)
    rewritten = assemble.gpu_ensemble_config(ensemble, network)
    assert rewritten.count('input_map { key: "FEATURES", value: "FEATURES" }') == 2


def test_a_feature_tower_version_gets_features_declared_in_the_gpu_config(
    assemble: ModuleType, source: Path, tmp_path: Path
) -> None:
    tower = {"inputs": ["INPUT_IDS", "ATTENTION_MASK", "FEATURES"],
             "features": {"n_features": 47, "feature_schema": 1}}
    (source / "intent_bert_onnx" / "2" / "inputs.json").write_text(json.dumps(tower))
    assemble.assemble(source, tmp_path / "deploy")
    network = (tmp_path / "deploy" / "intent_bert_onnx" / "config.pbtxt").read_text()
    declared = re.search(r"input \[(.*?)\n\]", network, re.S).group(1)
    assert re.findall(r'name: "(\w+)"', declared) == ["INPUT_IDS", "ATTENTION_MASK", "FEATURES"]
    assert '{ name: "FEATURES", data_type: TYPE_FP32, dims: [ 47 ] }' in declared
    ensemble = (tmp_path / "deploy" / "intent" / "config.pbtxt").read_text()
    assert ensemble.count('input_map { key: "FEATURES", value: "FEATURES" }') == 2

    # The newest version decides (the config serves only it): a text-only v3 takes it back.
    (source / "intent_bert_onnx" / "3").mkdir()
    (source / "intent_bert_onnx" / "3" / "model.onnx").write_bytes(b"onnx 3")
    (source / "intent_bert_onnx" / "3" / "inputs.json").write_text(
        json.dumps({"inputs": ["INPUT_IDS", "ATTENTION_MASK"]}))
    assemble.assemble(source, tmp_path / "deploy")
    network = (tmp_path / "deploy" / "intent_bert_onnx" / "config.pbtxt").read_text()
    assert network == (TEMPLATE / "intent_bert_onnx" / "config.pbtxt").read_text()
    ensemble = (tmp_path / "deploy" / "intent" / "config.pbtxt").read_text()
    assert ensemble.count('input_map { key: "FEATURES", value: "FEATURES" }') == 1


def test_a_broken_inputs_file_is_refused_before_writing(
    assemble: ModuleType, source: Path, tmp_path: Path
) -> None:
    (source / "intent_bert_onnx" / "2" / "inputs.json").write_text(
        json.dumps({"inputs": ["INPUT_IDS", "ATTENTION_MASK", "FEATURES"]}))  # no column count
    with pytest.raises(assemble.AssemblyError, match=r"inputs\.json"):
        assemble.assemble(source, tmp_path / "deploy")
    assert not (tmp_path / "deploy").exists()


def test_a_rerun_copies_new_versions_and_keeps_served_ones(
    assemble: ModuleType, source: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "deploy"
    assemble.assemble(source, dest)
    (source / "intent_bert_onnx" / "2" / "model.onnx").write_bytes(b"changed after serving")
    (source / "intent_bert_onnx" / "3").mkdir()
    (source / "intent_bert_onnx" / "3" / "model.onnx").write_bytes(b"onnx 3")

    report = assemble.assemble(source, dest)

    assert report == {
        "copied": ["intent_bert_onnx/3"],
        "kept": ["tokenizer/1", "intent_bert_onnx/1", "intent_bert_onnx/2", "stacker/1",
                 "stacker/heads/2"],
    }
    assert (dest / "intent_bert_onnx" / "2" / "model.onnx").read_bytes() == b"onnx 2"
    assert (dest / "intent_bert_onnx" / "3" / "model.onnx").read_bytes() == b"onnx 3"
    hidden = [p.name for p in dest.rglob(".*")]
    assert hidden == []  # no staging directory or temporary config left behind


def _remove_onnx_versions(repo: Path) -> None:
    for version in (1, 2):
        shutil.rmtree(repo / "intent_bert_onnx" / str(version))


def _edit(path: str, old: str, new: str):
    def mutate(repo: Path) -> None:
        file = repo / path
        file.write_text(file.read_text().replace(old, new))

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        pytest.param(_remove_onnx_versions, "has no version", id="no-onnx-version"),
        pytest.param(
            lambda repo: (repo / "intent_bert_onnx" / "2" / "model.onnx").unlink(),
            "lacks model.onnx",
            id="version-without-weights",
        ),
        pytest.param(
            lambda repo: shutil.rmtree(repo / "tokenizer" / "1" / "artifacts"),
            "lacks artifacts",
            id="tokenizer-without-files",
        ),
        pytest.param(
            _edit("intent/config.pbtxt", '"intent_bert"', '"something_else"'),
            "exactly one ensemble step",
            id="no-network-step",
        ),
        pytest.param(
            _edit("intent_bert_onnx/config.pbtxt", '"CHURN"', '"CHURN_PROBABILITY"'),
            "lacks tensors the ensemble maps: ['CHURN']",
            id="onnx-config-drifted",
        ),
        pytest.param(
            lambda repo: (repo / "tokenizer" / "config.pbtxt").unlink(),
            "cannot read",
            id="missing-config",
        ),
    ],
)
def test_a_source_that_cannot_be_served_is_refused_before_writing(
    assemble: ModuleType, source: Path, tmp_path: Path, mutate, message: str
) -> None:
    mutate(source)
    dest = tmp_path / "deploy"
    with pytest.raises(assemble.AssemblyError, match=re.escape(message)):
        assemble.assemble(source, dest)
    assert not dest.exists()


def test_command_line(
    assemble: ModuleType, source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "deploy"
    assert assemble.main(["--source", str(source), "--dest", str(dest)]) == 0
    assert json.loads(capsys.readouterr().out)["copied"][0] == "tokenizer/1"

    assert assemble.main(["--source", str(tmp_path / "nowhere"), "--dest", str(dest)]) == 1
    assert capsys.readouterr().err.startswith("error: cannot read")


@pytest.mark.parametrize("model", ["tokenizer", "stacker"])
def test_the_python_model_runs_on_the_ngc_image(model: str) -> None:
    """The NGC image runs python-backend models on its own Python (3.10 in 24.10) with only
    what docker/triton/Dockerfile installs: the tokenizer and the stacker need nothing more
    (the stacker's pickled heads need scikit-learn, which the Dockerfile installs)."""
    code = (TEMPLATE / model / "model.py").read_text()
    tree_ = ast.parse(code, feature_version=(3, 10))
    imported = {
        name.split(".")[0]
        for node in ast.walk(tree_)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [alias.name for alias in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
        )
    }
    third_party = imported - set(sys.stdlib_module_names) - {"__future__"}
    dockerfile = (ROOT / "docker" / "triton" / "Dockerfile").read_text()
    installed = {"triton_python_backend_utils"}  # provided by the python backend itself
    installed |= {name for name in ("transformers", "numpy") if f'"{name}' in dockerfile}
    assert third_party <= installed, f"not in the Triton image: {third_party - installed}"
    if model == "stacker":
        import sklearn

        assert f"SCIKIT_LEARN_VERSION={sklearn.__version__}" in dockerfile  # pickles match

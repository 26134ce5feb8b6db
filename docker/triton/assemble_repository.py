"""Assemble the GPU model repository served by Triton's NGC image (no torch needed).

`triton_models/` is the repository the CPU demo serves: `intent` → `tokenizer` (python backend)
→ `intent_bert` (python backend, torch). On a GPU server the network runs in Triton's
onnxruntime backend instead, so the deploy repository holds:

    <dest>/intent/config.pbtxt            the ensemble, its network step calling intent_bert_onnx
    <dest>/intent/1/                      (an ensemble needs a version directory, empty)
    <dest>/tokenizer/config.pbtxt         unchanged
    <dest>/tokenizer/<N>/                 model.py + artifacts/ (inference.model.export)
    <dest>/intent_bert_onnx/config.pbtxt  onnxruntime_onnx, KIND_GPU; declares FEATURES when
                                          the version it serves (the newest) takes them
    <dest>/intent_bert_onnx/<N>/          model.onnx, as written by inference.model.onnx
    <dest>/stacker/config.pbtxt           unchanged: network probabilities + FEATURES
    <dest>/stacker/1/                     model.py (python backend)
    <dest>/stacker/heads/<N>/             heads fitted for network version N, when trained

The python `intent_bert` is left out: the NGC image has no torch, and clients never name it.
Run it again after exporting a new version: versions already in <dest> are never touched (one
may be serving), new ones are copied into a hidden directory and renamed into place, so a
running Triton (which skips non-numeric entries) never sees half a version. Then ask Triton to
load `intent_bert_onnx` (docker/OPS.md, "Rolling a model version").

    python docker/triton/assemble_repository.py --source triton_models --dest DIR
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.model.runtimes import RuntimeUnavailable, read_inputs
from inference.repository import (
    CONFIG,
    ENSEMBLE,
    STACKER,
    TOKENIZER,
    copy_version,
    versions,
    write_text_atomically,
)
from inference.repository import INTENT_BERT as CPU_NETWORK
from inference.repository import INTENT_BERT_ONNX as GPU_NETWORK

ENSEMBLE_VERSION = "1"
# What a version directory must hold before it is worth serving.
REQUIRED_FILES = {TOKENIZER: ("model.py", "artifacts"), GPU_NETWORK: ("model.onnx",),
                  STACKER: ("model.py",)}
HEADS = "heads"  # stacker/heads/<N>/: per network version, not Triton versions
HEADER = (
    "# Assembled by docker/triton/assemble_repository.py from triton_models/intent: "
    f"the network step calls {GPU_NETWORK} (onnxruntime, GPU).\n"
)

_STEP_NETWORK = re.compile(r'(model_name:\s*)"' + CPU_NETWORK + '"')
_MODEL_NAME = re.compile(r'model_name:\s*"([^"]+)"')
_MAP_KEY = re.compile(r'(?:input|output)_map\s*\{\s*key:\s*"([^"]+)"')
_TENSOR_NAME = re.compile(r'\bname:\s*"([^"]+)"')
FEATURES = "FEATURES"
_FEATURES_MAP = re.compile(r'[ \t]*input_map\s*\{\s*key:\s*"FEATURES"[^}]*\}[ \t]*\n?')
_MASK_INPUT = re.compile(r'(\{\s*name:\s*"ATTENTION_MASK"[^}]*\})')


class AssemblyError(Exception):
    """The source repository cannot be turned into a GPU deploy repository."""


def gpu_ensemble_config(ensemble: str, network: str) -> str:
    """The ensemble config with its network step calling `intent_bert_onnx`.

    `network` is the onnx model's config: every tensor the step maps must exist there, so a
    drifted onnx config fails here rather than at load time on the GPU server.
    """
    rewritten, count = _STEP_NETWORK.subn(rf'\1"{GPU_NETWORK}"', ensemble)
    if count != 1:
        raise AssemblyError(
            f"expected exactly one ensemble step calling {CPU_NETWORK!r}, found {count}"
        )
    if FEATURES not in _TENSOR_NAME.findall(network):
        rewritten = _without_network_features(rewritten)
    # A step's map keys are tensors of the model it calls: they follow its model_name.
    steps = _MODEL_NAME.split(rewritten)[1:]  # [name, text up to the next step, name, ...]
    mapped = {
        key
        for name, text in zip(steps[::2], steps[1::2], strict=True)
        if name == GPU_NETWORK
        for key in _MAP_KEY.findall(text)
    }
    missing = sorted(mapped - set(_TENSOR_NAME.findall(network)))
    if missing:
        raise AssemblyError(f"{GPU_NETWORK} config lacks tensors the ensemble maps: {missing}")
    return HEADER + rewritten


def gpu_network_config(network: str, newest_version: Path) -> str:
    """The onnx model's config, with FEATURES declared when the version it serves (the newest:
    its version policy is latest 1) is a feature-tower graph, as its inputs.json says. A text-only
    or older version (no inputs.json) leaves the committed text-only config as it is."""
    try:
        declared = read_inputs(newest_version)
    except RuntimeUnavailable as error:
        raise AssemblyError(str(error)) from error
    if not declared.n_features or FEATURES in _TENSOR_NAME.findall(network):
        return network
    features = f'{{ name: "{FEATURES}", data_type: TYPE_FP32, dims: [ {declared.n_features} ] }}'
    rewritten, count = _MASK_INPUT.subn(rf"\1,\n  {features}", network, count=1)
    if count != 1:
        raise AssemblyError(f"{GPU_NETWORK} config has no ATTENTION_MASK input to follow")
    return rewritten


def _without_network_features(ensemble: str) -> str:
    """The ensemble with the network step's FEATURES mapping taken out: a text-only graph (the
    committed onnx config) has no such input, while the python intent_bert takes it as optional.
    The stacker step keeps its FEATURES."""
    head, name, rest = ensemble.partition(f'model_name: "{GPU_NETWORK}"')
    step, next_step, tail = rest.partition("model_name:")
    step = _FEATURES_MAP.sub("", step)
    return head + name + step + next_step + tail


def assemble(source: Path, dest: Path) -> dict[str, list[str]]:
    """Write or update the deploy repository; return what was copied and what was kept."""
    source, dest = Path(source), Path(dest)
    # Read and check everything before writing anything.
    configs = {name: _read(source / name / CONFIG) for name in (ENSEMBLE, *REQUIRED_FILES)}
    plan = {
        name: _servable_versions(source / name, files) for name, files in REQUIRED_FILES.items()
    }
    newest = source / GPU_NETWORK / max(plan[GPU_NETWORK], key=int)
    configs[GPU_NETWORK] = gpu_network_config(configs[GPU_NETWORK], newest)
    configs[ENSEMBLE] = gpu_ensemble_config(configs[ENSEMBLE], configs[GPU_NETWORK])

    report: dict[str, list[str]] = {"copied": [], "kept": []}
    for name, numbers in plan.items():
        model_dir = dest / name
        model_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomically(model_dir / CONFIG, configs[name])
        for number in numbers:
            target = model_dir / number
            if target.exists():
                report["kept"].append(f"{name}/{number}")
                continue
            copy_version(source / name / number, target)
            report["copied"].append(f"{name}/{number}")
    heads = source / STACKER / HEADS
    for number in versions(heads):
        target = dest / STACKER / HEADS / str(number)
        if target.exists():
            report["kept"].append(f"{STACKER}/{HEADS}/{number}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        copy_version(heads / str(number), target)
        report["copied"].append(f"{STACKER}/{HEADS}/{number}")
    (dest / ENSEMBLE / ENSEMBLE_VERSION).mkdir(parents=True, exist_ok=True)
    write_text_atomically(dest / ENSEMBLE / CONFIG, configs[ENSEMBLE])
    return report


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        raise AssemblyError(f"cannot read {path}: is the source triton_models/?") from error


def _servable_versions(model_dir: Path, required: Sequence[str]) -> list[str]:
    numbers = [str(n) for n in versions(model_dir)]
    if not numbers:
        raise AssemblyError(
            f"{model_dir} has no version: export one first "
            "(python -m inference.model.export / python -m inference.model.onnx)"
        )
    for number in numbers:
        absent = [f for f in required if not (model_dir / number / f).exists()]
        if absent:
            raise AssemblyError(f"{model_dir / number} lacks {', '.join(absent)}")
    return numbers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="assemble_repository.py",
        description="Assemble the GPU Triton model repository (onnxruntime) from triton_models/.",
    )
    parser.add_argument("--source", type=Path, required=True, help="triton_models/ with versions")
    parser.add_argument("--dest", type=Path, required=True, help="deploy repository to update")
    args = parser.parse_args(argv)
    try:
        report = assemble(args.source, args.dest)
    except (AssemblyError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"dest": str(args.dest), **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

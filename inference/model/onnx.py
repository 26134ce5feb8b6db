"""IntentBert → ONNX for Triton's onnxruntime backend: the GPU deployment path.

The ONNX graph has the same inputs and outputs as the python-backend `intent_bert`
(INPUT_IDS, ATTENTION_MASK → STRENGTH, INTENT_TYPE, CHURN probabilities and MODEL_VERSION,
with dynamic batch and sequence axes), so on a GPU server the ensemble only swaps which model
its second step calls; the tokenizer and every client stay as they are. A network with a
feature tower also takes FEATURES (float32 [batch, n_features]), and its parity check feeds
FEATURES rows too (counts, money and missing values, as the worker sends them). MODEL_VERSION is a
constant baked into the graph at export time (the onnxruntime backend cannot add it).

    <repo>/intent_bert_onnx/config.pbtxt      committed: platform onnxruntime_onnx, KIND_GPU
    <repo>/intent_bert_onnx/<N>/model.onnx    build output, written here
    <repo>/intent_bert_onnx/<N>/model.int8.onnx  optional dynamic-int8 weights (not served
                                                 unless config names it: default_model_filename)

Every export is checked against PyTorch on padded batches of several lengths: the largest
absolute difference of any probability must stay within PARITY_TOLERANCE, else the version
is not written. The CPU tritonserver used here bundles only the python backend, so it cannot
load this model (expected); onnxruntime itself runs it on CPU for the check.

The python-backend `intent_bert` runs the same graphs when a version's runtime is an
onnxruntime one: export writes them into intent_bert/<N>/artifacts/ (`write_onnx_files`).

    python -m inference.model.onnx --repo triton_models --from runs/latest/model \
        [--version N] [--int8]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from inference import repository
from inference.repository import INTENT_BERT, INTENT_BERT_ONNX, ExportError, write_atomically

from .intent_bert import IntentBert
from .runtimes import INT8_FILE, ONNX_FILE, write_inputs

INPUTS = ("INPUT_IDS", "ATTENTION_MASK")
FEATURES = "FEATURES"  # a third input when the network has a feature tower
OUTPUTS = ("STRENGTH", "INTENT_TYPE", "CHURN", "MODEL_VERSION")
PARITY_TOLERANCE = 1e-4
OPSET = 18


class _ServedGraph(nn.Module):
    """What Triton's intent_bert returns, as one traceable module."""

    def __init__(self, model: IntentBert, version: int):
        super().__init__()
        self.model = model
        self.register_buffer("version", torch.tensor([[version]], dtype=torch.int64))

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
        features: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        probs = self.model.probabilities(input_ids, attention_mask, features)
        rows = input_ids.shape[0]
        return (
            probs.strength,
            probs.intent_type,
            probs.churn.unsqueeze(-1),
            self.version.expand(rows, 1),
        )


def export_onnx(model: IntentBert, path: Path, version: int) -> Path:
    """Write `model` as one ONNX file (weights inside) with dynamic batch and sequence axes."""
    graph = _ServedGraph(model, version).eval()
    example: tuple[torch.Tensor, ...] = (torch.ones((2, 8), dtype=torch.long),
                                         torch.ones((2, 8), dtype=torch.long))
    batch = torch.export.Dim("batch", max=4096)
    sequence = torch.export.Dim("sequence", max=model.encoder.config.max_position_embeddings)
    axes = {0: batch, 1: sequence}
    names, shapes = list(INPUTS), {"input_ids": axes, "attention_mask": axes}
    if model.n_features:
        example = (*example, torch.zeros((2, model.n_features), dtype=torch.float32))
        names.append(FEATURES)
        shapes["features"] = {0: batch}
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed" notices
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # axis-renaming notices of the exporter
            torch.onnx.export(
                graph,
                example,
                str(path),
                input_names=names,
                output_names=list(OUTPUTS),
                dynamic_shapes=shapes,
                opset_version=OPSET,
                dynamo=True,
                external_data=False,
                optimize=True,
                verbose=False,
            )
    finally:
        exporter_log.setLevel(level)
    return path


def parity_features(rows: int, n_features: int, rng: np.random.Generator) -> np.ndarray:
    """FEATURES-like rows: heavy-tailed counts and amounts, some zero, some missing (-1)."""
    values = np.round(rng.lognormal(mean=1.0, sigma=2.0, size=(rows, n_features)), 2)
    values[rng.random((rows, n_features)) < 0.2] = 0.0
    values[rng.random((rows, n_features)) < 0.1] = -1.0
    return values.astype(np.float32)


def parity_batches(vocab_size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Right-padded random token batches of a few shapes, as the tokenizer would send them."""
    rng = np.random.default_rng(seed)
    batches = []
    for rows, width in ((1, 5), (4, 37), (7, 128)):
        lengths = rng.integers(1, width + 1, size=rows)
        lengths[0] = width  # the longest row sets the padded width
        ids = np.zeros((rows, width), dtype=np.int64)
        mask = np.zeros((rows, width), dtype=np.int64)
        for i, n in enumerate(lengths):
            ids[i, :n] = rng.integers(1000, vocab_size, size=n)
            mask[i, :n] = 1
        batches.append((ids, mask))
    return batches


def max_abs_difference(model: IntentBert, onnx_path: Path, seed: int = 0) -> float:
    """Largest |onnxruntime - PyTorch| over all probabilities of the parity batches."""
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    graph = _ServedGraph(model, 0).eval()
    rng = np.random.default_rng(seed + 1)
    worst = 0.0
    for ids, mask in parity_batches(model.encoder.config.vocab_size, seed):
        feeds = {INPUTS[0]: ids, INPUTS[1]: mask}
        features = None
        if model.n_features:
            feeds[FEATURES] = parity_features(len(ids), model.n_features, rng)
            features = torch.from_numpy(feeds[FEATURES])
        got = session.run(list(OUTPUTS[:3]), feeds)
        with torch.inference_mode():
            want = graph(torch.from_numpy(ids), torch.from_numpy(mask), features)[:3]
        for g, w in zip(got, want, strict=True):
            worst = max(worst, float(np.abs(g - w.numpy()).max()))
    return worst


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 weights (MatMul/Gemm), activations stay float: smaller, faster on CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process applies to static quantisation
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return target


def export_onnx_version(
    model: IntentBert,
    repo: Path,
    version: int | None = None,
    *,
    int8: bool = False,
) -> dict[str, Any]:
    """Write intent_bert_onnx version `version` (default: newest + 1) after the parity check.

    Returns the version, the parity difference and, with `int8`, how far the int8 file's
    probabilities move (dynamic quantisation is lossy: it is reported, not held to 1e-4)."""
    model_dir = Path(repo) / INTENT_BERT_ONNX
    if not (model_dir / "config.pbtxt").is_file():
        raise ExportError(f"{model_dir}/config.pbtxt missing: is {repo} the model repository?")
    if version is None:
        version = max(repository.versions(model_dir), default=0) + 1
    model = model.eval()
    report: dict[str, Any] = {"version": version, "tolerance": PARITY_TOLERANCE}

    def fill(staging: Path) -> None:
        report.update(write_onnx_files(model, staging, version, int8=int8))
        # What the graph takes, so the GPU repository's config can declare it (the assembler).
        write_inputs(staging, model.n_features, (model.feature_schema or {}).get("version"))

    write_atomically(model_dir / str(version), fill)
    return report


def write_onnx_files(
    model: IntentBert, directory: Path, version: int, *, int8: bool = True
) -> dict[str, float]:
    """model.onnx (refused beyond PARITY_TOLERANCE of PyTorch) and, with `int8`, model.int8.onnx
    in `directory`; returns the parity differences (int8's is lossy: reported, not held)."""
    model = model.eval()
    path = export_onnx(model, Path(directory) / ONNX_FILE, version)
    report = {"max_abs_diff": max_abs_difference(model, path), "tolerance": PARITY_TOLERANCE}
    if report["max_abs_diff"] > PARITY_TOLERANCE:
        raise ExportError(
            f"ONNX differs from PyTorch by {report['max_abs_diff']:.2e} > {PARITY_TOLERANCE}"
        )
    if int8:
        report["int8_max_abs_diff"] = max_abs_difference(
            model, quantize_int8(path, Path(directory) / INT8_FILE)
        )
    return report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m inference.model.onnx",
        description="Write an intent_bert_onnx version (Triton onnxruntime backend).",
    )
    parser.add_argument("--repo", type=Path, required=True, help="model repository directory")
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        help="a directory saved by "
        "IntentBert.save() (default: the newest intent_bert version's artifacts)",
    )
    parser.add_argument("--version", type=int, help="version number (default: newest + 1)")
    parser.add_argument("--int8", action="store_true", help="also write dynamic-int8 weights")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        source = args.source
        if source is None:
            versions = repository.versions(args.repo / INTENT_BERT)
            if not versions:
                raise ExportError(f"no {INTENT_BERT} version in {args.repo}: pass --from")
            source = args.repo / INTENT_BERT / str(versions[-1]) / "artifacts"
        report = export_onnx_version(
            IntentBert.load(source), args.repo, args.version, int8=args.int8
        )
    except (ExportError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps({"model": INTENT_BERT_ONNX, **report}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

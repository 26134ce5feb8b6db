"""Triton python backend: INPUT_IDS, ATTENTION_MASK (and FEATURES) → the heads' probabilities.

The canonical copy lives at triton_models/intent_bert/model.py; export copies it into
<version>/model.py. The network and its runtimes are not defined here: export also copies
inference/model/intent_bert.py (as model.py), inference/heads.py and
inference/model/runtimes.py into <version>/artifacts/intentbert/, next to the weights (and the
ONNX files), so each version runs the exact code it was saved with and this file stays
self-contained (the stub process cannot rely on the `inference` package being importable).

The runtime (torch, onnxruntime-fp32/-int8/-cuda, tensorrt-fp16) is the one the version's
runtime.json names, unless config.pbtxt's `runtime` parameter names one for the deployment.
A runtime that cannot start here (no such provider, no ONNX file) fails the load with the
reason, and Triton keeps serving the version it had.

FEATURES is an optional input of the model (config.pbtxt); each version declares in its
inputs.json whether its network reads it (a feature tower, with the column count and feature
schema version). A text-only version (no inputs.json: every version exported before the tower)
ignores FEATURES, so it stays servable while a tower version rolls out. A tower version answers
a request without FEATURES, or with the wrong number of columns, with an error naming both.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

ARCHITECTURE_PACKAGE = "intentbert"  # written by inference/model/export.py
# (request index, INPUT_IDS, ATTENTION_MASK, FEATURES or None)
Accepted = tuple[int, np.ndarray, np.ndarray, "np.ndarray | None"]


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        threads = instance_threads(int(_parameter(parameters, "threads", "0")), config,
                                   len(os.sched_getaffinity(0)))
        # Every row this instance scores carries its version, so clients see which weights
        # answered even while a newer version is being swapped in.
        self.version = int(args["model_version"])
        version_dir = Path(args["model_repository"]) / args["model_version"]
        artifacts = version_dir / "artifacts"
        runtimes = _import_runtimes(artifacts)
        name = _parameter(parameters, "runtime", "") or runtimes.read_runtime(version_dir)
        self.scorer = runtimes.load_scorer(artifacts, name, threads=threads)
        self.max_positions = int(self.scorer.max_positions)
        # Versions saved before inputs.json existed have no read_inputs: text only.
        read_inputs = getattr(runtimes, "read_inputs", None)
        declared = read_inputs(version_dir) if read_inputs else None
        self.n_features = declared.n_features if declared else 0
        self.feature_schema = declared.feature_schema if declared else None
        if self.n_features != int(getattr(self.scorer, "n_features", 0)):
            raise ValueError(f"intent_bert v{self.version}: inputs.json declares "
                             f"{self.n_features} FEATURES columns, the network reads "
                             f"{getattr(self.scorer, 'n_features', 0)}")
        logger = getattr(pb_utils, "Logger", None)  # set by the stub (Triton >= 22.09)
        if logger is not None:
            logger.log_info(f"intent_bert v{self.version}: runtime {self.scorer.runtime}")

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        accepted: list[Accepted] = []
        for index, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, "INPUT_IDS").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "ATTENTION_MASK").as_numpy()
            features = None
            if self.n_features:  # a text-only version ignores FEATURES
                found = pb_utils.get_input_tensor_by_name(request, "FEATURES")
                features = None if found is None else found.as_numpy()
            problem = self._problem(ids, mask) or self._feature_problem(features, len(ids))
            if problem:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(problem))
            else:
                accepted.append((index, ids, mask, features))
        if accepted:
            for (index, *_), response in zip(accepted, self._score(accepted), strict=True):
                responses[index] = response
        return responses

    def finalize(self) -> None:
        self.scorer = None

    def _problem(self, ids: np.ndarray, mask: np.ndarray) -> str | None:
        if ids.ndim != 2 or ids.shape != mask.shape:
            return f"INPUT_IDS {ids.shape} and ATTENTION_MASK {mask.shape} must match, [b, len]"
        if ids.shape[1] > self.max_positions:
            return f"sequence length {ids.shape[1]} exceeds the model's {self.max_positions}"
        return None

    def _feature_problem(self, features: np.ndarray | None, rows: int) -> str | None:
        if not self.n_features:
            return None
        wanted = (f"intent_bert v{self.version} reads FEATURES [{rows}, {self.n_features}] "
                  f"(feature schema v{self.feature_schema}) with the text")
        if features is None:
            return f"{wanted}; the request has none"
        if features.shape != (rows, self.n_features):
            return f"{wanted}; got {list(features.shape)}"
        if not np.isfinite(features).all():
            return f"{wanted}; got NaN or infinite values"
        return None

    def _score(self, accepted: list[Accepted]) -> list[Any]:
        """One forward pass over all accepted requests, padded to their common length."""
        input_ids = _pad_rows([ids for _, ids, _, _ in accepted])
        attention_mask = _pad_rows([mask for _, _, mask, _ in accepted])
        if self.n_features:
            features = np.concatenate([f for _, _, _, f in accepted]).astype(np.float32)
            probs = self.scorer.probabilities(input_ids, attention_mask, features)
        else:  # the scorer of a version saved before FEATURES takes two arguments
            probs = self.scorer.probabilities(input_ids, attention_mask)
        strength = np.asarray(probs.strength, dtype=np.float32)
        intent_type = np.asarray(probs.intent_type, dtype=np.float32)
        churn = np.asarray(probs.churn, dtype=np.float32).reshape(-1, 1)
        responses = []
        start = 0
        for _, ids, _, _ in accepted:
            rows = slice(start, start + len(ids))
            start += len(ids)
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor("STRENGTH", strength[rows]),
                        pb_utils.Tensor("INTENT_TYPE", intent_type[rows]),
                        pb_utils.Tensor("CHURN", churn[rows]),
                        pb_utils.Tensor(
                            "MODEL_VERSION", np.full((len(ids), 1), self.version, np.int64)
                        ),
                    ]
                )
            )
        return responses


def instance_threads(threads: int, config: dict[str, Any], cores: int) -> int:
    """Intra-op threads of one instance: as set, or (0) the cores shared out over the CPU
    instances the config asks for, at least one each."""
    if threads > 0:
        return threads
    instances = sum(int(g.get("count", 1)) for g in config.get("instance_group") or []
                    if g.get("kind", "KIND_CPU") == "KIND_CPU")
    return max(1, cores // max(1, instances))


def _parameter(parameters: dict[str, Any], key: str, default: str) -> str:
    return str(parameters.get(key, {}).get("string_value", default)).strip()


def _import_runtimes(artifacts: Path) -> Any:
    """The runtimes module from the code copied into this version's artifacts."""
    # One stub process serves one model instance, so this sys.path entry touches no one else.
    sys.path.insert(0, str(artifacts))
    return importlib.import_module(f"{ARCHITECTURE_PACKAGE}.runtimes")


def _pad_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack [n_i, len_i] int arrays into [sum n_i, max len_i], right-padded with 0."""
    width = max(array.shape[1] for array in arrays)
    out = np.zeros((sum(len(array) for array in arrays), width), dtype=np.int64)
    start = 0
    for array in arrays:
        out[start : start + len(array), : array.shape[1]] = array
        start += len(array)
    return out

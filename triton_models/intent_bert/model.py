"""Triton python backend: INPUT_IDS, ATTENTION_MASK → the three heads' probabilities.

The canonical copy lives at triton_models/intent_bert/model.py; export copies it into
<version>/model.py. The network itself is not defined here: export also copies
inference/model/intent_bert.py (as model.py) and inference/heads.py into
<version>/artifacts/intentbert/, next to the weights, so each version runs the exact
architecture it was saved with and this file stays self-contained (the stub process cannot
rely on the `inference` package being importable).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

ARCHITECTURE_PACKAGE = "intentbert"  # written by inference/model/export.py


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        threads = int(config["parameters"]["torch_threads"]["string_value"])
        if threads > 0:
            torch.set_num_threads(threads)
        # Every row this instance scores carries its version, so clients see which weights
        # answered even while a newer version is being swapped in.
        self.version = int(args["model_version"])
        artifacts = Path(args["model_repository"]) / args["model_version"] / "artifacts"
        self.model = _import_intent_bert(artifacts).load(artifacts)
        self.max_positions = int(self.model.encoder.config.max_position_embeddings)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses: list[Any] = [None] * len(requests)
        accepted: list[tuple[int, np.ndarray, np.ndarray]] = []
        for index, request in enumerate(requests):
            ids = pb_utils.get_input_tensor_by_name(request, "INPUT_IDS").as_numpy()
            mask = pb_utils.get_input_tensor_by_name(request, "ATTENTION_MASK").as_numpy()
            problem = self._problem(ids, mask)
            if problem:
                responses[index] = pb_utils.InferenceResponse(error=pb_utils.TritonError(problem))
            else:
                accepted.append((index, ids, mask))
        if accepted:
            for (index, _, _), response in zip(accepted, self._score(accepted), strict=True):
                responses[index] = response
        return responses

    def finalize(self) -> None:
        self.model = None

    def _problem(self, ids: np.ndarray, mask: np.ndarray) -> str | None:
        if ids.ndim != 2 or ids.shape != mask.shape:
            return f"INPUT_IDS {ids.shape} and ATTENTION_MASK {mask.shape} must match, [b, len]"
        if ids.shape[1] > self.max_positions:
            return f"sequence length {ids.shape[1]} exceeds the model's {self.max_positions}"
        return None

    def _score(self, accepted: list[tuple[int, np.ndarray, np.ndarray]]) -> list[Any]:
        """One forward pass over all accepted requests, padded to their common length."""
        input_ids = _pad_rows([ids for _, ids, _ in accepted])
        attention_mask = _pad_rows([mask for _, _, mask in accepted])
        with torch.inference_mode():
            probs = self.model.probabilities(
                torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
            )
        strength = probs.strength.numpy().astype(np.float32)
        intent_type = probs.intent_type.numpy().astype(np.float32)
        churn = probs.churn.numpy().astype(np.float32).reshape(-1, 1)
        responses = []
        start = 0
        for _, ids, _ in accepted:
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


def _import_intent_bert(artifacts: Path) -> Any:
    """The IntentBert class from the code copied into this version's artifacts."""
    # One stub process serves one model instance, so this sys.path entry touches no one else.
    sys.path.insert(0, str(artifacts))
    return importlib.import_module(f"{ARCHITECTURE_PACKAGE}.model").IntentBert


def _pad_rows(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack [n_i, len_i] int arrays into [sum n_i, max len_i], right-padded with 0."""
    width = max(array.shape[1] for array in arrays)
    out = np.zeros((sum(len(array) for array in arrays), width), dtype=np.int64)
    start = 0
    for array in arrays:
        out[start : start + len(array), : array.shape[1]] = array
        start += len(array)
    return out

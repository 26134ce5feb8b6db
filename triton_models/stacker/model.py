"""Triton python backend: the network's probabilities + FEATURES → the final three heads.

The canonical copy lives at triton_models/stacker/model.py; export copies it into version 1.
Heads trained per intent_bert version N live in <repo>/stacker/heads/<N>/heads.pkl (a pickled
dict written by inference/model/stacking.py: the feature count it was trained on and, per head
it replaces, a fitted classifier over [FEATURES, text probabilities]). Rows of a version with no
heads, or requests without FEATURES, pass through unchanged. Self-contained (the stub process
cannot rely on the `inference` package): numpy, pickle and the classifiers' own library.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

HEADS_DIR = "heads"
HEADS_FILE = "heads.pkl"


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.heads_root = Path(args["model_repository"]) / HEADS_DIR
        self.loaded: dict[int, dict[str, Any] | None] = {}  # version -> heads (None: none)

    def execute(self, requests: list[Any]) -> list[Any]:
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except (ValueError, OSError, pickle.UnpicklingError) as error:
                responses.append(pb_utils.InferenceResponse(
                    error=pb_utils.TritonError(f"stacker: {error}")))
        return responses

    def finalize(self) -> None:
        self.loaded = {}

    def _one(self, request: Any) -> Any:
        def tensor(name: str) -> np.ndarray | None:
            found = pb_utils.get_input_tensor_by_name(request, name)
            return None if found is None else found.as_numpy()

        strength = tensor("TEXT_STRENGTH").astype(np.float32)
        intent_type = tensor("TEXT_INTENT_TYPE").astype(np.float32)
        churn = tensor("TEXT_CHURN").astype(np.float32)
        versions = tensor("TEXT_MODEL_VERSION").astype(np.int64)
        features = tensor("FEATURES")
        if features is not None:
            strength, churn = strength.copy(), churn.copy()
            for version in np.unique(versions[:, 0]):
                heads = self._heads(int(version))
                if heads is not None:
                    rows = versions[:, 0] == version
                    self._stack(heads, features[rows], strength, intent_type, churn, rows)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("STRENGTH", strength),
            pb_utils.Tensor("INTENT_TYPE", intent_type),
            pb_utils.Tensor("CHURN", churn),
            pb_utils.Tensor("MODEL_VERSION", versions),
        ])

    def _heads(self, version: int) -> dict[str, Any] | None:
        if version not in self.loaded:
            path = self.heads_root / str(version) / HEADS_FILE
            self.loaded[version] = pickle.loads(path.read_bytes()) if path.is_file() else None
        return self.loaded[version]

    @staticmethod
    def _stack(heads: dict[str, Any], features: np.ndarray, strength: np.ndarray,
               intent_type: np.ndarray, churn: np.ndarray, rows: np.ndarray) -> None:
        if features.shape[1] != heads["n_features"]:
            raise ValueError(f"FEATURES has {features.shape[1]} columns; this version's heads "
                             f"were trained on {heads['n_features']} (feature schema "
                             f"v{heads['feature_schema']})")
        x = np.hstack([features, strength[rows], intent_type[rows], churn[rows]])
        x = x.astype(np.float64)
        if "strength" in heads:
            strength[rows] = heads["strength"].predict_proba(x).astype(np.float32)
        if "churn" in heads:
            churn[rows, 0] = heads["churn"].predict_proba(x)[:, 1].astype(np.float32)

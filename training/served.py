"""A version as it is served, scored offline: the network's probabilities, then the stacker
step's own code (triton_models/stacker/model.py: the stacked heads, the customer value
columns), so what the gate and the order-log check measure is what Triton would answer.

    ServedVersion.from_repo(repo, N)      the live version: network + heads/<N>/ as written
    ServedVersion(network, heads, value)  a candidate before it is written
    .score(texts, features)               -> Scored(probs per head, value columns [n, 3])

The stacker's code runs in Triton's python stub; here it is imported from the repository
(the model.py export installs as its code version) with a stand-in for Triton's utility
module, which only its request handling uses.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
import types
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from inference import repository
from inference.model.intent_bert import IntentBert
from inference.model.stacking import BACKEND_FILE, HEADS_DIR, HEADS_FILE, VALUE_FILE
from inference.model.tokenizer import load_tokenizer
from inference.repository import INTENT_BERT, REPOSITORY_TEMPLATE, STACKER
from streams.core.customer_value import CustomerValueModel
from training.fit.loop import predict, tokenize

Probs = dict[str, np.ndarray]  # head -> [n, classes] (churn [n, 2])


@cache
def stacker_code(repo: Path) -> types.ModuleType:
    """The stacker step's module that serves `repo` once this run has exported: the
    repository's own model.py (export installs it as the code version, `ensure_stacker`),
    else the committed template's."""
    path = Path(repo) / STACKER / BACKEND_FILE
    if not path.is_file():
        path = REPOSITORY_TEMPLATE / STACKER / BACKEND_FILE
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("pb_utils"))
    spec = importlib.util.spec_from_file_location(f"served_stacker_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise OSError(f"cannot load the stacker step from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Scored:
    probs: Probs
    values: np.ndarray  # [n, 3]: p_alive, expected orders, expected value (-1: none)


@dataclass(frozen=True)
class ServedVersion:
    network: IntentBert
    heads: dict[str, Any] | None  # as pickled in heads.pkl (n_features, strength?, churn?)
    value: dict[str, Any] | None  # the stacker's loaded customer value (model, horizon, columns)
    repo: Path = REPOSITORY_TEMPLATE  # whose stacker code serves it

    @classmethod
    def from_repo(cls, repo: Path, version: int) -> ServedVersion:
        folder = Path(repo) / STACKER / HEADS_DIR / str(version)
        heads_file = folder / HEADS_FILE
        heads = pickle.loads(heads_file.read_bytes()) if heads_file.is_file() else None
        code = stacker_code(Path(repo))
        value = code.load_value(folder) if (folder / VALUE_FILE).is_file() else None
        network = IntentBert.load(Path(repo) / INTENT_BERT / str(version) / "artifacts")
        return cls(network, heads, value, Path(repo))

    def score(self, texts: Sequence[str], features: np.ndarray) -> Scored:
        """The served answer for these rows: the network, then the stacker's step."""
        tokenizer = load_tokenizer(max_length=self.network.max_length)
        rows = np.asarray(features, dtype=np.float32)
        text = predict(self.network, tokenize(tokenizer, texts, self.network.max_length),
                       features=rows if self.network.n_features else None)
        strength = text["strength"].astype(np.float32)
        intent_type = text["intent_type"].astype(np.float32)
        churn = text["churn"].astype(np.float32).reshape(-1, 1)
        code = stacker_code(self.repo)
        values = (code.value_rows(self.value, rows) if self.value is not None
                  else np.full((len(rows), 3), -1.0, dtype=np.float32))
        if self.heads is not None:
            code.TritonPythonModel._stack(self.heads, rows, strength, intent_type, churn,
                                          np.ones(len(rows), dtype=bool), values)
        p = churn[:, 0].astype(np.float64)
        return Scored({"strength": strength.astype(np.float64),
                       "intent_type": intent_type.astype(np.float64),
                       "churn": np.column_stack([1 - p, p])}, values)


def live_version(repo: Path) -> int | None:
    """The newest intent_bert version in `repo` (None: nothing live)."""
    versions = repository.versions(Path(repo) / INTENT_BERT)
    return versions[-1] if versions else None


def candidate_value(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """A candidate's customer value as the stacker loads it, from write_heads' payload (built
    by the project's own code, of which the payload ships a copy)."""
    if payload is None:
        return None
    return {"model": CustomerValueModel.from_json(payload["model"]),
            "horizon_days": float(payload["horizon_days"]),
            "columns": {k: int(v) for k, v in payload["columns"].items()}}

"""Triton python backend: the network's probabilities + FEATURES → the final three heads.

The canonical copy lives at triton_models/stacker/model.py; export copies it into version 1.
Heads trained per intent_bert version N live in <repo>/stacker/heads/<N>/heads.pkl (a pickled
dict written by inference/model/stacking.py: the feature count it was trained on and, per head
it replaces, a fitted classifier over [FEATURES, text probabilities]). Rows of a version with no
heads, or requests without FEATURES, pass through unchanged. Self-contained (the stub process
cannot rely on the `inference` package): numpy, pickle and the classifiers' own library.

Cascade (streams/core/cascade.py): a request may send CASCADE, per row [mode, events since the
kept network run, kinds_mask]. Mode 0: the TEXT_* inputs are the network's outputs for this
very text (as without CASCADE). Mode 1: they are kept outputs of an earlier text of the session
(the same reading). Mode 2: there are none: the version's prototype for the row's kinds of
event (heads["prototypes"][str(kinds_mask)]: the network's typical outputs) takes their place.
NETWORK_WANTED (sent where requested) says, per row, whether that cheap answer must be
replaced by the network's after all, by the version's cascade policy (heads["cascade"]): 0 no,
1 in a band, 2 kept outputs too old, 3 the version has no policy, 4 its policy lets no typical
answer stand, 5 it has no prototype for these kinds. `wants_network` here is a copy of
streams.core.cascade.wants_network (a test holds them equal).

Customer value: a version whose heads/<N>/ holds customer_value.json (BG/NBD and Gamma-Gamma
parameters, the horizon, the FEATURES columns of the profile's orders) and customer_value.py
(the closed forms, standard library only, shipped by training) gets P_ALIVE, EXPECTED_ORDERS
and EXPECTED_VALUE per row from its FEATURES row (`rfm_from_row`); where the churn head was
fitted on them too (`churn_reads_customer_value`), they join its input after the text
probabilities. Every other row, and a user with no order yet, answers -1 there.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

HEADS_DIR = "heads"
HEADS_FILE = "heads.pkl"
VALUE_FILE = "customer_value.json"
VALUE_CODE_FILE = "customer_value.py"
VALUE_OUTPUTS = ("P_ALIVE", "EXPECTED_ORDERS", "EXPECTED_VALUE")
NO_VALUE = -1.0
MODE_EXACT, MODE_STALE, MODE_TYPICAL = 0, 1, 2
WANTED_NO, WANTED_BAND, WANTED_REFRESH, WANTED_NO_POLICY = 0, 1, 2, 3
WANTED_TYPICAL_OFF, WANTED_UNSEEN = 4, 5


def wants_network(policy: dict[str, Any] | None, mode: int, events_since: int, strength: Any,
                  p_churn: float, intent_type: Any) -> int:
    """Whether a cheap answer asks for the network (a WANTED_* code): a copy of
    streams.core.cascade.wants_network over the policy's JSON form."""
    if mode == MODE_EXACT:
        return WANTED_NO
    if policy is None:
        return WANTED_NO_POLICY
    if mode == MODE_TYPICAL and not policy.get("typical"):
        return WANTED_TYPICAL_OFF
    refresh = int(policy.get("refresh_events") or 0)
    if mode == MODE_STALE and refresh and events_since >= refresh:
        return WANTED_REFRESH
    for band, p in ((policy.get("strength_band"), float(strength[0])),
                    (policy.get("churn_band"), p_churn)):
        if band is not None and float(band[0]) <= p <= float(band[1]):
            return WANTED_BAND
    for probs, margin in ((intent_type, policy.get("intent_margin")),
                          (strength, policy.get("strength_margin"))):
        top = sorted((float(x) for x in probs), reverse=True)
        if len(top) > 1 and top[0] - top[1] < float(margin or 0.0):
            return WANTED_BAND
    return WANTED_NO


def rfm_from_row(row: np.ndarray,
                 columns: dict[str, int]) -> tuple[int, float, float, float] | None:
    """(x, t_x, T, m) in days from a FEATURES row's profile columns, as of the row's as-of
    time; None for a user with no order yet. x: repeat orders; t_x: first to last order
    (mean days between orders x repeats); T: t_x + days since the last order; m: the mean
    order value. The same mapping as training.fit.customer_value.rfm_from_row (a test holds
    them equal)."""
    orders = round(float(row[columns["profile_orders"]]))
    since_last = float(row[columns["profile_days_since_last_order"]])
    if orders < 1 or since_last < 0:
        return None
    x = orders - 1
    between = float(row[columns["profile_mean_days_between_orders"]])
    t_x = between * x if x > 0 and between > 0 else 0.0
    return x, t_x, t_x + since_last, max(0.0, float(row[columns["profile_mean_order"]]))


def value_rows(value: dict[str, Any], features: np.ndarray) -> np.ndarray:
    """[n, 3]: p_alive, expected orders and expected value in the horizon per FEATURES row
    (NO_VALUE for a user with no order yet)."""
    out = np.full((len(features), 3), NO_VALUE, dtype=np.float32)
    for i, row in enumerate(features):
        rfm = rfm_from_row(row, value["columns"])
        if rfm is None:
            continue
        try:
            out[i] = value["model"].value_of(*rfm, value["horizon_days"])
        except (ValueError, ArithmeticError):  # a row outside the closed forms' domain
            continue
    return out


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        self.heads_root = Path(args["model_repository"]) / HEADS_DIR
        self.loaded: dict[int, dict[str, Any] | None] = {}  # version -> heads (None: none)
        self.values: dict[int, dict[str, Any] | None] = {}  # version -> customer value

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
        self.values = {}

    def _one(self, request: Any) -> Any:
        def tensor(name: str) -> np.ndarray | None:
            found = pb_utils.get_input_tensor_by_name(request, name)
            return None if found is None else found.as_numpy()

        strength = tensor("TEXT_STRENGTH").astype(np.float32)
        intent_type = tensor("TEXT_INTENT_TYPE").astype(np.float32)
        churn = tensor("TEXT_CHURN").astype(np.float32)
        versions = tensor("TEXT_MODEL_VERSION").astype(np.int64)
        features = tensor("FEATURES")
        cascade = tensor("CASCADE")
        n = len(versions)
        modes = np.zeros(n, dtype=np.int64) if cascade is None else cascade[:, 0].astype(np.int64)
        values = np.full((n, 3), NO_VALUE, dtype=np.float32)
        wanted = np.zeros((n, 1), dtype=np.int64)
        if features is not None:
            strength, intent_type, churn = strength.copy(), intent_type.copy(), churn.copy()
            for version in np.unique(versions[:, 0]):
                rows = versions[:, 0] == version
                heads = self._heads(int(version))
                unseen = np.zeros(n, dtype=bool)
                if cascade is not None:  # mode-2 rows read the version's typical outputs
                    unseen = self._typical(heads, cascade, rows & (modes == MODE_TYPICAL),
                                           strength, intent_type, churn)
                value = self._value(int(version))
                if value is not None:
                    values[rows] = value_rows(value, features[rows])
                if heads is not None:
                    self._stack(heads, features[rows], strength, intent_type, churn, rows,
                                values[rows])
                if cascade is not None:
                    self._check(heads, cascade, rows, strength, intent_type, churn, wanted)
                    answered = np.isin(wanted[:, 0], (WANTED_NO, WANTED_BAND))
                    wanted[unseen & rows & answered, 0] = WANTED_UNSEEN
        elif cascade is not None:
            wanted[modes != MODE_EXACT] = WANTED_NO_POLICY
        outputs = [
            pb_utils.Tensor("STRENGTH", strength),
            pb_utils.Tensor("INTENT_TYPE", intent_type),
            pb_utils.Tensor("CHURN", churn),
            pb_utils.Tensor("MODEL_VERSION", versions),
            *(pb_utils.Tensor(name, values[:, i:i + 1].copy())
              for i, name in enumerate(VALUE_OUTPUTS)),
        ]
        if "NETWORK_WANTED" in set(request.requested_output_names()):
            outputs.append(pb_utils.Tensor("NETWORK_WANTED", wanted))
        return pb_utils.InferenceResponse(output_tensors=outputs)

    @staticmethod
    def _typical(heads: dict[str, Any] | None, cascade: np.ndarray, rows: np.ndarray,
                 strength: np.ndarray, intent_type: np.ndarray, churn: np.ndarray
                 ) -> np.ndarray:
        """Mode-2 rows: the version's prototype for the row's kinds_mask in place of the
        network's outputs (in place); the rows it has none for (True: unseen)."""
        prototypes = {} if heads is None else heads.get("prototypes") or {}
        unseen = np.zeros(len(rows), dtype=bool)
        for i in np.flatnonzero(rows):
            found = prototypes.get(str(int(cascade[i, 2])))
            if found is None:
                unseen[i] = True
                continue
            strength[i] = found["strength"]
            intent_type[i] = found["intent_type"]
            churn[i, 0] = found["churn"]
        return unseen

    @staticmethod
    def _check(heads: dict[str, Any] | None, cascade: np.ndarray, rows: np.ndarray,
               strength: np.ndarray, intent_type: np.ndarray, churn: np.ndarray,
               wanted: np.ndarray) -> None:
        """NETWORK_WANTED for `rows` (one version's) from the version's cascade policy."""
        policy = None if heads is None else heads.get("cascade")
        for i in np.flatnonzero(rows):
            wanted[i, 0] = wants_network(policy, int(cascade[i, 0]), int(cascade[i, 1]),
                                         strength[i], float(churn[i, 0]), intent_type[i])

    def _heads(self, version: int) -> dict[str, Any] | None:
        if version not in self.loaded:
            path = self.heads_root / str(version) / HEADS_FILE
            self.loaded[version] = pickle.loads(path.read_bytes()) if path.is_file() else None
        return self.loaded[version]

    def _value(self, version: int) -> dict[str, Any] | None:
        """The version's customer value model (its own code, loaded from its heads folder)."""
        if version not in self.values:
            folder = self.heads_root / str(version)
            self.values[version] = load_value(folder) if (folder / VALUE_FILE).is_file() else None
        return self.values[version]

    @staticmethod
    def _stack(heads: dict[str, Any], features: np.ndarray, strength: np.ndarray,
               intent_type: np.ndarray, churn: np.ndarray, rows: np.ndarray,
               values: np.ndarray | None = None) -> None:
        if features.shape[1] != heads["n_features"]:
            raise ValueError(f"FEATURES has {features.shape[1]} columns; this version's heads "
                             f"were trained on {heads['n_features']} (feature schema "
                             f"v{heads['feature_schema']})")
        x = np.hstack([features, strength[rows], intent_type[rows], churn[rows]])
        x = x.astype(np.float64)
        if "strength" in heads:
            strength[rows] = heads["strength"].predict_proba(x).astype(np.float32)
        if "churn" in heads:
            if heads.get("churn_reads_customer_value"):
                if values is None:
                    raise ValueError("this version's churn head reads customer value columns")
                x = np.hstack([x, values.astype(np.float64)])
            churn[rows, 0] = heads["churn"].predict_proba(x)[:, 1].astype(np.float32)


def load_value(folder: Path) -> dict[str, Any]:
    """customer_value.json with its model built by the version's own customer_value.py."""
    doc = json.loads((folder / VALUE_FILE).read_text(encoding="utf-8"))
    spec = importlib.util.spec_from_file_location(f"customer_value_{folder.name}",
                                                  folder / VALUE_CODE_FILE)
    if spec is None or spec.loader is None:
        raise OSError(f"cannot load {folder / VALUE_CODE_FILE}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    model = module.CustomerValueModel.from_json(json.dumps(doc["model"]))
    return {"model": model, "horizon_days": float(doc["horizon_days"]),
            "columns": {k: int(v) for k, v in doc["columns"].items()}}

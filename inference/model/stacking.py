"""The `stacker` step of the served ensemble: its code version and per-version heads.

Training fits, per intent_bert version, classifiers over [FEATURES, the network's
probabilities] (`training/fit/stacking.py`); `write_heads` stores them where the stacker step
looks for them, `<repo>/stacker/heads/<version>/heads.pkl`, in one rename, before the
intent_bert version itself is loaded. A version without heads is served text-only.

A version may also carry its customer value model (BG/NBD + Gamma-Gamma, fitted at train time):
`customer_value.json` (parameters, horizon, which FEATURES columns hold the profile's orders)
and `customer_value.py`, the self-contained code of its closed forms, so the stacker (which
cannot import this project) computes `P_ALIVE`, `EXPECTED_ORDERS` and `EXPECTED_VALUE` with the
code the version was trained with. A version without them answers -1 there.

The stacker's code is a numbered version of the `stacker` model, written once like the
tokenizer's; CODE_VERSION 2 returns the customer value outputs (1 did not), 3 answers the
cascade's cheap stage (CASCADE in, NETWORK_WANTED out, features-only heads: 2 did not), and a
repository holding an older version gets the new one beside it at the next export (Triton
serves the latest).
"""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

from inference import repository
from inference.repository import INTENT_BERT, STACKER

HEADS_DIR = "heads"
HEADS_FILE = "heads.pkl"
VALUE_FILE = "customer_value.json"
VALUE_CODE_FILE = "customer_value.py"
CODE_VERSION = 3
BACKEND_FILE = "model.py"


def ensure_stacker(repo: Path) -> bool:
    """Write the stacker's code version if missing; True when it was written now."""
    model_dir = Path(repo) / STACKER
    if CODE_VERSION in repository.versions(model_dir):
        return False

    def fill(staging: Path) -> None:
        shutil.copy2(model_dir / BACKEND_FILE, staging / BACKEND_FILE)

    repository.write_atomically(model_dir / str(CODE_VERSION), fill)
    return True


def write_heads(repo: Path, version: int, heads: dict[str, Any]) -> Path:
    """Store fitted heads for intent_bert `version`: {"n_features", "feature_schema",
    "strength"?, "churn"?, "churn_reads_customer_value"?, "customer_value"?} (each head an
    object with predict_proba). "customer_value", where present, is {"model": the
    CustomerValueModel's JSON, "code": its self-contained source, "horizon_days", "columns":
    FEATURES column indices}: written as customer_value.json and customer_value.py beside
    heads.pkl, not pickled."""
    missing = {"n_features", "feature_schema"} - set(heads)
    if missing:
        raise ValueError(f"heads lack {sorted(missing)}")
    value = heads.get("customer_value")
    if value is not None and {"model", "code", "horizon_days", "columns"} - set(value):
        raise ValueError("customer_value needs model, code, horizon_days and columns")
    pickled = {k: v for k, v in heads.items() if k != "customer_value"}
    root = Path(repo) / STACKER / HEADS_DIR
    root.mkdir(parents=True, exist_ok=True)

    def fill(staging: Path) -> None:
        (staging / HEADS_FILE).write_bytes(pickle.dumps(pickled))
        if value is not None:
            doc = {"model": json.loads(value["model"]), "horizon_days": value["horizon_days"],
                   "columns": value["columns"]}
            (staging / VALUE_FILE).write_text(json.dumps(doc, indent=1), encoding="utf-8")
            (staging / VALUE_CODE_FILE).write_text(value["code"], encoding="utf-8")

    target = root / str(version)
    repository.write_atomically(target, fill)
    return target / HEADS_FILE


def remove_stale_heads(repo: Path, version: int) -> None:
    """Remove heads stored for a network version that does not exist yet: a run stopped between
    writing its heads and exporting its version left them, and the stacker would apply them to
    the next network exported under that number (and write_heads refuses to overwrite)."""
    if version in repository.versions(Path(repo) / INTENT_BERT):
        raise ValueError(f"intent_bert version {version} exists: its heads are not stale")
    stale = Path(repo) / STACKER / HEADS_DIR / str(version)
    if stale.exists():
        shutil.rmtree(stale)

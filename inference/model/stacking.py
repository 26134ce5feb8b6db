"""The `stacker` step of the served ensemble: its code version and per-version heads.

Training fits, per intent_bert version, classifiers over [FEATURES, the network's
probabilities] (`training/stacking.py`); `write_heads` stores them where the stacker step looks
for them, `<repo>/stacker/heads/<version>/heads.pkl`, in one rename, before the intent_bert
version itself is loaded. A version without heads is served text-only. The stacker's code is
version 1 of the `stacker` model, written once like the tokenizer's.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

from inference import repository
from inference.repository import INTENT_BERT, STACKER

HEADS_DIR = "heads"
HEADS_FILE = "heads.pkl"
CODE_VERSION = 1
BACKEND_FILE = "model.py"


def ensure_stacker(repo: Path) -> bool:
    """Write the stacker's code version if missing; True when it was written now."""
    model_dir = Path(repo) / STACKER
    if repository.versions(model_dir):
        return False

    def fill(staging: Path) -> None:
        shutil.copy2(model_dir / BACKEND_FILE, staging / BACKEND_FILE)

    repository.write_atomically(model_dir / str(CODE_VERSION), fill)
    return True


def write_heads(repo: Path, version: int, heads: dict[str, Any]) -> Path:
    """Store fitted heads for intent_bert `version`: {"n_features", "feature_schema",
    "strength"?, "churn"?} (each head an object with predict_proba)."""
    missing = {"n_features", "feature_schema"} - set(heads)
    if missing:
        raise ValueError(f"heads lack {sorted(missing)}")
    root = Path(repo) / STACKER / HEADS_DIR
    root.mkdir(parents=True, exist_ok=True)

    def fill(staging: Path) -> None:
        (staging / HEADS_FILE).write_bytes(pickle.dumps(heads))

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

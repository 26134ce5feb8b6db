"""The Triton model repository on disk: model names, versions, atomic writes. Torch-free.

Export (training), replay/backtest (serving one chosen version) and the GPU deploy assembly
all read and write the same layout:

    <repo>/intent/config.pbtxt            the ensemble the worker calls (tokenizer → network)
    <repo>/tokenizer/<N>/                 python backend: model.py + artifacts/
    <repo>/intent_bert/<N>/               python backend: model.py + artifacts/ (weights, code)
    <repo>/intent_bert_onnx/<N>/          onnxruntime backend: model.onnx (GPU deploys)
    <repo>/stacker/1/                     python backend: model.py (the ensemble's last step)
    <repo>/stacker/heads/<N>/             heads fitted for intent_bert version N (optional)

A version appears in one rename, so a running Triton (which skips hidden, non-numeric
entries) never sees half of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

REPOSITORY_TEMPLATE = Path(__file__).resolve().parents[1] / "triton_models"  # the committed one
ENSEMBLE = "intent"  # what clients call
TOKENIZER = "tokenizer"
INTENT_BERT = "intent_bert"  # the network with weights; its version is each score's version
INTENT_BERT_ONNX = "intent_bert_onnx"
STACKER = "stacker"  # network probabilities + FEATURES -> final heads (per-version heads/)
SERVED_MODELS = (ENSEMBLE, TOKENIZER, INTENT_BERT, STACKER)
CONFIG = "config.pbtxt"


class ExportError(Exception):
    """The repository or the requested version cannot be written as asked."""


def versions(model_dir: Path) -> list[int]:
    """Numbered version directories of one model, ascending (staging directories are not)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def write_atomically(final: Path, fill: Callable[[Path], None]) -> None:
    """Fill a staging directory beside `final`, then rename it into place; a version that
    exists already is never overwritten (ExportError)."""
    if final.exists():
        raise ExportError(f"{final} already exists")
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{final.name}-", dir=final.parent))
    try:
        fill(staging)
        staging.chmod(0o755)  # mkdtemp's 0700 would hide it from a server run as another user
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def copy_version(version: Path, target: Path) -> None:
    """Copy one version directory to `target`, appearing there in one rename."""

    def fill(staging: Path) -> None:
        shutil.copytree(
            version,
            staging,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )

    write_atomically(target, fill)


def copy_repository(template: Path, dest: Path) -> Path:
    """Copy a model repository's configs and code, leaving out built versions."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        # A built version holds weights (artifacts/, model.onnx); the ensemble's empty
        # version folder (only .gitkeep) is configuration and must come along.
        built = {n for n in names if n.isdigit()
                 and any(p.name != ".gitkeep" for p in (Path(directory) / n).iterdir())}
        return built | {n for n in names if n.startswith(".staging-") or n == "__pycache__"}

    shutil.copytree(template, dest, ignore=ignore)
    return dest


def write_text_atomically(path: Path, text: str) -> None:
    """Replace a file in one rename (unchanged content is left alone)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)  # mkstemp's 0600 would hide it from a server run as another user
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def single_version_repo(repo: Path, version: int, dest: Path) -> Path:
    """`dest`: the ensemble's models from `repo`, with only `version` of intent_bert.

    Version directories are symlinks, so nothing large is copied; intent_bert's `latest: 1`
    policy then serves exactly that version.
    """
    for name in SERVED_MODELS:
        source, target = Path(repo) / name, dest / name
        target.mkdir(parents=True)
        for entry in sorted(source.iterdir()):
            if entry.is_dir() and entry.name.isdigit():
                if name != INTENT_BERT or int(entry.name) == version:
                    (target / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
            elif entry.is_dir() and not entry.name.startswith("."):  # e.g. stacker/heads/
                (target / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
            elif entry.is_file():
                shutil.copy2(entry, target / entry.name)
    return dest

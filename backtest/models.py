"""Which model version scores a replay, and the embedded Triton server that serves it.

The served model is the `intent` ensemble (tokenizer → intent_bert), as live. To serve one
chosen intent_bert version, the replay builds a throw-away repository holding the ensemble's
three models with only that version (version directories are symlinks, so nothing large is
copied); intent_bert's `latest: 1` policy then serves exactly it. A baseline version gets a
server of its own, one after the other.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inference.tritonserver import TritonServer

# The names in triton_models/ (as inference.export has them; importing that module would load
# torch and transformers, seconds of start-up a replay does not need).
ENSEMBLE, TOKENIZER, INTENT_BERT = "intent", "tokenizer", "intent_bert"
SERVED_MODELS = (ENSEMBLE, TOKENIZER, INTENT_BERT)


class ModelError(Exception):
    """The requested model version cannot be served (the CLI exits 2 with this message)."""


def available_versions(repo: Path) -> list[int]:
    """Built intent_bert versions, ascending (`inference.export.existing_versions`)."""
    model_dir = Path(repo) / INTENT_BERT
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def pick_version(repo: Path, requested: int | None) -> int:
    """The requested intent_bert version, or the newest; ModelError if it is not built."""
    have = available_versions(repo)
    if requested is None:
        if not have:
            raise ModelError(f"no intent_bert version in {repo}/{INTENT_BERT}: train one "
                             "(`intentstream train`) or pass --model-repo")
        return have[-1]
    if requested not in have:
        listed = ", ".join(map(str, have)) or "none"
        raise ModelError(f"intent_bert version {requested} is not in {repo}/{INTENT_BERT} "
                         f"(built versions: {listed})")
    return requested


def single_version_repo(repo: Path, version: int, dest: Path) -> Path:
    """`dest`: the ensemble's models from `repo`, with only `version` of intent_bert."""
    for name in SERVED_MODELS:
        source, target = Path(repo) / name, dest / name
        target.mkdir(parents=True)
        for entry in sorted(source.iterdir()):
            if entry.is_dir() and entry.name.isdigit():
                if name != INTENT_BERT or int(entry.name) == version:
                    (target / entry.name).symlink_to(entry.resolve(), target_is_directory=True)
            elif entry.is_file():
                shutil.copy2(entry, target / entry.name)
    return dest


@contextmanager
def embedded_server(repo: Path, version: int, workdir: Path) -> Iterator[TritonServer]:
    """A ready tritonserver on loopback serving intent_bert `version` from `repo`."""
    served = single_version_repo(repo, version, workdir / f"repo-v{version}")
    with TritonServer(served, log_path=workdir / f"tritonserver-v{version}.log") as server:
        yield server

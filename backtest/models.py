"""Which model version scores a replay, and the embedded Triton server that serves it.

The served model is the `intent` ensemble (tokenizer → intent_bert), as live. To serve one
chosen intent_bert version, the replay builds a throw-away repository holding the ensemble's
three models with only that version (version directories are symlinks, so nothing large is
copied); intent_bert's `latest: 1` policy then serves exactly it. A baseline version gets a
server of its own, one after the other.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from inference import repository
from inference.repository import INTENT_BERT, single_version_repo
from inference.tritonserver import TritonServer


class ModelError(Exception):
    """The requested model version cannot be served (the CLI exits 2 with this message)."""


def pick_version(repo: Path, requested: int | None) -> int:
    """The requested intent_bert version, or the newest; ModelError if it is not built."""
    have = repository.versions(Path(repo) / INTENT_BERT)
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


@contextmanager
def embedded_server(repo: Path, version: int, workdir: Path) -> Iterator[TritonServer]:
    """A ready tritonserver on loopback serving intent_bert `version` from `repo`."""
    served = single_version_repo(repo, version, workdir / f"repo-v{version}")
    with TritonServer(served, log_path=workdir / f"tritonserver-v{version}.log") as server:
        yield server

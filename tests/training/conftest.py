"""Shared fixtures for the training tests: a small simulated population and the worker policy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# Before transformers is imported (huggingface_hub reads it once): tests never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from streams.core.sessions import SessionPolicy
from training.data.simulator import SimConfig, UserHistory, simulate

MIN_MS = 60_000
WORKER_POLICY = SessionPolicy(
    gap_ms=30 * MIN_MS, max_span_ms=240 * MIN_MS, max_events=64, max_chars=1200
)


@pytest.fixture(scope="session")
def histories() -> list[UserHistory]:
    return simulate(60, SimConfig(seed=3))


TEMPLATE_REPO = Path(__file__).resolve().parents[2] / "triton_models"


def _built(directory: Path) -> bool:
    """A numbered version directory holding anything but a placeholder is a build output."""
    return directory.name.isdigit() and any(p.name != ".gitkeep" for p in directory.iterdir())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the committed model repository (configs and code), without built versions."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.startswith(".staging-")}
        return skip | {n for n in names if _built(Path(directory) / n)}

    return Path(shutil.copytree(TEMPLATE_REPO, tmp_path / "triton_models", ignore=ignore))

"""Shared fixtures for the inference tests.

`triton_server` is reusable from other test packages through the plain helper it wraps:
`inference.tritonserver.tiny_triton_server(workdir)`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before transformers is imported (huggingface_hub reads it once): tests never reach a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import PreTrainedTokenizerBase

from inference.model.intent_bert import IntentBert
from inference.model.tokenizer import load_tokenizer
from inference.repository import copy_repository
from inference.tritonserver import TritonServer, tiny_triton_server

TEMPLATE_REPO = Path(__file__).resolve().parents[2] / "triton_models"


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerBase:
    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny_model(tokenizer: PreTrainedTokenizerBase) -> IntentBert:
    torch.manual_seed(0)
    return IntentBert.tiny(len(tokenizer)).eval()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh copy of the committed model repository, without built versions."""
    return copy_repository(TEMPLATE_REPO, tmp_path / "triton_models")


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    """A real tritonserver serving a seeded tiny model as intent_bert version 1."""
    with tiny_triton_server(tmp_path_factory.mktemp("triton"), template=TEMPLATE_REPO) as server:
        yield server

"""Shared by the deploy tests: where docker/ lives, and loading its scripts by path.

The scripts in docker/ are not a package (they are copied into images or run from a checkout),
so tests load them from their files rather than by import name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


def load_script(path: Path) -> ModuleType:
    name = f"_deploy_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def assemble() -> ModuleType:
    return load_script(DOCKER / "triton" / "assemble_repository.py")


@pytest.fixture(scope="session")
def healthcheck() -> ModuleType:
    return load_script(DOCKER / "healthcheck.py")

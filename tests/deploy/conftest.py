"""Shared by the deploy tests: where docker/ lives, loading its scripts by path, and a Python
subprocess that sees only what the serving image installs (tests/deploy/serve_env.py).

The scripts in docker/ are not a package (they are copied into images or run from a checkout),
so tests load them from their files rather than by import name.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

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


@pytest.fixture(scope="session")
def serve_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A subprocess environment in which only the serve role's modules can be imported."""
    from tests.deploy.serve_env import write_guard

    return write_guard(tmp_path_factory.mktemp("serve-guard"))


# The entry points of the serving image: the worker's agents and commands, the sidecar, the
# Triton client, the container health check (a script, loaded by path as the image runs it).
# Prints what got loaded: first-party modules with their files, third-party top-level names.
PROBE = """
import importlib.util, json, sys
import streams.cli, streams.worker.agent, streams.worker.commands, streams.sidecar.app
import inference.client
spec = importlib.util.spec_from_file_location("healthcheck", "docker/healthcheck.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
first = ("streams", "inference")
loaded = {n: m for n, m in sys.modules.items() if m is not None and "." not in n}
print(json.dumps({
    "first_party": {n: getattr(m, "__file__", None) for n, m in sys.modules.items()
                    if m is not None and n.split(".")[0] in first},
    "third_party": sorted(n for n in loaded if n not in sys.stdlib_module_names
                          and n not in first and not n.startswith("_")),
}))
"""


@pytest.fixture(scope="session")
def serve_probe(serve_env: dict[str, str]) -> dict[str, Any]:
    """What importing the serving entry points loads, with only the serve role installed."""
    from tests.deploy.serve_env import refused, run_python

    done = run_python(serve_env, "-c", PROBE)
    assert done.returncode == 0, (
        f"the serving modules need more than the serve extra; refused: {refused(serve_env)}\n"
        + done.stdout[-3000:]
    )
    return json.loads(done.stdout.strip().splitlines()[-1])

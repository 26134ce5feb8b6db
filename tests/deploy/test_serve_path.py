"""The serving path is torch-free: the worker and the sidecar run on the `serve` extra alone.

The worker image installs `pip install '.[serve]'` (docker/worker.Dockerfile). Here that is
simulated in this venv (which holds every extra) by refusing every module outside the serve
role's installed closure (tests/deploy/serve_env.py), then importing the serving entry points;
test_compose.py runs the image's commands the same way. A second check reads the code: every
third-party module the serving code imports is a distribution pyproject.toml lists for that
role, not one that happens to arrive as somebody's dependency.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import ROOT
from tests.deploy.serve_env import (
    NOT_IN_IMAGE,
    load_pyproject,
    normalize,
    refused,
    role_requirements,
    run_python,
)

TRAINING_LIBRARIES = ("torch", "transformers", "sklearn", "onnx", "onnxruntime", "matplotlib")
FIRST_PARTY = ("streams", "inference", "training", "backtest", "bench", "tests", "scripts")


def test_the_guard_refuses_what_serve_does_not_install(serve_env: dict[str, str]) -> None:
    # Without this, a guard that refused nothing would pass every test below.
    for module in (*TRAINING_LIBRARIES, *NOT_IN_IMAGE):
        done = run_python(serve_env, "-c", f"import {module}")
        assert done.returncode != 0, f"{module} imported with the serve role only"
        assert "ModuleNotFoundError" in done.stdout, done.stdout[-1000:]
        assert module in refused(serve_env)
    done = run_python(serve_env, "-c", "import faust, aiokafka, tritonclient.grpc, numpy")
    assert done.returncode == 0, done.stdout[-2000:]


def test_serving_modules_load_no_training_code(serve_probe: dict[str, Any]) -> None:
    loaded = set(serve_probe["third_party"])
    assert {"faust", "aiokafka", "tritonclient", "prometheus_client"} <= loaded  # probe works
    assert loaded.isdisjoint(TRAINING_LIBRARIES)
    first_party = serve_probe["first_party"]
    assert {"streams.worker.agent", "streams.sidecar.app", "inference.client"} <= first_party.keys()
    assert not [name for name in first_party if name.startswith(NOT_IN_IMAGE)]


# --- what pyproject.toml lists ------------------------------------------------------------------


def module_level_imports(path: Path) -> set[str]:
    """Top-level names imported when the module loads (not inside functions: those run later,
    in the role that calls them, e.g. the embedded broker's binary lookup)."""
    found: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text(encoding="utf-8"), str(path))]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            pending.extend(ast.iter_child_nodes(node))
    return found


def third_party(names: set[str]) -> set[str]:
    return {
        name
        for name in names
        if name not in sys.stdlib_module_names and name not in FIRST_PARTY and name != "__future__"
    }


def unlisted(imports: set[str], extras: tuple[str, ...]) -> dict[str, list[str]]:
    """Imported modules none of whose distributions the base dependencies or `extras` name."""
    listed = {normalize(req.name) for req in role_requirements(load_pyproject(), extras)}
    distributions = metadata.packages_distributions()
    return {
        module: sorted(distributions.get(module, ["<not installed>"]))
        for module in sorted(imports)
        if not {normalize(dist) for dist in distributions.get(module, [])} & listed
    }


def test_serve_extra_lists_every_import_of_the_serving_code(serve_probe: dict[str, Any]) -> None:
    files = {Path(f) for f in serve_probe["first_party"].values() if f and f.endswith(".py")}
    assert ROOT / "streams" / "worker" / "agent.py" in files
    imports = third_party(set().union(*(module_level_imports(f) for f in files)))
    assert {"faust", "tritonclient", "grpc", "orjson"} <= imports  # the scan works
    assert unlisted(imports, ("serve",)) == {}, "add them to the serve extra of pyproject.toml"


def test_the_core_needs_only_the_base_dependencies() -> None:
    files = sorted((ROOT / "streams" / "core").rglob("*.py"))
    imports = third_party(set().union(*(module_level_imports(f) for f in files)))
    assert "pydantic" in imports
    assert unlisted(imports, ()) == {}, "streams/core must run on pyproject's base dependencies"


def all_imports(path: Path) -> set[str]:
    """Top-level names of every import in the file, inside functions too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


# Runs in NVIDIA's Triton image with what docker/triton/Dockerfile installs (test_compose.py).
NGC_IMAGE_CODE = ROOT / "docker" / "triton"
# Where code lives -> the extras of the role that runs it (README.md, "Installed by role").
# streams/ includes the embedded launcher (demo, tests); retrain, backtest and bench talk to
# Kafka and Triton, so they run with serve.
ROLES = {
    "streams": ("serve", "embedded"),
    "inference": ("serve", "embedded", "train"),
    "training": ("serve", "train"),
    "backtest": ("serve", "embedded", "train", "report"),
    "bench": ("serve", "embedded", "train"),
    "scripts": ("serve", "embedded"),
    "docker": ("serve",),
    "tests": ("serve", "embedded", "train", "report", "dev"),
}


@pytest.mark.parametrize(("directory", "extras"), ROLES.items(), ids=list(ROLES))
def test_every_role_lists_what_its_code_imports(directory: str, extras: tuple[str, ...]) -> None:
    files = [
        path
        for path in sorted((ROOT / directory).rglob("*.py"))
        if "__pycache__" not in path.parts and not path.is_relative_to(NGC_IMAGE_CODE)
    ]
    assert files, directory
    imports = third_party(set().union(*(all_imports(f) for f in files)))
    assert unlisted(imports, extras) == {}, f"{directory}/ imports what {extras} do not list"


def test_the_scan_sees_an_unlisted_import(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import faust\nimport torch\n\ndef later():\n    import sklearn\n")
    imports = third_party(module_level_imports(module))
    assert imports == {"faust", "torch"}
    assert unlisted(imports, ("serve",)) == {"torch": ["torch"]}

"""Run a Python subprocess as if only the `serve` role were installed (the worker image).

The test venv holds every extra (`make venv`), so absence is simulated: a meta-path finder,
installed through a generated `sitecustomize.py` on PYTHONPATH, refuses every top-level module
whose distributions all lie outside what `pip install '.[serve]'` pulls in (the base
dependencies and the `serve` extra, with their own requirements, from the installed metadata),
and the first-party code the image does not copy (training/, backtest/, bench/,
inference/model/). A refused import raises ModuleNotFoundError, as a missing package does, and
is logged, so a failure can say what was asked for.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from pathlib import Path

from packaging.requirements import Requirement

from tests.deploy.conftest import ROOT

PROJECT = "intentstream"
SERVE_EXTRAS = ("serve",)
# First-party code that the serving image does not copy (docker/worker.Dockerfile).
NOT_IN_IMAGE = ("training", "backtest", "bench", "inference.model")
# What `python -m venv` puts in every venv, the image's included.
VENV_TOOLING = {"pip", "setuptools", "pkg_resources", "_distutils_hack"}

_GUARD = """
import importlib.abc, json, os, sys

_CONFIG = json.loads(open(os.environ["SERVE_GUARD_CONFIG"], encoding="utf-8").read())
_BLOCKED = frozenset(_CONFIG["blocked"])


class _ServeOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        parts = fullname.split(".")
        if any(".".join(parts[:i]) in _BLOCKED for i in range(1, len(parts) + 1)):
            with open(_CONFIG["log"], "a", encoding="utf-8") as log:
                log.write(fullname + "\\n")
            raise ModuleNotFoundError(f"No module named {fullname!r} (serve role)", name=fullname)
        return None


sys.meta_path.insert(0, _ServeOnly())
"""


def normalize(name: str) -> str:
    """PEP 503: `Foo_Bar.baz` and `foo-bar-baz` are one distribution."""
    return re.sub(r"[-_.]+", "-", name).lower()


def role_requirements(pyproject: dict, extras: Iterable[str]) -> list[Requirement]:
    """The base dependencies and the given extras, as pyproject.toml lists them."""
    project = pyproject["project"]
    listed = list(project["dependencies"])
    for extra in extras:
        listed += project["optional-dependencies"][extra]
    return [Requirement(text) for text in listed]


def installed_closure(requirements: Iterable[Requirement]) -> set[str]:
    """Every installed distribution that installing `requirements` pulls in (normalized names)."""
    found: set[str] = set()
    pending = [(req, frozenset(req.extras)) for req in requirements]
    while pending:
        req, extras = pending.pop()
        name = normalize(req.name)
        if name in found:
            continue
        found.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed here, so there is nothing to refuse either
        for text in requires:
            child = Requirement(text)
            wanted = child.marker is None or any(
                child.marker.evaluate({"extra": extra}) for extra in ("", *extras)
            )
            if wanted:
                pending.append((child, frozenset(child.extras)))
    return found


def blocked_modules(pyproject: dict) -> list[str]:
    """Top-level modules installed here that the serve role does not install, plus NOT_IN_IMAGE."""
    closure = installed_closure(role_requirements(pyproject, SERVE_EXTRAS))
    blocked = set(NOT_IN_IMAGE)
    for module, dists in metadata.packages_distributions().items():
        names = {normalize(dist) for dist in dists}
        if PROJECT not in names and not names & closure and module not in VENV_TOOLING:
            blocked.add(module)
    return sorted(blocked)


def load_pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def write_guard(directory: Path) -> dict[str, str]:
    """Write the guard into `directory`; the environment that turns it on in a subprocess."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "sitecustomize.py").write_text(_GUARD, encoding="utf-8")
    log = directory / "refused.log"
    log.write_text("", encoding="utf-8")
    config = directory / "config.json"
    config.write_text(
        json.dumps({"blocked": blocked_modules(load_pyproject()), "log": str(log)}),
        encoding="utf-8",
    )
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(PYTHONPATH=str(directory), SERVE_GUARD_CONFIG=str(config))
    return env


def refused(env: dict[str, str]) -> list[str]:
    """The imports the guard refused so far, in order."""
    config = json.loads(Path(env["SERVE_GUARD_CONFIG"]).read_text(encoding="utf-8"))
    return Path(config["log"]).read_text(encoding="utf-8").split()


def run_python(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """This venv's python, in the repository root, with the guard on."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )

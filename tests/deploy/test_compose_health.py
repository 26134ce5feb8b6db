"""The compose health checks ask each process's own /health through `intentstream health`,
and that command runs with only what the serving image installs."""

from __future__ import annotations

from typing import Any

import pytest
from ruamel.yaml import YAML

from inference.tritonserver import free_port
from tests.deploy.conftest import DOCKER
from tests.deploy.serve_env import run_python


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    # YAML 1.2 as Compose reads it, with the dev extra's parser (PyYAML is not a dependency).
    text = (DOCKER / "compose.yaml").read_text(encoding="utf-8")
    return YAML(typ="safe", pure=True).load(text)["services"]


@pytest.mark.parametrize(("service", "flags"), [("worker", []), ("feedback", ["--feedback"])])
def test_the_health_check_asks_the_process_not_a_tcp_port(services, service, flags):
    test = services[service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "intentstream", "health"] and test[3:3 + len(flags)] == flags


def test_health_exits_1_with_one_line_when_nothing_answers(serve_env: dict[str, str]):
    port = free_port()
    env = {**serve_env, "INTENTSTREAM_METRICS_PORT": str(port)}
    done = run_python(env, "-m", "streams.cli", "health", "--timeout", "1")
    assert done.returncode == 1, done.stdout
    assert done.stdout.strip().splitlines()[-1].startswith(
        f"unhealthy: cannot ask http://127.0.0.1:{port}/health")

"""docker/compose.yaml against the Compose Specification, and the deployment against the code.

No Docker engine or compose plugin runs here. The file is checked against the official Compose
Specification JSON schema (compose-spec/compose-spec, as vendored by the check-jsonschema
package: read as a data file, the package itself is never imported), before and after variable
interpolation, plus the cross-references a schema cannot express. The INTENTSTREAM_* variables
must be Settings fields, and the images' commands must be real console-script commands.
"""

from __future__ import annotations

import copy
import fnmatch
import importlib.util
import json
import os
import re
import subprocess
import tomllib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from streams.settings import Settings
from tests.deploy.conftest import DOCKER, ROOT
from tests.deploy.serve_env import run_python

COMPOSE_FILE = DOCKER / "compose.yaml"
ENV_PREFIX = "INTENTSTREAM_"
# ${NAME}, ${NAME:-default} (and -, ?, :?, +, :+), $NAME, and $$ (a literal $).
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_]\w*))"
)
_SETTING_NAME = re.compile(ENV_PREFIX + r"[A-Z][A-Z0-9_]*")


# --- loading ------------------------------------------------------------------------------------


def compose_spec_schema() -> dict[str, Any]:
    spec = importlib.util.find_spec("check_jsonschema")  # locates, does not import
    if spec is None or spec.origin is None:
        pytest.fail("dev dependency check-jsonschema is missing: it ships the compose-spec schema")
    path = Path(spec.origin).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = compose_spec_schema()
    assert schema.get("title") == "Compose Specification", "not the compose-spec schema"
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def load_yaml(text: str) -> Any:
    # YAML 1.2, as Compose reads it (`no`/`on` are strings, not booleans).
    return YAML(typ="safe", pure=True).load(text)


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load_yaml(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as Compose runs it with no variable set: every default applied."""
    return interpolate(raw, {})


def interpolate(node: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable substitution on every value (not keys); unset with no default fails."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if isinstance(node, str):
        return _VARIABLE.sub(lambda match: _substitute(match, env), node)
    return node


def _substitute(match: re.Match[str], env: Mapping[str, str]) -> str:
    if match["escaped"]:
        return "$"
    name = match["braced"] or match["bare"]
    op, arg = match["op"] or "", match["arg"] or ""
    value = env.get(name)
    present = value is not None and (value != "" or not op.startswith(":"))
    if op.endswith("+"):
        return arg if present else ""
    if present:
        return value
    if op.endswith("-"):
        return arg
    raise KeyError(f"${{{name}}} is not set and has no default" + (f": {arg}" if arg else ""))


def errors_of(validator: jsonschema.protocols.Validator, doc: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(doc)
    ]


# --- the Compose Specification ------------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_spec(
    validator: jsonschema.protocols.Validator, raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert errors_of(validator, raw) == []
    assert errors_of(validator, compose) == []


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[last] = value

    return mutate


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def mutate(doc: dict[str, Any]) -> None:
        node = doc
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[last]

    return mutate


GPU = "services.triton.deploy.resources.reservations.devices.0"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        pytest.param(_set("services.worker.replica", 3), "'replica' was unexpected", id="typo"),
        pytest.param(_set("service", {}), "<root>: 'service'", id="unknown-top-level-key"),
        pytest.param(
            _set("services.worker", "intentstream-worker"),
            "services/worker: 'intentstream-worker' is not of type 'object'",
            id="service-not-a-mapping",
        ),
        pytest.param(
            _set("services.worker.depends_on.kafka.condition", "service_ready"),
            "services/worker/depends_on:",
            id="unknown-depends-on-condition",
        ),
        pytest.param(
            _drop(f"{GPU}.capabilities"),
            "'capabilities' is a required property",
            id="gpu-reservation-without-capabilities",
        ),
        pytest.param(
            _set("services.triton.healthcheck.interval", 10),
            "healthcheck/interval: 10 is not of type 'string'",
            id="interval-not-a-duration",
        ),
        pytest.param(
            _set("services.worker.deploy.replicas", [3]),
            "deploy/replicas: [3] is not of type",
            id="replicas-not-a-number",
        ),
        pytest.param(
            _set("volumes.kafka-data", {"driver": 7}),
            "volumes/kafka-data/driver: 7 is not of type 'string'",
            id="volume-driver-not-a-string",
        ),
    ],
)
def test_a_broken_compose_file_is_rejected(
    validator: jsonschema.protocols.Validator,
    compose: dict[str, Any],
    mutate: Callable[[dict[str, Any]], None],
    expected: str,
) -> None:
    broken = copy.deepcopy(compose)
    mutate(broken)
    errors = errors_of(validator, broken)
    assert any(expected in error for error in errors), errors


def test_a_broken_yaml_text_is_rejected(validator: jsonschema.protocols.Validator) -> None:
    text = "services:\n  worker:\n    image: w\n    ports: 8000\n    environment: [1, 2]\n"
    assert len(errors_of(validator, load_yaml(text))) >= 2


def test_every_variable_has_a_default(raw: dict[str, Any]) -> None:
    interpolate(raw, {})  # raises KeyError on the first one without
    with pytest.raises(KeyError, match="NOPE"):
        interpolate({"image": "x:${NOPE}"}, {})
    assert interpolate({"a": "${A:-d}", "b": "$$B", "c": "${C:-x}"}, {"C": "y"}) == {
        "a": "d",
        "b": "$B",
        "c": "y",
    }


# --- what a schema cannot see -------------------------------------------------------------------


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def test_references_resolve(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, service in services.items():
        for target, dependency in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = dependency["condition"]
            if condition == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), (
                    f"{name} waits for {target} to be healthy, but {target} has no health check"
                )
            if condition == "service_completed_successfully":
                assert services[target].get("restart", "no") == "no", f"{target} must run once"
        for mount in service.get("volumes", []):
            source = mount.split(":", 1)[0]
            if not source.startswith((".", "/", "~")):
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"
        for context in service.get("build", {}).get("additional_contexts", {}).values():
            if context.startswith("service:"):
                base = context.removeprefix("service:")
                assert "build" in services.get(base, {}), f"{name} builds on {base}: no build"


def test_build_contexts_and_dockerfiles_exist(compose: dict[str, Any]) -> None:
    for name, service in _services(compose).items():
        build = service.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context.is_dir(), f"{name}: no build context {context}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), name


def test_deployment_shape(compose: dict[str, Any]) -> None:
    services = _services(compose)
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"].split(","), "KRaft: no ZooKeeper"
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"

    triton = services["triton"]
    assert triton["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    ]
    assert "--model-control-mode=explicit" in triton["command"]
    assert "--load-model=intent" in triton["command"]
    assert any("/v2/health/ready" in part for part in triton["healthcheck"]["test"])

    worker = services["worker"]
    assert "container_name" not in worker, "a fixed name forbids replicas"
    replicas = int(worker["deploy"]["replicas"])
    partitions = int(worker["environment"][f"{ENV_PREFIX}PARTITIONS"])
    assert 1 <= replicas <= partitions, "workers beyond the partition count sit idle"
    assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    # Opt-in (a plain `up` does not start it); one replica, its store being a local file.
    feedback = services["feedback"]
    assert feedback["profiles"] == ["feedback"]
    assert int(feedback["deploy"]["replicas"]) == 1


# --- configuration consistent with streams/settings.py ------------------------------------------


def _docker_texts() -> Iterator[tuple[Path, str]]:
    """Every text file of docker/ (not an assembled model repository, if one lies there)."""
    for path in sorted(DOCKER.rglob("*")):
        skipped = "model-repository" in path.parts or "__pycache__" in path.parts
        if path.is_file() and not skipped:
            yield path, path.read_text(encoding="utf-8")


def test_every_intentstream_variable_is_a_settings_field() -> None:
    assert Settings.model_config["env_prefix"] == ENV_PREFIX
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    used: dict[str, set[str]] = {}
    for path, text in _docker_texts():
        for name in _SETTING_NAME.findall(text):
            used.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    assert {f"{ENV_PREFIX}BROKER_URL", f"{ENV_PREFIX}TRITON_URL"} <= used.keys()  # scan works
    unknown = {name: sorted(paths) for name, paths in used.items() if name not in fields}
    assert unknown == {}, "not fields of streams.settings.Settings"


def test_compose_environment_is_a_valid_production_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = _services(compose)
    environments = {
        name: service["environment"]
        for name, service in services.items()
        if any(key.startswith(ENV_PREFIX) for key in service.get("environment", {}))
    }
    assert environments.keys() == {"topic-init", "worker", "feedback"}
    shared = environments["worker"]
    assert environments["topic-init"] == shared, "topics created with other settings"
    assert environments["feedback"].items() >= shared.items(), "the sidecar disagrees"

    for environment in environments.values():
        for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
            monkeypatch.delenv(key)
        for key, value in environment.items():
            monkeypatch.setenv(key, str(value))
        settings = Settings()  # validates every value, as the container will at start
        assert settings.broker_profile == "kafka"
        assert settings.broker_url == "kafka://kafka:9092"
        assert settings.triton_url.split(":")[0] in services
        assert settings.data_dir.is_absolute()  # the image's state directory, not ./var


# --- images: commands and build inputs ----------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction; continuations joined, comments dropped."""
    found, current = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        keyword, _, arguments = (current + stripped).partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        current = ""
    return found


def entrypoint(path: Path) -> list[str]:
    values = [
        json.loads(args) for key, args in dockerfile_instructions(path) if key == "ENTRYPOINT"
    ]
    assert values, f"{path.name} has no ENTRYPOINT"
    return values[-1]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def worker_command() -> list[str]:
    return entrypoint(DOCKER / "worker.Dockerfile")


def sidecar_command() -> list[str]:
    return entrypoint(DOCKER / "sidecar.Dockerfile")


def topic_init_command() -> list[str]:
    compose = interpolate(load_yaml(COMPOSE_FILE.read_text(encoding="utf-8")), {})
    return compose["services"]["topic-init"]["entrypoint"]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The console script's function (`intentstream` is `streams.cli:main`) in a subprocess,
    with only what the image installs importable (tests/deploy/serve_env.py)."""
    return run_python(env, "-m", "streams.cli", *args)


def assert_console_script(command: list[str], pyproject: dict[str, Any]) -> None:
    assert pyproject["project"]["scripts"].get(command[0]) == "streams.cli:main", command[0]


def assert_understood(command: list[str], env: dict[str, str]) -> None:
    """The command with `--help` appended exits 0: every word of it is understood, and what it
    imports is installed in the serving image."""
    done = run_cli(env, *command[1:], "--help")
    assert done.returncode == 0, done.stdout[-2000:]
    assert "Usage:" in done.stdout, done.stdout[-2000:]


def test_worker_image_runs_the_worker(serve_env: dict[str, str], pyproject: dict[str, Any]) -> None:
    command = worker_command()
    assert command == ["intentstream", "worker", "-l", "info"]
    assert_console_script(command, pyproject)
    assert_understood(command, serve_env)


def test_topic_init_runs_create_topics(
    serve_env: dict[str, str], pyproject: dict[str, Any]
) -> None:
    command = topic_init_command()
    assert command == ["intentstream", "create-topics"]
    assert_console_script(command, pyproject)
    assert_understood(command, serve_env)


def test_sidecar_image_runs_the_feedback_app(
    serve_env: dict[str, str], pyproject: dict[str, Any]
) -> None:
    command = sidecar_command()
    assert command == ["intentstream", "feedback", "worker", "-l", "info"]
    assert_console_script(command, pyproject)
    assert_understood(command, serve_env)


def test_an_unknown_word_is_not_understood(serve_env: dict[str, str]) -> None:
    # Without this, a CLI that answered every --help with 0 would pass the three tests above.
    done = run_cli(serve_env, "worker", "--no-such-option", "--help")
    assert done.returncode != 0, done.stdout[-2000:]


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule, simplified: a pattern matches a path or a parent; the last match wins."""
    parents = ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 2)]
    excluded = False
    for pattern in patterns:
        glob = pattern.removeprefix("!").strip("/")
        if any(fnmatch.fnmatchcase(parent, glob) for parent in parents):
            excluded = not pattern.startswith("!")
    return excluded


def copied_sources(instructions: list[tuple[str, str]]) -> set[str]:
    """The repository paths the build context COPYs (not those from another stage)."""
    return {
        source
        for key, args in instructions
        if key == "COPY" and "--from" not in args
        for source in args.split()[:-1]
        if not source.startswith("--")
    }


def test_worker_image_holds_what_the_serving_code_loads(
    pyproject: dict[str, Any], serve_probe: dict[str, Any]
) -> None:
    dockerfile = DOCKER / "worker.Dockerfile"
    instructions = dockerfile_instructions(dockerfile)
    copied = copied_sources(instructions)
    ignore = Path(f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]

    def in_image(relative: str) -> bool:
        inside = any(relative == c or relative.startswith(c.rstrip("/") + "/") for c in copied)
        return inside and not dockerignore_excludes(relative, patterns)

    # Every file of every first-party module the worker, the sidecar and the client load.
    files = [Path(f) for f in serve_probe["first_party"].values() if f]
    assert ROOT / "streams" / "worker" / "agent.py" in files  # the probe saw the worker
    missing = [rel for rel in (f.relative_to(ROOT).as_posix() for f in files) if not in_image(rel)]
    assert missing == [], "loaded by the serving code but not in the worker image"
    # The serving image holds only the two packages they load, not the torch side.
    left_out = ("training/train.py", "backtest/cli.py", "bench/cli.py", "inference/model/export.py")
    assert not [path for path in left_out if in_image(path)]
    assert not in_image("tests/conftest.py")
    assert not in_image("streams/__pycache__/app.cpython-311.pyc")
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"

    # It installs the serve extra, and that extra carries no training library (the base
    # dependencies neither): torch from PyPI would be the multi-GB CUDA build.
    runs = " ".join(args for key, args in instructions if key == "RUN")
    assert "pip install '.[serve]'" in runs
    serving = (
        pyproject["project"]["dependencies"]
        + pyproject["project"]["optional-dependencies"]["serve"]
    )
    heavy = ("torch", "transformers", "scikit-learn", "onnx", "matplotlib")
    assert not [d for d in serving if d.startswith(heavy)], serving
    assert "torch==2.13.0" in pyproject["project"]["optional-dependencies"]["train"]
    args = dict(a.split("=", 1) for k, a in instructions if k == "ARG" and "=" in a)
    assert args["PYTHON_IMAGE"] == "python:3.11-slim"
    assert "TORCH_VERSION" not in args

    # The last stage runs unprivileged.
    users = [args for key, args in instructions if key == "USER"]
    assert users and users[-1] not in {"root", "0"}


def test_sidecar_and_triton_images(compose: dict[str, Any]) -> None:
    sidecar = dockerfile_instructions(DOCKER / "sidecar.Dockerfile")
    assert ("FROM", "${WORKER_IMAGE}") in sidecar  # the worker image is its base
    build = _services(compose)["feedback"]["build"]
    assert build["additional_contexts"] == {build["args"]["WORKER_IMAGE"]: "service:worker"}

    triton = dockerfile_instructions(DOCKER / "triton" / "Dockerfile")
    assert ("FROM", "nvcr.io/nvidia/tritonserver:${TRITON_VERSION}-py3") in triton

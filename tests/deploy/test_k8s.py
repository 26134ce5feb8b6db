"""deploy/k8s/ checked offline: no cluster, no kustomize binary, no helm.

Each overlay is rendered here by a small kustomize subset (resources, namespace, images and
strategic-merge patches: all the overlays use; anything else fails the test rather than
render differently). Every object is validated against the Kubernetes API schemas of a pinned
version (kubernetes-validate bundles them; strict: an unknown field is an error, as kubectl's
default field validation makes it) and every custom resource against the schemas vendored in
deploy/k8s/schemas/ (derived from the CRDs named in its README). Then the deployment against
the code: env vars are Settings fields with valid values, ports, probes, paths, volume mounts,
images and commands agree with streams/settings.py, the Dockerfiles and docker/compose.yaml,
and the autoscalers agree with the partition count and the restore time assumed.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from streams.runtime.topics import bootstrap_servers
from streams.settings import Settings
from tests.deploy.conftest import DOCKER, ROOT
from tests.deploy.test_compose import (
    COMPOSE_FILE,
    ENV_PREFIX,
    dockerfile_instructions,
    entrypoint,
    interpolate,
    load_yaml,
)

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(path.name for path in (K8S / "overlays").iterdir() if path.is_dir())
KUBERNETES_VERSION = "1.33.0"  # the API version the manifests are held to
SCHEMAS = K8S / "schemas"
# What the Secret intentstream-secrets holds (docker/OPS.md, Kubernetes): placeholders here.
SECRET_KEYS = {f"{ENV_PREFIX}KAFKA_SASL_USERNAME": "user",
               f"{ENV_PREFIX}KAFKA_SASL_PASSWORD": "password",
               f"{ENV_PREFIX}PSEUDONYM_KEY": "key"}
SECRET_NAME = "intentstream-secrets"
# KEDA's kafka scaler names of Settings.kafka_sasl_mechanism's values.
IMAGE_COMMANDS = {"worker": ["intentstream", "worker", "-l", "info"],
                  "feedback": ["intentstream", "feedback", "worker", "-l", "info"]}
KEDA_SASL = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256", "SCRAM-SHA-512": "scram_sha512"}
Obj = dict[str, Any]


# --- rendering: the kustomize subset the overlays use -------------------------------------------

KUSTOMIZATION_KEYS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
# Strategic merge keys of the built-in kinds' lists we patch (a CRD's lists are replaced).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath"}
BUILTIN_API_VERSIONS = {"v1", "apps/v1", "batch/v1", "policy/v1", "autoscaling/v2"}


def load_documents(path: Path) -> list[Obj]:
    return [doc for doc in YAML(typ="safe", pure=True).load_all(path.read_text(encoding="utf-8"))
            if doc]


def render(directory: Path) -> list[Obj]:
    """What `kubectl kustomize DIRECTORY` prints, for the features the overlays use."""
    kustomization = load_documents(directory / "kustomization.yaml")[0]
    unknown = set(kustomization) - KUSTOMIZATION_KEYS
    assert not unknown, f"{directory}: kustomization keys this renderer does not know: {unknown}"
    objects: list[Obj] = []
    for resource in kustomization.get("resources", []):
        path = directory / resource
        objects += render(path) if path.is_dir() else load_documents(path)
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"only file patches are rendered here: {patch}"
        for document in load_documents(directory / patch["path"]):
            apply_patch(objects, document)
    for image in kustomization.get("images", []):
        for container in containers(objects):
            set_image(container, image)
    if "namespace" in kustomization:
        for obj in objects:
            obj["metadata"]["namespace"] = kustomization["namespace"]
    return objects


def identity(obj: Obj) -> tuple[str, str, str]:
    return obj["apiVersion"], obj["kind"], obj["metadata"]["name"]


def apply_patch(objects: list[Obj], patch: Obj) -> None:
    targets = [obj for obj in objects if identity(obj) == identity(patch)]
    assert len(targets) == 1, f"patch {identity(patch)} matches {len(targets)} objects"
    merge(targets[0], patch, builtin=patch["apiVersion"] in BUILTIN_API_VERSIONS)


def merge(into: Obj, patch: Obj, *, builtin: bool) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value, builtin=builtin)
        elif isinstance(value, list) and builtin and key in MERGE_KEYS and key in into:
            by, added = MERGE_KEYS[key], []
            for item in value:
                same = [old for old in into[key] if old[by] == item[by]]
                if same:
                    merge(same[0], item, builtin=builtin)
                else:
                    added.append(copy.deepcopy(item))
            into[key] = added + into[key]  # kustomize puts the new items first
        else:
            into[key] = copy.deepcopy(value)


def set_image(container: Obj, image: dict[str, str]) -> None:
    name, tag = split_image(container["image"])
    if name == image["name"]:
        container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


def split_image(reference: str) -> tuple[str, str | None]:
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:  # no tag (a colon, if any, belongs to a registry's port)
        return reference, None
    return name, tag


def pod_spec(obj: Obj) -> Obj | None:
    template = obj.get("spec", {}).get("template")
    return template["spec"] if template else None


def containers(objects: list[Obj]) -> Iterator[Obj]:
    for obj in objects:
        spec = pod_spec(obj)
        if spec:
            yield from spec.get("initContainers", [])
            yield from spec["containers"]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def rendered(overlay: str) -> list[Obj]:
    return render(K8S / "overlays" / overlay)


def find(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def only(objects: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objects if obj["kind"] == kind]


def container(obj: Obj) -> Obj:
    spec = pod_spec(obj)
    assert spec is not None and len(spec["containers"]) == 1, identity(obj)
    return spec["containers"][0]


def test_overlays_exist_and_render_the_same_set_of_objects() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)
    base = {identity(obj) for obj in render(K8S / "base")}
    for name in OVERLAYS:
        assert {identity(obj) for obj in render(K8S / "overlays" / name)} >= base


def test_the_renderer_merges_by_key_and_replaces_other_lists() -> None:
    base = [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
             "spec": {"template": {"spec": {"containers": [
                 {"name": "a", "image": "x:1", "args": ["1", "2"],
                  "env": [{"name": "A", "value": "1"}]}]}}}}]
    apply_patch(base, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
                       "spec": {"template": {"spec": {"containers": [
                           {"name": "a", "args": ["3"], "env": [{"name": "B", "value": "2"}]}]}}}})
    merged = container(base[0])
    assert merged["args"] == ["3"]
    assert merged["env"] == [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}]
    set_image(merged, {"name": "x", "newName": "r.io:5000/x", "newTag": "2"})
    assert merged["image"] == "r.io:5000/x:2"
    assert split_image("r.io:5000/x") == ("r.io:5000/x", None)
    with pytest.raises(AssertionError, match="matches 0 objects"):
        apply_patch(base, {"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "other"}})


# --- schemas ------------------------------------------------------------------------------------


def custom_schema_path(obj: Obj) -> Path:
    """Where the vendored schema of a custom resource's group, kind and version lies."""
    group, version = obj["apiVersion"].split("/")
    return SCHEMAS / f"{group}_{obj['kind'].lower()}_{version}.json"


def schema_errors(obj: Obj) -> list[str]:
    if obj["apiVersion"] in BUILTIN_API_VERSIONS:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            return [f"{'/'.join(map(str, error.path))}: {error.message}"]
        return []
    path = custom_schema_path(obj)
    if not path.is_file():
        return [f"no vendored schema for {obj['apiVersion']} {obj['kind']} ({path.name})"]
    schema = json.loads(path.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
            for error in validator.iter_errors(obj)]


def test_every_object_is_valid_against_its_schema(rendered: list[Obj]) -> None:
    kinds = {obj["kind"] for obj in rendered}
    assert {"ScaledObject", "ServiceMonitor", "StatefulSet", "HorizontalPodAutoscaler"} <= kinds
    errors = {"/".join(identity(obj)): schema_errors(obj) for obj in rendered}
    assert {name: found for name, found in errors.items() if found} == {}


def test_the_vendored_schemas_are_valid_json_schemas() -> None:
    paths = sorted(SCHEMAS.glob("*.json"))
    assert len(paths) >= 3
    for path in paths:
        jsonschema.Draft202012Validator.check_schema(json.loads(path.read_text()))


def _set(path: str, value: Any) -> Callable[[Obj], None]:
    def mutate(obj: Obj) -> None:
        node: Any = obj
        *parents, last = path.split(".")
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value
    return mutate


BROKEN = [
    ("StatefulSet", "intentstream-worker", _set("spec.replicas", "three"), "is not of type"),
    ("StatefulSet", "intentstream-worker",
     _set("spec.template.spec.containers.0.imagePullPolice", "Always"), "imagePullPolice"),
    ("Deployment", "intentstream-triton",
     _set("spec.template.spec.containers.0.ports.0.containerPort", "8000"), "is not of type"),
    ("HorizontalPodAutoscaler", "intentstream-triton", _set("spec.maxReplicas", None),
     "None is not of type"),
    ("PodDisruptionBudget", "intentstream-worker", _set("spec.maxUnavalable", 1),
     "maxUnavalable"),
    ("ScaledObject", "intentstream-worker", _set("spec.maxReplicaCount", "12"),
     "is not of type 'integer'"),
    ("ScaledObject", "intentstream-worker", _set("spec.coolDownPeriod", 600), "coolDownPeriod"),
    ("ScaledObject", "intentstream-worker", _set("apiVersion", "keda.sh/v1"),
     "no vendored schema"),
    ("ScaledObject", "intentstream-worker", _set("kind", "ScaledJob"), "no vendored schema"),
    ("ServiceMonitor", "intentstream-triton", _set("spec.endpoints.0.scrapeInterval", "15s"),
     "scrapeInterval"),
    ("ServiceMonitor", "intentstream-worker", _set("spec.selector", "worker"),
     "is not of type 'object'"),
]


@pytest.mark.parametrize(("kind", "name", "mutate", "expected"), BROKEN,
                         ids=[f"{kind}:{expected}" for kind, _, _, expected in BROKEN])
def test_a_broken_object_is_rejected(
    kind: str, name: str, mutate: Callable[[Obj], None], expected: str
) -> None:
    broken = copy.deepcopy(find(render(K8S / "overlays" / "prod"), kind, name))
    assert schema_errors(broken) == []
    mutate(broken)
    errors = schema_errors(broken)
    assert any(expected in error for error in errors), errors


# --- configuration: every env var a Settings field, with a valid value ---------------------------


def environment(objects: list[Obj], obj: Obj) -> dict[str, str]:
    """The INTENTSTREAM_* environment a workload's container starts with (placeholders for the
    Secret's values)."""
    found: dict[str, str] = {}
    spec = container(obj)
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            found.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            assert source["secretRef"]["name"] == SECRET_NAME
            found.update(SECRET_KEYS)
    for variable in spec.get("env", []):
        if variable["name"].startswith(ENV_PREFIX):
            found[variable["name"]] = variable["value"]
    return found


def workloads(objects: list[Obj]) -> list[Obj]:
    return [obj for obj in objects if pod_spec(obj) is not None]


def intentstream_workloads(objects: list[Obj]) -> list[Obj]:
    """The workloads running the intentstream image (Triton reads no INTENTSTREAM_*)."""
    return [obj for obj in workloads(objects) if environment(objects, obj)]


def settings_of(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return Settings()  # validates every value, as the container will at start


def test_every_intentstream_variable_is_a_settings_field(rendered: list[Obj]) -> None:
    fields = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    used = set(SECRET_KEYS)
    for obj in workloads(rendered):
        used |= environment(rendered, obj).keys()
    assert {f"{ENV_PREFIX}BROKER_URL", f"{ENV_PREFIX}PARTITIONS"} <= used  # the scan works
    assert used - fields == set(), "not fields of Settings"


def test_every_workload_starts_with_valid_production_settings(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = set()
    for obj in intentstream_workloads(rendered):
        env = environment(rendered, obj)
        settings = settings_of(env, monkeypatch)
        assert settings.broker_profile == "kafka"
        assert settings.data_dir.is_absolute()
        names.add(obj["metadata"]["name"])
    assert names == {"intentstream-create-topics", "intentstream-worker", "intentstream-feedback"}


def test_a_wrong_value_is_caught(rendered: list[Obj], monkeypatch: pytest.MonkeyPatch) -> None:
    env = environment(rendered, find(rendered, "StatefulSet", "intentstream-worker"))
    with pytest.raises(ValueError, match="partitions"):
        settings_of({**env, f"{ENV_PREFIX}PARTITIONS": "0"}, monkeypatch)


# --- the deployment against the code ------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> Obj:
    return interpolate(load_yaml(COMPOSE_FILE.read_text(encoding="utf-8")), {})


def worker_of(objects: list[Obj]) -> Obj:
    return find(objects, "StatefulSet", "intentstream-worker")


def sidecar_of(objects: list[Obj]) -> Obj:
    return find(objects, "StatefulSet", "intentstream-feedback")


def triton_of(objects: list[Obj]) -> Obj:
    return find(objects, "Deployment", "intentstream-triton")


def image_name(reference: str) -> str:
    return split_image(reference)[0].rsplit("/", 1)[-1]


def test_images_and_commands_agree_with_compose_and_the_dockerfiles(
    rendered: list[Obj], overlay: str, compose: Obj
) -> None:
    services = compose["services"]
    expected = {  # workload -> (compose service, Dockerfile)
        worker_of(rendered)["metadata"]["name"]: ("worker", DOCKER / "worker.Dockerfile"),
        "intentstream-create-topics": ("topic-init", DOCKER / "worker.Dockerfile"),
        sidecar_of(rendered)["metadata"]["name"]: ("feedback", DOCKER / "sidecar.Dockerfile"),
        triton_of(rendered)["metadata"]["name"]: ("triton", None),
    }
    for obj in workloads(rendered):
        service, dockerfile = expected[obj["metadata"]["name"]]
        spec = container(obj)
        assert image_name(spec["image"]) == image_name(services[service]["image"])
        tag = split_image(spec["image"])[1]
        assert tag and (overlay != "prod" or tag != "latest"), spec["image"]
        if service == "topic-init":
            assert spec["command"] == services["topic-init"]["entrypoint"]
        elif dockerfile is not None:  # the image compose builds from that Dockerfile
            assert "command" not in spec and "args" not in spec, "the image's ENTRYPOINT runs"
            assert services[service]["build"]["dockerfile"] == f"docker/{dockerfile.name}"
            assert entrypoint(dockerfile) == IMAGE_COMMANDS[service]
        else:  # Triton: compose's command, plus TLS flags where an overlay adds them
            args = spec["args"]
            assert args[: len(services["triton"]["command"])] == services["triton"]["command"]


def test_ports_probes_and_mounts_agree_with_settings_and_the_image(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    args = dict(a.split("=", 1) for k, a in dockerfile_instructions(DOCKER / "worker.Dockerfile")
                if k == "ARG" and "=" in a)
    image_env = next(a for k, a in dockerfile_instructions(DOCKER / "worker.Dockerfile")
                     if k == "ENV" and f"{ENV_PREFIX}DATA_DIR" in a)
    for obj, port_field in ((worker_of(rendered), "metrics_port"),
                            (sidecar_of(rendered), "feedback_metrics_port")):
        settings = settings_of(environment(rendered, obj), monkeypatch)
        spec, pod = container(obj), pod_spec(obj)
        assert pod is not None
        port = getattr(settings, port_field)
        assert port == Settings.model_fields[port_field].default
        assert {p["name"]: p["containerPort"] for p in spec["ports"]} == {"metrics": port}
        assert spec["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
        # The worker is ready only once its tables are (/ready); the sidecar when healthy.
        ready = "/ready" if port_field == "metrics_port" else "/health"
        assert spec["readinessProbe"]["httpGet"] == {"path": ready, "port": "metrics"}
        assert pod["securityContext"]["runAsUser"] == int(args["APP_UID"])
        assert pod["securityContext"]["fsGroup"] == int(args["APP_UID"])
        # The state directory is the mounted claim, and is the image's own.
        mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
        claims = {t["metadata"]["name"] for t in obj["spec"]["volumeClaimTemplates"]}
        assert mounts[str(settings.data_dir)] in claims
        assert f"{ENV_PREFIX}DATA_DIR={settings.data_dir}" in image_env
        if port_field == "feedback_metrics_port":
            assert str(settings.feedback_db.parent) == str(settings.data_dir)
        for path in (settings.kafka_ssl_cafile, settings.triton_ssl_root_certs):
            if path is not None and obj is worker_of(rendered):
                assert any(PurePosixPath(path).is_relative_to(m) for m in mounts), path


def test_the_workers_tables_are_rocksdb_on_each_pods_own_volume(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = worker_of(rendered)
    settings = settings_of(environment(rendered, worker), monkeypatch)
    assert settings.table_store == "rocksdb://"
    assert settings.table_standby_replicas >= 1
    # A claim per pod (not a shared volume), kept when KEDA scales the pod away and back.
    mounts = {m["mountPath"]: m["name"] for m in container(worker)["volumeMounts"]}
    claims = {t["metadata"]["name"] for t in worker["spec"]["volumeClaimTemplates"]}
    assert mounts[str(settings.data_dir)] in claims
    assert worker["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"] == "Retain"


def test_the_liveness_probe_outlasts_a_restore(rendered: list[Obj]) -> None:
    restore_s = assumed_restore_s(rendered)
    env = environment(rendered, worker_of(rendered))
    probe = container(worker_of(rendered))["livenessProbe"]
    tolerated = float(env[f"{ENV_PREFIX}STALL_S"]) + probe["periodSeconds"] * probe[
        "failureThreshold"]
    assert tolerated > restore_s, "a worker restoring its tables would be restarted"


def test_triton_is_a_gpu_deployment_behind_a_headless_service(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    triton = triton_of(rendered)
    spec = container(triton)
    assert int(spec["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    ports = {p["name"]: p["containerPort"] for p in spec["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert spec["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    service = find(rendered, "Service", "intentstream-triton")
    assert service["spec"]["clusterIP"] == "None"
    settings = settings_of(environment(rendered, worker_of(rendered)), monkeypatch)
    host, _, port = settings.triton_url.rpartition(":")
    assert host == service["metadata"]["name"]
    assert int(port) == ports["grpc"]
    assert find(rendered, "Service", "intentstream-worker")["spec"]["clusterIP"] == "None"
    assert worker_of(rendered)["spec"]["serviceName"] == "intentstream-worker"


def test_services_select_their_pods_and_name_real_ports(rendered: list[Obj]) -> None:
    for service in only(rendered, "Service"):
        selector = service["spec"]["selector"]
        targets = [obj for obj in workloads(rendered)
                   if selector.items() <= obj["spec"]["template"]["metadata"]["labels"].items()]
        assert len(targets) == 1, service["metadata"]["name"]
        named = {p["name"] for p in container(targets[0])["ports"]}
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= named


def test_a_service_monitor_scrapes_every_metrics_port(rendered: list[Obj]) -> None:
    monitored = set()
    for monitor in only(rendered, "ServiceMonitor"):
        labels = monitor["spec"]["selector"]["matchLabels"]
        services = [s for s in only(rendered, "Service")
                    if labels.items() <= s["metadata"]["labels"].items()]
        assert len(services) == 1, monitor["metadata"]["name"]
        ports = {p["name"] for p in services[0]["spec"]["ports"]}
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in ports
            monitored.add((services[0]["metadata"]["name"], endpoint["port"]))
    with_metrics = {(s["metadata"]["name"], "metrics") for s in only(rendered, "Service")
                    if any(p["name"] == "metrics" for p in s["spec"]["ports"])}
    assert with_metrics == monitored
    assert len(with_metrics) == 3


def test_every_long_running_workload_has_a_disruption_budget(rendered: list[Obj]) -> None:
    budgets = only(rendered, "PodDisruptionBudget")
    for obj in rendered:
        if obj["kind"] not in ("StatefulSet", "Deployment"):
            continue
        labels = obj["spec"]["template"]["metadata"]["labels"]
        covering = [b for b in budgets
                    if b["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        assert len(covering) == 1, obj["metadata"]["name"]
        if obj["spec"].get("replicas", 1) == 1 and obj["kind"] == "StatefulSet":
            assert covering[0]["spec"].get("maxUnavailable") == 1, "would block every drain"


# --- autoscaling --------------------------------------------------------------------------------


def scaled_object(objects: list[Obj]) -> Obj:
    return find(objects, "ScaledObject", "intentstream-worker")


def assumed_restore_s(objects: list[Obj]) -> float:
    annotations = scaled_object(objects)["metadata"]["annotations"]
    return float(annotations["intentstream.dev/assumed-restore-seconds"])


def test_keda_scales_the_workers_on_input_lag_up_to_the_partition_count(
    rendered: list[Obj], monkeypatch: pytest.MonkeyPatch
) -> None:
    scaler = scaled_object(rendered)
    settings = settings_of(environment(rendered, worker_of(rendered)), monkeypatch)
    spec = scaler["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet",
                                      "name": worker_of(rendered)["metadata"]["name"]}
    assert spec["maxReplicaCount"] == settings.partitions
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]  # the CRD's CEL rule
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings.app_id
    assert meta["topic"] == settings.events_topic
    assert meta["bootstrapServers"].split(",") == bootstrap_servers(settings.broker_url)
    assert meta["allowIdleConsumers"] == "false"
    secured = settings.kafka_security_protocol != "PLAINTEXT"
    assert ("authenticationRef" in trigger) == secured
    if secured:
        auth = find(rendered, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
        assert refs["username"]["key"] in SECRET_KEYS
        assert refs["password"]["key"] in SECRET_KEYS
        assert meta["sasl"] == KEDA_SASL[settings.kafka_sasl_mechanism]
        assert meta["tls"] == ("enable" if settings.kafka_security_protocol.endswith("SSL")
                               else "disable")


def test_scaling_down_waits_longer_than_a_restore(rendered: list[Obj]) -> None:
    restore_s = assumed_restore_s(rendered)
    assert restore_s > 0
    spec = scaled_object(rendered)["spec"]
    assert spec["cooldownPeriod"] > restore_s
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] > restore_s
    assert all(p["periodSeconds"] > restore_s for p in behavior["scaleDown"]["policies"])


def test_triton_scales_on_queue_time_from_prometheus_adapter(rendered: list[Obj]) -> None:
    hpa = find(rendered, "HorizontalPodAutoscaler", "intentstream-triton")
    target = hpa["spec"]["scaleTargetRef"]
    triton = triton_of(rendered)["metadata"]["name"]
    assert (target["kind"], target["name"]) == ("Deployment", triton)
    [metric] = hpa["spec"]["metrics"]
    values = load_documents(K8S / "prometheus-adapter" / "values.yaml")[0]
    rules = {rule["name"]["as"]: rule for rule in values["rules"]["custom"]}
    rule = rules[metric["pods"]["metric"]["name"]]
    assert "nv_inference_queue_duration_us" in rule["metricsQuery"]
    assert "nv_inference_request_success" in rule["metricsQuery"]
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


def test_each_worker_pod_is_reached_for_lookups_by_its_name_in_the_headless_service(
    rendered: list[Obj],
) -> None:
    worker = worker_of(rendered)
    env = {v["name"]: v for v in container(worker).get("env", [])}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    service = find(rendered, "Service", worker["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
    # $(POD_NAME) is expanded by Kubernetes from the variable defined before it.
    assert list(env).index("POD_NAME") < list(env).index(f"{ENV_PREFIX}LOOKUP_HOST")
    assert env[f"{ENV_PREFIX}LOOKUP_HOST"]["value"] == \
        f"$(POD_NAME).{service['metadata']['name']}"

"""The Grafana dashboard and the Prometheus scrape config against the code and compose.yaml.

No Docker engine runs here, so nothing is started: the files are parsed. Every metric the
dashboard queries must be a series the code registers (streams/runtime/metrics.py, read from
its registries), every intentstream_* metric the code registers must be on the dashboard, and
Prometheus must scrape services compose.yaml defines, on the ports the processes serve.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.registry import Collector
from ruamel.yaml import YAML

from streams.runtime import metrics
from streams.settings import Settings
from tests.deploy.conftest import DOCKER
from tests.deploy.test_compose import interpolate

DASHBOARDS = DOCKER / "grafana" / "dashboards"
DASHBOARD = DASHBOARDS / "intentstream.json"
PROVISIONING = DOCKER / "grafana" / "provisioning"
PROMETHEUS_CONFIG = DOCKER / "prometheus" / "prometheus.yml"
# Series Prometheus writes itself for every target: not the code's, but always there.
SCRAPE_SERIES = frozenset({"up"})

# --- PromQL: the metric names an expression selects ---------------------------------------------

_TOKEN = re.compile(
    r"""(?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)"""
    r"|(?P<variable>\$\{[^}]*\}|\$\w+)"
    r"|(?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?[a-zA-Z]*)"
    r"|(?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)"
    r"|(?P<punct>\S)"
)
# Words that take a parenthesised label list next, not an expression.
_LABEL_LIST = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_KEYWORDS = _LABEL_LIST | {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan", "start",
                           "end"}


def tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) per token; whitespace dropped."""
    return [(m.lastgroup or "", m.group()) for m in _TOKEN.finditer(expr)]


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects: identifiers outside label matchers `{}`, ranges
    `[]` and label lists (`by (…)`), that are not a function call, aggregation, keyword or
    variable."""
    found: set[str] = set()
    toks = tokens(expr)
    depth = {"{": 0, "[": 0}
    closing = {"}": "{", "]": "["}
    skip_list = False  # the next `(…)` is a label list
    in_list = False
    for i, (kind, text) in enumerate(toks):
        if kind == "punct" and text in depth:
            depth[text] += 1
            continue
        if kind == "punct" and text in closing:
            depth[closing[text]] -= 1
            continue
        if any(depth.values()):
            continue
        if in_list:
            in_list = text != ")"
            continue
        if skip_list and text == "(":
            skip_list, in_list = False, True
            continue
        skip_list = False
        if kind != "ident":
            continue
        word = text.lower()
        if word in _LABEL_LIST:
            skip_list = True
            continue
        following = toks[i + 1][1].lower() if i + 1 < len(toks) else ""
        # A call, or an aggregation written `sum by (…) (…)`.
        if word in _KEYWORDS or following == "(" or following in {"by", "without"}:
            continue
        found.add(text)
    return found


# --- what the code registers --------------------------------------------------------------------

_SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
}


def series_names(registry: CollectorRegistry | Collector) -> set[str]:
    """Every series name a scrape of `registry` can show. From each family's type as well as its
    samples: a labelled metric with no child yet has no sample, but it is registered."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in _SERIES_SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def family_names(registry: CollectorRegistry) -> set[str]:
    return {family.name for family in registry.collect()}


@pytest.fixture(scope="module")
def registered() -> set[str]:
    return series_names(metrics.WORKER_REGISTRY) | series_names(metrics.FEEDBACK_REGISTRY)


# --- the dashboard --------------------------------------------------------------------------


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL expression) for every query of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", "?"), target["expr"]


def unknown_metrics(dashboard: dict[str, Any], known: set[str]) -> dict[str, list[str]]:
    """Panel title -> the metric names it queries that no registry knows."""
    unknown: dict[str, list[str]] = {}
    for title, expr in queries(dashboard):
        missing = sorted(metric_names(expr) - known - SCRAPE_SERIES)
        if missing:
            unknown.setdefault(title, []).extend(missing)
    return unknown


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


def test_the_parser_finds_metric_names_not_functions_labels_or_keywords() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, job) (rate(a_bucket{job="worker",x=~"b|c"}'
        "[$__rate_interval]))) / ignoring(le) group_left (job) b_sum offset 5m"
        " and on (topic) c_total > bool 0 or d unless sum without (e) (f[5m:1m]) * time()"
    )
    assert metric_names(expr) == {"a_bucket", "b_sum", "c_total", "d", "f"}
    assert metric_names('sum(x{reason="rate(y[5m])"})') == {"x"}  # strings are not queries
    assert metric_names("time() - max(g > 0)") == {"g"}
    assert metric_names("${var}") == set()


def test_every_metric_the_dashboard_queries_is_registered(
    dashboard: dict[str, Any], registered: set[str]
) -> None:
    exprs = [expr for _, expr in queries(dashboard)]
    assert len(exprs) >= 20, "the walk found no queries: the checker would pass anything"
    assert unknown_metrics(dashboard, registered) == {}


def unbalanced(expr: str) -> bool:
    """Brackets that do not pair up (outside strings): a query Prometheus would reject."""
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    for kind, text in tokens(expr):
        if kind != "punct":
            continue
        if text in "([{":
            stack.append(text)
        elif text in pairs and (not stack or stack.pop() != pairs[text]):
            return True
    return bool(stack)


def test_every_query_has_balanced_brackets(dashboard: dict[str, Any]) -> None:
    assert unbalanced("sum(rate(x[5m])") and unbalanced("x{a=\"b\"]") and not unbalanced("f(\")\")")
    assert [title for title, expr in queries(dashboard) if unbalanced(expr)] == []


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(intentstream_no_such_metric_total[5m]))",
        # A counter's family name is not a series: Prometheus holds only name_total.
        "sum(rate(intentstream_dead_letters[5m]))",
        # A histogram is queried as _bucket, _sum or _count, never by its bare name.
        "avg(intentstream_batch_events)",
        "histogram_quantile(0.9, sum by (le) (rate(intentstream_triton_latency_bucket[5m])))",
    ],
)
def test_a_panel_querying_an_unknown_metric_is_caught(registered: set[str], expr: str) -> None:
    good = "sum by (topic) (rate(intentstream_events_in_total[$__rate_interval])) + up"
    synthetic = {"panels": [
        {"type": "timeseries", "title": "good", "targets": [{"refId": "A", "expr": good}]},
        # Inside a collapsed row, where Grafana keeps a row's panels.
        {"type": "row", "title": "r", "collapsed": True, "panels": [
            {"type": "timeseries", "title": "bad", "targets": [{"refId": "A", "expr": expr}]},
        ]},
    ]}
    assert list(unknown_metrics(synthetic, registered)) == ["bad"]


def test_series_names_cover_labelled_metrics_without_samples() -> None:
    registry = CollectorRegistry()
    Counter("demo_things", "things", ["kind"], registry=registry)  # no child: no sample yet
    assert {"demo_things_total", "demo_things_created"} <= series_names(registry)
    assert "demo_things" not in series_names(registry)


def test_every_registered_intentstream_metric_is_on_the_dashboard(
    dashboard: dict[str, Any],
) -> None:
    """A metric added to the code gets a panel (or this test names the one without)."""
    queried = set().union(*(metric_names(expr) for _, expr in queries(dashboard)))
    registries = {"worker": metrics.WORKER_REGISTRY, "feedback": metrics.FEEDBACK_REGISTRY}
    for process, registry in registries.items():
        families = [f for f in registry.collect() if f.name.startswith("intentstream_")]
        assert families, f"no intentstream_ metric read from the {process} registry"
        missing = [
            f.name for f in families
            if not queried & {f.name + suffix for suffix in _SERIES_SUFFIXES[f.type]}
        ]
        assert missing == [], f"{process} metrics without a panel"


def test_the_dashboard_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    (datasource,) = load_yaml(PROVISIONING / "datasources" / "prometheus.yaml")["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    expected = {"type": "prometheus", "uid": datasource["uid"]}
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], f"{panel['title']}: no query"
        assert all(t.get("datasource", expected) == expected for t in panel["targets"])


def test_panels_have_unique_ids_and_fit_the_grid(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    assert dashboard["uid"] and dashboard["title"]
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]


# --- compose: provisioning and scraping ---------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return YAML(typ="safe", pure=True).load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return interpolate(load_yaml(DOCKER / "compose.yaml"), {})["services"]


def bind_mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Container path -> host path (relative to docker/) of a service's bind mounts."""
    mounts = {}
    for mount in service.get("volumes", []):
        source, target = mount.split(":")[:2]
        if source.startswith("."):
            mounts[target] = (DOCKER / source).resolve()
    return mounts


def test_grafana_provisions_the_datasource_and_the_dashboard_from_files(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = bind_mounts(services["grafana"])
    assert mounts["/etc/grafana/provisioning"] == PROVISIONING.resolve()
    (provider,) = load_yaml(PROVISIONING / "dashboards" / "intentstream.yaml")["providers"]
    assert provider["type"] == "file"
    assert mounts[provider["options"]["path"]] == DASHBOARDS.resolve()
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"
    assert "prometheus" in services["grafana"]["depends_on"]


def test_images_are_pinned(services: dict[str, dict[str, Any]]) -> None:
    for name in ("prometheus", "grafana"):
        image = services[name]["image"]
        tag = image.rpartition(":")[2]
        assert ":" in image and tag not in {"latest", ""}, f"{name}: {image} is not pinned"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image}"


def scrape_targets(config: dict[str, Any]) -> dict[str, list[tuple[str, int]]]:
    """Job -> (host, port) of each static target and DNS service-discovery name."""
    jobs: dict[str, list[tuple[str, int]]] = {}
    for job in config["scrape_configs"]:
        found = jobs.setdefault(job["job_name"], [])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                found.append((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            found.extend((name, int(dns["port"])) for name in dns["names"])
        assert found, f"job {job['job_name']}: no target"
    return jobs


def container_ports(service: dict[str, Any]) -> set[int]:
    ports = {int(port) for port in service.get("expose", [])}
    ports.update(int(str(mapping).rsplit(":", 1)[-1]) for mapping in service.get("ports", []))
    return ports


def scrape_problems(config: dict[str, Any], services: dict[str, dict[str, Any]]) -> list[str]:
    """Targets that name no compose service, or a port the service does not expose."""
    problems = []
    for job, targets in scrape_targets(config).items():
        for host, port in targets:
            if host not in services:
                problems.append(f"job {job} scrapes {host}: no such compose service")
            elif port not in container_ports(services[host]):
                problems.append(f"job {job}: {host} does not expose {port}")
    return problems


@pytest.fixture(scope="module")
def prometheus_config() -> dict[str, Any]:
    return load_yaml(PROMETHEUS_CONFIG)


def test_prometheus_scrapes_compose_services_on_their_metrics_ports(
    services: dict[str, dict[str, Any]], prometheus_config: dict[str, Any]
) -> None:
    prometheus = services["prometheus"]
    assert bind_mounts(prometheus)["/etc/prometheus/prometheus.yml"] == PROMETHEUS_CONFIG.resolve()
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert scrape_problems(prometheus_config, services) == []
    # Each process on the port it serves as compose configures it (streams/settings.py), under
    # the job name the dashboard filters on.
    jobs = scrape_targets(prometheus_config)
    for service, field in (("worker", "metrics_port"), ("feedback", "feedback_metrics_port")):
        env = services[service]["environment"]
        port = int(env.get(f"INTENTSTREAM_{field.upper()}", Settings.model_fields[field].default))
        assert (service, port) in jobs[service], f"{service} is not scraped on {port}"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("wrker:9108", "scrapes wrker: no such compose service", id="unknown-service"),
        pytest.param("worker:9109", "worker does not expose 9109", id="wrong-port"),
    ],
)
def test_a_bad_scrape_target_is_caught(
    services: dict[str, dict[str, Any]], target: str, expected: str
) -> None:
    config = {"scrape_configs": [{"job_name": "w", "static_configs": [{"targets": [target]}]}]}
    assert [p for p in scrape_problems(config, services) if expected in p] != []

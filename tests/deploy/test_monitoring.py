"""Monitoring, checked offline: the Prometheus scrape configurations find the web server and
every worker where compose.yaml and deploy/kubernetes/ put them, the Grafana dashboard asks only
for the metrics the service exports (and for all of them) from the provisioned data source, and
compose.yaml's `monitoring` profile mounts files that exist. `docker compose config` checks the
whole file where the Compose plugin is installed."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from classifier.serving import metrics as service_metrics
from tests.deploy.conftest import (
    DEPLOY,
    REPO,
    compose_default,
    container,
    env_value,
    port_number,
)

PROMETHEUS = DEPLOY / "prometheus"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "digits.json"

# The metrics the web server (GET /metrics) and the workers export that the dashboard must
# show, by type. A histogram is queried through its _bucket, _sum and _count series.
METRICS = {
    "digits_requests_total": "counter",
    "digits_request_duration_seconds": "histogram",
    "digits_websocket_connections": "gauge",
    "digits_queue_depth": "gauge",
    "digits_workers": "gauge",
    "digits_batch_size": "histogram",
    "digits_queue_wait_seconds": "histogram",
    "digits_preprocess_seconds": "histogram",
    "digits_inference_seconds": "histogram",
    "digits_worker_answers_total": "counter",
    "digits_model_info": "gauge",
    "digits_model_swaps_total": "counter",
}
HISTOGRAM_SERIES = ("_bucket", "_sum", "_count")
# PromQL words that look like a metric name to the tokenizer below.
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers that are not functions,
    aggregations, keywords, label names or strings."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:]|\s*\()", expr)
    return {n for n in names if n.lower() not in PROMQL_KEYWORDS}


def series_of(name: str, kind: str) -> set[str]:
    """The series Prometheus stores for a metric as prometheus_client exposes it."""
    if kind == "histogram":
        return {name + suffix for suffix in HISTOGRAM_SERIES}
    if kind == "counter" and not name.endswith("_total"):
        return {name + "_total"}
    return {name}


def exported_series() -> set[str]:
    """Every series of the service's own metrics (classifier.serving.metrics): the web
    server's, with what it reads from Redis at scrape time, and a worker's."""
    families = [
        *service_metrics.ScrapeTime(queue_depth=0, workers=0).collect(),
        *service_metrics.WORKER_REGISTRY.collect(),
    ]
    return {s for f in families if f.name.startswith("digits_") for s in series_of(f.name, f.type)}


def base_metric(series: str) -> str:
    for suffix in HISTOGRAM_SERIES:
        if series.endswith(suffix) and METRICS.get(series.removesuffix(suffix)) == "histogram":
            return series.removesuffix(suffix)
    return series


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


@pytest.fixture(scope="module")
def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


@pytest.fixture(scope="module")
def datasource() -> dict[str, Any]:
    provisioning = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    [source] = provisioning["datasources"]
    return source


def scrape_jobs(path: Path) -> dict[str, dict[str, Any]]:
    return {job["job_name"]: job for job in yaml.safe_load(path.read_text())["scrape_configs"]}


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Bind mounts of files in this repository: container path -> repository path."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            found[target] = source
    return found


# --- PromQL parsing is what the dashboard checks rest on ------------------------------------------


def test_series_names_finds_metrics_and_only_metrics() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, outcome) (rate(digits_batch_size_bucket{job="a",'
        'outcome!="b"}[$__rate_interval]))) / on (instance) group_left(version) digits_model_info'
        " + sum without (pod) (up offset 5m) > bool 1e3"
    )
    assert series_names(expr) == {"digits_batch_size_bucket", "digits_model_info", "up"}


# --- Prometheus ----------------------------------------------------------------------------------


def test_compose_prometheus_scrapes_the_web_server(compose_services: dict[str, Any]) -> None:
    job = scrape_jobs(PROMETHEUS / "prometheus.yml")["digits-web"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    [static] = job["static_configs"]
    [target] = static["targets"]
    host, port = target.split(":")
    web = compose_services[host]
    command = web["command"]
    assert int(port) == int(command[command.index("--port") + 1])
    # The Host header Prometheus sends must be one Django accepts, or every scrape is a 400.
    allowed = compose_default(web["environment"]["DIGITS_ALLOWED_HOSTS"]).split(",")
    assert host in allowed
    # Prometheus scrapes from the Compose network, a private range.
    for name in ("web", "worker"):
        networks = compose_default(compose_services[name]["environment"]["DIGITS_METRICS_ALLOWED"])
        assert "172.16.0.0/12" in networks.split(",")


def test_compose_prometheus_follows_every_worker(compose_services: dict[str, Any]) -> None:
    job = scrape_jobs(PROMETHEUS / "prometheus.yml")["digits-workers"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    [dns] = job["dns_sd_configs"]
    # The service name resolves to every replica of `--scale worker=N`.
    assert dns["names"] == ["worker"] and dns["type"] == "A"
    worker = compose_services["worker"]
    assert int(worker["environment"]["DIGITS_WORKER_METRICS_PORT"]) == dns["port"] == 9101
    assert str(dns["port"]) in worker["expose"]
    # Unset, the worker names its container's host name in /readyz, which Docker's DNS resolves.
    assert "DIGITS_WORKER_METRICS_HOST" not in worker["environment"]


@pytest.mark.parametrize(
    ("job_name", "deployment", "port_name"),
    [("digits-web", "digits-web", "http"), ("digits-workers", "digits-worker", "metrics")],
)
def test_kubernetes_prometheus_finds_the_pods(
    resources: dict[tuple[str, str], Any],
    kustomization: dict[str, Any],
    job_name: str,
    deployment: str,
    port_name: str,
) -> None:
    job = scrape_jobs(PROMETHEUS / "prometheus-kubernetes.yml")[job_name]
    [sd] = job["kubernetes_sd_configs"]
    assert sd["role"] == "pod"
    assert sd["namespaces"]["names"] == [kustomization["namespace"]]
    pods = resources[("Deployment", deployment)]["spec"]["template"]
    labels = pods["metadata"]["labels"]
    keep = {
        rule["source_labels"][0]: rule["regex"]
        for rule in job["relabel_configs"]
        if rule.get("action") == "keep"
    }
    # Prometheus turns a pod label's name into [a-z0-9_] for its meta label.
    for key, value in labels.items():
        meta = "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", key)
        if meta in keep:
            assert re.fullmatch(keep[meta], value), f"{job_name} drops the pods labelled {key}"
    assert "__meta_kubernetes_pod_label_app_kubernetes_io_component" in keep
    # Only the named port is scraped; the pods must have it.
    assert re.fullmatch(keep["__meta_kubernetes_pod_container_port_name"], port_name)
    assert port_number(container(resources[("Deployment", deployment)]), port_name)
    # ...and no other Deployment's pods pass the label filters.
    for (kind, name), doc in resources.items():
        if kind == "Deployment" and name != deployment:
            other = doc["spec"]["template"]["metadata"]["labels"]
            component = other["app.kubernetes.io/component"]
            rule = keep["__meta_kubernetes_pod_label_app_kubernetes_io_component"]
            assert not re.fullmatch(rule, component)


def test_kubernetes_workers_name_their_pod_address_for_prometheus(
    resources: dict[tuple[str, str], Any],
) -> None:
    worker = container(resources[("Deployment", "digits-worker")])
    fieldref = env_value(worker, "DIGITS_WORKER_METRICS_HOST")["valueFrom"]["fieldRef"]
    assert fieldref["fieldPath"] == "status.podIP"


# --- Grafana -------------------------------------------------------------------------------------


def test_grafana_reads_the_compose_prometheus(
    datasource: dict[str, Any], compose_services: dict[str, Any]
) -> None:
    assert datasource["type"] == "prometheus"
    url = datasource["url"]
    host, port = re.fullmatch(r"http://([\w-]+):(\d+)", url).groups()
    prometheus = compose_services[host]
    assert any(p.endswith(f":{port}") for p in prometheus["ports"])


def test_every_panel_uses_the_provisioned_data_source(
    dashboard: dict[str, Any], datasource: dict[str, Any]
) -> None:
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]


def test_the_service_exports_the_metrics_the_dashboard_shows() -> None:
    shown = {series for name, kind in METRICS.items() for series in series_of(name, kind)}
    assert not shown - exported_series()


def test_the_dashboard_asks_only_for_exported_metrics(exprs: list[str]) -> None:
    allowed = exported_series()
    for expr in exprs:
        unknown = series_names(expr) - allowed
        assert not unknown, f"{expr!r} asks for metrics nobody exports: {unknown}"


def test_the_dashboard_shows_every_exported_metric(exprs: list[str]) -> None:
    used = {base_metric(name) for expr in exprs for name in series_names(expr)}
    assert used == set(METRICS)


def test_the_dashboard_has_the_panels_operators_need(dashboard: dict[str, Any]) -> None:
    by_title = {p["title"]: [t["expr"] for t in p["targets"]] for p in dashboard["panels"]}

    def panel_with(*needles: str) -> str:
        for title, panel_exprs in by_title.items():
            if all(any(n in e for e in panel_exprs) for n in needles):
                return title
        raise AssertionError(f"no panel queries {needles}")

    # Live workers with their model version and device.
    panel_with("digits_workers")
    workers = panel_with("digits_model_info")
    assert all("version" in e and "device" in e for e in by_title[workers])
    # Answers per second, and errors by code.
    panel_with("rate(digits_requests_total")
    errors = panel_with('outcome!="prediction"')
    assert all("by (outcome)" in e for e in by_title[errors])
    panel_with("digits_queue_depth")
    panel_with("digits_batch_size_bucket")
    # Latency p50 and p95 in one panel.
    panel_with(
        "histogram_quantile(0.5, sum by (le) (rate(digits_request_duration_seconds_bucket",
        "histogram_quantile(0.95, sum by (le) (rate(digits_request_duration_seconds_bucket",
    )
    # Where the milliseconds go: the three worker stages side by side.
    panel_with("digits_queue_wait_seconds", "digits_preprocess_seconds", "digits_inference_seconds")
    panel_with("digits_model_swaps_total")


def test_the_dashboard_layout_fits(dashboard: dict[str, Any]) -> None:
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_grafana_loads_the_dashboard_from_its_mount(compose_services: dict[str, Any]) -> None:
    provider_file = GRAFANA / "provisioning/dashboards/digits.yml"
    [provider] = yaml.safe_load(provider_file.read_text())["providers"]
    grafana = compose_services["grafana"]
    mounted = mounts(grafana)
    # The provider's folder is the mount of deploy/grafana/dashboards.
    assert mounted[provider["options"]["path"]] == "./deploy/grafana/dashboards"
    assert mounted["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    home = PurePosixPath(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert str(home.parent) == provider["options"]["path"]
    assert (REPO / mounted[str(home.parent)] / home.name).is_file()


# --- compose.yaml: the monitoring profile --------------------------------------------------------


def test_monitoring_is_a_profile_of_its_own(compose_services: dict[str, Any]) -> None:
    monitoring = {n for n, s in compose_services.items() if "monitoring" in s.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    for name in monitoring:
        assert compose_services[name]["profiles"] == ["monitoring"]


def test_monitoring_mounts_files_that_exist(compose_services: dict[str, Any]) -> None:
    assert mounts(compose_services["prometheus"]) == {
        "/etc/prometheus/prometheus.yml": "./deploy/prometheus/prometheus.yml"
    }
    for name in ("prometheus", "grafana"):
        for volume in compose_services[name]["volumes"]:
            source, _, mode = [*volume.split(":"), ""][:3]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts {source}, which does not exist"
                assert mode == "ro", f"{name} may write to {source} in the checkout"


def test_monitoring_listens_on_this_host_only(compose_services: dict[str, Any]) -> None:
    for name in ("prometheus", "grafana"):
        for port in compose_services[name]["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"


def docker_compose() -> list[str]:
    """`docker compose`, or a reason it cannot run here (the test is skipped with it)."""
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed: only the YAML-level checks ran")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"the Docker Compose plugin is missing here ({reason}): YAML-level checks ran")
    return [docker, "compose"]


def test_docker_compose_accepts_the_file_with_monitoring() -> None:
    compose = docker_compose()
    env = {**os.environ, "DIGITS_SECRET_KEY": "checked-by-docker-compose-config"}
    result = subprocess.run(
        [*compose, "-f", str(REPO / "compose.yaml"), "--profile", "monitoring", "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr

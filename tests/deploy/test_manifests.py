"""deploy/kubernetes/, checked offline: every resource against the Kubernetes API schema
(kubernetes-validate bundles them), the KEDA ScaledObject against its CRD's schema (kept in
schemas/), and the references between files that no schema sees: Services that select their
pods, the autoscaler's target and Redis list, the probes and the settings the pods are given."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from classifier.management.devstack import worker_argv
from tests.deploy.conftest import (
    KUBERNETES,
    container,
    env_value,
    port_number,
    settings_default,
)
from tests.digits_site.test_compose import settings_env_names

# The oldest Kubernetes the manifests are meant for; kubernetes-validate ships its schemas.
KUBERNETES_VERSION = "1.30"
KEDA_SCHEMA = Path(__file__).parent / "schemas" / "keda-scaledobject.json"
# Custom resources: no schema in the Kubernetes API; each has its own check below.
CUSTOM_KINDS = {"ScaledObject"}


def core_resources() -> list[tuple[str, str, dict[str, Any]]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    return [
        (name, f"{doc['kind']}/{doc['metadata']['name']}", doc)
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((KUBERNETES / name).read_text())
        if doc and doc["kind"] not in CUSTOM_KINDS
    ]


CORE_RESOURCES = core_resources()


@pytest.mark.parametrize(
    "doc", [doc for _, _, doc in CORE_RESOURCES], ids=[f"{f}:{r}" for f, r, _ in CORE_RESOURCES]
)
def test_each_resource_is_valid_for_the_kubernetes_api(doc: dict[str, Any]) -> None:
    # Strict: an unknown or misspelt field is an error, not silently dropped.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validator_catches_a_bad_manifest(resources: dict[tuple[str, str], Any]) -> None:
    """The check above can fail: a typo in a field and a string where a number belongs."""
    broken = json.loads(json.dumps(resources[("Deployment", "digits-worker")]))
    container(broken)["resource"] = container(broken).pop("resources")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    broken = json.loads(json.dumps(resources[("Service", "redis")]))
    broken["spec"]["ports"][0]["port"] = "6379"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest(kustomization: dict[str, Any]) -> None:
    on_disk = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(on_disk)
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"


def test_everything_runs_in_the_namespace_it_creates(
    kustomization: dict[str, Any], resources: dict[tuple[str, str], Any]
) -> None:
    namespace = kustomization["namespace"]
    assert ("Namespace", namespace) in resources
    for kind, name in resources:
        assert "namespace" not in resources[(kind, name)]["metadata"], (
            f"{kind}/{name} names its own namespace; the kustomization sets it"
        )


def test_the_pods_run_the_image_the_kustomization_names(
    kustomization: dict[str, Any], resources: dict[tuple[str, str], Any]
) -> None:
    [image] = kustomization["images"]
    for name in ("digits-web", "digits-worker"):
        assert container(resources[("Deployment", name)])["image"] == image["name"]


def test_deployments_select_their_own_pods(resources: dict[tuple[str, str], Any]) -> None:
    deployments = [doc for (kind, _), doc in resources.items() if kind == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {"redis", "digits-web", "digits-worker"}
    for deployment in deployments:
        selector = deployment["spec"]["selector"]["matchLabels"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), deployment["metadata"]["name"]


@pytest.mark.parametrize(
    ("service", "deployment"), [("redis", "redis"), ("digits-web", "digits-web")]
)
def test_each_service_reaches_its_deployment(
    resources: dict[tuple[str, str], Any], service: str, deployment: str
) -> None:
    svc = resources[("Service", service)]
    pods = resources[("Deployment", deployment)]["spec"]["template"]
    assert svc["spec"]["selector"].items() <= pods["metadata"]["labels"].items()
    # ...and no other Deployment's pods.
    for (kind, name), doc in resources.items():
        if kind == "Deployment" and name != deployment:
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert not svc["spec"]["selector"].items() <= labels.items()
    for port in svc["spec"]["ports"]:
        assert port_number(container(resources[("Deployment", deployment)]), port["targetPort"])


def test_the_settings_point_at_the_redis_service(resources: dict[tuple[str, str], Any]) -> None:
    config = resources[("ConfigMap", "digits-config")]["data"]
    url = urlsplit(config["REDIS_URL"])
    redis = resources[("Service", "redis")]
    assert url.scheme == "redis"
    assert url.hostname == redis["metadata"]["name"]
    assert url.port == redis["spec"]["ports"][0]["port"]
    assert config["DIGITS_INFERENCE_QUEUE"] == settings_default("DIGITS_INFERENCE_QUEUE")


def test_every_environment_variable_is_one_settings_reads(
    resources: dict[tuple[str, str], Any],
) -> None:
    known = settings_env_names()
    config = resources[("ConfigMap", "digits-config")]["data"]
    assert not set(config) - known, f"the ConfigMap sets unknown variables: {set(config) - known}"
    for name in ("digits-web", "digits-worker"):
        env = container(resources[("Deployment", name)])["env"]
        names = [item["name"] for item in env]
        # A variable only there for another's value to name it, as $(NAME), is the pod's own.
        referenced = {
            ref for item in env for ref in re.findall(r"\$\((\w+)\)", item.get("value", ""))
        }
        unknown = set(names) - known - referenced
        assert not unknown, f"{name} sets variables settings.py never reads: {unknown}"
        for ref in referenced:
            assert names.index(ref) < max(
                i for i, item in enumerate(env) if f"$({ref})" in item.get("value", "")
            ), f"{name}: $({ref}) is used before it is defined, so Kubernetes leaves it as is"


def test_web_probes_its_health_endpoints(
    resources: dict[tuple[str, str], Any], compose_services: dict[str, Any]
) -> None:
    web = container(resources[("Deployment", "digits-web")])
    # The command the image and compose.yaml run (tests/digits_site/test_compose.py checks it).
    assert web["command"] == compose_services["web"]["command"]
    port = web["command"][web["command"].index("--port") + 1]
    assert port_number(web, "http") == int(port) == 8000
    allowed = env_value(web, "DIGITS_ALLOWED_HOSTS")["value"].split(",")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = web[probe]["httpGet"]
        assert (get["path"], get["port"]) == (path, "http")
        # Django answers 400 to a Host header outside ALLOWED_HOSTS, which fails the probe.
        [host] = [h["value"] for h in get["httpHeaders"] if h["name"] == "Host"]
        assert host in allowed
    # Prometheus scrapes each pod by its address (deploy/prometheus/prometheus-kubernetes.yml).
    assert "$(POD_IP)" in allowed
    assert env_value(web, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_web_takes_its_secret_key_from_a_secret(resources: dict[tuple[str, str], Any]) -> None:
    web = container(resources[("Deployment", "digits-web")])
    ref = env_value(web, "DIGITS_SECRET_KEY")["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    kinds = {kind for kind, _ in resources}
    assert "Secret" not in kinds, "a secret committed to the repository is no secret"
    assert "DIGITS_SECRET_KEY" not in resources[("ConfigMap", "digits-config")]["data"]


def test_workers_get_one_gpu_each_and_serve_metrics(resources: dict[tuple[str, str], Any]) -> None:
    worker = container(resources[("Deployment", "digits-worker")])
    assert worker["command"] == worker_argv()[2:]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert int(env_value(worker, "DIGITS_WORKER_METRICS_PORT")["value"]) == port_number(
        worker, "metrics"
    )
    host = env_value(worker, "DIGITS_WORKER_METRICS_HOST")
    assert host["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"


def test_the_scaled_object_matches_the_keda_schema(
    resources: dict[tuple[str, str], Any],
) -> None:
    schema = json.loads(KEDA_SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    scaled = resources[("ScaledObject", "digits-worker")]
    jsonschema.validate(scaled, schema, cls=jsonschema.Draft202012Validator)
    # The schema can fail: a number where KEDA's trigger metadata takes only strings.
    broken = json.loads(json.dumps(scaled))
    broken["spec"]["triggers"][0]["metadata"]["listLength"] = 64
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)


def test_keda_scales_the_worker_deployment(resources: dict[tuple[str, str], Any]) -> None:
    spec = resources[("ScaledObject", "digits-worker")]["spec"]
    target = spec["scaleTargetRef"]
    deployment = resources[(target["kind"], target["name"])]
    assert deployment["apiVersion"] == target["apiVersion"] == "apps/v1"
    assert deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "worker"
    # The autoscaler owns the replica count; a count here would be reset by every apply.
    assert "replicas" not in deployment["spec"]
    # Never zero: with no worker alive the web server refuses at once instead of queuing, so the
    # queue KEDA watches would never grow to wake one.
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]


def test_keda_watches_the_inference_queue_in_the_redis_service(
    kustomization: dict[str, Any], resources: dict[tuple[str, str], Any]
) -> None:
    [trigger] = resources[("ScaledObject", "digits-worker")]["spec"]["triggers"]
    assert trigger["type"] == "redis"  # KEDA's Redis list scaler
    metadata = trigger["metadata"]
    config = resources[("ConfigMap", "digits-config")]["data"]
    assert metadata["listName"] == config["DIGITS_INFERENCE_QUEUE"]
    assert metadata["listName"] == settings_default("DIGITS_INFERENCE_QUEUE")
    # KEDA connects from its own namespace: the Service by its full name.
    redis = resources[("Service", "redis")]
    host, port = metadata["address"].rsplit(":", 1)
    assert host == f"{redis['metadata']['name']}.{kustomization['namespace']}.svc.cluster.local"
    assert int(port) == redis["spec"]["ports"][0]["port"]
    assert metadata["databaseIndex"] == urlsplit(config["REDIS_URL"]).path.strip("/")
    # One worker more per full batch waiting.
    worker = container(resources[("Deployment", "digits-worker")])
    assert metadata["listLength"] == env_value(worker, "DIGITS_BATCH_SIZE")["value"]


# --- The database, migrations, disruptions, Redis's memory ---------------------------------------


def app_pods(resources: dict[tuple[str, str], Any]) -> dict[str, dict[str, Any]]:
    """The pod specs of everything that runs the Digits image: web, workers, the migrate Job."""
    return {
        name: resources[(kind, name)]["spec"]["template"]["spec"]
        for kind, name in (
            ("Deployment", "digits-web"),
            ("Deployment", "digits-worker"),
            ("Job", "digits-migrate"),
        )
    }


def test_web_workers_and_migrations_share_one_database_from_one_secret(
    resources: dict[tuple[str, str], Any],
) -> None:
    config = resources[("ConfigMap", "digits-config")]["data"]
    # The setting with which each refuses SQLite (played in test_played.py).
    assert config["DIGITS_SHARED_DATABASE"] == "1"
    assert "DATABASE_URL" not in config  # a password inside: a Secret, never the ConfigMap
    refs = set()
    for name, pod in app_pods(resources).items():
        for spec in [*pod.get("initContainers", []), *pod["containers"]]:
            assert spec["image"] == "digits", f"{name}.{spec['name']}"
            ref = env_value(spec, "DATABASE_URL")["valueFrom"]["secretKeyRef"]
            refs.add((ref["name"], ref["key"]))
    assert refs == {("digits-database", "url")}


def test_postgres_keeps_its_data_on_a_volume_behind_its_service(
    resources: dict[tuple[str, str], Any],
) -> None:
    statefulset = resources[("StatefulSet", "postgres")]
    service = resources[("Service", "postgres")]
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert service["spec"]["clusterIP"] == "None"  # headless, as a StatefulSet's
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    postgres = container(statefulset)
    assert port_number(postgres, service["spec"]["ports"][0]["targetPort"]) == 5432
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    [mount] = postgres["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"]
    # The data folder lies inside the volume, so the database survives the pod.
    pgdata = env_value(postgres, "PGDATA")["value"]
    assert Path(mount["mountPath"]) in Path(pgdata).parents
    password = env_value(postgres, "POSTGRES_PASSWORD")["valueFrom"]["secretKeyRef"]
    assert password["name"] == "digits-database"


def test_web_and_workers_wait_for_the_migrate_job(resources: dict[tuple[str, str], Any]) -> None:
    job = resources[("Job", "digits-migrate")]
    migrate = container(job)
    assert migrate["command"][:3] == ["python", "manage.py", "migrate"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "OnFailure"
    for name in ("digits-web", "digits-worker"):
        pod = resources[("Deployment", name)]["spec"]["template"]["spec"]
        [wait] = pod["initContainers"]
        # Until nothing is left to apply (played in test_played.py).
        assert "python manage.py migrate --check" in " ".join(wait["command"])
        assert wait.get("envFrom") == migrate["envFrom"]


@pytest.mark.parametrize("name", ["digits-web", "digits-worker"])
def test_a_disruption_budget_covers_web_and_workers(
    resources: dict[tuple[str, str], Any], name: str
) -> None:
    budget = resources[("PodDisruptionBudget", name)]
    labels = resources[("Deployment", name)]["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # One pod at a time, and never a drain blocked (a single worker may still be evicted).
    assert budget["spec"]["maxUnavailable"] == 1


def test_workers_are_probed_on_their_metrics_port(resources: dict[tuple[str, str], Any]) -> None:
    worker = container(resources[("Deployment", "digits-worker")])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert worker[probe]["tcpSocket"]["port"] == "metrics", probe


def memory_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity (Mi, Gi) or a Redis one (mb, gb), in bytes."""
    number, unit = re.fullmatch(r"(\d+)(\w*)", quantity).groups()  # type: ignore[union-attr]
    scale = {"mi": 2**20, "mb": 2**20, "gi": 2**30, "gb": 2**30, "": 1}[unit.lower()]
    return int(number) * scale


def test_redis_is_capped_below_its_limit_and_never_evicts(
    resources: dict[tuple[str, str], Any], compose_services: dict[str, Any]
) -> None:
    redis = container(resources[("Deployment", "redis")])
    args = redis["args"]
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    cap = memory_bytes(args[args.index("--maxmemory") + 1])
    limit = memory_bytes(redis["resources"]["limits"]["memory"])
    # Room for Redis's own overhead and fragmentation under the container's limit.
    assert cap <= limit * 0.6
    assert memory_bytes(redis["resources"]["requests"]["memory"]) > cap
    # Compose's Redis: the same cap and policy.
    assert compose_services["redis"]["command"][1:] == args[1:]

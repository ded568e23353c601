"""compose.yaml and the Dockerfile, checked without Docker (it does not run on these machines):
the services the README promises, a GPU reservation that scales, and commands and environment
variables that exist in this code base."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import dj_database_url
import pytest
import yaml
from django.core.management import get_commands

from classifier.management.commands.runstack import Command as Runstack
from classifier.management.devstack import worker_argv

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def settings_env_names() -> set[str]:
    """Every environment variable digits_site/settings.py reads."""
    source = (REPO / "digits_site" / "settings.py").read_text()
    return set(re.findall(r'(?:env_\w+|os\.environ\.get)\(\s*"([A-Z0-9_]+)"', source))


def dockerfile_cmd() -> list[str]:
    [line] = [ln for ln in (REPO / "Dockerfile").read_text().splitlines() if ln.startswith("CMD")]
    return yaml.safe_load(line.removeprefix("CMD"))


def test_the_promised_services_exist(services: dict[str, Any]) -> None:
    # Prometheus and Grafana: the `monitoring` profile (tests/deploy/test_monitoring.py).
    assert set(services) == {"redis", "db", "web", "worker", "train", "prometheus", "grafana"}


def test_workers_reserve_a_gpu_and_can_be_scaled(services: dict[str, Any]) -> None:
    worker = services["worker"]
    [device] = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    assert device["count"] == 1
    # `--scale worker=N` needs replicas that can coexist: no fixed name, no host port.
    assert "container_name" not in worker
    assert "ports" not in worker


def test_train_is_a_one_off_in_its_own_profile(services: dict[str, Any]) -> None:
    train = services["train"]
    assert train["profiles"] == ["train"]
    assert train["restart"] == "no"
    assert train["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_web_runs_runstack_for_the_web_server_only(services: dict[str, Any]) -> None:
    command = services["web"]["command"]
    assert command[:3] == ["python", "manage.py", "runstack"]
    options = Runstack().create_parser("manage.py", "runstack").parse_args(command[3:])
    assert options.only == "web"
    assert options.host == "0.0.0.0"
    published = services["web"]["ports"][0]
    assert published.endswith(f":{options.port}")
    assert dockerfile_cmd() == command


def test_worker_runs_the_documented_celery_command(services: dict[str, Any]) -> None:
    # The same command line runstack and the tests start (minus `python -m`).
    assert services["worker"]["command"] == worker_argv()[2:]


def test_train_runs_the_train_command(services: dict[str, Any]) -> None:
    command = services["train"]["command"]
    assert command[:2] == ["python", "manage.py"]
    assert command[2] in get_commands()


def test_every_environment_variable_is_one_settings_reads(services: dict[str, Any]) -> None:
    known = settings_env_names()
    assert {"REDIS_URL", "DIGITS_WEIGHTS", "DIGITS_SECRET_KEY"} <= known  # the parser works
    for name, service in services.items():
        if service.get("image") != services["web"]["image"]:
            continue  # another project's image (Grafana) reads its own variables
        unknown = set(service.get("environment", {})) - known
        assert not unknown, f"{name} sets variables settings.py never reads: {unknown}"


def test_the_app_services_share_redis_and_the_weights(services: dict[str, Any]) -> None:
    for name in ("web", "worker", "train"):
        service = services[name]
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    weights_dir = str(Path(services["worker"]["environment"]["DIGITS_WEIGHTS"]).parent)
    for name in ("worker", "train"):
        assert f"weights:{weights_dir}" in services[name]["volumes"]
    assert "healthcheck" in services["redis"]


def test_the_image_is_built_from_this_project() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.MULTILINE)
    for path in re.findall(r"^COPY (\S+)", dockerfile, re.MULTILINE):
        assert (REPO / path).exists(), f"the Dockerfile copies {path}, which does not exist"
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "classifier" not in ignored and "classifier/weights" not in ignored
    assert ".venv" in ignored and "data" in ignored


def test_the_app_services_keep_corrections_in_the_postgres_service(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    db = services["db"]
    assert db["image"].startswith("postgres:16")
    assert "pg_isready" in db["healthcheck"]["test"]
    [volume] = db["volumes"]
    assert volume.split(":") == ["db", "/var/lib/postgresql/data"]
    assert "db" in compose["volumes"]  # a named volume: corrections survive the container
    for name in ("web", "worker", "train"):
        service = services[name]
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        url = service["environment"]["DATABASE_URL"].replace("${POSTGRES_PASSWORD:-digits}", "pw")
        parsed = dj_database_url.parse(url)
        assert parsed["ENGINE"] == "django.db.backends.postgresql"
        assert parsed["HOST"] == "db" and parsed["PORT"] == 5432
        assert parsed["NAME"] == db["environment"]["POSTGRES_DB"]
        assert parsed["USER"] == db["environment"]["POSTGRES_USER"]
        assert parsed["PASSWORD"] == "pw"
    assert db["environment"]["POSTGRES_PASSWORD"] == "${POSTGRES_PASSWORD:-digits}"


def test_no_command_needs_the_secret_but_serving_web(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    """Compose reads `${NAME:?message}` for the whole file, so one would refuse every command
    (`run --rm train` too); the web server refuses by itself instead (played without the secret
    in tests/deploy/test_played.py)."""
    text = (REPO / "compose.yaml").read_text()
    assert not re.search(r"\$\{\w+:?\?", text), "a required variable refuses every command"
    for name in ("web", "worker", "train"):
        assert services[name]["environment"]["DIGITS_SECRET_KEY"] == "${DIGITS_SECRET_KEY:-}"


def test_the_app_services_say_they_share_one_database(services: dict[str, Any]) -> None:
    for name in ("web", "worker", "train"):
        assert services[name]["environment"]["DIGITS_SHARED_DATABASE"] == "1"


def test_web_and_worker_have_healthchecks(services: dict[str, Any]) -> None:
    # Played (run as written, answered) in tests/deploy/test_played.py.
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    worker_port = services["worker"]["environment"]["DIGITS_WORKER_METRICS_PORT"]
    assert worker_port in " ".join(services["worker"]["healthcheck"]["test"])

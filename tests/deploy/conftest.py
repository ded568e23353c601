"""What the deploy/ checks share: the Kubernetes manifests, compose.yaml and the defaults
digits_site/settings.py gives, all read from the files (no cluster, no Docker daemon)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"


def settings_default(name: str) -> str:
    """The default digits_site/settings.py gives the string setting `name` when the environment
    does not set it (the settings module itself is loaded with the test run's environment)."""
    source = (REPO / "digits_site" / "settings.py").read_text()
    [default] = re.findall(rf'env_str\(\s*"{name}",\s*"([^"]*)"\s*\)', source)
    return default


def compose_default(value: str) -> str:
    """A compose.yaml value with every `${NAME:-default}` replaced by its default, as Compose
    interpolates it when NAME is unset."""
    return re.sub(r"\$\{[A-Z0-9_]+:-([^}]*)\}", r"\1", value)


@pytest.fixture(scope="session")
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())


@pytest.fixture(scope="session")
def manifests(kustomization: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(file name, resource) for every resource the kustomization lists, in its order."""
    found = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((KUBERNETES / name).read_text()):
            if doc:
                found.append((name, doc))
    return found


@pytest.fixture(scope="session")
def resources(manifests: list[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str], Any]:
    """Every resource by (kind, name)."""
    by_key = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in manifests}
    assert len(by_key) == len(manifests), "two resources share a kind and name"
    return by_key


@pytest.fixture(scope="session")
def compose_services() -> dict[str, Any]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())["services"]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Deployment's one container."""
    [only] = deployment["spec"]["template"]["spec"]["containers"]
    return only


def env_value(container_spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The `env` entry that sets `name` in a container."""
    [entry] = [item for item in container_spec.get("env", []) if item["name"] == name]
    return entry


def port_number(container_spec: dict[str, Any], name: str) -> int:
    """The container port called `name`."""
    [port] = [p["containerPort"] for p in container_spec["ports"] if p.get("name") == name]
    return port

"""The overrides in classifier/transport and the library versions they were written against."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from classifier import transport
from classifier.transport import TESTED_VERSIONS, version_problems

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_the_installed_libraries_are_the_versions_the_overrides_are_tested_against() -> None:
    problems = version_problems()
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", sorted(TESTED_VERSIONS))
def test_another_minor_version_is_reported_naming_its_override(name: str) -> None:
    tested, override = TESTED_VERSIONS[name]
    major, minor = tested.split(".")
    installed = {other: f"{version}.0" for other, (version, _) in TESTED_VERSIONS.items()}
    installed[name] = f"{major}.{int(minor) + 1}.0"
    (problem,) = version_problems(installed)
    assert problem.startswith(f"{name} {major}.{int(minor) + 1}.0 is installed")
    assert override in problem and f"{tested}.x" in problem


def test_a_missing_library_is_reported() -> None:
    installed = {name: f"{version}.3" for name, (version, _) in TESTED_VERSIONS.items()}
    del installed["kombu"]
    assert version_problems(installed) == [
        f"kombu is not installed; {TESTED_VERSIONS['kombu'][1]} needs 5.7.x."
    ]


def test_pyproject_pins_each_overridden_library_to_its_tested_minor_version() -> None:
    """`~=X.Y.Z` admits X.Y.* only: an upgrade past the tested minor version is a decision
    (move the pin and TESTED_VERSIONS together), never an accident of `pip install`."""
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    pins = {}
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)~=(\d+)\.(\d+)\.(\d+)", requirement)
        if match:
            pins[match[1].lower()] = f"{match[2]}.{match[3]}"
    assert pins == {name: tested for name, (tested, _) in TESTED_VERSIONS.items()}


def test_minor() -> None:
    assert transport.minor("5.7.0") == "5.7"
    assert transport.minor("4.3.2.post1") == "4.3"

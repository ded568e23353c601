"""The documentation keeps up with the tree: the README's layout names every package, management
command and benchmark; docs/testing.md names every test folder; no source module outgrows
MAX_LINES. Plain file reading: in-process and fast."""

from __future__ import annotations

import re
from pathlib import Path

from django.apps import apps

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TESTING = ROOT / "docs" / "testing.md"
# The source: what the service is made of, and the benchmarks beside it (tests are not source).
SOURCE_PACKAGES = ("classifier", "digits_site", "frontend", "digits_client", "benchmarks")
MAX_LINES = 600
# Django's plumbing inside an app, not a room of the code: its migrations and its commands (the
# commands are checked by name instead).
PLUMBING = {"migrations", "commands"}


def layout() -> dict[str, str]:
    """The README's Layout table: each path its first column names (`classifier/ml/`), with
    what the row says it holds."""
    text = README.read_text(encoding="utf-8").split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 2 or set(cells[0]) <= {"-", " "}:
            continue
        for path in re.findall(r"`([^`]+)`", cells[0]):
            rows[path] = cells[1]
    return rows


def row_for(path: Path, rows: dict[str, str]) -> tuple[str, str]:
    """The layout row of the deepest folder listed that holds `path`."""
    relative = path.relative_to(ROOT).as_posix() + "/"
    held = [name for name in rows if name.endswith("/") and relative.startswith(name)]
    assert held, f"README.md's layout lists no folder holding {relative}"
    name = max(held, key=len)
    return name, rows[name]


def packages() -> list[str]:
    """Every package of the source as `path/`, less Django's plumbing: migrations, commands, and
    a `management` package holding nothing but its commands."""
    found = []
    for top in SOURCE_PACKAGES:
        for init in sorted((ROOT / top).rglob("__init__.py")):
            folder = init.parent
            parts = folder.relative_to(ROOT).parts
            if PLUMBING & set(parts):
                continue
            own = {p.name for p in folder.iterdir() if p.name != "__pycache__"}
            if folder.name == "management" and own <= {"__init__.py", "commands"}:
                continue
            found.append("/".join(parts) + "/")
    return found


def management_commands() -> list[tuple[str, Path]]:
    """Every management command of the project's installed apps: (name, its module)."""
    found = []
    for app in apps.get_app_configs():
        folder = Path(app.path) / "management" / "commands"
        inside = folder.is_relative_to(ROOT) and folder.relative_to(ROOT).parts[0]
        if inside not in SOURCE_PACKAGES:
            continue  # a library's app
        found += [(m.stem, m) for m in sorted(folder.glob("*.py")) if not m.stem.startswith("_")]
    return found


def runnable_benchmarks() -> list[str]:
    """The modules of benchmarks/ that run (`python -m benchmarks.NAME`)."""
    return sorted(
        module.stem
        for module in (ROOT / "benchmarks").glob("*.py")
        if 'if __name__ == "__main__":' in module.read_text(encoding="utf-8")
    )


def test_the_readme_layout_names_every_package():
    rows = layout()
    missing = [package for package in packages() if package not in rows]
    assert not missing, f"README.md's Layout table has no row for {missing}"


def test_the_readme_names_every_management_command_where_it_lives():
    rows, readme = layout(), README.read_text(encoding="utf-8")
    commands = management_commands()
    assert {"train", "runstack", "feedback"} <= {name for name, _ in commands}
    for name, module in commands:
        row, holds = row_for(module.parent, rows)
        assert f"`{name}`" in holds, f"README.md's layout row {row} does not name `{name}`"
        assert f"manage.py {name}" in readme, f"README.md shows no `manage.py {name}`"


def test_the_readme_layout_names_every_benchmark():
    holds = layout()["benchmarks/"]
    benchmarks = runnable_benchmarks()
    assert "load" in benchmarks
    missing = [name for name in benchmarks if f"`{name}`" not in holds]
    assert not missing, f"README.md's benchmarks/ row does not name {missing}"


def test_the_testing_doc_names_every_test_folder():
    text = TESTING.read_text(encoding="utf-8")
    folders = sorted(
        {test.parent for test in (ROOT / "tests").rglob("test_*.py")} - {ROOT / "tests"}
    )
    missing = [
        name
        for name in (folder.relative_to(ROOT).as_posix() for folder in folders)
        if f"`{name}`" not in text and f"`{name}/`" not in text
    ]
    assert not missing, f"docs/testing.md does not name {missing}"


def test_no_source_module_is_over_the_limit():
    long = {}
    for top in SOURCE_PACKAGES:
        for module in (ROOT / top).rglob("*.py"):
            lines = len(module.read_text(encoding="utf-8").splitlines())
            if lines > MAX_LINES:
                long[module.relative_to(ROOT).as_posix()] = lines
    assert not long, f"over {MAX_LINES} lines, split by what they hold: {long}"

"""`manage.py feedback` and the database's setup: the subcommands on SQLite and PostgreSQL,
committed migrations that match the models, `createsuperuser --noinput`, and a fresh data folder
that `runstack` migrates (through real `manage.py` processes)."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from torchvision.datasets import ImageFolder

from classifier.corrections.models import Correction, Status
from tests.corrections import postgres
from tests.helpers import REPO

pytestmark = pytest.mark.django_db(databases=postgres.DATABASES)


def feedback(*args: str, using: str) -> list[str]:
    out = io.StringIO()
    call_command("feedback", "--database", using, *args, stdout=out)
    return out.getvalue().splitlines()


def statuses(using: str) -> dict[int, str]:
    return dict(Correction.objects.using(using).values_list("pk", "status"))


def test_stats_prints_counts_by_status_and_label(store, using) -> None:
    a, _ = store(seed=1, label=7)
    store(seed=2, label=7)
    store(seed=3, label=2)
    Correction.objects.using(using).filter(pk=a.pk).update(status=Status.ACCEPTED)
    lines = feedback("stats", using=using)
    assert lines[:4] == ["total 3", "pending 2", "accepted 1", "rejected 0"]
    assert "label 7: 2 (pending 1, accepted 1, rejected 0)" in lines
    assert "label 2: 1 (pending 1, accepted 0, rejected 0)" in lines
    assert "label 0: 0 (pending 0, accepted 0, rejected 0)" in lines
    assert len(lines) == 4 + 10


def test_accept_and_reject_by_id(store, using) -> None:
    a, _ = store(seed=4)
    b, _ = store(seed=5)
    c, _ = store(seed=6)
    assert feedback("accept", str(a.pk), str(b.pk), using=using) == ["accepted 2 corrections"]
    assert feedback("reject", str(b.pk), using=using) == ["rejected 1 correction"]
    assert statuses(using) == {a.pk: "accepted", b.pk: "rejected", c.pk: "pending"}


def test_accept_all_takes_every_pending_one(store, using) -> None:
    a, _ = store(seed=7)
    b, _ = store(seed=8)
    feedback("reject", str(a.pk), using=using)
    assert feedback("accept", "--all", using=using) == ["accepted 1 correction"]
    assert statuses(using) == {a.pk: "rejected", b.pk: "accepted"}


def test_an_unknown_id_is_an_error_and_changes_nothing(store, using) -> None:
    a, _ = store(seed=9)
    with pytest.raises(CommandError, match=f"no correction with id {a.pk + 99}"):
        feedback("accept", str(a.pk), str(a.pk + 99), using=using)
    assert statuses(using) == {a.pk: "pending"}


def test_accept_needs_ids_or_all(using) -> None:
    with pytest.raises(CommandError):
        feedback("accept", using=using)
    with pytest.raises(CommandError):
        feedback("reject", using=using)


def test_export_writes_an_image_folder(store, using, tmp_path) -> None:
    a, _ = store(seed=10, label=5)
    store(seed=11, label=6)  # pending: not exported
    feedback("accept", str(a.pk), using=using)
    lines = feedback("export", str(tmp_path / "out"), using=using)
    assert lines[0] == f"exported 1 accepted correction to {tmp_path / 'out'}"
    assert "label 5: 1" in lines and "label 6: 0" in lines
    dataset = ImageFolder(str(tmp_path / "out"))
    assert dataset.classes == ["5"] and len(dataset) == 1
    pending = feedback("export", str(tmp_path / "p"), "--status", "pending", using=using)
    assert pending[0].startswith("exported 1 pending correction")
    with pytest.raises(CommandError, match="not an empty directory"):
        feedback("export", str(tmp_path / "out"), using=using)


def test_the_migrations_match_the_models() -> None:
    # Exits 1 (SystemExit) when a model change has no migration.
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_createsuperuser_without_prompts(using, monkeypatch) -> None:
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "reviewer")
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "reviewer@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long test password")
    call_command("createsuperuser", interactive=False, database=using, stdout=io.StringIO())
    user = get_user_model().objects.db_manager(using).get(username="reviewer")
    assert user.is_superuser and user.is_staff
    assert user.check_password("a long test password")


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.mark.slow
def test_a_fresh_data_folder_is_migrated_and_an_admin_can_be_created(tmp_path: Path) -> None:
    """What `make run` does on a fresh checkout: SQLite in the data folder by default, the folder
    created and migrated by runstack; then `createsuperuser --noinput` and `feedback stats`."""
    data_dir = tmp_path / "fresh" / "data"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(
        DIGITS_DATA_DIR=str(data_dir),
        DJANGO_SETTINGS_MODULE="digits_site.settings",
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_EMAIL="admin@example.com",
        DJANGO_SUPERUSER_PASSWORD="another long password",
    )
    migrate = [
        "-c",
        "import django; django.setup(); "
        "from classifier.management.commands.runstack import Command; Command()._migrate()",
    ]
    done = subprocess.run(
        [sys.executable, *migrate], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Database up to date (sqlite3)" in done.stdout
    database = data_dir / "digits.sqlite3"
    assert database.is_file()
    manage("createsuperuser", "--noinput", env=env)
    with sqlite3.connect(database) as db:
        assert db.execute("select username, is_superuser from auth_user").fetchall() == [
            ("admin", 1)
        ]
        tables = {row[0] for row in db.execute("select name from sqlite_master")}
    assert "corrections_correction" in tables
    assert manage("feedback", "stats", env=env).stdout.splitlines()[0] == "total 0"
    # DATABASE_URL wins over the default.
    other = tmp_path / "other.sqlite3"
    manage("migrate", "--noinput", "-v", "0", env={**env, "DATABASE_URL": f"sqlite:///{other}"})
    assert other.is_file()

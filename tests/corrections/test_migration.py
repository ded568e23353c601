"""Moving the corrections table from the `classifier` app to `corrections` keeps every row and
every permission granted on it, on SQLite and on the real PostgreSQL; going back keeps them too.

Each test takes the test database back to where a database made before the move stands
(classifier 0002, no `corrections` migration), fills it through the historical models, migrates
it as `manage.py migrate` does (MigrationExecutor) and reads the rows through today's model. It
leaves the database fully migrated, whatever happens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from django.apps.registry import Apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.contenttypes.models import ContentType
from django.db import connections
from django.db.migrations.executor import MigrationExecutor

from classifier.corrections import store
from classifier.corrections.models import Correction, Status
from tests.corrections import postgres

pytestmark = pytest.mark.django_db(transaction=True, databases=postgres.DATABASES)

BEFORE = [("classifier", "0002_correction_ink"), ("corrections", None)]
OLD_TABLE, NEW_TABLE = "classifier_correction", "corrections_correction"
# The fields of a correction, as the table's columns hold them.
FIELDS = [field.attname for field in Correction._meta.concrete_fields]


def migrate(using: str, targets: list[tuple[str, str | None]] | None = None) -> Apps:
    """Migrate database `using` to `targets` (None: every app's latest); the models as they are
    there."""
    executor = MigrationExecutor(connections[using])
    leaves = executor.loader.graph.leaf_nodes()
    targets = leaves if targets is None else targets
    executor.migrate(targets)
    ContentType.objects.clear_cache()
    # Every other app at its latest (auth and contenttypes among them), these at their targets.
    moved = {app for app, _ in targets}
    nodes = [n for n in leaves if n[0] not in moved] + [t for t in targets if t[1] is not None]
    return executor.loader.project_state(nodes).apps


@pytest.fixture
def before_the_move(using: str) -> Iterator[Apps]:
    """Database `using` as before the move (its historical models); fully migrated after."""
    try:
        yield migrate(using, BEFORE)
    finally:
        migrate(using)


def tables(using: str) -> set[str]:
    with connections[using].cursor() as cursor:
        return set(connections[using].introspection.table_names(cursor))


def as_stored(row: dict[str, Any]) -> dict[str, Any]:
    """A row's values, comparable across backends (PostgreSQL reads binary as memoryview)."""
    return {k: bytes(v) if isinstance(v, memoryview) else v for k, v in row.items()}


def stored_rows(model: Any, using: str) -> list[dict[str, Any]]:
    rows = model.objects.using(using).order_by("id").values(*FIELDS)
    return [as_stored(row) for row in rows]


def fill(model: Any, using: str) -> None:
    """Corrections of every kind: an image and ink, each status, with and without what the
    client said it was shown."""
    rng = np.random.default_rng(7)
    reviewed = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    kinds = [
        {"status": Status.PENDING, "client_predicted": 1, "client_model": "digits-cnn-old"},
        {"status": Status.ACCEPTED, "reviewed": reviewed, "ink": [[[1.5, 2.0], [3.0, 4.25]]]},
        {"status": Status.REJECTED, "reviewed": reviewed, "client_predicted": None},
        {
            "status": Status.ACCEPTED,
            "reviewed": reviewed,
            "ink": [[[0, 0, 0], [10, 12, 16.5]], [[5, 5, 40]]],
            "client_model": None,
        },
        {"status": Status.PENDING, "label": 0, "predicted": 9, "confidence": 0.125},
    ]
    for seed, kind in enumerate(kinds):
        pixels = rng.integers(0, 256, (28, 28), dtype=np.uint8).tobytes()
        ink = kind.get("ink")
        values = {
            "image": b"" if ink else store.png_bytes(pixels),
            "media_type": "" if ink else "image/png",
            "image28": pixels,
            "image_hash": hashlib.sha256(pixels).hexdigest(),
            "label": 7,
            "predicted": 1,
            "confidence": 0.875,
            "probabilities": [0.5 / 9] * 9 + [0.5],
            "model_version": f"digits-cnn-{seed}",
            "client_predicted": 2,
            "client_model": "digits-cnn-0",
            "client_hash": f"{seed:064x}",
            **kind,
        }
        model.objects.using(using).create(**values)


def grant(apps: Apps, using: str, app_label: str) -> Any:
    """A staff user allowed to change corrections, and (through a group) to view them."""
    content_type, _ = (
        apps.get_model("contenttypes", "ContentType")
        .objects.using(using)
        .get_or_create(app_label=app_label, model="correction")
    )
    Permission_ = apps.get_model("auth", "Permission")

    def permission(action: str) -> Any:
        return Permission_.objects.using(using).get_or_create(
            codename=f"{action}_correction",
            content_type=content_type,
            defaults={"name": f"Can {action} correction"},
        )[0]

    user = (
        apps.get_model("auth", "User")
        .objects.using(using)
        .create(username="reviewer", is_staff=True)
    )
    user.user_permissions.add(permission("change"))
    group = apps.get_model("auth", "Group").objects.using(using).create(name="reviewers")
    group.permissions.add(permission("view"))
    user.groups.add(group)
    return content_type


def test_the_move_keeps_every_row_and_every_permission(before_the_move: Apps, using) -> None:
    assert OLD_TABLE in tables(using) and NEW_TABLE not in tables(using)
    old_model = before_the_move.get_model("classifier", "Correction")
    fill(old_model, using)
    before = stored_rows(old_model, using)
    content_type = grant(before_the_move, using, "classifier")

    migrate(using)

    assert NEW_TABLE in tables(using) and OLD_TABLE not in tables(using)
    after = stored_rows(Correction, using)
    assert after == before
    assert len(after) == 5
    assert {row["status"] for row in after} == set(Status.values)
    assert sum(row["ink"] is not None for row in after) == 2
    # The rows read as the store reads them: accepted ones train, ink drawn afresh.
    accepted = store.accepted_arrays(using=using)
    assert sorted(accepted.ids) == [r["id"] for r in before if r["status"] == Status.ACCEPTED]
    assert store.stats(using=using)["by_status"] == {"pending": 2, "accepted": 2, "rejected": 1}
    # The content type moved, keeping its id: the grants point at it still.
    moved = ContentType.objects.db_manager(using).get_for_model(Correction)
    assert (moved.pk, moved.app_label) == (content_type.pk, "corrections")
    assert not ContentType.objects.using(using).filter(app_label="classifier").exists()
    user = get_user_model().objects.using(using).get(username="reviewer")
    assert user.has_perm("corrections.change_correction")
    # Through the group (asked of `using`: ModelBackend reads group grants from `default`).
    by_group = Permission.objects.using(using).filter(group__user=user)
    assert list(by_group.values_list("content_type__app_label", "codename")) == [
        ("corrections", "view_correction")
    ]
    if using == "default":
        assert user.has_perm("corrections.view_correction")
    assert not user.has_perm("corrections.delete_correction")
    assert not user.has_perm("classifier.change_correction")
    assert Permission.objects.using(using).filter(content_type=moved).count() == 4
    # New rows follow on from the old ones (the id sequence moved with the table).
    row, created = store.save_correction(
        image=b"",
        media_type="",
        ink=[[[0.0, 0.0], [1.0, 1.0]]],
        image28=np.full((28, 28), 3, dtype=np.uint8),
        label=4,
        predicted=4,
        confidence=0.99,
        probabilities=[0.0] * 4 + [1.0] + [0.0] * 5,
        model_version="digits-cnn-new",
        client_predicted=None,
        client_model=None,
        client_hash="b" * 64,
        using=using,
    )
    assert created and row.pk > max(r["id"] for r in before)


def test_a_content_type_made_early_for_the_new_label_gives_way(
    before_the_move: Apps, using
) -> None:
    content_type = grant(before_the_move, using, "classifier")
    stray = (
        before_the_move.get_model("contenttypes", "ContentType")
        .objects.using(using)
        .create(app_label="corrections", model="correction")
    )

    migrate(using)

    user = get_user_model().objects.using(using).get(username="reviewer")
    assert user.has_perm("corrections.change_correction")
    moved = ContentType.objects.db_manager(using).get_for_model(Correction)
    assert moved.pk == content_type.pk
    # The stray one is left stale under the old label, for `remove_stale_contenttypes`.
    left = ContentType.objects.using(using).get(pk=stray.pk)
    assert (left.app_label, left.model) == ("classifier", "correction")


def test_migrating_back_keeps_the_rows_and_permissions(using) -> None:
    try:
        migrate(using)
        fill(Correction, using)
        before = stored_rows(Correction, using)
        content_type = ContentType.objects.db_manager(using).get_for_model(Correction)
        user = get_user_model().objects.using(using).create(username="reviewer", is_staff=True)
        user.user_permissions.add(
            Permission.objects.using(using).get(
                content_type=content_type, codename="change_correction"
            )
        )

        old = migrate(using, BEFORE)

        assert OLD_TABLE in tables(using) and NEW_TABLE not in tables(using)
        assert stored_rows(old.get_model("classifier", "Correction"), using) == before
        ContentTypeThen = old.get_model("contenttypes", "ContentType")
        back = ContentTypeThen.objects.using(using).get(pk=content_type.pk)
        assert (back.app_label, back.model) == ("classifier", "correction")
        granted = old.get_model("auth", "User").objects.using(using).get(username="reviewer")
        assert list(
            granted.user_permissions.values_list("content_type__app_label", "codename")
        ) == [("classifier", "change_correction")]

        # And forward again: nothing lost either way.
        migrate(using)
        assert stored_rows(Correction, using) == before
        assert (
            get_user_model()
            .objects.using(using)
            .get(pk=user.pk)
            .has_perm("corrections.change_correction")
        )
    finally:
        migrate(using)


def test_a_fresh_database_has_the_table_under_its_new_name(using) -> None:
    # The test database was made from nothing by the migrations, as a new deployment's is.
    assert NEW_TABLE in tables(using) and OLD_TABLE not in tables(using)
    executor = MigrationExecutor(connections[using])
    assert not executor.migration_plan(executor.loader.graph.leaf_nodes())
    applied = executor.loader.applied_migrations
    assert ("classifier", "0003_move_correction_to_corrections") in applied
    assert ("corrections", "0001_initial") in applied
    assert ContentType.objects.db_manager(using).get_for_model(Correction).app_label == (
        "corrections"
    )

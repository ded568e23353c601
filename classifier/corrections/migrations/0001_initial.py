"""The corrections table, moved here from the `classifier` app with every row it holds.

Databases made before the move have the table `classifier_correction`, created by
classifier/migrations/0001 and 0002; classifier 0003 took the model out of that app's state
without touching the table. Here the model enters this app's state, and in the database the
table is renamed to `corrections_correction` (nothing is copied, so every row, id and index stays)
and the content type moves from app label `classifier` to `corrections`, so the permissions
granted on it (which point at the content type) stay granted. A fresh database runs the same
steps: classifier 0001-0003 create the table, this renames it.

Reversible: going back renames the table and moves the content type back.
"""

from django.db import migrations, models

OLD_TABLE = "classifier_correction"


def fields() -> list[tuple[str, models.Field]]:
    # Those of classifier 0001 and 0002: the table's columns, unchanged.
    return [
        (
            "id",
            models.BigAutoField(
                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
            ),
        ),
        ("image", models.BinaryField(max_length=5242880)),
        ("media_type", models.CharField(max_length=32)),
        (
            "ink",
            models.JSONField(blank=True, help_text="the strokes, when sent as ink", null=True),
        ),
        ("image28", models.BinaryField(max_length=784)),
        ("image_hash", models.CharField(help_text="sha256 of image28", max_length=64, unique=True)),
        ("label", models.PositiveSmallIntegerField(help_text="the digit the user says they drew")),
        ("predicted", models.PositiveSmallIntegerField()),
        ("confidence", models.FloatField()),
        (
            "probabilities",
            models.JSONField(help_text="the model's probability of each digit, 0-9"),
        ),
        ("model_version", models.CharField(db_index=True, max_length=128)),
        ("client_predicted", models.PositiveSmallIntegerField(blank=True, null=True)),
        ("client_model", models.CharField(blank=True, max_length=128, null=True)),
        ("client_hash", models.CharField(max_length=64)),
        ("created", models.DateTimeField(auto_now_add=True, db_index=True)),
        (
            "status",
            models.CharField(
                choices=[
                    ("pending", "pending"),
                    ("accepted", "accepted"),
                    ("rejected", "rejected"),
                ],
                db_index=True,
                default="pending",
                max_length=8,
            ),
        ),
        ("reviewed", models.DateTimeField(blank=True, null=True)),
    ]


def options(**extra: object) -> dict[str, object]:
    return {
        "ordering": ("-created", "-id"),
        "constraints": [
            models.CheckConstraint(
                condition=models.Q(("label__gte", 0), ("label__lte", 9)),
                name="correction_label_is_a_digit",
            ),
            models.CheckConstraint(
                condition=models.Q(("predicted__gte", 0), ("predicted__lte", 9)),
                name="correction_predicted_is_a_digit",
            ),
            models.CheckConstraint(
                condition=models.Q(
                    ("client_predicted__isnull", True),
                    models.Q(("client_predicted__gte", 0), ("client_predicted__lte", 9)),
                    _connector="OR",
                ),
                name="correction_client_predicted_is_a_digit",
            ),
        ],
        **extra,
    }


def move_content_type(old: str, new: str):
    """Give the Correction content type of app label `old` the label `new`, keeping its id (and
    so every permission and admin log entry pointing at it)."""

    def move(apps, schema_editor) -> None:
        ContentType = apps.get_model("contenttypes", "ContentType")
        rows = ContentType.objects.using(schema_editor.connection.alias)
        moving = rows.filter(app_label=old, model="correction").first()
        if moving is None:  # a fresh database: post_migrate creates the content type later
            return
        stray = rows.filter(app_label=new, model="correction").first()
        if stray is not None:
            # A content type made for `new` before this ran (none is, by `migrate`) holds no
            # permission granted before the move: it takes the old label, left stale for
            # `remove_stale_contenttypes`, and the one with the grants takes the new label.
            stray.model = "correction-stale"
            stray.save(update_fields=["model"])
        moving.app_label = new
        moving.save(update_fields=["app_label"])
        if stray is not None:
            stray.app_label, stray.model = old, "correction"
            stray.save(update_fields=["app_label", "model"])

    return move


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("classifier", "0003_move_correction_to_corrections"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            # The model as this app has it from now on.
            state_operations=[
                migrations.CreateModel(name="Correction", fields=fields(), options=options())
            ],
            database_operations=[
                # The table as it is (classifier's), known to this app's state only ...
                migrations.SeparateDatabaseAndState(
                    state_operations=[
                        migrations.CreateModel(
                            name="Correction", fields=fields(), options=options(db_table=OLD_TABLE)
                        )
                    ],
                ),
                # ... renamed to this app's name for it: its rows, ids and indexes go with it.
                migrations.AlterModelTable(name="correction", table="corrections_correction"),
            ],
        ),
        migrations.RunPython(
            move_content_type("classifier", "corrections"),
            move_content_type("corrections", "classifier"),
            elidable=False,
        ),
    ]

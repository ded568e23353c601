"""The Correction model leaves this app for `corrections` (classifier.corrections): removed from
this app's migration state only. The table and its rows stay; corrections' 0001 (which depends on
this one) takes the model into its own state and renames the table (docs/decisions/
0010-corrections-app.md). This app keeps 0001 and 0002 so that databases made before the move
migrate forward from where they are."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("classifier", "0002_correction_ink"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Correction")],
            database_operations=[],
        ),
    ]

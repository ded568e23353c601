from django.apps import AppConfig


class CorrectionsConfig(AppConfig):
    """The users' corrections: the table, its admin, and the commands that review them and
    retrain on them (docs/feedback.md, docs/decisions/0010-corrections-app.md)."""

    name = "classifier.corrections"
    label = "corrections"
    verbose_name = "Corrections"

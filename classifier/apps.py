from django.apps import AppConfig


class ClassifierConfig(AppConfig):
    """The commands train, train_detector, evaluate and runstack (classifier/management/), and
    the corrections table's migrations from before it moved to the `corrections` app
    (docs/decisions/0010-corrections-app.md). It has no models."""

    name = "classifier"

"""The Celery app, as in Celery's Django example (proj/celery.py).

https://docs.celeryq.dev/en/stable/django/first-steps-with-django.html
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digits_site.settings")

app = Celery("digits_site")
# The default app in every thread (Celery's Django fixup does this too; the service relies on
# it): classifier.serving reaches it as `celery.current_app` and its task is a `shared_task`, so
# no service module imports this one (the layers in pyproject.toml).
app.set_default()
# Every CELERY_* setting in digits_site/settings.py configures Celery.
app.config_from_object("django.conf:settings", namespace="CELERY")
# The worker finds its task in classifier/serving/tasks.py; the web process publishes by name
# (classifier.serving.enqueue) and never imports it.
app.autodiscover_tasks(["classifier.serving"])

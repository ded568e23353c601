from django.contrib import admin
from django.urls import include, path

from classifier.serving import health, status

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", status.prometheus, name="metrics"),
    path("status/", status.status_page, name="status"),
    path("status.json", status.status_json, name="status-json"),
    # Reviewing the users' corrections (docs/feedback.md); `manage.py createsuperuser` first.
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
]

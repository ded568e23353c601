from django.contrib import admin
from django.urls import include, path

from digits_site import health, metrics

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.prometheus, name="metrics"),
    path("status/", metrics.status_page, name="status"),
    path("status.json", metrics.status_json, name="status-json"),
    # Reviewing the users' corrections (docs/feedback.md); `manage.py createsuperuser` first.
    path("admin/", admin.site.urls),
    path("", include("frontend.urls")),
]

"""Reviewing corrections in the Django admin (/admin/): each drawing's 28x28 thumbnail, what the
user said beside what the model said, filters, and bulk accept / reject (docs/feedback.md).

Corrections come from users only: the admin cannot add one, and what was sent and what the model
answered are read-only; a reviewer changes the status (or, seeing a mislabelled drawing, the
label).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from classifier.corrections import store as corrections
from classifier.corrections.models import Correction, Status

# Shown at twice the model's size; `pixelated` keeps the pixels the model saw sharp.
THUMBNAIL = (
    '<img src="{}" width="56" height="56" alt="{}" '
    'style="image-rendering: pixelated; background: #000">'
)


@admin.register(Correction)
class CorrectionAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "thumbnail",
        "label",
        "model_answer",
        "agrees",
        "model_version",
        "status",
        "created",
    )
    list_display_links = ("id", "thumbnail")
    list_filter = ("status", "label", "model_version")
    date_hierarchy = "created"
    list_per_page = 100
    actions = ("accept", "reject")
    fields = (
        "thumbnail",
        "sent_image",
        "label",
        "status",
        "model_answer",
        "probabilities",
        "model_version",
        "client_predicted",
        "client_model",
        "client_hash",
        "media_type",
        "image_hash",
        "created",
        "reviewed",
    )
    readonly_fields = tuple(name for name in fields if name not in ("label", "status"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Correction, form: Any, change: bool) -> None:
        # A status set on the form is a review, as it is through the bulk actions.
        if "status" in form.changed_data:
            obj.reviewed = None if obj.status == Status.PENDING else timezone.now()
        super().save_model(request, obj, form, change)

    @admin.display(description="28x28")
    def thumbnail(self, obj: Correction) -> str:
        url = corrections.thumbnail_data_url(bytes(obj.image28))
        return format_html(THUMBNAIL, url, f"drawn {obj.label}")

    @admin.display(description="as sent")
    def sent_image(self, obj: Correction) -> str:
        if obj.ink:
            # Numbers only: ink_svg writes the checked coordinates, nothing else of the client's.
            return mark_safe(corrections.ink_svg(obj.ink))
        url = corrections.image_data_url(obj)
        if url is None:
            return "(not shown: unknown media type)"
        return format_html('<img src="{}" style="max-width: 280px" alt="as sent">', url)

    @admin.display(description="model said", ordering="predicted")
    def model_answer(self, obj: Correction) -> str:
        return f"{obj.predicted} ({obj.confidence:.0%})"

    @admin.display(description="agrees", boolean=True)
    def agrees(self, obj: Correction) -> bool:
        return obj.label == obj.predicted

    def _set(self, request: HttpRequest, queryset: QuerySet[Correction], status: str) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        changed = corrections.set_status(ids, status, using=queryset.db)
        self.message_user(request, f"{changed} correction(s) marked {status}.", messages.SUCCESS)

    @admin.action(description="Accept the selected corrections (they may train)")
    def accept(self, request: HttpRequest, queryset: QuerySet[Correction]) -> None:
        self._set(request, queryset, Status.ACCEPTED)

    @admin.action(description="Reject the selected corrections")
    def reject(self, request: HttpRequest, queryset: QuerySet[Correction]) -> None:
        self._set(request, queryset, Status.REJECTED)

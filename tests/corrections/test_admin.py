"""Reviewing corrections in the Django admin, as a superuser through Django's test client: the
list shows each drawing's thumbnail beside the label and the model's answer, filters by status,
label and model, and the bulk actions change the status."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from classifier.corrections.models import Correction, Status

CHANGELIST = reverse("admin:corrections_correction_changelist")

pytestmark = pytest.mark.django_db


@pytest.fixture
def using() -> str:
    """The admin works on the default database."""
    return "default"


@pytest.fixture
def rows(store) -> list[Correction]:
    return [
        store(seed=1, label=7, predicted=1, confidence=0.91, model_version="v-one")[0],
        store(seed=2, label=4, predicted=9, confidence=0.55, model_version="v-two")[0],
        store(seed=3, label=3, predicted=3, confidence=0.99, model_version="v-two")[0],
    ]


def listed_ids(html: str) -> set[int]:
    return {int(pk) for pk in re.findall(r'name="_selected_action" value="(\d+)"', html)}


def test_the_admin_needs_a_login(client: Client) -> None:
    response = client.get(CHANGELIST)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]


def test_the_list_shows_thumbnails_beside_label_and_answer(admin_client: Client, rows) -> None:
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert listed_ids(html) == {row.pk for row in rows}
    assert html.count('src="data:image/png;base64,') == len(rows)
    assert "image-rendering: pixelated" in html
    # The user's label and the model's answer with its confidence, side by side.
    assert re.search(r'field-label">7</td>\s*<td class="field-model_answer">1 \(91%\)', html)
    assert re.search(r'field-label">4</td>\s*<td class="field-model_answer">9 \(55%\)', html)
    for title in ("status", "label", "model version"):
        assert f'data-filter-title="{title}"' in html
    # No add button: corrections come from users only.
    assert reverse("admin:corrections_correction_add") not in html


def test_the_filters_narrow_the_list(admin_client: Client, rows) -> None:
    one, two, three = rows
    Correction.objects.filter(pk=one.pk).update(status=Status.ACCEPTED)
    by_status = admin_client.get(CHANGELIST, {"status__exact": "accepted"}).content.decode()
    assert listed_ids(by_status) == {one.pk}
    by_label = admin_client.get(CHANGELIST, {"label__exact": "4"}).content.decode()
    assert listed_ids(by_label) == {two.pk}
    by_model = admin_client.get(CHANGELIST, {"model_version__exact": "v-two"}).content.decode()
    assert listed_ids(by_model) == {two.pk, three.pk}


@pytest.mark.parametrize(("action", "status"), [("accept", "accepted"), ("reject", "rejected")])
def test_the_bulk_actions_change_the_status(admin_client: Client, rows, action, status) -> None:
    one, two, three = rows
    response = admin_client.post(
        CHANGELIST, {"action": action, "_selected_action": [one.pk, three.pk]}, follow=True
    )
    assert response.status_code == 200
    assert f"2 correction(s) marked {status}." in response.content.decode()
    after = {row.pk: row for row in Correction.objects.all()}
    assert after[one.pk].status == after[three.pk].status == status
    assert after[one.pk].reviewed is not None
    assert after[two.pk].status == Status.PENDING and after[two.pk].reviewed is None


def test_the_change_page_shows_both_images_and_keeps_them_read_only(
    admin_client: Client, rows
) -> None:
    one = rows[0]
    url = reverse("admin:corrections_correction_change", args=[one.pk])
    html = admin_client.get(url).content.decode()
    assert html.count('src="data:image/png;base64,') == 2  # the 28x28 and the image as sent
    assert 'name="label"' in html and 'name="status"' in html
    assert 'name="predicted"' not in html and 'name="model_version"' not in html
    response = admin_client.post(url, {"label": "1", "status": "accepted"})
    assert response.status_code == 302
    changed = Correction.objects.get(pk=one.pk)
    assert (changed.label, changed.status, changed.predicted) == (1, "accepted", 1)
    assert changed.reviewed is not None

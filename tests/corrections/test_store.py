"""Storing corrections and reviewing them (classifier.corrections.store), on SQLite and on the real
PostgreSQL: the same drawing counts once, labels are digits, statuses change as asked and only
as asked, and the counts add up."""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
import pytest
from django.db import IntegrityError, transaction
from PIL import Image

from classifier.corrections import store as corrections
from classifier.corrections.models import Correction, Status
from classifier.ml.input import MAX_IMAGE_BYTES
from tests.corrections import postgres

pytestmark = pytest.mark.django_db(databases=postgres.DATABASES)


def test_a_correction_is_stored_with_what_the_model_said(store, using, drawing) -> None:
    row, created = store(seed=1, label=7, predicted=1, confidence=0.91, client_predicted=None)
    assert created is True
    stored = Correction.objects.using(using).get(pk=row.pk)
    assert (stored.label, stored.predicted, stored.client_predicted) == (7, 1, None)
    assert stored.confidence == pytest.approx(0.91)
    assert stored.probabilities[1] == pytest.approx(0.91) and len(stored.probabilities) == 10
    assert stored.status == Status.PENDING and stored.reviewed is None
    assert stored.created is not None
    # The pixels the model saw come back byte for byte, and the hash is theirs.
    assert bytes(stored.image28) == drawing(1).tobytes()
    assert stored.image_hash == hashlib.sha256(drawing(1).tobytes()).hexdigest()
    assert bytes(stored.image).startswith(b"\x89PNG")
    assert stored.client_hash == "a" * 64


def test_the_same_drawing_counts_once(store, using) -> None:
    first, created = store(seed=2, label=7, client_hash="1" * 64)
    # Sent again, by another client, with another label: the first row stands.
    again, created_again = store(seed=2, label=4, client_hash="2" * 64)
    assert created and not created_again
    assert again.pk == first.pk and again.label == 7
    other, created_other = store(seed=3, label=4)
    assert created_other and other.pk != first.pk
    assert Correction.objects.using(using).count() == 2


def test_the_hash_is_of_the_pixels_not_of_the_array_layout(store, using, drawing) -> None:
    """A column-major copy holds the same pixels: the same drawing."""
    image = drawing(4)
    _, created = store(image28=image)
    _, created_again = store(image28=np.asfortranarray(image))
    assert created and not created_again


@pytest.mark.parametrize("label", [-1, 10, True, "7", 7.0, None])
def test_a_label_that_is_not_a_digit_is_refused(store, using, label) -> None:
    with pytest.raises(ValueError, match="label must be a digit"):
        store(seed=5, label=label)
    assert not Correction.objects.using(using).exists()


@pytest.mark.parametrize("label", [0, 9])
def test_the_bounds_are_digits(store, label) -> None:
    row, created = store(seed=6, label=label)
    assert created and row.label == label


def test_the_database_itself_refuses_a_label_out_of_bounds(store, using) -> None:
    """The check constraint holds for writes that bypass save_correction (the admin, a shell)."""
    row, _ = store(seed=7)
    with pytest.raises(IntegrityError), transaction.atomic(using=using):
        Correction.objects.using(using).filter(pk=row.pk).update(label=10)
    assert Correction.objects.using(using).get(pk=row.pk).label == 7


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"predicted": 10}, "predicted must be a digit"),
        ({"client_predicted": -1}, "client_predicted must be a digit"),
        ({"image": b""}, "image must be"),
        ({"image": b"x" * (MAX_IMAGE_BYTES + 1)}, "image must be"),
        ({"media_type": "image/svg+xml"}, "media_type"),
        ({"probabilities": [0.1] * 9}, "probabilities must hold 10"),
        ({"model_version": "v" * 129}, "model_version is longer"),
        ({"image28": np.zeros((28, 27), np.uint8)}, "28x28 uint8"),
        ({"image28": np.zeros((28, 28), np.float32)}, "28x28 uint8"),
    ],
)
def test_anything_else_out_of_bounds_is_refused(store, using, fields, message) -> None:
    with pytest.raises(ValueError, match=message):
        store(seed=8, **fields)
    assert not Correction.objects.using(using).exists()


def test_the_largest_image_allowed_is_stored(store, using) -> None:
    row, created = store(seed=9, image=b"\x89PNG" + b"x" * (MAX_IMAGE_BYTES - 4))
    assert created
    assert len(bytes(Correction.objects.using(using).get(pk=row.pk).image)) == MAX_IMAGE_BYTES


def test_status_changes_by_id(store, using) -> None:
    a, _ = store(seed=10)
    b, _ = store(seed=11)
    c, _ = store(seed=12)
    assert corrections.set_status([a.pk, b.pk], Status.ACCEPTED, using=using) == 2
    assert corrections.set_status([b.pk], Status.REJECTED, using=using) == 1
    rows = {row.pk: row for row in Correction.objects.using(using).all()}
    assert rows[a.pk].status == Status.ACCEPTED and rows[a.pk].reviewed is not None
    assert rows[b.pk].status == Status.REJECTED and rows[b.pk].reviewed is not None
    assert rows[c.pk].status == Status.PENDING and rows[c.pk].reviewed is None
    # Back to pending: no longer reviewed.
    corrections.set_status([a.pk], Status.PENDING, using=using)
    assert Correction.objects.using(using).get(pk=a.pk).reviewed is None


def test_accepting_all_takes_the_pending_ones_only(store, using) -> None:
    a, _ = store(seed=13)
    b, _ = store(seed=14)
    c, _ = store(seed=15)
    corrections.set_status([a.pk], Status.REJECTED, using=using)
    assert corrections.set_status(None, Status.ACCEPTED, using=using) == 2
    statuses = dict(Correction.objects.using(using).values_list("pk", "status"))
    assert statuses == {a.pk: "rejected", b.pk: "accepted", c.pk: "accepted"}


def test_an_unknown_id_changes_nothing(store, using) -> None:
    a, _ = store(seed=16)
    missing = a.pk + 1000
    with pytest.raises(corrections.UnknownCorrections) as caught:
        corrections.set_status([a.pk, missing], Status.ACCEPTED, using=using)
    assert caught.value.missing == [missing]
    assert Correction.objects.using(using).get(pk=a.pk).status == Status.PENDING


def test_an_unknown_status_is_refused(store, using) -> None:
    a, _ = store(seed=17)
    with pytest.raises(ValueError, match="status must be one of"):
        corrections.set_status([a.pk], "maybe", using=using)


def test_stats_count_by_status_and_label(store, using) -> None:
    assert corrections.stats(using=using)["total"] == 0
    sevens = [store(seed=20 + i, label=7)[0] for i in range(3)]
    four, _ = store(seed=30, label=4)
    store(seed=20, label=7)  # a duplicate: not counted again
    corrections.set_status([sevens[0].pk], Status.ACCEPTED, using=using)
    corrections.set_status([four.pk], Status.REJECTED, using=using)
    counts = corrections.stats(using=using)
    assert counts["total"] == 4
    assert counts["by_status"] == {"pending": 2, "accepted": 1, "rejected": 1}
    assert counts["by_label"][7] == {"pending": 2, "accepted": 1, "rejected": 0}
    assert counts["by_label"][4] == {"pending": 0, "accepted": 0, "rejected": 1}
    assert set(counts["by_label"]) == set(range(10))
    assert sum(sum(by.values()) for by in counts["by_label"].values()) == 4


def test_thumbnails_are_the_stored_pixels(drawing) -> None:
    url = corrections.thumbnail_data_url(drawing(40).tobytes())
    assert url.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert image.size == (28, 28) and image.mode == "L"
    assert np.array_equal(np.asarray(image), drawing(40))

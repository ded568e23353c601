"""The service's one table: the corrections users send when the model got their digit wrong (or
confirm when it got it right). docs/feedback.md says what is kept and why.

Rows are written by the inference workers (classifier.corrections.store.save_correction),
reviewed in the admin or with `manage.py feedback`, and only `accepted` ones are ever exported
for training.
"""

from __future__ import annotations

from typing import cast

from django.db import models

from classifier.ml.input import IMAGE_SIZE, MAX_IMAGE_BYTES
from classifier.ml.input import MAX_MODEL_LENGTH as MAX_MODEL_CHARS

# The 28x28 preprocessed image, one byte a pixel.
IMAGE28_BYTES = IMAGE_SIZE * IMAGE_SIZE


class Status(models.TextChoices):
    # Nothing trains on a correction until a person accepts it: a pending one may be a mistake
    # or a poisoning attempt.
    # Django's metaclass makes each member its value, a str (the label second); the casts say
    # so to the type checker, which reads Django without its stubs (they change nothing here).
    PENDING = cast(str, ("pending", "pending"))
    ACCEPTED = cast(str, ("accepted", "accepted"))
    REJECTED = cast(str, ("rejected", "rejected"))


def _digit(field: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=models.Q(**{f"{field}__gte": 0, f"{field}__lte": 9}),
        name=f"correction_{field}_is_a_digit",
    )


class Correction(models.Model):
    """One image a user labelled, with what the model said about it."""

    # The image as the client sent it (decoded from its data URL), within the service's limits.
    image = models.BinaryField(max_length=MAX_IMAGE_BYTES)
    media_type = models.CharField(max_length=32)
    # The strokes as the client sent them (classifier.ml.ink: strokes of [x, y] or [x, y, t]),
    # when it sent ink rather than an image; then `image` is empty. Retraining rasterizes them
    # afresh, so a correction keeps what the person drew, not only one picture of it.
    ink = models.JSONField(null=True, blank=True, help_text="the strokes, when sent as ink")
    # What the model saw: the 28x28 uint8 image (white ink on black), row by row. Training and
    # export use it; its hash makes the same drawing sent many times count once.
    image28 = models.BinaryField(max_length=IMAGE28_BYTES)
    image_hash = models.CharField(max_length=64, unique=True, help_text="sha256 of image28")
    label = models.PositiveSmallIntegerField(help_text="the digit the user says they drew")
    # What the model answered (scored again by the worker that stored it).
    predicted = models.PositiveSmallIntegerField()
    confidence = models.FloatField()
    probabilities = models.JSONField(help_text="the model's probability of each digit, 0-9")
    model_version = models.CharField(max_length=MAX_MODEL_CHARS, db_index=True)
    # What the client says it was shown (it may have come from another model version); null when
    # the client did not say, as the protocol's null does.
    client_predicted = models.PositiveSmallIntegerField(null=True, blank=True)
    client_model = models.CharField(  # noqa: DJ001 (null: not sent, as in the protocol)
        max_length=MAX_MODEL_CHARS, null=True, blank=True
    )
    # A salted sha256 of the client's address (DIGITS_FEEDBACK_SALT), never the address.
    client_hash = models.CharField(max_length=64)
    created = models.DateTimeField(auto_now_add=True, db_index=True)
    status = models.CharField(
        max_length=8, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    reviewed = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created", "-id")
        constraints = (
            _digit("label"),
            _digit("predicted"),
            models.CheckConstraint(
                condition=models.Q(client_predicted__isnull=True)
                | models.Q(client_predicted__gte=0, client_predicted__lte=9),
                name="correction_client_predicted_is_a_digit",
            ),
        )

    def __str__(self) -> str:
        return f"correction {self.pk}: drawn {self.label}, model said {self.predicted}"

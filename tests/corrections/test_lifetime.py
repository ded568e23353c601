"""Corrections have a lifetime and a cap: `feedback purge` deletes the old ones (only those), one
client can store only so many an hour (refused with `feedback_limit`, counted in metrics), and
the page says what a click stores. On SQLite and PostgreSQL, as the other corrections tests."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from prometheus_client import generate_latest

from classifier.corrections import store as corrections
from classifier.corrections.models import Correction, Status
from classifier.serving import batch, metrics, protocol
from tests.corrections import postgres

pytestmark = pytest.mark.django_db(databases=postgres.DATABASES)


def feedback(*args: str, using: str) -> list[str]:
    out = io.StringIO()
    call_command("feedback", "--database", using, *args, stdout=out)
    return out.getvalue().splitlines()


def aged(using: str, row: Correction, days: float) -> int:
    """Make `row` look created `days` ago; returns its id."""
    created = timezone.now() - timedelta(days=days)
    Correction.objects.using(using).filter(pk=row.pk).update(created=created)
    return row.pk


def remaining(using: str) -> set[int]:
    return set(Correction.objects.using(using).values_list("pk", flat=True))


# --- feedback purge -----------------------------------------------------------------------------


def test_purge_removes_only_what_it_should(store, using, settings) -> None:
    old_pending = aged(using, store(seed=1)[0], 40)
    old_rejected = aged(using, store(seed=2)[0], 40)
    old_accepted = aged(using, store(seed=3)[0], 40)
    recent_pending = aged(using, store(seed=4)[0], 10)
    fresh_rejected = store(seed=5)[0].pk
    corrections.set_status([old_rejected, fresh_rejected], Status.REJECTED, using=using)
    corrections.set_status([old_accepted], Status.ACCEPTED, using=using)
    everything = {old_pending, old_rejected, old_accepted, recent_pending, fresh_rejected}

    lines = feedback(
        "purge", "--older-than", "30", "--status", "pending", "rejected", "--dry-run", using=using
    )
    assert lines[0].startswith("would purge 2 corrections created before ")
    assert lines[0].endswith("(pending, rejected)")
    assert lines[1:] == ["pending 1", "accepted 0", "rejected 1"]
    assert remaining(using) == everything  # a dry run deletes nothing

    lines = feedback("purge", "--older-than", "30", "--status", "pending", "rejected", using=using)
    assert lines[0].startswith("purged 2 corrections")
    assert remaining(using) == everything - {old_pending, old_rejected}

    # The default is DIGITS_FEEDBACK_RETENTION_DAYS, every status.
    settings.DIGITS_FEEDBACK_RETENTION_DAYS = 30
    assert feedback("purge", using=using)[1:] == ["pending 0", "accepted 1", "rejected 0"]
    assert remaining(using) == {recent_pending, fresh_rejected}

    lines = feedback("purge", "--older-than", "7", "--status", "rejected", using=using)
    assert lines[0].startswith("purged 0 corrections")
    assert feedback("purge", "--older-than", "7", using=using)[1] == "pending 1"
    assert remaining(using) == {fresh_rejected}


def test_purge_without_a_retention_needs_older_than(store, using, settings) -> None:
    row, _ = store(seed=6)
    settings.DIGITS_FEEDBACK_RETENTION_DAYS = 0
    with pytest.raises(CommandError, match="give --older-than"):
        feedback("purge", using=using)
    with pytest.raises(CommandError, match="days must be 0 or more"):
        feedback("purge", "--older-than", "-1", using=using)
    with pytest.raises(CommandError, match="invalid choice: 'maybe'"):
        feedback("purge", "--older-than", "1", "--status", "maybe", using=using)
    assert remaining(using) == {row.pk}


def test_a_purged_drawing_may_be_stored_again(store, using) -> None:
    row, _ = store(seed=7)
    aged(using, row, 2)
    feedback("purge", "--older-than", "1", using=using)
    again, created = store(seed=7)
    assert created and again.pk != row.pk


# --- The per-client cap -------------------------------------------------------------------------


def test_a_client_may_store_only_so_many_an_hour(store, using) -> None:
    first = [store(seed=10 + i, client_hash="a" * 64, per_hour=3)[0] for i in range(3)]
    with pytest.raises(corrections.FeedbackLimit, match="3 corrections in the last hour"):
        store(seed=20, client_hash="a" * 64, per_hour=3)
    # A drawing already stored is answered as before (it adds no row).
    assert store(seed=10, client_hash="a" * 64, per_hour=3) == (first[0], False)
    # Another client is not held back; no cap (0 or None) holds nobody back.
    assert store(seed=21, client_hash="b" * 64, per_hour=3)[1]
    assert store(seed=22, client_hash="a" * 64, per_hour=0)[1]
    # Corrections older than an hour no longer count.
    for row in first:
        aged(using, row, 2 / 24)
    assert store(seed=23, client_hash="a" * 64, per_hour=3)[1]
    assert Correction.objects.using(using).filter(client_hash="a" * 64).count() == 5


def _worker_answers(outcome: str) -> float:
    value = metrics.WORKER_REGISTRY.get_sample_value(
        "digits_worker_answers_total", {"outcome": outcome}
    )
    return value or 0.0


@pytest.mark.parametrize("using", ["default"])  # the worker stores in the default database
def test_the_worker_refuses_over_the_cap_with_feedback_limit(using, drawing, settings) -> None:
    settings.DIGITS_FEEDBACK_PER_HOUR = 2
    assert 'outcome="feedback_limit"' in generate_latest(metrics.WORKER_REGISTRY).decode()
    probabilities = np.full(10, 0.01)
    probabilities[3] = 0.91
    frames = []
    for seed in range(3):
        image = drawing(100 + seed)
        item = {
            "id": f"f{seed}", "kind": protocol.FEEDBACK, "label": 3, "media_type": "image/png",
            "client_hash": "c" * 64, "reply_channel": "test", "ticket": seed,
        }  # fmt: skip
        prepared = batch.Prepared(image, 1.0, raw=corrections.png_bytes(image.tobytes()))
        frames.append(batch._store(item, prepared, probabilities, "digits-cnn-test").message)
    answers = [message["frame"] for message in frames]
    assert [a["type"] for a in answers] == ["feedback_saved", "feedback_saved", "error"]
    assert answers[2]["code"] == protocol.FEEDBACK_LIMIT == "feedback_limit"
    assert "2 corrections this hour" in answers[2]["message"]
    assert Correction.objects.count() == 2
    before = _worker_answers(protocol.FEEDBACK_LIMIT)
    metrics.worker_answered(answers)
    assert _worker_answers(protocol.FEEDBACK_LIMIT) == before + 1


# --- The page -----------------------------------------------------------------------------------


@pytest.mark.parametrize("using", ["default"])
def test_the_page_says_what_a_click_stores(using) -> None:
    page = Client().get("/").content.decode()
    start = page.index('id="feedback"')
    feedback_section = page[start : page.index("</section>", start)]
    assert "A click on Right or a digit stores this drawing and that digit" in feedback_section
    assert 'aria-describedby="feedback-note"' in feedback_section

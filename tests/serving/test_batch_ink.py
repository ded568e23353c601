"""Requests sent as ink in one batch (classifier/serving/batch.py): digits rasterized together,
numbers cut by their strokes, corrections stored with their ink; with the real model and a real
database, in this process."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from classifier.corrections.models import Correction
from classifier.corrections.store import accepted_arrays, ink_svg, set_status
from classifier.ml import ink as inks
from classifier.ml.inference import Predictor
from classifier.ml.rasterizer import rasterize
from classifier.ml.training.canvas import TEMPLATES, render_template_png
from classifier.serving import protocol
from classifier.serving.batch import answer_batch, prepare_ink_digits, prepare_items
from tests.helpers import shipped_weights
from tests.serving.test_batch import CountingPredictor, frames, item


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(shipped_weights(), device="cpu")


def template_ink(digit: int, variant: str | None = None, left: float = 0.0) -> list:
    """A digit's stroke template as the page would send it: whole pixels, times in ms."""
    strokes = TEMPLATES[digit][variant or next(iter(TEMPLATES[digit]))]
    out, t = [], 0
    for stroke in strokes:
        points = []
        for x, y in stroke:
            points.append([round(left + 40 + 120 * x), round(30 + 150 * y), t])
            t += 12
        out.append(points)
        t += 150
    return out


def ink_item(request_id: str, strokes: list, **fields: Any) -> dict[str, Any]:
    """Task kwargs of a request sent as ink, as `enqueue.task_kwargs` makes them."""
    return {
        "reply_channel": f"channel-{request_id}",
        "ticket": 1,
        "id": request_id,
        "ink": strokes,
        "deadline": time.time() + 60,
        "sent_at": time.time() - 0.001,
        **fields,
    }


def test_ink_and_image_requests_share_one_model_call_and_ink_reads_right(
    predictor: Predictor,
) -> None:
    counting = CountingPredictor(predictor)
    items = [
        ink_item("ink-7", template_ink(7)),
        item("png-4", render_template_png(4)),
        ink_item("ink-3", template_ink(3)),
        ink_item("ink-0", template_ink(0, "slashed")),
    ]
    by_id = frames(answer_batch(items, counting))  # type: ignore[arg-type]
    assert counting.batches == [4]
    assert [by_id[i]["digit"] for i in ("ink-7", "png-4", "ink-3")] == [7, 4, 3]
    frame = by_id["ink-7"]
    assert frame["type"] == protocol.PREDICTION and frame["preview"].startswith("data:image/png")
    assert frame["timings_ms"]["preprocess"] > 0


def test_the_batch_rasterizes_its_digits_in_one_call_as_the_rasterizer_does() -> None:
    strokes = [template_ink(d) for d in (1, 2, 5)]
    prepared = prepare_ink_digits(strokes)
    expected = rasterize([inks.from_lists(s) for s in strokes])
    assert np.array_equal(np.stack([p.image for p in prepared]), expected)
    # The device path, as a GPU worker takes it, gives the same pixels (on the CPU here).
    on_device = prepare_items(
        [{"ink": s} for s in strokes], device=__import__("torch").device("cpu")
    )
    assert np.abs(np.stack([p.image for p in on_device]).astype(int) - expected).max() <= 2


def test_a_number_sent_as_ink_is_read_by_its_strokes_even_when_digits_overlap(
    predictor: Predictor,
) -> None:
    """Three digits whose inks overlap (each starts before the last one ends): one blob of
    pixels, but three runs of strokes."""
    number = [s for k, d in enumerate((2, 0, 5)) for s in template_ink(d, left=70 * k)]
    items = [ink_item("n", number, expect=protocol.EXPECT_NUMBER)]
    frame = frames(answer_batch(items, predictor))["n"]
    assert frame["number"] == "205", frame
    boxes = [d["box"] for d in frame["digits"]]
    assert [b[0] for b in boxes] == sorted(b[0] for b in boxes)
    assert boxes[0][2] > boxes[1][0]  # the first digit's box reaches into the second's


@pytest.mark.django_db
def test_a_correction_sent_as_ink_is_stored_with_its_ink_and_trains_from_it(
    predictor: Predictor,
) -> None:
    strokes = template_ink(7)
    items = [ink_item("fix", strokes, kind=protocol.FEEDBACK, label=7, client_hash="c" * 64)]
    by_id = frames(answer_batch(items, predictor))
    assert by_id["fix"]["type"] == protocol.FEEDBACK_SAVED
    row = Correction.objects.get()
    assert row.ink == strokes
    assert (bytes(row.image), row.media_type) == (b"", "")
    assert bytes(row.image28) == rasterize([inks.from_lists(strokes)])[0].tobytes()
    assert "<polyline" in ink_svg(row.ink) and "<script" not in ink_svg(row.ink)

    # Retraining rasterizes the stored ink afresh: here the stored picture is stale.
    Correction.objects.filter(pk=row.pk).update(image28=bytes(784))
    set_status([row.pk], "accepted")
    accepted = accepted_arrays()
    assert accepted.ids == [row.pk]
    assert np.array_equal(accepted.images[0], rasterize([inks.from_lists(strokes)])[0])

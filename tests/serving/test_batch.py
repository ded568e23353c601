"""One batch answered (classifier/serving/batch.py): one model call, each bad image failing alone,
requests past their deadline dropped; with the real model, in this process. Feedback in a batch
is stored in a real database (pytest-django's test database, from DATABASE_URL)."""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from django.db import OperationalError, connection

from classifier.corrections.models import Correction
from classifier.ml.inference import Predictor, Scored
from classifier.ml.preprocessing import preprocess
from classifier.ml.training.canvas import to_png
from classifier.ml.training.outliers import split_rng
from classifier.ml.training.strokes import draw_strokes
from classifier.ml.weights import load_weights, save_weights
from classifier.serving import enqueue, protocol
from classifier.serving.batch import answer_batch
from tests.helpers import blank_png, render_digit_png, shipped_weights


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(shipped_weights(), device="cpu")


class CountingPredictor:
    """The real predictor, recording the size of every batch it is asked to score."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.batches: list[int] = []

    def predict_scored(self, images: np.ndarray) -> Scored:
        self.batches.append(len(images))
        return self.predictor.predict_scored(images)


class BrokenPredictor(CountingPredictor):
    """A predictor whose device fails (as a GPU out of memory would)."""

    def predict_scored(self, images: np.ndarray) -> Scored:
        super().predict_scored(images)
        raise RuntimeError("CUDA error: out of memory")


def item(request_id: str, image: bytes, deadline_in: float = 60.0) -> dict[str, Any]:
    """Task kwargs as `classifier.serving.enqueue.submit` sends them (a predict)."""
    return {
        "reply_channel": f"channel-{request_id}",
        "ticket": hash(request_id) % 1000,
        "id": request_id,
        "image": base64.b64encode(image).decode(),
        "deadline": time.time() + deadline_in,
        "sent_at": time.time() - 0.001,
    }


def frames(answers: list[Any]) -> dict[str, dict[str, Any]]:
    return {a.message["frame"]["id"]: a.message["frame"] for a in answers}


def test_a_batch_is_one_model_call_and_bad_images_fail_alone(predictor: Predictor) -> None:
    counting = CountingPredictor(predictor)
    items = [
        item("four", render_digit_png(4)),
        item("blank", blank_png()),
        item("nine", render_digit_png(9)),
        item("junk", b"not an image"),
        item("one", render_digit_png(1)),
    ]
    answers = answer_batch(items, counting)  # type: ignore[arg-type]

    assert counting.batches == [3]
    by_id = frames(answers)
    assert by_id.keys() == {"four", "blank", "nine", "junk", "one"}
    for request_id, digit in [("four", 4), ("nine", 9), ("one", 1)]:
        assert by_id[request_id]["type"] == protocol.PREDICTION
        assert by_id[request_id]["digit"] == digit
        assert by_id[request_id]["model"] == predictor.version
    assert by_id["blank"]["code"] == protocol.EMPTY
    assert by_id["junk"]["code"] == protocol.INVALID_IMAGE
    # Each answer goes to the consumer that asked, with that consumer's ticket.
    for answer, sent in zip(
        sorted(answers, key=lambda a: a.channel),
        sorted(items, key=lambda i: i["reply_channel"]),
        strict=True,
    ):
        assert answer.channel == sent["reply_channel"]
        assert answer.message["type"] == protocol.ANSWER_MESSAGE
        assert answer.message["ticket"] == sent["ticket"]


def test_a_drawing_that_is_no_digit_is_answered_without_a_digit(predictor: Predictor) -> None:
    """The worker's threshold, from the weights: a scribble gets `is_digit` false and no digit,
    in the same model call as a digit that keeps its answer."""
    rng = split_rng("eval", 0)
    star = [[(0.5, 0.0), (0.8, 1.0), (0.0, 0.35), (1.0, 0.35), (0.2, 1.0), (0.5, 0.0)]]
    zigzag = [[(0.0, 0.0), (0.2, 1.0), (0.4, 0.0), (0.6, 1.0), (0.8, 0.0), (1.0, 1.0)]]
    counting = CountingPredictor(predictor)
    items = [
        item("three", render_digit_png(3)),
        item("star", to_png(draw_strokes(star, rng, turn=0.0))),
        item("zigzag", to_png(draw_strokes(zigzag, rng, turn=0.0))),
    ]
    by_id = frames(answer_batch(items, counting))  # type: ignore[arg-type]
    assert counting.batches == [3]
    assert by_id["three"]["is_digit"] is True and by_id["three"]["digit"] == 3
    for name in ("star", "zigzag"):
        frame = by_id[name]
        assert frame["type"] == protocol.PREDICTION and frame["is_digit"] is False, frame
        assert frame["digit"] is None
        assert len(frame["probabilities"]) == 10 and frame["preview"].startswith("data:image")


def test_preprocessing_threads_give_the_same_answers_in_the_same_order(
    predictor: Predictor,
) -> None:
    items = [item(f"r{n}", render_digit_png(n % 10, index=n)) for n in range(12)]
    items.insert(5, item("blank", blank_png()))
    with ThreadPoolExecutor(3) as pool:
        threaded = answer_batch(items, predictor, pool=pool)
    serial = answer_batch(items, predictor)
    assert [a.channel for a in threaded] == [a.channel for a in serial]
    for a, b in zip(threaded, serial, strict=True):
        fa, fb = a.message["frame"], b.message["frame"]
        assert (fa["type"], fa.get("digit"), fa.get("code")) == (
            fb["type"],
            fb.get("digit"),
            fb.get("code"),
        )
        assert fa.get("probabilities") == fb.get("probabilities")
    assert frames(threaded)["blank"]["code"] == protocol.EMPTY


def test_requests_past_their_deadline_are_dropped(predictor: Predictor) -> None:
    counting = CountingPredictor(predictor)
    items = [
        item("late", render_digit_png(3), deadline_in=-1),
        item("on-time", render_digit_png(3)),
    ]
    assert frames(answer_batch(items, counting)).keys() == {"on-time"}  # type: ignore[arg-type]
    assert counting.batches == [1]


def test_a_failed_model_call_answers_every_request_with_an_error(predictor: Predictor) -> None:
    items = [item("a", render_digit_png(0)), item("b", render_digit_png(1)), item("c", blank_png())]
    by_id = frames(answer_batch(items, BrokenPredictor(predictor)))  # type: ignore[arg-type]
    assert by_id["a"]["code"] == by_id["b"]["code"] == protocol.INTERNAL
    assert by_id["c"]["code"] == protocol.EMPTY


def test_a_batch_of_only_bad_images_never_calls_the_model(predictor: Predictor) -> None:
    counting = CountingPredictor(predictor)
    by_id = frames(answer_batch([item("x", blank_png())], counting))  # type: ignore[arg-type]
    assert by_id["x"]["code"] == protocol.EMPTY
    assert counting.batches == []


# --- Feedback: scored in the same model call, stored in the real database --------------------


def feedback_item(
    request_id: str,
    image: bytes,
    label: int,
    client_predicted: int | None = None,
    client_model: str | None = None,
) -> dict[str, Any]:
    """Task kwargs of a feedback request, as `classifier.serving.enqueue.task_kwargs` builds
    them."""
    request = protocol.FeedbackRequest(
        id=request_id,
        media_type="image/png",
        image=base64.b64encode(image).decode(),
        label=label,
        predicted=client_predicted,
        model=client_model,
    )
    return enqueue.task_kwargs(
        request,
        f"channel-{request_id}",
        hash(request_id) % 1000,
        time.time() + 60,
        "c" * 64,
        time.time() - 0.001,
    )


@pytest.mark.django_db
def test_feedback_is_scored_with_the_predictions_in_one_call_stored_and_answered(
    predictor: Predictor,
) -> None:
    """A batch of two predictions and two corrections (one of them a blank canvas): one model
    call for the three drawn images; the predictions are answered as ever; the correction is
    stored with what the model said of it in that call (the same as the prediction of the same
    image) and answered `feedback_saved`; the blank one is answered `empty` and stores nothing."""
    counting = CountingPredictor(predictor)
    seven = render_digit_png(7)
    items = [
        item("four", render_digit_png(4)),
        feedback_item("fix", seven, label=1, client_predicted=7, client_model="older-model"),
        item("seven", seven),
        feedback_item("blank", blank_png(), label=3),
    ]
    by_id = frames(answer_batch(items, counting))  # type: ignore[arg-type]

    assert counting.batches == [3]
    assert (by_id["four"]["type"], by_id["four"]["digit"]) == (protocol.PREDICTION, 4)
    assert by_id["fix"] == {"type": protocol.FEEDBACK_SAVED, "id": "fix", "duplicate": False}
    assert by_id["blank"]["code"] == protocol.EMPTY

    row = Correction.objects.get()  # exactly one row: the blank stored nothing
    prediction = by_id["seven"]
    assert bytes(row.image) == seven
    assert row.media_type == "image/png"
    pixels = bytes(row.image28)
    assert len(pixels) == 784
    assert pixels == preprocess(seven).tobytes()
    assert row.image_hash == hashlib.sha256(pixels).hexdigest()
    assert (row.label, row.predicted) == (1, prediction["digit"])
    assert row.confidence == pytest.approx(prediction["confidence"], abs=1e-5)
    assert row.probabilities == pytest.approx(prediction["probabilities"], abs=1e-5)
    assert row.model_version == predictor.version
    assert (row.client_predicted, row.client_model, row.client_hash) == (7, "older-model", "c" * 64)
    assert row.status == "pending"


@pytest.mark.django_db
def test_the_same_drawing_sent_again_is_a_duplicate_and_counts_once(predictor: Predictor) -> None:
    """The same image with another label, in a later batch: answered `duplicate: true`, and the
    first row stays as it was."""
    nine = render_digit_png(9, index=1)
    first = frames(answer_batch([feedback_item("a", nine, label=9)], predictor))
    again = frames(answer_batch([feedback_item("b", nine, label=4)], predictor))
    assert first["a"]["duplicate"] is False
    assert again["b"] == {"type": protocol.FEEDBACK_SAVED, "id": "b", "duplicate": True}
    assert list(Correction.objects.values_list("label", flat=True)) == [9]


@pytest.mark.django_db
def test_a_database_error_fails_only_that_correction(
    predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    """The database refuses the insert (as a full disk or a lost server would, raised by
    Django's query-execution hook): that correction is answered `internal` and logged with the
    error; the prediction in the same batch is answered, and nothing is stored."""

    def refuse_inserts(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.lstrip().upper().startswith("INSERT"):
            raise OperationalError("disk I/O error")
        return execute(sql, params, many, context)

    items = [item("two", render_digit_png(2)), feedback_item("fix", render_digit_png(5), 5)]
    with caplog.at_level(logging.ERROR), connection.execute_wrapper(refuse_inserts):
        by_id = frames(answer_batch(items, predictor))
    assert (by_id["two"]["type"], by_id["two"]["digit"]) == (protocol.PREDICTION, 2)
    assert (by_id["fix"]["type"], by_id["fix"]["code"]) == (protocol.ERROR, protocol.INTERNAL)
    failed = [r for r in caplog.records if "fix" in r.getMessage()]
    assert failed and failed[0].exc_info is not None
    assert "disk I/O error" in str(failed[0].exc_info[1])
    assert not Correction.objects.exists()


# --- Numbers: every crop of every request in the batch's one model call -----------------------


def number_item(request_id: str, image: bytes, deadline_in: float = 60.0) -> dict[str, Any]:
    """Task kwargs of a predict that expects a number, as `enqueue.task_kwargs` builds them."""
    request = protocol.PredictRequest(
        id=request_id,
        media_type="image/png",
        image=base64.b64encode(image).decode(),
        expect=protocol.EXPECT_NUMBER,
    )
    kwargs = enqueue.task_kwargs(
        request,
        f"channel-{request_id}",
        hash(request_id) % 1000,
        time.time() + deadline_in,
        "",
        time.time() - 0.001,
    )
    assert kwargs["expect"] == protocol.EXPECT_NUMBER
    return kwargs


def drawn_number_png(label: str, gap: str = "normal", seed: int = 0) -> tuple[bytes, list]:
    """A number drawn with the stroke generator on the page's 768x384 canvas, and its boxes."""
    from classifier.ml.training import numbers
    from classifier.ml.training.canvas import to_png

    rng = np.random.default_rng(seed)
    strokes = [numbers.template_strokes(int(d), rng) for d in label]
    drawn = numbers.draw_number(strokes, label, rng, gap=gap)
    return to_png(drawn.image), drawn.boxes


@pytest.mark.django_db
def test_numbers_digits_and_feedback_share_one_model_call(predictor: Predictor) -> None:
    """Two numbers, a digit and a correction in one batch: the numbers' crops (pieces and
    candidate cuts) and the two other images are scored in one model call; each number is read
    left to right with its boxes, the digit answered as ever, the correction stored."""
    from classifier.ml.segmentation import segment_bytes

    counting = CountingPredictor(predictor)
    year, year_boxes = drawn_number_png("2026")
    pin, _ = drawn_number_png("47", gap="overlap", seed=4)
    items = [
        number_item("year", year),
        item("four", render_digit_png(4)),
        feedback_item("fix", render_digit_png(7), label=7),
        number_item("pin", pin),
    ]
    by_id = frames(answer_batch(items, counting))  # type: ignore[arg-type]

    crops = len(segment_bytes(year).crops) + len(segment_bytes(pin).crops)
    assert crops > 6, "the touching 47 adds candidate cuts"
    assert counting.batches == [crops + 2]
    year_answer = by_id["year"]
    assert year_answer["type"] == protocol.PREDICTION
    assert (year_answer["number"], year_answer["digit"]) == ("2026", None)
    assert year_answer["model"] == predictor.version
    assert year_answer["batch"] == crops + 2
    assert set(year_answer["timings_ms"]) == {"queue", "preprocess", "inference", "worker"}
    for digit, box in zip(year_answer["digits"], year_boxes, strict=True):
        assert digit["is_digit"] is True
        assert digit["preview"].startswith("data:image/png;base64,")
        assert len(digit["probabilities"]) == 10
        x0, y0, x1, y1 = digit["box"]
        centre = ((x0 + x1) / 2, (y0 + y1) / 2)
        assert box[0] <= centre[0] <= box[2] and box[1] <= centre[1] <= box[3]
    assert by_id["pin"]["number"] == "47"
    assert (by_id["four"]["digit"], "number" in by_id["four"]) == (4, False)
    assert by_id["fix"]["type"] == protocol.FEEDBACK_SAVED


def test_a_single_digit_in_number_mode_reads_as_in_digit_mode(predictor: Predictor) -> None:
    png = render_digit_png(3)
    by_id = frames(answer_batch([item("digit", png), number_item("number", png)], predictor))
    digit, number = by_id["digit"], by_id["number"]
    assert number["number"] == "3" and number["digit"] == digit["digit"] == 3
    assert abs(number["digits"][0]["confidence"] - digit["confidence"]) < 0.05


def test_blank_and_too_long_numbers_are_errors_and_fail_alone(predictor: Predictor) -> None:
    from classifier.ml.training import numbers
    from classifier.ml.training.canvas import to_png

    rng = np.random.default_rng(0)
    long_one = numbers.draw_number(
        [numbers.template_strokes(d % 10, rng) for d in range(13)],
        "0123456789012",
        rng,
        gap="wide",
        size=(3000, 300),
    )
    counting = CountingPredictor(predictor)
    year, _ = drawn_number_png("2026")
    by_id = frames(
        answer_batch(
            [
                number_item("blank", blank_png()),
                number_item("long", to_png(long_one.image)),
                number_item("year", year),
            ],
            counting,  # type: ignore[arg-type]
        )
    )
    assert by_id["blank"]["code"] == protocol.EMPTY
    assert by_id["long"]["code"] == protocol.TOO_MANY_DIGITS
    assert by_id["year"]["number"] == "2026"
    assert len(counting.batches) <= 1


def three_beside_a_star() -> tuple[Any, Any]:
    """A 3 with a drawn star to its right, as one greyscale picture, and the star alone."""
    from PIL import Image

    rng = split_rng("eval", 1)
    star = [[(0.5, 0.0), (0.8, 1.0), (0.0, 0.35), (1.0, 0.35), (0.2, 1.0), (0.5, 0.0)]]
    left = Image.open(io.BytesIO(render_digit_png(3))).convert("L")
    right = draw_strokes(star, rng, size=left.height, turn=0.0).convert("L")
    both = Image.new("L", (left.width + right.width, left.height), 0)
    both.paste(left, (0, 0))
    both.paste(right, (left.width, 0))
    return both, right


def test_a_number_with_a_piece_that_is_no_digit_reads_no_number(predictor: Predictor) -> None:
    """Each piece of a number gets the not-a-digit decision on its own crop, from the batch's
    one model call: a 3 beside a star is a number with a piece that is no digit."""
    both, _ = three_beside_a_star()
    sent = number_item("mixed", to_png(both))
    answer = frames(answer_batch([sent], predictor))["mixed"]
    assert answer["type"] == protocol.PREDICTION, answer
    assert [d["is_digit"] for d in answer["digits"]] == [True, False]
    assert answer["digits"][0]["digit"] == 3
    assert answer["number"] is None and answer["digit"] is None


def test_a_number_s_pieces_are_judged_by_the_number_threshold(predictor: Predictor, tmp_path):
    """The same 3 beside a star, sent as a number and the star alone as a digit, by weights
    whose pieces of a number pass at any score: the number keeps its star (read as a digit),
    the star alone is still no digit."""
    tensors, metadata = load_weights(shipped_weights())
    rejection = {**metadata["rejection"], "number_threshold": -1e9}
    kept = {k: v for k, v in metadata.items() if k not in ("version", "created")}
    save_weights(tensors, tmp_path / "pieces.safetensors", {**kept, "rejection": rejection})
    lenient = Predictor.load(tmp_path / "pieces.safetensors", device="cpu")
    assert lenient.rejection is not None and lenient.rejection.number_threshold == -1e9

    both, star = three_beside_a_star()
    sent = [number_item("mixed", to_png(both)), item("star", to_png(star))]
    answers = frames(answer_batch(sent, lenient))
    assert [d["is_digit"] for d in answers["mixed"]["digits"]] == [True, True]
    assert answers["mixed"]["number"] is not None and answers["mixed"]["number"][0] == "3"
    assert answers["star"]["is_digit"] is False
    strict = frames(answer_batch(sent, predictor))
    assert strict["mixed"]["number"] is None and strict["star"]["is_digit"] is False

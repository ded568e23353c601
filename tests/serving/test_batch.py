"""One batch answered (classifier/serving/batch.py): one model call, each bad image failing alone,
requests past their deadline dropped; with the real model, in this process."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from classifier.ml.inference import Predictor
from classifier.serving import protocol
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

    def predict_with_version(self, images: np.ndarray) -> tuple[np.ndarray, str]:
        self.batches.append(len(images))
        return self.predictor.predict_with_version(images)


class BrokenPredictor(CountingPredictor):
    """A predictor whose device fails (as a GPU out of memory would)."""

    def predict_with_version(self, images: np.ndarray) -> tuple[np.ndarray, str]:
        super().predict_with_version(images)
        raise RuntimeError("CUDA error: out of memory")


def item(request_id: str, image: bytes, deadline_in: float = 60.0) -> dict[str, Any]:
    """Task kwargs as `classifier.serving.tasks.submit` sends them."""
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

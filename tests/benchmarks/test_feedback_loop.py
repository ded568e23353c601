"""The feedback-loop benchmark's pure parts: its writers and the frames it sends."""

from __future__ import annotations

import base64
import json

import numpy as np

from benchmarks import feedback_loop as loop
from classifier.ml.preprocessing import preprocess
from classifier.ml.training.canvas import TEMPLATES
from classifier.serving import protocol


def test_a_writer_is_the_same_for_the_same_seed_and_differs_across_writers():
    assert loop.make_writer(3, seed=7) == loop.make_writer(3, seed=7)
    assert loop.make_writer(3, seed=7) != loop.make_writer(3, seed=8)
    writers = [loop.make_writer(n) for n in range(1, 21)]
    assert len({(w.slant, w.aspect) for w in writers}) == 20
    for writer in writers:
        assert len(writer.variants) == 10
        for digit, variant in enumerate(writer.variants):
            assert variant in TEMPLATES[digit]
    # Writers use the styles MNIST lacks: among 20 of them, some cross their 7s, some flag 1s.
    assert {"crossed", "hooked"} & {w.variants[7] for w in writers}
    assert {"flag", "serif"} & {w.variants[1] for w in writers}


def test_drawings_are_deterministic_and_every_digit_of_every_writer():
    first = loop.drawings_of(range(1, 3), per_digit=2, seed=5)
    again = loop.drawings_of(range(1, 3), per_digit=2, seed=5)
    other = loop.drawings_of(range(1, 3), per_digit=2, seed=6)
    assert first == again
    assert [d.url for d in first] != [d.url for d in other]
    assert len(first) == 2 * 10 * 2
    assert sorted((d.writer, d.digit) for d in first) == sorted(
        (w, digit) for w in (1, 2) for digit in range(10) for _ in range(2)
    )
    # Two drawings of one digit by one writer differ (a person never draws the same twice).
    assert len({d.url for d in first}) == len(first)


def test_a_drawing_is_a_page_canvas_with_ink():
    png = loop.draw(loop.make_writer(1), 7, np.random.default_rng(0))
    image = preprocess(png)
    assert image.shape == (28, 28)
    assert 20 < int((image > 128).sum()) < 400  # ink, not a blank and not a blob


def test_the_frames_it_sends_parse_as_the_page_sends_them():
    drawing = loop.drawings_of(range(1, 2), per_digit=1, seed=0)[4]
    request = protocol.parse_frame(loop.predict_frame("p-1", drawing.url))
    assert isinstance(request, protocol.PredictRequest)
    assert request.id == "p-1"
    assert request.media_type == "image/png"
    assert base64.b64decode(request.image) == base64.b64decode(drawing.url.split(",", 1)[1])

    frame = loop.feedback_frame("f-1", drawing.url, drawing.digit, 9, "digits-cnn-v1@abc")
    feedback = protocol.parse_frame(frame)
    assert isinstance(feedback, protocol.FeedbackRequest)
    assert (feedback.id, feedback.label, feedback.predicted, feedback.model) == (
        "f-1",
        4,
        9,
        "digits-cnn-v1@abc",
    )
    # Before any answer came (it was lost), `predicted` and `model` go as null: still valid.
    unanswered = protocol.parse_frame(loop.feedback_frame("f-2", drawing.url, 4, None, None))
    assert (unanswered.predicted, unanswered.model) == (None, None)
    assert json.loads(frame)["type"] == "feedback"


def test_percent_reads_shares_and_percentages():
    assert loop.percent(0.9975) == "99.75%"
    assert loop.percent(99.5) == "99.50%"
    assert loop.percent(None) == "?"

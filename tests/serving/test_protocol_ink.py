"""Ink in the protocol (classifier/serving/protocol.py): strokes checked before anything is
queued. The bad cases live in tests/catalogue.py with every other bad frame."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from classifier.ml.input import MAX_INK_COORDINATE, MAX_INK_POINTS, MAX_INK_STROKES
from classifier.serving import protocol
from classifier.serving.enqueue import task_kwargs
from tests.catalogue import good_ink, ink_predict


def refused(
    text: str, limits: protocol.InkLimits = protocol.DEFAULT_INK_LIMITS
) -> protocol.ProtocolError:
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.parse_frame(text, None, limits)
    return caught.value


def test_an_ink_predict_becomes_a_request_with_its_strokes_and_no_image() -> None:
    request = protocol.parse_frame(ink_predict("k", good_ink(), expect="number"))
    assert isinstance(request, protocol.PredictRequest)
    assert request.ink == good_ink()
    assert (request.image, request.media_type, request.expect) == ("", "", "number")


def test_points_may_have_times_or_not_and_mix_ints_and_floats() -> None:
    ink = [[[1, 2], [3.5, 4.25, 17]], [[0, 0, 0.5]]]
    assert protocol.parse_frame(ink_predict("k", ink)).ink == ink


def test_empty_strokes_are_dropped_but_count_towards_the_limit() -> None:
    assert protocol.parse_frame(ink_predict("k", [[], [[1, 2]], []])).ink == [[[1, 2]]]
    error = refused(ink_predict("k", [[]] * 3 + [[[1, 2]]]), protocol.InkLimits(strokes=3))
    assert error.code == protocol.TOO_LARGE


def test_an_ink_feedback_keeps_its_ink_and_label() -> None:
    request = protocol.parse_frame(
        ink_predict("f", good_ink(), type="feedback", digit=7, predicted=1)
    )
    assert isinstance(request, protocol.FeedbackRequest)
    assert (request.ink, request.label, request.predicted, request.image) == (
        good_ink(),
        7,
        1,
        "",
    )


def test_the_limits_are_exact_and_configurable() -> None:
    at_limit = [[[i, i] for i in range(MAX_INK_POINTS // 2)]] * 2
    assert len(protocol.parse_frame(ink_predict("k", at_limit)).ink) == 2
    strokes = [[[1, 1]]] * MAX_INK_STROKES
    assert len(protocol.parse_frame(ink_predict("k", strokes)).ink) == MAX_INK_STROKES
    small = protocol.InkLimits(strokes=2, points=5)
    assert refused(ink_predict("k", [[[1, 1]]] * 3), small).code == protocol.TOO_LARGE
    error = refused(ink_predict("k", [[[1, 1]] * 3, [[2, 2]] * 3]), small)
    assert error.code == protocol.TOO_LARGE
    assert "6 points" in error.message and "limit is 5" in error.message


def test_coordinates_at_the_bound_are_accepted_and_past_it_refused() -> None:
    edge = MAX_INK_COORDINATE
    assert protocol.parse_frame(ink_predict("k", [[[edge, -edge, 0]]])).ink
    assert refused(ink_predict("k", [[[edge * 1.01, 0]]])).code == protocol.BAD_INK
    # An integer too large for a float is compared, never converted (no OverflowError).
    assert refused(ink_predict("k", [[[10**400, 0]]])).code == protocol.BAD_INK


def test_the_message_names_the_stroke_at_fault() -> None:
    error = refused(ink_predict("k", [[[1, 2]], [[1, 2], [3, "4"]]]))
    assert (error.code, error.request_id) == (protocol.BAD_INK, "k")
    assert "Stroke 1" in error.message


def test_an_ink_request_is_queued_with_its_strokes_and_no_image() -> None:
    request = protocol.parse_frame(ink_predict("k", good_ink(), expect="number"))
    kwargs = task_kwargs(request, "chan", 3, 10.0, "", 1.0)
    assert kwargs["ink"] == good_ink() and "image" not in kwargs
    assert kwargs["expect"] == "number"
    json.dumps(kwargs, allow_nan=False)  # the task message is plain JSON


_number = st.one_of(
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=3),
    st.none(),
)
_point = st.lists(_number, max_size=4) | _number
_ink = st.lists(st.lists(_point, max_size=6) | _number, max_size=6) | _number


@given(_ink)
def test_any_ink_is_accepted_as_checked_or_refused_with_an_ink_code(ink: object) -> None:
    """Whatever a client sends as ink: a request whose every number is a finite float or int
    within the bound, or a refusal with one of the ink's codes; never another exception."""
    try:
        request = protocol.parse_message({"type": "predict", "id": "h", "ink": ink})
    except protocol.ProtocolError as error:
        assert error.code in {protocol.BAD_INK, protocol.EMPTY, protocol.TOO_LARGE}
        return
    assert request.ink
    for stroke in request.ink:
        for point in stroke:
            assert 2 <= len(point) <= 3
            assert all(type(v) in (int, float) and abs(v) <= MAX_INK_COORDINATE for v in point)

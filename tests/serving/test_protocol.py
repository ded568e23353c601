"""The websocket protocol's frame checks and reply builders (classifier/serving/protocol.py)."""

from __future__ import annotations

import base64
import json
import math

import pytest
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from classifier.ml.input import (
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    InvalidImageError,
)
from classifier.ml.preprocessing import MAX_IMAGE_BYTES
from classifier.serving import protocol
from tests.catalogue import BAD_FRAMES, FRAME_CODES, BadFrame, names
from tests.helpers import blank_png, data_url, predict_frame

PNG = blank_png(8)


def frame(**fields: object) -> str:
    return json.dumps({"type": "predict", "id": "r1", "image": data_url(PNG), **fields})


def feedback(**fields: object) -> str:
    """A feedback frame (a drawn 7 the model read as 1); a field given as None is left out."""
    body = {
        "type": "feedback",
        "id": "f1",
        "image": data_url(PNG),
        "digit": 7,
        "predicted": 1,
        "model": "digits-cnn-v1",
        **fields,
    }
    return json.dumps({k: v for k, v in body.items() if v is not None})


def refused(text: str | None, data: bytes | None = None) -> protocol.ProtocolError:
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.parse_frame(text, data)
    return caught.value


def test_a_predict_frame_becomes_a_request() -> None:
    request = protocol.parse_frame(frame())
    assert request.id == "r1"
    assert request.media_type == "image/png"
    assert base64.b64decode(request.image) == PNG


@pytest.mark.parametrize(
    ("media_type", "read_as"),
    [
        ("image/png", "image/png"),
        ("image/jpeg", "image/jpeg"),
        ("image/jpg", "image/jpeg"),
        ("image/webp", "image/webp"),
        ("IMAGE/PNG", "image/png"),
    ],
)
def test_png_jpeg_and_webp_data_urls_are_accepted(media_type: str, read_as: str) -> None:
    request = protocol.parse_frame(frame(image=data_url(PNG, media_type)))
    assert request.media_type == read_as


def test_data_url_parameters_before_base64_are_allowed() -> None:
    image = "data:image/png;name=digit.png;base64," + base64.b64encode(PNG).decode()
    assert protocol.parse_frame(frame(image=image)).media_type == "image/png"


def test_unknown_fields_are_ignored() -> None:
    assert protocol.parse_frame(frame(extra={"anything": 1})).id == "r1"


@pytest.mark.parametrize("bad", BAD_FRAMES, ids=names(BAD_FRAMES))
def test_every_bad_frame_of_the_catalogue_gets_its_code_and_id(bad: BadFrame) -> None:
    """Every frame of tests/catalogue.py is refused with its code, naming the request when it
    had a usable id, in a sentence for a person."""
    error = refused(bad.text, bad.data)
    assert error.code == bad.code
    assert error.request_id == bad.request_id
    assert error.message.endswith(".")


def test_the_catalogue_has_every_frame_code_and_unique_names() -> None:
    assert {bad.code for bad in BAD_FRAMES} == FRAME_CODES
    assert len(set(names(BAD_FRAMES))) == len(BAD_FRAMES)


def test_the_longest_id_is_accepted() -> None:
    long_id = "x" * protocol.MAX_ID_LENGTH
    assert protocol.parse_frame(frame(id=long_id)).id == long_id


def test_an_image_at_the_byte_limit_is_accepted() -> None:
    """One byte more is refused (tests/catalogue.py, image-over-bytes)."""
    at_limit = base64.b64encode(b"\0" * MAX_IMAGE_BYTES).decode()
    assert protocol.parse_frame(frame(image="data:image/png;base64," + at_limit))


def test_the_frame_limit_is_checked_before_parsing() -> None:
    """A frame one character over the limit is refused as too large even though it would
    parse (frame-over-limit in the catalogue is only spaces)."""
    padded = frame() + " " * (protocol.MAX_FRAME_CHARS + 1 - len(frame()))
    assert refused(padded).code == protocol.FRAME_TOO_LARGE
    assert protocol.parse_frame(padded[:-1]).id == "r1"


def test_the_asgi_server_lets_every_frame_we_answer_through() -> None:
    """Frames up to MAX_FRAME_CHARS must reach the consumer (and get an error frame, not a
    closed socket), so the web server's limit must be at least that."""
    assert settings.DIGITS_WS_MAX_MESSAGE_BYTES >= protocol.MAX_FRAME_CHARS
    largest = predict_frame("x" * protocol.MAX_ID_LENGTH, b"\0" * MAX_IMAGE_BYTES)
    assert len(largest.encode()) <= protocol.MAX_FRAME_CHARS


def test_error_codes_are_distinct_short_identifiers() -> None:
    codes = [
        value
        for name, value in vars(protocol).items()
        if name.isupper()
        and isinstance(value, str)
        and name
        not in {
            "PREDICT",
            "PREDICTION",
            "FEEDBACK",
            "FEEDBACK_SAVED",
            "ERROR",
            "ANSWER_MESSAGE",
            "PREDICT_PATH",
        }
    ]
    assert len(codes) == len(set(codes))
    assert all(code.isidentifier() and code.islower() for code in codes)
    assert protocol.EMPTY == "empty"


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (EmptyImageError("blank."), protocol.EMPTY),
        (InvalidImageError("corrupt."), protocol.INVALID_IMAGE),
        (ImageTooLargeError("huge."), protocol.IMAGE_TOO_LARGE),
        (ImageError("other."), protocol.INVALID_IMAGE),
    ],
)
def test_each_image_error_of_the_ml_core_has_its_client_code(error: ImageError, code: str) -> None:
    assert protocol.image_error_code(error) == code


def test_prediction_frame_reads_digit_and_confidence_off_the_probabilities() -> None:
    probs = [0.01] * 10
    probs[3] = 0.91
    built = protocol.prediction(
        "r1", probs, "v1", "data:image/png;base64,AA==", {"inference": 1.23456}
    )
    assert built["type"] == protocol.PREDICTION
    assert built["digit"] == 3 and built["is_digit"] is True
    assert built["confidence"] == pytest.approx(0.91)
    assert len(built["probabilities"]) == 10
    assert built["timings_ms"] == {"inference": 1.235}
    assert json.loads(protocol.encode(built)) == built


def test_a_prediction_that_is_no_digit_has_a_null_digit_and_keeps_the_rest() -> None:
    probs = [0.05] * 10
    probs[7] = 0.55
    built = protocol.prediction("r1", probs, "v1", "data:image/png;base64,AA==", {}, is_digit=False)
    assert built["is_digit"] is False and built["digit"] is None
    assert built["confidence"] == pytest.approx(0.55)
    assert built["preview"] == "data:image/png;base64,AA=="
    assert json.loads(protocol.encode(built))["digit"] is None
    assert protocol.prediction("r2", probs, "v1", "", {})["is_digit"] is True


def test_error_frame_shape() -> None:
    built = protocol.error(None, protocol.BAD_JSON, "Nope.")
    assert built == {"type": "error", "id": None, "code": "bad_json", "message": "Nope."}


def test_a_nan_probability_is_refused_rather_than_sent_as_invalid_json() -> None:
    built = protocol.prediction("r1", [math.nan] * 10, "v1", "", {})
    with pytest.raises(ValueError):
        protocol.encode(built)


# --- Feedback frames ----------------------------------------------------------------------------


def test_a_feedback_frame_becomes_a_feedback_request() -> None:
    request = protocol.parse_frame(feedback())
    assert isinstance(request, protocol.FeedbackRequest)
    assert (request.kind, request.id, request.media_type) == ("feedback", "f1", "image/png")
    assert base64.b64decode(request.image) == PNG
    assert (request.label, request.predicted, request.model) == (7, 1, "digits-cnn-v1")


def test_a_predict_frame_is_a_predict_request_whatever_feedback_fields_it_carries() -> None:
    request = protocol.parse_frame(frame(digit="not even a digit"))
    assert isinstance(request, protocol.PredictRequest)
    assert request.kind == protocol.PREDICT


@pytest.mark.parametrize("digit", [0, 9])
def test_every_digit_is_a_label(digit: int) -> None:
    assert protocol.parse_frame(feedback(digit=digit)).label == digit


def test_predicted_and_model_are_optional() -> None:
    request = protocol.parse_frame(feedback(predicted=None, model=None))
    assert (request.label, request.predicted, request.model) == (7, None, None)
    nulls = json.loads(feedback())
    nulls.update(predicted=None, model=None)
    request = protocol.parse_frame(json.dumps(nulls))
    assert (request.predicted, request.model) == (None, None)


@pytest.mark.parametrize(
    "digit",
    [10, -1, "7", 7.0, 7.5, True, False, None, [7], {"digit": 7}],
    ids=["10", "-1", "string", "float", "fraction", "true", "false", "missing", "list", "object"],
)
def test_a_label_that_is_not_an_integer_0_to_9_is_a_bad_label(digit: object) -> None:
    """`true` is an int in Python but not in the protocol; 7.0 is a float in JSON."""
    error = refused(feedback(digit=digit))
    assert (error.code, error.request_id) == (protocol.BAD_LABEL, "f1")
    assert '"digit"' in error.message and "0 to 9" in error.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("predicted", 10),
        ("predicted", -1),
        ("predicted", "1"),
        ("predicted", 1.0),
        ("predicted", True),
        ("model", 5),
        ("model", ["v1"]),
        ("model", "v" * (protocol.MAX_MODEL_LENGTH + 1)),
    ],
)
def test_predicted_and_model_are_type_checked(field: str, value: object) -> None:
    error = refused(feedback(**{field: value}))
    assert (error.code, error.request_id) == (protocol.BAD_FRAME, "f1")
    assert f'"{field}"' in error.message


def test_the_longest_model_version_is_accepted() -> None:
    model = "v" * protocol.MAX_MODEL_LENGTH
    assert protocol.parse_frame(feedback(model=model)).model == model


def test_a_feedback_image_is_checked_as_a_predict_image_is_and_before_its_label() -> None:
    """The same image checks in the same order: a bad image with a bad label is refused for
    its image."""
    error = refused(feedback(image="data:image/gif;base64,R0lGODlhAQABAAAAACw=", digit=11))
    assert error.code == protocol.UNSUPPORTED_TYPE
    error = refused(feedback(image="data:image/png;base64,", digit=11))
    assert error.code == protocol.INVALID_IMAGE
    over = base64.b64encode(b"\0" * (MAX_IMAGE_BYTES + 1)).decode()
    assert refused(feedback(image="data:image/png;base64," + over)).code == (
        protocol.IMAGE_TOO_LARGE
    )


def test_an_unknown_type_is_told_both_types() -> None:
    error = refused(frame(type="subscribe"))
    assert error.code == protocol.UNKNOWN_TYPE
    assert '"predict"' in error.message and '"feedback"' in error.message


def test_feedback_saved_frame_shape() -> None:
    built = protocol.feedback_saved("f1", duplicate=False)
    assert built == {"type": "feedback_saved", "id": "f1", "duplicate": False}
    assert protocol.feedback_saved("f2", duplicate=True)["duplicate"] is True
    assert json.loads(protocol.encode(built)) == built


# --- Fuzzing: any text gets a request or a ProtocolError, never another exception ---------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _parse_or_refuse(text: str) -> None:
    try:
        request = protocol.parse_frame(text)
    except protocol.ProtocolError as error:
        assert error.code and error.message
        assert error.request_id is None or isinstance(error.request_id, str)
    else:
        assert isinstance(request.id, str) and 0 < len(request.id) <= protocol.MAX_ID_LENGTH
        base64.b64decode(request.image, validate=True)
        if isinstance(request, protocol.FeedbackRequest):
            assert type(request.label) is int and 0 <= request.label <= 9
            assert request.predicted is None or type(request.predicted) is int
            assert request.model is None or isinstance(request.model, str)


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_any_text_is_parsed_or_refused(text: str) -> None:
    _parse_or_refuse(text)


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["type", "id", "image", "digit", "predicted", "model", "other"]),
        json_values
        | st.sampled_from(
            [
                "predict",
                "feedback",
                "data:image/png;base64,iVBORw0KGgo=",
                "data:image/png;base64,",
                3,
            ]
        ),
        max_size=7,
    )
)
def test_any_json_object_is_parsed_or_refused(fields: dict[str, object]) -> None:
    _parse_or_refuse(json.dumps(fields))


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    media_type=st.sampled_from(
        ["image/png", "image/jpeg", "image/webp", "image/svg+xml", "", "a/b"]
    ),
    params=st.text(alphabet="abc;=", max_size=12),
    payload=st.text(alphabet="ABCabc012+/=!-_ \n", max_size=64),
)
def test_any_data_url_is_parsed_or_refused(media_type: str, params: str, payload: str) -> None:
    _parse_or_refuse(frame(image=f"data:{media_type};{params};base64,{payload}"))


# --- Numbers -------------------------------------------------------------------------------------


def test_a_predict_reads_a_digit_unless_it_expects_a_number() -> None:
    assert protocol.parse_frame(frame()).expect == protocol.EXPECT_DIGIT
    assert protocol.parse_frame(frame(expect="digit")).expect == protocol.EXPECT_DIGIT
    assert protocol.parse_frame(frame(expect="number")).expect == protocol.EXPECT_NUMBER
    error = refused(frame(expect="Number"))
    assert (error.code, error.request_id) == (protocol.BAD_FRAME, "r1")
    assert refused(frame(expect=["number"])).code == protocol.BAD_FRAME


def entry(digit: int, is_digit: bool = True, box: tuple[int, ...] = (0, 0, 10, 20)) -> dict:
    probabilities = [0.0] * 10
    probabilities[digit] = 1.0
    return protocol.number_digit(probabilities, box, "data:image/png;base64,", is_digit)


def test_a_number_answer_reads_its_digits_in_order() -> None:
    digit = entry(2, box=(1, 2, 30, 40))
    assert digit == {
        "digit": 2,
        "confidence": 1.0,
        "probabilities": [0.0, 0.0, 1.0] + [0.0] * 7,
        "is_digit": True,
        "box": [1, 2, 30, 40],
        "preview": "data:image/png;base64,",
    }
    answer = protocol.number_prediction(
        "n1", [entry(2), entry(0), entry(2), entry(6)], "m", {"worker": 1.23456}, batch=9
    )
    assert answer["type"] == protocol.PREDICTION and answer["id"] == "n1"
    assert answer["number"] == "2026" and answer["digit"] is None
    assert [d["digit"] for d in answer["digits"]] == [2, 0, 2, 6]
    assert (answer["model"], answer["timings_ms"], answer["batch"]) == ("m", {"worker": 1.235}, 9)
    json.loads(protocol.encode(answer))


def test_one_digit_is_also_the_digit_and_a_piece_that_is_no_digit_leaves_no_number() -> None:
    one = protocol.number_prediction("n", [entry(7)], "m", {})
    assert (one["number"], one["digit"]) == ("7", 7)
    unreadable = protocol.number_prediction("n", [entry(1), entry(3, is_digit=False)], "m", {})
    assert unreadable["number"] is None
    assert [d["is_digit"] for d in unreadable["digits"]] == [True, False]
    assert protocol.number_prediction("n", [], "m", {})["number"] is None
    lone = protocol.number_prediction("n", [entry(7, is_digit=False)], "m", {})
    assert (lone["number"], lone["digit"]) == (None, None)


def test_a_number_has_at_most_the_maximum_of_digits() -> None:
    from classifier.ml.input import MAX_NUMBER_DIGITS, TooManyDigitsError

    most = [entry(d % 10) for d in range(MAX_NUMBER_DIGITS)]
    assert len(protocol.number_prediction("n", most, "m", {})["number"]) == MAX_NUMBER_DIGITS
    with pytest.raises(ValueError):
        protocol.number_prediction("n", [*most, entry(0)], "m", {})
    assert protocol.image_error_code(TooManyDigitsError("x")) == protocol.TOO_MANY_DIGITS

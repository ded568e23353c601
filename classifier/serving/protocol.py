"""The websocket protocol at /ws/predict/, and the messages between the consumer and the worker.

Client → server (JSON text frames)::

    {"type": "predict", "id": "<1..128 chars>", "image": "data:image/png;base64,...",
     "expect": "digit" (the default) or "number"}
    {"type": "predict", "id": ..., "ink": [[[x, y, t], [x, y, t], ...], ...], "expect": ...}
    {"type": "feedback", "id": "<1..128 chars>", "image": "data:image/png;base64,..." or "ink",
     "digit": 0-9, "predicted": 0-9 or null, "model": "<version>" or null}

A request carries exactly one of `image` (a picture) and `ink` (the strokes in drawing order,
each a list of points `[x, y]` or `[x, y, t]`: pixels of the drawing area, y down, t in ms).
A `feedback` frame says what was really drawn (`digit`), sending the drawing again so that the
server keeps no state per socket; `predicted` and `model` (what the page was told) are optional.

Server → client::

    {"type": "prediction", "id": ..., "digit": 0-9 or null, "is_digit": true|false,
     "confidence": 0..1,
     "probabilities": [ten floats], "model": "<version>", "preview": "data:image/png;base64,...",
     "timings_ms": {...}, "batch": <images scored in the same model call>}
    {"type": "prediction", "id": ..., "number": "2026" or null, "digit": 0-9 or null,
     "digits": [{"digit", "confidence", "probabilities", "is_digit", "box", "preview"}, ...],
     "model": ..., "timings_ms": {...}, "batch": ...}            (to "expect": "number")
    {"type": "feedback_saved", "id": ..., "duplicate": false}
    {"type": "error", "id": ... or null, "code": "<short code>", "message": "<a sentence>"}

This module is the one home of the error codes and the limits on a frame, and builds the server's
frames (their shapes, typed, and the names of their types are classifier.serving.messages'). It
checks what can be checked without decoding pixels (the consumer runs it on the event loop, so it
must stay cheap); decoding the image is the worker's job and fails with the codes of
`classifier.ml.preprocessing`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from classifier.ml.input import (
    DIGITS,
    MAX_IMAGE_BYTES,
    MAX_INK_COORDINATE,
    MAX_INK_POINTS,
    MAX_INK_STROKES,
    MAX_MODEL_LENGTH,
    MAX_NUMBER_DIGITS,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    InvalidImageError,
    TooManyDigitsError,
)
from classifier.serving.messages import (
    ANSWER_MESSAGE,
    ERROR,
    EXPECT_DIGIT,
    EXPECT_NUMBER,
    FEEDBACK,
    FEEDBACK_SAVED,
    PREDICT,
    PREDICTION,
    AnswerMessage,
    ErrorFrame,
    Expect,
    FeedbackSavedFrame,
    InkLists,
    Kind,
    NumberDigit,
    NumberPredictionFrame,
    PredictionFrame,
    ServerFrame,
)

# The websocket's path, below the site's root (classifier.serving.routing mounts it there; the
# page opens its socket at "/" + PREDICT_PATH).
PREDICT_PATH = "ws/predict/"

# --- Frame types (messages.PREDICT, ...) and what a predict reads (its `expect`) -----------------

EXPECTS = (EXPECT_DIGIT, EXPECT_NUMBER)

# --- Error codes (the `code` of an error frame) ------------------------------------------------

# The frame itself.
BINARY_FRAME = "binary_frame"  # a binary websocket message; the protocol is JSON text
FRAME_TOO_LARGE = "frame_too_large"  # longer than MAX_FRAME_CHARS
BAD_JSON = "bad_json"  # not JSON at all
BAD_FRAME = "bad_frame"  # JSON, but not an object with the right fields and types
UNKNOWN_TYPE = "unknown_type"  # a `type` other than "predict" or "feedback"
BAD_ID = "bad_id"  # `id` missing, not a string, empty or too long
BAD_LABEL = "bad_label"  # a feedback's `digit` missing or not an integer 0-9
# The image, checked before decoding.
BAD_DATA_URL = "bad_data_url"  # `image` is not a base64 data URL
UNSUPPORTED_TYPE = "unsupported_type"  # a data URL of something other than PNG, JPEG or WebP
BAD_BASE64 = "bad_base64"  # the data URL's payload is not valid base64
# The ink, checked before queueing (the worker never sees bad ink).
BAD_INK = "bad_ink"  # not a list of strokes of [x, y] or [x, y, t] points of finite numbers
TOO_LARGE = "too_large"  # more strokes or points than the limits (InkLimits)
# The image, found while decoding it in the worker (`image_error_code`).
IMAGE_TOO_LARGE = "image_too_large"  # over the limits in bytes or pixels
INVALID_IMAGE = "invalid_image"  # not a PNG, JPEG or WebP, or truncated or corrupt
EMPTY = "empty"  # a blank canvas, or ink with no points
TOO_MANY_DIGITS = "too_many_digits"  # a number of more than MAX_NUMBER_DIGITS digits
# The service.
TIMEOUT = "timeout"  # no answer within DIGITS_REQUEST_TIMEOUT
UNAVAILABLE = "unavailable"  # no worker is alive, or Redis is unreachable: nothing can answer
INTERNAL = "internal"  # a bug or a failed model call; the worker logs the details
# Abuse: the request is refused, not queued; the socket stays open.
RATE_LIMITED = "rate_limited"  # over DIGITS_RATE_LIMIT, or DIGITS_MAX_IN_FLIGHT in flight
# A feedback whose client stored DIGITS_FEEDBACK_PER_HOUR new corrections in the last hour
# (found by the worker, which stores it): nothing is stored.
FEEDBACK_LIMIT = "feedback_limit"
# The connection: sent once, then the socket is closed with CLOSE_TOO_MANY_CONNECTIONS.
TOO_MANY_CONNECTIONS = "too_many_connections"  # over DIGITS_MAX_CONNECTIONS_PER_CLIENT

# Websocket close code for a refused connection: 4000-4999 are the application's own (daphne's
# autobahn, the server once used, refused to send the registry's 1013 "Try Again Later"); 429 as
# in HTTP's Too Many Requests.
CLOSE_TOO_MANY_CONNECTIONS = 4429

# --- Limits --------------------------------------------------------------------------------------

MAX_ID_LENGTH = 128
# MAX_MODEL_LENGTH (the longest model version a feedback frame may name) and DIGITS (the digits a
# label and a model's answer may be) are the ML core's (classifier.ml.input), imported above.
# Media types a data URL may name, as `canvas.toDataURL()` and image files spell them.
ACCEPTED_MEDIA_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/webp"})
# Other spellings of an accepted type, and the one name a request carries for it (a correction
# is stored with it).
_MEDIA_TYPE_ALIASES = {"image/jpg": "image/jpeg"}
# The longest frame worth parsing: the largest accepted image in base64 plus the envelope. The
# ASGI server's own limit (settings.DIGITS_WS_MAX_MESSAGE_BYTES) must be at least this, so every
# frame this module rejects gets an error frame rather than a closed socket.
MAX_FRAME_CHARS = 4 * math.ceil(MAX_IMAGE_BYTES / 3) + 4096

_DATA_URL = re.compile(
    r"data:(?P<media_type>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<payload>.*)", re.DOTALL
)


_IMAGE_ERROR_CODES: dict[type[ImageError], str] = {
    EmptyImageError: EMPTY,
    ImageTooLargeError: IMAGE_TOO_LARGE,
    InvalidImageError: INVALID_IMAGE,
    TooManyDigitsError: TOO_MANY_DIGITS,
}


def image_error_code(error: ImageError) -> str:
    """The code a client is sent for an image the ML core could not read."""
    for kind in type(error).__mro__:
        if kind in _IMAGE_ERROR_CODES:
            return _IMAGE_ERROR_CODES[kind]
    return INVALID_IMAGE


class ProtocolError(ValueError):
    """A frame the consumer refuses; answered with an error frame, the socket stays open."""

    def __init__(self, code: str, message: str, request_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class InkLimits:
    """The most strokes, and points in all, a request's ink may have (settings
    DIGITS_MAX_INK_STROKES and DIGITS_MAX_INK_POINTS; the defaults are classifier.ml.input's)."""

    strokes: int = MAX_INK_STROKES
    points: int = MAX_INK_POINTS


DEFAULT_INK_LIMITS = InkLimits()

_NUMBER_TYPES = frozenset({int, float})


@dataclass(frozen=True)
class PredictRequest:
    """A valid `predict` frame. An image request has `image`, the data URL's base64 payload,
    already checked, and `media_type`, the data URL's, lower case, "image/jpg" read as
    "image/jpeg"; an ink request has `ink` (checked against the limits) and both of those empty."""

    kind: ClassVar[Kind] = PREDICT
    id: str
    media_type: str
    image: str
    expect: Expect = EXPECT_DIGIT
    ink: InkLists | None = None


@dataclass(frozen=True)
class FeedbackRequest:
    """A valid `feedback` frame: the drawing (image or ink, checked as a predict's is), the
    digit that was really drawn (`label`), and, when the client sent them, what it was told:
    the model's digit (`predicted`) and the model's version (`model`)."""

    kind: ClassVar[Kind] = FEEDBACK
    id: str
    media_type: str
    image: str
    label: int
    predicted: int | None = None
    model: str | None = None
    ink: InkLists | None = None


Request = PredictRequest | FeedbackRequest


def parse_frame(
    text: str | None, data: bytes | None = None, limits: InkLimits = DEFAULT_INK_LIMITS
) -> Request:
    """Check one client frame; raise `ProtocolError` with a code and a sentence for a person.

    The checks run in one order for both types: the frame, its id, its type, its drawing (image
    or ink), then a feedback's own fields (`digit`, then `predicted` and `model`)."""
    if text is None:
        raise ProtocolError(
            BINARY_FRAME, "Binary messages are not accepted; send JSON text frames."
        )
    if len(text) > MAX_FRAME_CHARS:
        raise ProtocolError(
            FRAME_TOO_LARGE,
            f"The message is {len(text):,} characters long; the limit is {MAX_FRAME_CHARS:,}.",
        )
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        raise ProtocolError(BAD_JSON, "The message is not valid JSON.") from None
    return parse_message(frame, limits)


def parse_message(frame: Any, limits: InkLimits = DEFAULT_INK_LIMITS) -> Request:
    """Check one client message already read from JSON (a websocket frame's, or an HTTP
    request body's); raise `ProtocolError` as `parse_frame` does."""
    if not isinstance(frame, dict):
        raise ProtocolError(BAD_FRAME, "The message must be a JSON object.")

    request_id = _parse_id(frame.get("id"))
    kind = frame.get("type")
    if kind not in (PREDICT, FEEDBACK):
        if not isinstance(kind, str):
            raise ProtocolError(
                BAD_FRAME, 'The message needs a "type" field: "predict" or "feedback".', request_id
            )
        raise ProtocolError(
            UNKNOWN_TYPE,
            f'Unknown message type "{kind[:40]}"; the types are "predict" and "feedback".',
            request_id,
        )
    ink = None
    if "ink" in frame:
        if "image" in frame:
            raise ProtocolError(
                BAD_FRAME,
                'Send either an "image" or an "ink", not both.',
                request_id,
            )
        media_type, payload = "", ""
        ink = parse_ink(frame["ink"], limits, request_id)
    else:
        media_type, payload = _parse_image(frame.get("image"), request_id)
    if kind == PREDICT:
        return PredictRequest(
            id=request_id,
            media_type=media_type,
            image=payload,
            expect=_parse_expect(frame.get("expect", EXPECT_DIGIT), request_id),
            ink=ink,
        )
    return FeedbackRequest(
        id=request_id,
        media_type=media_type,
        image=payload,
        label=_parse_label(frame.get("digit"), request_id),
        predicted=_parse_predicted(frame.get("predicted"), request_id),
        model=_parse_model(frame.get("model"), request_id),
        ink=ink,
    )


def parse_ink(
    value: Any, limits: InkLimits = DEFAULT_INK_LIMITS, request_id: str | None = None
) -> InkLists:
    """Check an `ink`: a list of strokes, each a list of points `[x, y]` or `[x, y, t]` of finite
    numbers (not booleans), within the limits. Returns it as lists of floats.

    Pure Python on the event loop: one pass, a few checks a point (about 0.2 us each; the
    default limit of points costs a few ms), and the stroke and point counts are checked
    before the points, so an oversized ink costs no more than counting."""
    if not isinstance(value, list):
        raise ProtocolError(
            BAD_INK,
            'The "ink" must be a list of strokes, each a list of points [x, y] or [x, y, t].',
            request_id,
        )
    if len(value) > limits.strokes:
        raise ProtocolError(
            TOO_LARGE,
            f"The ink has {len(value):,} strokes; the limit is {limits.strokes:,}.",
            request_id,
        )
    total = 0
    for stroke in value:
        if not isinstance(stroke, list):
            raise ProtocolError(
                BAD_INK, "Each stroke of the ink must be a list of points.", request_id
            )
        total += len(stroke)
    if total > limits.points:
        raise ProtocolError(
            TOO_LARGE,
            f"The ink has {total:,} points; the limit is {limits.points:,}.",
            request_id,
        )
    if total == 0:
        raise ProtocolError(EMPTY, "The ink has no points: draw a digit first.", request_id)
    numbers = _NUMBER_TYPES
    for index, stroke in enumerate(value):
        for point in stroke:
            if type(point) is not list or not 2 <= len(point) <= 3:
                raise ProtocolError(
                    BAD_INK,
                    f"Stroke {index} has a point that is not [x, y] or [x, y, t].",
                    request_id,
                )
            for number in point:
                # bool is an int; JSON's true is no coordinate. NaN and Infinity arrive from
                # Python's json, which reads them, and fail the comparison, as does an integer
                # too large for a float (compared exactly, never converted).
                if type(number) not in numbers or not -MAX_INK_COORDINATE <= number <= (
                    MAX_INK_COORDINATE
                ):
                    raise ProtocolError(
                        BAD_INK,
                        f"Stroke {index} has a point whose coordinates are not finite numbers "
                        f"within ±{MAX_INK_COORDINATE:.0e} (no strings, booleans or NaN).",
                        request_id,
                    )
    # An empty stroke draws nothing. The lists are passed on as they came (ints stay ints):
    # they are JSON again on their way to the worker.
    return [stroke for stroke in value if stroke]


def _is_digit(value: Any) -> bool:
    """An integer 0-9; JSON's true and false (Python bools, so ints) and 7.0 are not."""
    return isinstance(value, int) and not isinstance(value, bool) and value in DIGITS


def _parse_expect(value: Any, request_id: str) -> Expect:
    if value == EXPECT_DIGIT and isinstance(value, str):
        return EXPECT_DIGIT
    if value == EXPECT_NUMBER and isinstance(value, str):
        return EXPECT_NUMBER
    raise ProtocolError(
        BAD_FRAME,
        'The "expect" must be "digit" (one digit, the default) or "number" (several digits '
        "in a row).",
        request_id,
    )


def _parse_label(value: Any, request_id: str) -> int:
    if not _is_digit(value):
        raise ProtocolError(
            BAD_LABEL,
            'A feedback needs a "digit": the integer 0 to 9 that was drawn.',
            request_id,
        )
    return int(value)


def _parse_predicted(value: Any, request_id: str) -> int | None:
    if value is not None and not _is_digit(value):
        raise ProtocolError(
            BAD_FRAME,
            'The "predicted" digit must be an integer 0 to 9, or null.',
            request_id,
        )
    return value


def _parse_model(value: Any, request_id: str) -> str | None:
    if value is not None and not (isinstance(value, str) and len(value) <= MAX_MODEL_LENGTH):
        raise ProtocolError(
            BAD_FRAME,
            f'The "model" must be a string of at most {MAX_MODEL_LENGTH} characters, or null.',
            request_id,
        )
    return value


def _parse_id(value: Any) -> str:
    if value is None:
        raise ProtocolError(BAD_ID, 'The message needs an "id" string to match the answer to.')
    if not isinstance(value, str):
        raise ProtocolError(BAD_ID, 'The "id" must be a string.')
    if not value or len(value) > MAX_ID_LENGTH:
        raise ProtocolError(BAD_ID, f'The "id" must be 1 to {MAX_ID_LENGTH} characters long.')
    return value


def _parse_image(value: Any, request_id: str) -> tuple[str, str]:
    """(media type, base64 payload) of a data URL, without decoding the pixels."""
    if not isinstance(value, str):
        raise ProtocolError(
            BAD_FRAME,
            'The message needs an "image" (a data URL such as "data:image/png;base64,...") or '
            'an "ink" (a list of strokes).',
            request_id,
        )
    match = _DATA_URL.fullmatch(value)
    if match is None:
        raise ProtocolError(
            BAD_DATA_URL,
            'The "image" must be a data URL such as "data:image/png;base64,...".',
            request_id,
        )
    media_type = match["media_type"].strip().lower()
    if media_type not in ACCEPTED_MEDIA_TYPES:
        shown = media_type[:40] or "no media type"
        raise ProtocolError(
            UNSUPPORTED_TYPE,
            f"Images of type {shown} are not accepted; send a PNG, JPEG or WebP image.",
            request_id,
        )
    if "base64" not in (p.strip().lower() for p in match["params"].split(";")):
        raise ProtocolError(
            BAD_DATA_URL, 'The data URL must be base64-encoded (";base64,").', request_id
        )
    media_type = _MEDIA_TYPE_ALIASES.get(media_type, media_type)
    payload = match["payload"]
    # Refuse by length before decoding: base64 holds 3 bytes in 4 characters.
    if len(payload) > 4 * math.ceil(MAX_IMAGE_BYTES / 3):
        raise ProtocolError(
            IMAGE_TOO_LARGE,
            f"The image is larger than the limit of {MAX_IMAGE_BYTES / 1e6:.0f} MB.",
            request_id,
        )
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(BAD_BASE64, "The image data is not valid base64.", request_id) from None
    if not raw:
        raise ProtocolError(INVALID_IMAGE, "The data URL holds no image data.", request_id)
    if len(raw) > MAX_IMAGE_BYTES:
        raise ProtocolError(
            IMAGE_TOO_LARGE,
            f"The image is {len(raw) / 1e6:.1f} MB; the limit is {MAX_IMAGE_BYTES / 1e6:.0f} MB.",
            request_id,
        )
    return media_type, payload


# --- Server → client ---------------------------------------------------------------------------


def prediction(
    request_id: str,
    probabilities: Iterable[float],
    model: str,
    preview: str,
    timings_ms: dict[str, float],
    batch: int = 1,
    is_digit: bool = True,
) -> PredictionFrame:
    """A `prediction` frame; the digit and confidence are read off the probabilities. `batch` is
    how many images the model scored in the same call (for diagnostics). When the model's score
    says the drawing is not a digit (`is_digit` false), `digit` is null; the confidence is
    still the highest probability."""
    probs = [round(float(p), 6) for p in probabilities]
    best = max(range(len(probs)), key=probs.__getitem__)
    return {
        "type": PREDICTION,
        "id": request_id,
        "digit": best if is_digit else None,
        "is_digit": bool(is_digit),
        "confidence": probs[best],
        "probabilities": probs,
        "model": model,
        "preview": preview,
        "timings_ms": {name: round(value, 3) for name, value in timings_ms.items()},
        "batch": batch,
    }


def number_digit(
    probabilities: Iterable[float],
    box: Sequence[int],
    preview: str,
    is_digit: bool,
) -> NumberDigit:
    """One digit of a number answer: what the model read in the box (x0, y0, x1, y1, in the
    image's pixels, x1 and y1 exclusive), and whether the piece is a digit at all."""
    probs = [round(float(p), 6) for p in probabilities]
    digit = max(range(len(probs)), key=probs.__getitem__)
    return {
        "digit": digit,
        "confidence": probs[digit],
        "probabilities": probs,
        "is_digit": bool(is_digit),
        "box": [int(v) for v in box],
        "preview": preview,
    }


def number_prediction(
    request_id: str,
    digits: Sequence[NumberDigit],
    model: str,
    timings_ms: dict[str, float],
    batch: int = 1,
) -> NumberPredictionFrame:
    """A `prediction` frame for "expect": "number": the digits (from `number_digit`) in reading
    order; `number` is null when none was found or a piece is not a digit, `digit` is the one
    digit when exactly one was found."""
    if len(digits) > MAX_NUMBER_DIGITS:
        raise ValueError(f"A number has at most {MAX_NUMBER_DIGITS} digits, not {len(digits)}.")
    readable = bool(digits) and all(d["is_digit"] for d in digits)
    return {
        "type": PREDICTION,
        "id": request_id,
        "number": "".join(str(d["digit"]) for d in digits) if readable else None,
        "digits": list(digits),
        "digit": digits[0]["digit"] if len(digits) == 1 and readable else None,
        "model": model,
        "timings_ms": {name: round(value, 3) for name, value in timings_ms.items()},
        "batch": batch,
    }


def feedback_saved(request_id: str, duplicate: bool) -> FeedbackSavedFrame:
    """A `feedback_saved` frame: the correction is stored; `duplicate` when the same 28x28
    image was stored before (it counts once)."""
    return {"type": FEEDBACK_SAVED, "id": request_id, "duplicate": bool(duplicate)}


def error(request_id: str | None, code: str, message: str) -> ErrorFrame:
    """An `error` frame. `request_id` is None when the frame had no usable id."""
    return {"type": ERROR, "id": request_id, "code": code, "message": message}


def encode(frame: ServerFrame) -> str:
    return json.dumps(frame, separators=(",", ":"), allow_nan=False)


# --- Consumer ↔ worker (internal: the channel layer's message; the task's kwargs: messages.py) ---


def answer_message(ticket: int, frame: ServerFrame) -> AnswerMessage:
    """What the worker sends to a consumer: the frame for the client and the consumer's ticket."""
    return {"type": ANSWER_MESSAGE, "ticket": ticket, "frame": frame}

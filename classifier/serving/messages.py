"""Every message of the serving path, typed: the socket's frames both ways, the task's kwargs the
web process queues for the workers, and the worker's answer over the channel layer.

The types are the shapes only: JSON objects as they travel (TypedDicts, plain dicts at run time,
so typing them costs nothing), checked by the type checker where they are built and read. The
names a frame's `type` takes live here with them; the error codes, the limits and the checks of a
client's frame are protocol.py's, which builds the server's frames; the task's kwargs are built by
classifier.serving.enqueue and read by classifier.serving.batch through `Task` (and its part
`Drawing`), which holds the defaults of the fields a message may leave out. A message's shape
changes here or nowhere; the wire format is pinned by tests/serving (test_protocol, test_batch,
test_tasks, test_consumers) and documented in docs/protocol.md and the API documents
(classifier.serving.schemas).

This module imports nothing of the service: protocol.py, answers.py, the consumer, the HTTP API,
the queueing and the worker all read it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, NotRequired, Self, TypedDict

# --- Names ---------------------------------------------------------------------------------------

# A frame's `type`: the client's two, the server's three.
PREDICT: Final = "predict"
FEEDBACK: Final = "feedback"
PREDICTION: Final = "prediction"
FEEDBACK_SAVED: Final = "feedback_saved"
ERROR: Final = "error"

# What a predict reads (its `expect`).
EXPECT_DIGIT: Final = "digit"  # one digit: the answer has `digit`, `confidence`, `probabilities`
EXPECT_NUMBER: Final = "number"  # several digits in a row: the answer has `number` and `digits`

# The channel-layer message type the worker sends to a consumer's channel; Channels calls the
# consumer's method of the same name with the dots made underscores (`digits_answer`).
ANSWER_MESSAGE: Final = "digits.answer"

Kind = Literal["predict", "feedback"]
Expect = Literal["digit", "number"]

# An ink as received and passed on: strokes of points [x, y] or [x, y, t] (JSON numbers).
InkLists = list[list[list[float]]]

# --- Client → server -----------------------------------------------------------------------------


class PredictFrame(TypedDict):
    """`{"type": "predict", ...}`: exactly one of `image` (a base64 data URL) and `ink`."""

    type: Literal["predict"]
    id: str
    image: NotRequired[str]
    ink: NotRequired[InkLists]
    expect: NotRequired[Expect]  # "digit" when left out


class FeedbackFrame(TypedDict):
    """`{"type": "feedback", ...}`: the drawing again, the digit really drawn, and what the page
    was told (both optional)."""

    type: Literal["feedback"]
    id: str
    image: NotRequired[str]
    ink: NotRequired[InkLists]
    digit: int
    predicted: NotRequired[int | None]
    model: NotRequired[str | None]


ClientFrame = PredictFrame | FeedbackFrame

# --- Server → client -----------------------------------------------------------------------------


class PredictionFrame(TypedDict):
    """The answer to a predict of one digit (protocol.prediction)."""

    type: Literal["prediction"]
    id: str
    digit: int | None  # None when the drawing is not a digit
    is_digit: bool
    confidence: float
    probabilities: list[float]
    model: str
    preview: str
    timings_ms: dict[str, float]
    batch: int


class NumberDigit(TypedDict):
    """One digit of a number's answer (protocol.number_digit)."""

    digit: int
    confidence: float
    probabilities: list[float]
    is_digit: bool
    box: list[int]  # x0, y0, x1, y1 in the image's pixels; x1 and y1 exclusive
    preview: str


class NumberPredictionFrame(TypedDict):
    """The answer to a predict with `"expect": "number"` (protocol.number_prediction)."""

    type: Literal["prediction"]
    id: str
    number: str | None
    digits: list[NumberDigit]
    digit: int | None
    model: str
    timings_ms: dict[str, float]
    batch: int


class FeedbackSavedFrame(TypedDict):
    """The answer to a stored feedback (protocol.feedback_saved)."""

    type: Literal["feedback_saved"]
    id: str
    duplicate: bool


class ErrorFrame(TypedDict):
    """A refusal or a failure (protocol.error); `id` is None when the frame had no usable id."""

    type: Literal["error"]
    id: str | None
    code: str  # one of protocol.py's codes (the HTTP API adds its own, schemas.HTTP_CODES)
    message: str


ServerFrame = PredictionFrame | NumberPredictionFrame | FeedbackSavedFrame | ErrorFrame

# --- Worker → consumer (the channel layer) -------------------------------------------------------


class AnswerMessage(TypedDict):
    """What the worker sends to a consumer's channel: the frame for the client, and the ticket
    the consumer gave the request (protocol.answer_message)."""

    type: Literal["digits.answer"]
    ticket: int
    frame: ServerFrame


# --- Web → worker (the Celery task's kwargs) -----------------------------------------------------


class TaskKwargs(TypedDict):
    """The kwargs of one queued request (the task `classifier.predict`), as JSON in the task
    message. The web side writes the left-out fields only where they differ from `Task`'s
    defaults (`expect`) or where the kind has them (a feedback's fields)."""

    reply_channel: str  # the consumer's channel (or the HTTP API's, per event loop)
    ticket: int  # the consumer's key for the request
    id: str  # the client's id
    kind: NotRequired[Kind]
    deadline: float  # epoch seconds; the worker drops the request past it
    sent_at: float  # epoch seconds, when it was queued (the queue wait's start)
    image: NotRequired[str]  # base64, without the data URL's prefix
    ink: NotRequired[InkLists]  # instead of `image`
    expect: NotRequired[Expect]
    # A feedback's own.
    media_type: NotRequired[str]  # the data URL's ("" for ink)
    label: NotRequired[int]
    client_predicted: NotRequired[int | None]
    client_model: NotRequired[str | None]
    client_hash: NotRequired[str]  # the salted hash of the client's address


@dataclass(frozen=True, slots=True, kw_only=True)
class Drawing:
    """What a request asks the model about, with the defaults of what its kwargs may leave out:
    an image (base64) or an ink, and what to read in it. What `batch.prepare_items` takes."""

    image: str = ""
    ink: InkLists | None = None  # a drawing sent as ink; then `image` is empty
    expect: Expect = EXPECT_DIGIT  # as before numbers

    @classmethod
    def read(cls, kwargs: Mapping[str, Any] | Self) -> Self:
        """This class's view of a message's kwargs (fields it does not know are ignored)."""
        if not isinstance(kwargs, Mapping):
            return kwargs
        names = cls.__dataclass_fields__
        return cls(**{name: value for name, value in kwargs.items() if name in names})


@dataclass(frozen=True, slots=True)
class Task(Drawing):
    """One request's kwargs as the worker reads them (`Task.read`): every field a message may
    leave out with its default, here and nowhere else (the drawing's fields are keywords only)."""

    id: str
    reply_channel: str
    ticket: int
    deadline: float = math.inf  # none: never dropped
    sent_at: float | None = None  # unknown: no queue wait observed
    kind: Kind = PREDICT  # a message without one is a predict (as before feedback)
    media_type: str = "image/png"  # a feedback's image's, as stored with it
    label: int | None = None  # a feedback's digit
    client_predicted: int | None = None
    client_model: str | None = None
    client_hash: str = ""

"""The service's contract as documents: OpenAPI 3.1 for the HTTP API, AsyncAPI 2.6 for the
websocket's frames, and the HTTP status of every error code.

Why generated here, from protocol.py, rather than written by hand: the frame types, the error
codes, what `expect` takes and the limits come from the module that enforces them (and the ink
limits from settings), so a new code or limit shows up in both documents without a second edit.
The answers' shapes are written out once below, strictly (no unlisted field), and the tests hold
real answers of both paths to them (tests/serving/test_schemas.py), so a field added or renamed
in protocol.py fails there rather than drifting.

Both documents share one set of JSON Schemas (draft 2020-12, which OpenAPI 3.1 uses; written in
the subset draft 7 also reads, for AsyncAPI 2.6) under `components/schemas`.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from django.conf import settings

from classifier.ml.input import MAX_IMAGE_BYTES, MAX_NUMBER_DIGITS
from classifier.serving import protocol

# Where the HTTP API lives, below the site's root (digits_site/asgi.py mounts it there).
API_ROOT = "/api/v1/"
PREDICT_URL = API_ROOT + "predict"
OPENAPI_URL = API_ROOT + "openapi.json"
ASYNCAPI_URL = API_ROOT + "asyncapi.json"

# --- Error codes the HTTP API adds to the socket's --------------------------------------------

UNAUTHORIZED = "unauthorized"  # DIGITS_API_KEYS is set and the request has no bearer key
FORBIDDEN = "forbidden"  # a bearer key that is not one of DIGITS_API_KEYS
BODY_TOO_LARGE = "body_too_large"  # a body over MAX_BODY_BYTES (declared or read)
BAD_FORM = "bad_form"  # multipart/form-data that is malformed or has no `image` field
NOT_FOUND = "not_found"  # no such path under API_ROOT
METHOD_NOT_ALLOWED = "method_not_allowed"
HTTP_CODES = (UNAUTHORIZED, FORBIDDEN, BODY_TOO_LARGE, BAD_FORM, NOT_FOUND, METHOD_NOT_ALLOWED)

# The largest body worth reading: the largest frame the socket parses (an image in base64 plus
# the envelope; a form carries the same image in fewer bytes).
MAX_BODY_BYTES = protocol.MAX_FRAME_CHARS

# Socket codes no HTTP request can get: the API reads no binary frames, sets the type and id
# itself, takes no feedback and holds no connection count.
_SOCKET_ONLY = frozenset(
    {
        protocol.BINARY_FRAME,
        protocol.FRAME_TOO_LARGE,
        protocol.UNKNOWN_TYPE,
        protocol.BAD_ID,
        protocol.BAD_LABEL,
        protocol.FEEDBACK_LIMIT,
        protocol.TOO_MANY_CONNECTIONS,
    }
)
# protocol.py's capitalised strings that are not error codes.
_NOT_CODES = frozenset(
    {
        protocol.PREDICT,
        protocol.FEEDBACK,
        protocol.PREDICTION,
        protocol.FEEDBACK_SAVED,
        protocol.ERROR,
        *protocol.EXPECTS,
    }
)

# The HTTP status of each code that is not a plain 400 (a client's mistake in what it sent).
_STATUS = {
    UNAUTHORIZED: 401,
    FORBIDDEN: 403,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    BODY_TOO_LARGE: 413,
    protocol.FRAME_TOO_LARGE: 413,
    protocol.IMAGE_TOO_LARGE: 413,
    protocol.TOO_LARGE: 413,  # ink over the limits
    protocol.UNSUPPORTED_TYPE: 415,
    protocol.RATE_LIMITED: 429,
    protocol.INTERNAL: 500,
    protocol.UNAVAILABLE: 503,
    protocol.TIMEOUT: 504,
}


def status_for(code: str) -> int:
    """The HTTP status an answer with this error code gets: 400 unless listed above, so a code
    added to protocol.py is a client's mistake (never a 5xx) until it is listed otherwise."""
    return _STATUS.get(code, 400)


def protocol_codes() -> frozenset[str]:
    """Every error code protocol.py defines: its capitalised module constants whose value is a
    lower-case identifier, less the frame types and what `expect` takes (the same reading as
    tests/serving/test_protocol.py's)."""
    return frozenset(
        value
        for name, value in vars(protocol).items()
        if name.isupper()
        and isinstance(value, str)
        and re.fullmatch(r"[a-z][a-z0-9]*(_[a-z0-9]+)*", value)
        and value not in _NOT_CODES
    )


def http_codes() -> frozenset[str]:
    """Every code an answer of POST /api/v1/predict may carry."""
    return (protocol_codes() - _SOCKET_ONLY) | {UNAUTHORIZED, FORBIDDEN, BODY_TOO_LARGE, BAD_FORM}


def codes_by_status() -> dict[int, list[str]]:
    """The predict call's error codes grouped by their HTTP status, sorted."""
    grouped: dict[int, list[str]] = {}
    for code in sorted(http_codes()):
        grouped.setdefault(status_for(code), []).append(code)
    return dict(sorted(grouped.items()))


# --- The shared JSON Schemas ----------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def component_schemas() -> dict[str, dict[str, Any]]:
    """Every message's JSON Schema, by name (the ink limits are the settings in force)."""
    probabilities = {
        "type": "array",
        "items": {"type": "number", "minimum": 0, "maximum": 1},
        "minItems": 10,
        "maxItems": 10,
        "description": "The probability of each digit 0-9.",
    }
    digit = {"type": "integer", "minimum": 0, "maximum": 9}
    preview = {
        "type": "string",
        "pattern": "^data:image/png;base64,",
        "description": "The 28x28 image the model saw, a PNG data URL.",
    }
    request_id = {"type": "string", "minLength": 1, "maxLength": protocol.MAX_ID_LENGTH}
    max_strokes = settings.DIGITS_MAX_INK_STROKES
    max_points = settings.DIGITS_MAX_INK_POINTS
    return {
        "Image": {
            "type": "string",
            "pattern": "^data:",
            "description": "A base64 data URL of a PNG, JPEG or WebP image (what "
            f"canvas.toDataURL() gives), at most {MAX_IMAGE_BYTES:,} bytes decoded.",
            "examples": ["data:image/png;base64,iVBORw0KGgo..."],
        },
        "Point": {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 2,
            "maxItems": 3,
            "description": "[x, y] or [x, y, t]: pixels of the drawing area (origin top left, y "
            "growing downward), t in milliseconds. Any scale and offset.",
        },
        "Ink": {
            "type": "array",
            "items": {"type": "array", "items": _ref("Point")},
            "minItems": 1,
            "maxItems": max_strokes,
            "description": f"Strokes in drawing order, each a list of points: at most "
            f"{max_strokes} strokes and {max_points} points in all (DIGITS_MAX_INK_STROKES, "
            "DIGITS_MAX_INK_POINTS); no points at all is `empty`.",
            "examples": [[[[10, 10, 0], [40, 12, 16], [25, 60, 48]]]],
        },
        "Expect": {
            "type": "string",
            "enum": list(protocol.EXPECTS),
            "default": protocol.EXPECT_DIGIT,
            "description": '"digit": one digit; "number": up to '
            f"{MAX_NUMBER_DIGITS} digits in a row.",
        },
        "PredictBody": {
            "type": "object",
            "properties": {
                "image": _ref("Image"),
                "ink": _ref("Ink"),
                "expect": _ref("Expect"),
            },
            "oneOf": [{"required": ["image"]}, {"required": ["ink"]}],
            "description": "Exactly one of `image` and `ink`; other fields are ignored.",
        },
        "PredictForm": {
            "type": "object",
            "properties": {
                "image": {
                    "type": "string",
                    "contentMediaType": "application/octet-stream",
                    "description": "The PNG, JPEG or WebP file.",
                },
                "expect": _ref("Expect"),
            },
            "required": ["image"],
        },
        "Timings": {
            "type": "object",
            "additionalProperties": {"type": "number"},
            "description": "Milliseconds: queue, preprocess, inference, worker, server.",
        },
        "Prediction": {
            "type": "object",
            "properties": {
                "type": {"const": protocol.PREDICTION},
                "id": request_id,
                "digit": _nullable(digit),
                "is_digit": {"type": "boolean"},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "probabilities": probabilities,
                "model": {"type": "string"},
                "preview": preview,
                "timings_ms": _ref("Timings"),
                "batch": {"type": "integer", "minimum": 1},
            },
            "required": [
                *("type", "id", "digit", "is_digit", "confidence", "probabilities"),
                *("model", "preview", "timings_ms", "batch"),
            ],
            "additionalProperties": False,
        },
        "NumberDigit": {
            "type": "object",
            "properties": {
                "digit": digit,
                "confidence": {"type": "number", "minimum": 0, "maximum": 1},
                "probabilities": probabilities,
                "is_digit": {"type": "boolean"},
                "box": {
                    "type": "array",
                    "items": {"type": "integer"},
                    "minItems": 4,
                    "maxItems": 4,
                    "description": "[x0, y0, x1, y1] in the image's pixels; x1, y1 exclusive.",
                },
                "preview": preview,
            },
            "required": ["digit", "confidence", "probabilities", "is_digit", "box", "preview"],
            "additionalProperties": False,
        },
        "NumberPrediction": {
            "type": "object",
            "properties": {
                "type": {"const": protocol.PREDICTION},
                "id": request_id,
                "number": _nullable({"type": "string", "pattern": "^[0-9]+$"}),
                "digits": {
                    "type": "array",
                    "items": _ref("NumberDigit"),
                    "maxItems": MAX_NUMBER_DIGITS,
                },
                "digit": _nullable(digit),
                "model": {"type": "string"},
                "timings_ms": _ref("Timings"),
                "batch": {"type": "integer", "minimum": 1},
            },
            "required": ["type", "id", "number", "digits", "digit", "model", "timings_ms"],
            "additionalProperties": False,
        },
        "Answer": {"oneOf": [_ref("Prediction"), _ref("NumberPrediction")]},
        "Error": {
            "type": "object",
            "properties": {
                "type": {"const": protocol.ERROR},
                "id": _nullable({"type": "string"}),
                "code": {"type": "string", "enum": sorted(protocol_codes() | set(HTTP_CODES))},
                "message": {"type": "string", "description": "A sentence for a person."},
            },
            "required": ["code", "message"],
            "additionalProperties": False,
        },
        # The websocket's own frames.
        "PredictFrame": {
            "type": "object",
            "properties": {
                "type": {"const": protocol.PREDICT},
                "id": request_id,
                "image": _ref("Image"),
                "ink": _ref("Ink"),
                "expect": _ref("Expect"),
            },
            "required": ["type", "id"],
            "oneOf": [{"required": ["image"]}, {"required": ["ink"]}],
        },
        "FeedbackFrame": {
            "type": "object",
            "properties": {
                "type": {"const": protocol.FEEDBACK},
                "id": request_id,
                "image": _ref("Image"),
                "ink": _ref("Ink"),
                "digit": digit,
                "predicted": _nullable(digit),
                "model": _nullable({"type": "string", "maxLength": protocol.MAX_MODEL_LENGTH}),
            },
            "required": ["type", "id", "digit"],
            "oneOf": [{"required": ["image"]}, {"required": ["ink"]}],
        },
        "FeedbackSaved": {
            "type": "object",
            "properties": {
                "type": {"const": protocol.FEEDBACK_SAVED},
                "id": request_id,
                "duplicate": {"type": "boolean"},
            },
            "required": ["type", "id", "duplicate"],
            "additionalProperties": False,
        },
    }


def _version() -> str:
    try:
        return metadata.version("digits")
    except metadata.PackageNotFoundError:
        return "0"


def _error_response(status: int, codes: list[str]) -> dict[str, Any]:
    reasons = {
        400: "A mistake in the request: its body, image or ink.",
        401: "DIGITS_API_KEYS is set and the request sent no `Authorization: Bearer` key.",
        403: "The bearer key is not one of DIGITS_API_KEYS.",
        413: "Too large: the body (refused before it is read whole), the image or the ink.",
        415: "A body that is neither JSON nor a form, or an image that is not PNG, JPEG or WebP.",
        429: "Over the rate limit or the cap on requests in flight of the client's address.",
        500: "The model failed on this request's batch (the worker logs why).",
        503: "No worker is alive, or the request could not be queued: try again shortly.",
        504: "No answer came within DIGITS_REQUEST_TIMEOUT seconds.",
    }
    response: dict[str, Any] = {
        "description": f"{reasons.get(status, 'An error.')} Codes: {', '.join(codes)}.",
        "content": {
            "application/json": {
                "schema": {
                    "allOf": [
                        _ref("Error"),
                        {"properties": {"code": {"enum": codes}}},
                    ]
                }
            }
        },
    }
    if status == 429:
        response["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before sending again.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return response


def openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API (served at OPENAPI_URL)."""
    errors = {str(status): _error_response(status, c) for status, c in codes_by_status().items()}
    document_ok = {
        "description": "The document.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Digits",
            "version": _version(),
            "description": "Handwritten digits and numbers read by a model, over HTTP. The same "
            "queue and workers answer the page's websocket (described at "
            f"{ASYNCAPI_URL}); docs/protocol.md has every field.",
        },
        "paths": {
            PREDICT_URL: {
                "post": {
                    "operationId": "predict",
                    "summary": "Read one digit, or a number, from an image or ink.",
                    "security": [{"bearer": []}, {}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref("PredictBody")},
                            "multipart/form-data": {
                                "schema": _ref("PredictForm"),
                                "encoding": {
                                    "image": {"contentType": "image/png, image/jpeg, image/webp"}
                                },
                            },
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "The answer: a digit, or a number with "
                            '"expect": "number".',
                            "headers": {
                                "X-Request-Id": {
                                    "description": "The id the service gave the request.",
                                    "schema": {"type": "string"},
                                }
                            },
                            "content": {"application/json": {"schema": _ref("Answer")}},
                        },
                        **errors,
                    },
                }
            },
            OPENAPI_URL: {
                "get": {"operationId": "openapi", "responses": {"200": document_ok}},
            },
            ASYNCAPI_URL: {
                "get": {"operationId": "asyncapi", "responses": {"200": document_ok}},
            },
        },
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "One of DIGITS_API_KEYS, when the service sets any.",
                }
            },
        },
    }


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 2.6 document of the websocket's frames (served at ASYNCAPI_URL)."""

    def message(name: str, summary: str) -> dict[str, Any]:
        return {"name": name, "summary": summary, "payload": _ref(name)}

    return {
        "asyncapi": "2.6.0",
        "info": {
            "title": "Digits websocket",
            "version": _version(),
            "description": "JSON text frames; every accepted request gets exactly one answer "
            "with its id, and an error leaves the socket open. docs/protocol.md has every "
            "field, code and limit.",
        },
        "defaultContentType": "application/json",
        "channels": {
            "/" + protocol.PREDICT_PATH: {
                "publish": {
                    "summary": "What a client sends.",
                    "message": {
                        "oneOf": [
                            message("PredictFrame", "Read a digit or a number."),
                            message("FeedbackFrame", "Say what was really drawn."),
                        ]
                    },
                },
                "subscribe": {
                    "summary": "What the service answers.",
                    "message": {
                        "oneOf": [
                            message("Prediction", "A digit."),
                            message("NumberPrediction", 'A number (to "expect": "number").'),
                            message("FeedbackSaved", "A correction stored."),
                            message("Error", "A refused or failed request."),
                        ]
                    },
                },
            }
        },
        "components": {"schemas": component_schemas()},
    }

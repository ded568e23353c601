"""The contract's documents (classifier/serving/schemas.py): valid, complete, and true to the
answers the service really sends.

The OpenAPI document is checked by openapi-spec-validator; every JSON Schema in both documents
by jsonschema's meta-schemas. Then answers are held to them: frames built by protocol.py's own
builders (what a worker sends), and the in-process API's responses of every status
(tests/serving/test_http.py's seams). The real stack's answers are held to them in
tests/e2e/test_http_api.py.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate as validate_openapi

from classifier.serving import protocol, schemas
from tests.catalogue import (
    FRAME_CODES,
    IMAGE_CODES,
    digit_png,
    good_image,
    good_ink,
    ink_predict,
    predict,
)
from tests.helpers import data_url
from tests.serving.test_consumers import Service, fresh_address, prediction
from tests.serving.test_http import Api, Response, answered
from tests.serving.test_http import api as api  # the fixtures
from tests.serving.test_http import service as service
from tests.serving.test_http import worker as worker


def check(document: dict[str, Any], schema: dict[str, Any], instance: Any) -> None:
    """Validate `instance` against `schema`, whose $refs point into `document`'s components."""
    root = {**schema, "components": document["components"]}
    jsonschema.Draft202012Validator(root).validate(instance)


def component(document: dict[str, Any], name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def response_schema(document: dict[str, Any], status: int) -> dict[str, Any]:
    responses = document["paths"][schemas.PREDICT_URL]["post"]["responses"]
    return responses[str(status)]["content"]["application/json"]["schema"]


# --- The documents themselves ---------------------------------------------------------------------


def test_the_openapi_document_is_valid_openapi_3_1() -> None:
    document = schemas.openapi()
    validate_openapi(document)
    assert document["openapi"] == "3.1.0"
    json.dumps(document)  # served as JSON


def test_every_schema_of_both_documents_is_valid_json_schema() -> None:
    for document in (schemas.openapi(), schemas.asyncapi()):
        for name, schema in document["components"]["schemas"].items():
            jsonschema.Draft202012Validator.check_schema(schema)
            jsonschema.Draft7Validator.check_schema(schema)  # AsyncAPI 2.6's dialect
            assert name


def test_the_asyncapi_document_names_the_socket_and_every_frame() -> None:
    document = schemas.asyncapi()
    channel = document["channels"]["/" + protocol.PREDICT_PATH]
    sent = {m["name"] for m in channel["publish"]["message"]["oneOf"]}
    answers = {m["name"] for m in channel["subscribe"]["message"]["oneOf"]}
    assert sent == {"PredictFrame", "FeedbackFrame"}
    assert answers == {"Prediction", "NumberPrediction", "FeedbackSaved", "Error"}
    for message in (
        channel["publish"]["message"]["oneOf"] + channel["subscribe"]["message"]["oneOf"]
    ):
        assert message["payload"]["$ref"].split("/")[-1] in document["components"]["schemas"]


def test_every_error_code_is_documented_under_its_status_and_only_the_services_are_5xx() -> None:
    """Each code an HTTP answer may carry is listed under exactly the status the API sends it
    with; codes of protocol.py are all there (a new one appears by itself, as a 400)."""
    document = schemas.openapi()
    responses = document["paths"][schemas.PREDICT_URL]["post"]["responses"]
    listed: dict[str, int] = {}
    for status, response in responses.items():
        if status == "200":
            continue
        for code in response["content"]["application/json"]["schema"]["allOf"][1]["properties"][
            "code"
        ]["enum"]:
            assert code not in listed, code
            listed[code] = int(status)
    assert set(listed) == schemas.http_codes()
    assert all(listed[code] == schemas.status_for(code) for code in listed)
    assert {c for c, s in listed.items() if s >= 500} == {
        protocol.INTERNAL,
        protocol.UNAVAILABLE,
        protocol.TIMEOUT,
    }
    # Every code the catalogue's frames and images are refused with, less the socket's own.
    socket_only = {protocol.BINARY_FRAME, protocol.FRAME_TOO_LARGE, protocol.UNKNOWN_TYPE,
                   protocol.BAD_ID, protocol.BAD_LABEL}  # fmt: skip
    assert (FRAME_CODES | IMAGE_CODES) - socket_only <= set(listed)
    assert responses["429"]["headers"]["Retry-After"]


def test_the_ink_limits_in_the_documents_are_the_settings_in_force(settings: Any) -> None:
    settings.DIGITS_MAX_INK_STROKES = 7
    ink = schemas.openapi()["components"]["schemas"]["Ink"]
    assert ink["maxItems"] == 7
    assert "7 strokes" in ink["description"]


# --- Frames built as the service builds them ---------------------------------------------------


def test_the_frames_a_client_sends_fit_the_websocket_schemas() -> None:
    document = schemas.asyncapi()
    frames = [
        json.loads(predict("p1", good_image())),
        json.loads(predict("p2", good_image(), expect="number")),
        json.loads(ink_predict("p3", good_ink())),
        {"type": "feedback", "id": "f1", "image": good_image(), "digit": 7, "predicted": 1,
         "model": "m"},
    ]  # fmt: skip
    for frame in frames:
        name = "FeedbackFrame" if frame["type"] == protocol.FEEDBACK else "PredictFrame"
        check(document, component(document, name), frame)
    both = {"type": "predict", "id": "x", "image": good_image(), "ink": good_ink()}
    with pytest.raises(jsonschema.ValidationError):
        check(document, component(document, "PredictFrame"), both)


def test_the_answers_protocol_builds_fit_the_schemas_and_the_schemas_refuse_others() -> None:
    document = schemas.openapi()
    digit = prediction("a", 4)
    rejected = protocol.prediction("b", [0.1] * 10, "m", "data:image/png;base64,AA==", {}, 1, False)
    piece = protocol.number_digit(
        [0.9] + [0.01] * 9, (1, 2, 30, 40), "data:image/png;base64,", True
    )
    number = protocol.number_prediction("c", [piece, piece], "m", {"worker": 1.0}, batch=3)
    nothing = protocol.number_prediction("d", [], "m", {})
    for answer in (digit, rejected, number, nothing):
        check(document, component(document, "Answer"), answer)
    check(document, component(document, "FeedbackSaved"), protocol.feedback_saved("e", True))
    check(document, component(document, "Error"), protocol.error(None, protocol.BAD_JSON, "No."))
    for broken in ({**digit, "extra": 1}, {k: v for k, v in digit.items() if k != "model"}):
        with pytest.raises(jsonschema.ValidationError):
            check(document, component(document, "Answer"), broken)


# --- The API's own responses, every status --------------------------------------------------------


def test_the_apis_responses_fit_the_openapi_document_status_by_status(
    api: Api, service: Service, worker: None, settings: Any
) -> None:
    """A 200 and an answer of every error status the in-process API can give, each held to the
    document's schema for its status."""
    document = schemas.openapi()
    good = {"image": data_url(digit_png(7))}
    limited = fresh_address()

    async def scenario() -> list[Response]:
        _, ok = await answered(api, api.post_json(good), lambda q: prediction(q.request.id, 7))
        _, failed = await answered(
            api, api.post_json(good), lambda q: protocol.error(q.request.id, protocol.INTERNAL, "x")
        )
        responses = [ok, failed, await api.request(b"nope"), await api.request(b"7", "text/plain")]
        responses.append(await api.post_json({"ink": [[[1, 2]]] * 10_000}))
        settings.DIGITS_API_KEYS = ["k"]
        responses.append(await api.post_json(good))
        responses.append(await api.post_json(good, headers=[(b"authorization", b"Bearer no")]))
        settings.DIGITS_API_KEYS = []
        settings.DIGITS_RATE_LIMIT, settings.DIGITS_RATE_BURST = 0.1, 1
        responses += [await api.request(b"x", address=limited) for _ in range(2)]
        settings.DIGITS_RATE_LIMIT = 0
        settings.DIGITS_REQUEST_TIMEOUT = 0.2
        responses.append(await api.post_json(good))
        for heartbeat in service._heartbeats:  # the worker stops: nobody is alive
            heartbeat.stop()
        settings.DIGITS_PRESENCE_CACHE = 0.0
        responses.append(await api.post_json(good))
        return responses

    responses = api.run(scenario)
    statuses = [r.status for r in responses]
    assert statuses == [200, 500, 400, 415, 413, 401, 403, 400, 429, 504, 503]
    for response in responses:
        check(document, response_schema(document, response.status), response.json)

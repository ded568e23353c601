"""The HTTP API's rules, in this process: `PredictApi` driven as an ASGI application through
Channels' `HttpCommunicator` (and `ApplicationCommunicator` for a body sent in chunks), one rule
a test.

Everything is real but the publish, as in tests/serving/test_consumers.py (whose `Service` this
reuses): the service's own channel layer on a real Redis with a prefix of the test's own, worker
presence from real heartbeats, and answers sent as a worker sends them, over Redis to the API's
channel. The publish seam (`PredictApi.queue_request`) is a queue the test reads and answers.
The real stack (uvicorn, a worker, the model) is tests/e2e/test_http_api.py.
"""

from __future__ import annotations

import asyncio
import base64
import importlib
import io
import itertools
import json
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from channels.testing import ApplicationCommunicator, HttpCommunicator
from PIL import Image

from classifier.serving import metrics, protocol, schemas
from classifier.serving.http import PredictApi
from classifier.transport.channel_layer import LAYER_LOST
from tests.catalogue import BAD_FRAMES, digit_png, good_ink
from tests.helpers import data_url
from tests.serving.test_consumers import (
    PROMPTLY,
    Queued,
    Service,
    fresh_address,
    prediction,
)

T = TypeVar("T")
_ports = itertools.count(45000)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        return self.json.get("code")


class Api:
    """`PredictApi` with its publish seam replaced, on the names of a test's `Service`."""

    def __init__(self, service: Service) -> None:
        self.service = service
        published = service.published

        class TestApi(PredictApi):
            queue_request = staticmethod(published)

        self.app = TestApi()

    async def request(
        self,
        body: bytes = b"",
        content_type: str | None = "application/json",
        *,
        method: str = "POST",
        path: str = schemas.PREDICT_URL,
        address: str = "127.0.0.1",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Response:
        sent = list(headers or [])
        if content_type is not None:
            sent.append((b"content-type", content_type.encode()))
        if method == "POST":
            sent.append((b"content-length", str(len(body)).encode()))
        communicator = HttpCommunicator(self.app, method, path, body, sent)
        communicator.scope["client"] = (address, next(_ports))
        answer = await communicator.get_response(timeout=PROMPTLY)
        await communicator.wait(PROMPTLY)
        decoded = {k.decode().lower(): v.decode() for k, v in answer["headers"]}
        return Response(answer["status"], decoded, answer["body"])

    async def post_json(self, message: Any, **kwargs: Any) -> Response:
        return await self.request(json.dumps(message).encode(), **kwargs)

    def start(self, coroutine: Awaitable[Response]) -> asyncio.Task[Response]:
        return asyncio.ensure_future(coroutine)

    def run(self, scenario: Callable[[], Awaitable[T]]) -> T:
        """Run `scenario` on a fresh event loop; the API's reader stops before the layer."""

        async def main() -> T:
            try:
                return await scenario()
            finally:
                await self.app.close()

        return self.service.run(main)


def form(fields: dict[str, str | tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type; a tuple is a file (name, type, data)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        if isinstance(value, tuple):
            filename, media_type, data = value
            head = (
                f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                f"Content-Type: {media_type}\r\n\r\n"
            )
        else:
            head, data = f'Content-Disposition: form-data; name="{name}"\r\n\r\n', value.encode()
        parts.append(f"--{boundary}\r\n{head}".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def jpeg(digit: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(digit_png(digit))).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def service(settings: Any, redis_url: str) -> Iterator[Service]:
    """As tests/serving/test_consumers.py's: names of the test's own, limits off, a far
    deadline, no API keys, no CORS origins."""
    service = Service(redis_url, uuid.uuid4().hex[:10])
    settings.REDIS_URL = redis_url
    settings.DIGITS_INFERENCE_QUEUE = service.queue
    settings.CHANNEL_LAYERS = service.layer_config(settings)
    settings.DIGITS_RATE_LIMIT = 0
    settings.DIGITS_MAX_IN_FLIGHT = 1000
    settings.DIGITS_REQUEST_TIMEOUT = 30.0
    settings.DIGITS_API_KEYS = []
    settings.DIGITS_API_CORS_ORIGINS = []
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def api(service: Service) -> Api:
    return Api(service)


@pytest.fixture
def worker(service: Service) -> None:
    service.start_worker()


async def answered(api: Api, call: Awaitable[Response], frame: Callable[[Queued], dict]) -> Any:
    """Start `call`, answer what it queues with `frame(queued)` as a worker would, and return
    (the queued request, the response)."""
    task = api.start(call)
    queued = await api.service.published.next()
    await api.service.answer(queued, frame(queued))
    return queued, await task


# --- Requests that reach a worker ---------------------------------------------------------------


def test_a_json_image_is_queued_under_a_server_id_and_the_answer_is_the_body(
    api: Api, worker: None
) -> None:
    """The body's image goes to the workers exactly as a socket's would, under an id of the
    server's (the X-Request-Id header); the worker's prediction is the 200 body, with the
    server's time added, as on the socket."""
    image = data_url(digit_png(7))

    async def scenario() -> tuple[Queued, Response]:
        return await answered(
            api, api.post_json({"image": image}), lambda q: prediction(q.request.id, 7)
        )

    queued, response = api.run(scenario)
    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json
    assert (body["type"], body["digit"], body["id"]) == ("prediction", 7, queued.request.id)
    assert response.headers["x-request-id"] == queued.request.id
    assert body["timings_ms"]["server"] >= 0
    assert queued.request.image == image.split(",", 1)[1]
    assert queued.request.expect == protocol.EXPECT_DIGIT
    assert queued.deadline > queued.at


def test_number_mode_and_ink_are_queued_as_the_socket_queues_them(api: Api, worker: None) -> None:
    """ "expect": "number" travels with the request and the number answer comes back as it is;
    ink travels as ink."""
    number_answer = protocol.number_prediction(
        "x", [protocol.number_digit([0.9] + [0.01] * 9, (0, 0, 5, 5), "data:,", True)], "m", {}
    )

    async def scenario() -> tuple[Queued, Response, Queued, Response]:
        number = await answered(
            api,
            api.post_json({"image": data_url(digit_png(4)), "expect": "number"}),
            lambda q: {**number_answer, "id": q.request.id},
        )
        ink = await answered(
            api, api.post_json({"ink": good_ink()}), lambda q: prediction(q.request.id, 7)
        )
        return *number, *ink

    number, number_response, ink, ink_response = api.run(scenario)
    assert number.request.expect == protocol.EXPECT_NUMBER
    assert (number_response.status, number_response.json["number"]) == (200, "0")
    assert number.task_kwargs()["expect"] == protocol.EXPECT_NUMBER
    assert ink.request.ink == good_ink()
    assert (ink_response.status, ink_response.json["digit"]) == (200, 7)


def test_a_form_upload_is_queued_as_the_files_bytes_of_the_type_they_are(
    api: Api, worker: None
) -> None:
    """multipart/form-data: the file in `image` is sent on as its own bytes, its type read from
    them (a part saying application/octet-stream is still a PNG), `expect` from its field."""
    png, jpg = digit_png(3), jpeg(5)
    png_form = form({"image": ("three.png", "application/octet-stream", png)})
    jpg_form = form({"image": ("five.jpg", "image/jpeg", jpg), "expect": "number"})

    async def scenario() -> list[tuple[Queued, Response]]:
        results = []
        for body, content_type in (png_form, jpg_form):
            call = api.request(body, content_type)
            results.append(await answered(api, call, lambda q: prediction(q.request.id, 3)))
        return results

    (png_queued, png_response), (jpg_queued, jpg_response) = api.run(scenario)
    assert png_response.status == jpg_response.status == 200
    assert png_queued.request.media_type == "image/png"
    assert base64.b64decode(png_queued.request.image) == png
    assert png_queued.request.expect == protocol.EXPECT_DIGIT
    assert jpg_queued.request.media_type == "image/jpeg"
    assert base64.b64decode(jpg_queued.request.image) == jpg
    assert jpg_queued.request.expect == protocol.EXPECT_NUMBER


def test_concurrent_requests_share_one_channel_and_each_gets_its_own_answer(
    api: Api, worker: None
) -> None:
    """Eight requests at once: all wait on the loop's one channel (one reader, no connection of
    their own), and answers sent in reverse order each reach the request they belong to."""

    async def scenario() -> tuple[list[Queued], list[Response]]:
        digits = list(range(8))
        tasks = [api.start(api.post_json({"image": data_url(digit_png(d))})) for d in digits]
        queued = [await api.service.published.next() for _ in digits]
        by_image = {q.request.image: q for q in queued}
        for d in reversed(digits):
            q = by_image[data_url(digit_png(d)).split(",", 1)[1]]
            await api.service.answer(q, prediction(q.request.id, d))
        return queued, list(await asyncio.gather(*tasks))

    queued, responses = api.run(scenario)
    assert len({q.reply_channel for q in queued}) == 1
    assert len({q.ticket for q in queued}) == 8
    assert [r.json["digit"] for r in responses] == list(range(8))
    assert all(r.status == 200 for r in responses)


# --- Bad requests: refused at once with their status and code, never queued, never a 5xx ------


def _http_cases() -> list[tuple[str, bytes, str]]:
    """The catalogue's bad frames that an HTTP body can be (the API sets the type and id, so
    frames wrong in those are the socket's alone): (name, body, code)."""
    cases = []
    for bad in BAD_FRAMES:
        if bad.text is None:
            continue
        try:
            message = json.loads(bad.text)
        except (ValueError, RecursionError):
            message = None
        if isinstance(message, dict) and (
            message.get("type") != protocol.PREDICT or bad.code == protocol.BAD_ID
        ):
            continue
        body = bad.text.encode()
        code = schemas.BODY_TOO_LARGE if len(body) > schemas.MAX_BODY_BYTES else bad.code
        cases.append((bad.name, body, code))
    return cases


HTTP_CASES = _http_cases()


def test_every_bad_body_of_the_catalogue_gets_its_status_and_code_and_nothing_is_queued(
    api: Api, worker: None
) -> None:
    assert len(HTTP_CASES) >= 40, [name for name, _, _ in HTTP_CASES]

    async def scenario() -> list[Response]:
        return [await api.request(body) for _, body, _ in HTTP_CASES]

    responses = api.run(scenario)
    got = [(name, r.status, r.code) for (name, _, _), r in zip(HTTP_CASES, responses, strict=True)]
    want = [(name, schemas.status_for(code), code) for name, _, code in HTTP_CASES]
    assert got == want
    assert all(400 <= r.status < 500 for r in responses)
    assert api.service.published.taken() == []


@pytest.mark.parametrize(
    ("name", "make", "status", "code"),
    [
        ("text body", lambda: (b"7", "text/plain"), 415, protocol.UNSUPPORTED_TYPE),
        ("url-encoded form", lambda: (b"image=x", "application/x-www-form-urlencoded"), 415,
         protocol.UNSUPPORTED_TYPE),
        ("form without image", lambda: form({"expect": "digit"}), 400, schemas.BAD_FORM),
        ("form, no boundary", lambda: (b"--x\r\n", "multipart/form-data"), 400, schemas.BAD_FORM),
        ("form of a GIF", lambda: form({"image": ("a.gif", "image/gif", b"GIF89a" + b"\0" * 20)}),
         415, protocol.UNSUPPORTED_TYPE),
        ("form, empty file", lambda: form({"image": ("a.png", "image/png", b"")}), 400,
         protocol.INVALID_IMAGE),
        ("form, bad expect", lambda: form({"image": ("a.png", "image/png", digit_png(1)),
                                           "expect": "words"}), 400, protocol.BAD_FRAME),
        ("json, not utf-8", lambda: (b'{"image": "\xff"}', "application/json"), 400,
         protocol.BAD_JSON),
        ("json, both image and ink", lambda: (json.dumps({"image": data_url(digit_png(1)),
         "ink": good_ink()}).encode(), "application/json"), 400, protocol.BAD_FRAME),
    ],
)  # fmt: skip
def test_a_body_of_the_wrong_kind_is_refused_with_its_status(
    api: Api, worker: None, name: str, make: Callable[[], tuple[bytes, str]], status: int, code: str
) -> None:
    body, content_type = make()

    async def scenario() -> Response:
        return await api.request(body, content_type)

    response = api.run(scenario)
    assert (response.status, response.code) == (status, code), response.json
    assert response.json["message"]
    assert api.service.published.taken() == []


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(
    api: Api, worker: None
) -> None:
    """413 from the Content-Length alone: the application never asks for the body, and says the
    connection will close (the rest of the upload is not worth reading)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(schemas.MAX_BODY_BYTES + 1).encode()),
    ]

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        scope = {"type": "http", "method": "POST", "path": schemas.PREDICT_URL,
                 "headers": headers, "client": (fresh_address(), 1)}  # fmt: skip
        communicator = ApplicationCommunicator(api.app, scope)
        start = await communicator.receive_output(PROMPTLY)
        body = await communicator.receive_output(PROMPTLY)
        await communicator.wait(PROMPTLY)  # finished without one receive()
        return start, body

    start, body = api.run(scenario)
    assert start["status"] == 413
    assert (b"connection", b"close") in start["headers"]
    assert json.loads(body["body"])["code"] == schemas.BODY_TOO_LARGE


def test_a_chunked_body_is_read_only_up_to_the_limit(api: Api, worker: None) -> None:
    """No Content-Length (chunked): the read stops at the first chunk past the limit and the
    request gets 413; the chunks after it are never asked for."""
    chunk = b" " * (1 << 20)
    chunks_over = schemas.MAX_BODY_BYTES // len(chunk) + 1

    async def scenario() -> tuple[int, int, str]:
        scope = {"type": "http", "method": "POST", "path": schemas.PREDICT_URL,
                 "headers": [(b"content-type", b"application/json")],
                 "client": (fresh_address(), 1)}  # fmt: skip
        communicator = ApplicationCommunicator(api.app, scope)
        for _ in range(chunks_over + 5):
            await communicator.send_input(
                {"type": "http.request", "body": chunk, "more_body": True}
            )
        start = await communicator.receive_output(PROMPTLY)
        body = await communicator.receive_output(PROMPTLY)
        await communicator.wait(PROMPTLY)
        return start["status"], communicator.input_queue.qsize(), json.loads(body["body"])["code"]

    status, unread, code = api.run(scenario)
    assert (status, code) == (413, schemas.BODY_TOO_LARGE)
    assert unread == 5  # the chunks sent after the one that crossed the limit


# --- Worker answers and the service's own failures ----------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (protocol.EMPTY, 400),
        (protocol.INVALID_IMAGE, 400),
        (protocol.TOO_MANY_DIGITS, 400),
        (protocol.IMAGE_TOO_LARGE, 413),
        (protocol.INTERNAL, 500),
    ],
)
def test_a_workers_error_answer_gets_the_status_of_its_code(
    api: Api, worker: None, code: str, status: int
) -> None:
    async def scenario() -> Response:
        _, response = await answered(
            api,
            api.post_json({"image": data_url(digit_png(1))}),
            lambda q: protocol.error(q.request.id, code, "As the worker says."),
        )
        return response

    response = api.run(scenario)
    assert (response.status, response.code) == (status, code)


def test_with_no_worker_alive_the_request_gets_503_at_once_and_is_not_queued(api: Api) -> None:
    async def scenario() -> Response:
        return await api.post_json({"image": data_url(digit_png(1))})

    response = api.run(scenario)
    assert (response.status, response.code) == (503, protocol.UNAVAILABLE)
    assert response.headers["retry-after"] == "1"
    assert api.service.published.taken() == []


def test_no_answer_by_the_deadline_is_504_and_a_late_answer_is_dropped(
    api: Api, worker: None, settings: Any
) -> None:
    settings.DIGITS_REQUEST_TIMEOUT = 0.3

    async def scenario() -> tuple[Response, Response]:
        task = api.start(api.post_json({"image": data_url(digit_png(1))}))
        late = await api.service.published.next()
        timed_out = await task
        await api.service.answer(late, prediction(late.request.id))  # nobody waits for it
        settings.DIGITS_REQUEST_TIMEOUT = 30.0
        _, next_one = await answered(
            api,
            api.post_json({"image": data_url(digit_png(2))}),
            lambda q: prediction(q.request.id, 2),
        )
        return timed_out, next_one

    timed_out, next_one = api.run(scenario)
    assert (timed_out.status, timed_out.code) == (504, protocol.TIMEOUT)
    assert (next_one.status, next_one.json["digit"]) == (200, 2)


def test_a_failed_publish_is_503(api: Api, worker: None) -> None:
    api.service.published.failure = ConnectionError("Redis is gone")
    api.service.published.failures = 1

    async def scenario() -> Response:
        return await api.post_json({"image": data_url(digit_png(1))})

    response = api.run(scenario)
    assert (response.status, response.code) == (503, protocol.UNAVAILABLE)


def test_a_lost_channel_layer_answers_what_is_in_flight_with_503_at_once(
    api: Api, worker: None
) -> None:
    """The layer's `LAYER_LOST` message (Redis went away: the answers cannot come) ends every
    request waiting on the channel with 503, not at the deadline; the next one is served."""

    async def scenario() -> tuple[Response, Response]:
        task = api.start(api.post_json({"image": data_url(digit_png(1))}))
        queued = await api.service.published.next()
        await api.service.send(queued.reply_channel, {"type": LAYER_LOST, "error": "test"})
        lost = await asyncio.wait_for(task, PROMPTLY)
        _, served = await answered(
            api,
            api.post_json({"image": data_url(digit_png(2))}),
            lambda q: prediction(q.request.id, 2),
        )
        return lost, served

    lost, served = api.run(scenario)
    assert (lost.status, lost.code) == (503, protocol.UNAVAILABLE)
    assert served.status == 200


# --- Limits per client address -----------------------------------------------------------------


def test_a_flood_from_one_address_gets_429_while_another_address_is_served(
    api: Api, worker: None, settings: Any
) -> None:
    """Bursts of 3 at 0.5 a second: malformed requests take tokens too, so the fourth request
    from one address, a good one, is 429 with Retry-After and never queued; another address is
    served meanwhile."""
    settings.DIGITS_RATE_LIMIT = 0.5
    settings.DIGITS_RATE_BURST = 3
    flooder, other = fresh_address(), fresh_address()
    good = {"image": data_url(digit_png(1))}

    async def scenario() -> tuple[list[Response], list[Queued], Response]:
        responses = [await api.request(b"not json", address=flooder) for _ in range(3)]
        responses.append(await api.post_json(good, address=flooder))
        refused_queued = api.service.published.taken()
        _, served = await answered(
            api, api.post_json(good, address=other), lambda q: prediction(q.request.id, 2)
        )
        return responses, refused_queued, served

    responses, refused_queued, served = api.run(scenario)
    assert [r.status for r in responses] == [400, 400, 400, 429]
    refused = responses[-1]
    assert refused.code == protocol.RATE_LIMITED
    assert refused.headers["retry-after"] == "2"
    assert refused_queued == []
    assert served.status == 200


def test_requests_over_the_in_flight_cap_of_an_address_get_429(
    api: Api, worker: None, settings: Any
) -> None:
    settings.DIGITS_MAX_IN_FLIGHT = 2
    address = fresh_address()

    async def scenario() -> tuple[Response, list[Response]]:
        first = [
            api.start(api.post_json({"image": data_url(digit_png(d))}, address=address))
            for d in (1, 2)
        ]
        queued = [await api.service.published.next() for _ in first]
        refused = await api.post_json({"image": data_url(digit_png(3))}, address=address)
        for q in queued:
            await api.service.answer(q, prediction(q.request.id))
        return refused, list(await asyncio.gather(*first))

    refused, served = api.run(scenario)
    assert (refused.status, refused.code) == (429, protocol.RATE_LIMITED)
    assert "in flight from your address" in refused.json["message"]
    assert [r.status for r in served] == [200, 200]


# --- Keys, CORS, routes ---------------------------------------------------------------------------


def test_with_api_keys_set_a_request_needs_one_of_them(
    api: Api, worker: None, settings: Any
) -> None:
    settings.DIGITS_API_KEYS = ["first-key", "second-key"]
    body = json.dumps({"image": data_url(digit_png(1))}).encode()

    async def scenario() -> tuple[Response, Response, Response, Response]:
        missing = await api.request(body)
        wrong = await api.request(body, headers=[(b"authorization", b"Bearer nope")])
        _, right = await answered(
            api,
            api.request(body, headers=[(b"authorization", b"Bearer second-key")]),
            lambda q: prediction(q.request.id),
        )
        document = await api.request(method="GET", path=schemas.OPENAPI_URL, content_type=None)
        return missing, wrong, right, document

    missing, wrong, right, document = api.run(scenario)
    assert (missing.status, missing.code) == (401, schemas.UNAUTHORIZED)
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert (wrong.status, wrong.code) == (403, schemas.FORBIDDEN)
    assert right.status == 200
    assert document.status == 200  # the documents are public


def test_cors_allows_the_configured_origins_only(api: Api, worker: None, settings: Any) -> None:
    settings.DIGITS_API_CORS_ORIGINS = ["https://app.example"]

    async def scenario() -> list[Response]:
        preflight_headers = [
            (b"origin", b"https://app.example"),
            (b"access-control-request-method", b"POST"),
        ]
        return [
            await api.request(method="OPTIONS", content_type=None, headers=preflight_headers),
            await api.request(b"[]", headers=[(b"origin", b"https://app.example")]),
            await api.request(b"[]", headers=[(b"origin", b"https://evil.example")]),
        ]

    preflight, allowed, other = api.run(scenario)
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    assert "x-request-id" in allowed.headers["access-control-expose-headers"]
    assert "access-control-allow-origin" not in other.headers

    settings.DIGITS_API_CORS_ORIGINS = ["*"]

    async def any_origin() -> Response:
        return await api.request(b"[]", headers=[(b"origin", b"https://anyone.example")])

    assert api.run(any_origin).headers["access-control-allow-origin"] == "*"


def test_unknown_paths_and_methods_are_404_and_405(api: Api) -> None:
    async def scenario() -> tuple[Response, Response, Response]:
        return (
            await api.request(method="GET", path="/api/v1/nothing", content_type=None),
            await api.request(method="GET", content_type=None),
            await api.request(b"{}", path=schemas.OPENAPI_URL),
        )

    missing, get_predict, post_document = api.run(scenario)
    assert (missing.status, missing.code) == (404, schemas.NOT_FOUND)
    assert (get_predict.status, get_predict.code) == (405, schemas.METHOD_NOT_ALLOWED)
    assert get_predict.headers["allow"] == "POST, OPTIONS"
    assert post_document.status == 405


def test_every_answer_is_counted_with_the_sockets(api: Api, worker: None) -> None:
    """digits_requests_total counts HTTP answers by outcome, as it counts the socket's."""

    def count(outcome: str) -> float:
        return metrics.REQUESTS.labels(outcome)._value.get()

    before = (count(protocol.PREDICTION), count(protocol.BAD_JSON))

    async def scenario() -> None:
        await api.request(b"nope")
        await answered(
            api,
            api.post_json({"image": data_url(digit_png(1))}),
            lambda q: prediction(q.request.id),
        )

    api.run(scenario)
    assert (count(protocol.PREDICTION), count(protocol.BAD_JSON)) == (before[0] + 1, before[1] + 1)


# Whitenoise, built with the site's HTTP application, warns that `collectstatic` never ran.
@pytest.mark.filterwarnings("ignore:No directory at:UserWarning")
def test_the_sites_application_serves_the_api_under_its_root_and_the_rest_through_django(
    service: Service, settings: Any
) -> None:
    settings.SECRET_KEY_FROM_ENV = True
    application = importlib.import_module("digits_site.asgi").application

    async def get(path: str) -> Response:
        communicator = HttpCommunicator(application, "GET", path, headers=[(b"host", b"127.0.0.1")])
        communicator.scope["client"] = ("127.0.0.1", next(_ports))
        answer = await communicator.get_response(timeout=PROMPTLY)
        decoded = {k.decode().lower(): v.decode() for k, v in answer["headers"]}
        return Response(answer["status"], decoded, answer["body"])

    async def scenario() -> tuple[Response, Response, Response]:
        return (
            await get(schemas.OPENAPI_URL),
            await get(schemas.ASYNCAPI_URL),
            await get("/healthz"),
        )

    openapi, asyncapi, health = service.run(scenario)
    assert (openapi.status, openapi.json["openapi"]) == (200, "3.1.0")
    assert schemas.PREDICT_URL in openapi.json["paths"]
    assert (asyncapi.status, asyncapi.json["asyncapi"]) == (200, "2.6.0")
    assert health.status == 200  # Django's own view

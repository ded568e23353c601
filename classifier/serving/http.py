"""The HTTP API at /api/v1/: the HTTP counterpart of the websocket consumer.

`POST /api/v1/predict` takes a JSON body (`{"image": "data:..."}` or `{"ink": [...]}`, with an
optional `"expect"`) or a multipart form (the file in the field `image`), checks it with the
socket's own `protocol.parse_message` under an id of the server's, and queues it exactly as the
consumer does (`enqueue.submit`, the inference queue, a worker); the worker's answer comes back
over the channel layer and is the response's body, with the status its code maps to
(classifier.serving.schemas.status_for). The web process never runs the model.
`GET /api/v1/openapi.json` and `/api/v1/asyncapi.json` serve the documents of schemas.py.

Why a plain ASGI application mounted in front of Django (digits_site/asgi.py) rather than a
Django view: Django's ASGI handler reads the whole body into a spooled temporary file before any
view runs, so a 5 GB upload would be read before a view could refuse it; here the declared
Content-Length is checked before the body is read, and the read stops at the limit. It also runs
no middleware: each of Django's hops to a thread costs more than the 1 ms this path may add to
the socket's.

How an answer gets back without a Redis connection per request: each event loop has one
channel-layer channel for every HTTP request it serves (`_Replies`), read by one task; a request
is a ticket on it, as a socket's requests are tickets on the consumer's channel, and the layer's
one reader per process (docs/decisions/0004-per-process-reader.md) fills it.

Before a request is queued it passes, in order: the rate limit of its client address (every
request takes a token, as every frame does on the socket), the API key when DIGITS_API_KEYS is
set, the body's declared size and type, the bounded read, the frame checks, the address's cap on
requests in flight, and the presence of a live worker. A refused request is answered at once and
never queued. Every answer to a predict is counted with the socket's (metrics.web_answered).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import hmac
import io
import itertools
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.core.files.uploadhandler import MemoryFileUploadHandler
from django.http.multipartparser import MultiPartParser, MultiPartParserError

from classifier.serving import answers, enqueue, metrics, presence, protocol, schemas
from classifier.serving.consumers import ink_limits
from classifier.serving.limits import ConnectionCounter, TokenBucket
from classifier.serving.messages import ErrorFrame, PredictFrame, ServerFrame
from classifier.transport.channel_layer import LAYER_LOST

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

# Client addresses whose rate limits one process remembers; the least recently seen is
# forgotten beyond it (and starts again with a full bucket), so memory stays bounded.
MAX_TRACKED_CLIENTS = 10_000
# How long a browser may cache a CORS preflight's answer (seconds).
CORS_MAX_AGE = 600
# What a request's answer future resolves to when no worker's answer can come.
_LOST = "lost"
_TIMED_OUT = "timeout"
# Image files by their first bytes: a form's part may say application/octet-stream.
_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"))


class _BodyTooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


@dataclass
class _Replies:
    """The channel-layer channel of one event loop's HTTP requests, and the task reading it."""

    channel: str
    pending: dict[int, asyncio.Future[ServerFrame | str]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None

    async def read(self, layer: Any) -> None:
        """Hand each worker's answer to the request waiting for it, until the loop closes."""
        try:
            while True:
                message = await layer.receive(self.channel)
                kind = message.get("type")
                if kind == protocol.ANSWER_MESSAGE:
                    self.resolve(message.get("ticket"), message.get("frame"))
                elif kind == LAYER_LOST:
                    # Redis lost what was in flight: say so now rather than at the deadline.
                    for ticket in list(self.pending):
                        self.resolve(ticket, _LOST)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the stock layer raises on a lost Redis; the next request
            logger.warning("The HTTP API lost its channel layer: %r", exc)  # starts a reader
            for ticket in list(self.pending):
                self.resolve(ticket, _LOST)

    def resolve(self, ticket: Any, result: ServerFrame | str | None) -> None:
        future = self.pending.get(ticket)
        if future is not None and not future.done() and result is not None:
            future.set_result(result)


class _Clients:
    """Per client address: a token bucket (LRU-bounded) and the requests in flight."""

    def __init__(self) -> None:
        self._buckets: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
        self.in_flight = ConnectionCounter()

    def take(self, address: str) -> bool:
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = TokenBucket(settings.DIGITS_RATE_LIMIT, settings.DIGITS_RATE_BURST)
            self._buckets[address] = bucket
            if len(self._buckets) > MAX_TRACKED_CLIENTS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket.take()


def retry_after() -> int:
    """Whole seconds until the rate limit gives a token again (one token's refill at most)."""
    rate = settings.DIGITS_RATE_LIMIT
    return max(1, math.ceil(1 / rate)) if rate > 0 else 1


def _header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _cors_headers(origin: str | None) -> Headers:
    """Access-Control-Allow-Origin for an origin DIGITS_API_CORS_ORIGINS allows ("*": any)."""
    allowed = settings.DIGITS_API_CORS_ORIGINS
    if origin is None or not allowed:
        return []
    if "*" in allowed:
        value = b"*"
    elif origin in allowed:
        value = origin.encode("latin-1")
    else:
        return [(b"vary", b"origin")]
    return [
        (b"access-control-allow-origin", value),
        (b"access-control-expose-headers", b"retry-after, x-request-id"),
        (b"vary", b"origin"),
    ]


async def _send(send: Send, status: int, body: bytes, headers: Headers) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Receive, limit: int) -> bytes:
    """The request's body, read no further than `limit` bytes (raises _BodyTooLarge beyond,
    _Disconnected when the client went away)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


class _InMemoryUpload(MemoryFileUploadHandler):
    """Django's in-memory upload handler, whatever the size: the body is bounded already."""

    def handle_raw_input(self, *args: Any, **kwargs: Any) -> None:
        self.activated = True


def _media_type(data: bytes, declared: str | None) -> str:
    for signature, media_type in _SIGNATURES:
        if data.startswith(signature):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return (declared or "application/octet-stream").split(";", 1)[0].strip().lower()


def form_frame(content_type: str, body: bytes, request_id: str) -> PredictFrame:
    """A predict frame from a multipart form: the file (or a data URL) in `image`, `expect`
    optional. The file becomes a data URL of the type its first bytes say (else its part's
    declared type), so `parse_message` checks it as it checks a socket's image."""
    meta = {"CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body))}
    try:
        parser = MultiPartParser(meta, io.BytesIO(body), [_InMemoryUpload()], "utf-8")
        fields, files = parser.parse()
    except RequestDataTooBig:
        raise protocol.ProtocolError(
            schemas.BODY_TOO_LARGE, "The form's fields are too large.", request_id
        ) from None
    except (MultiPartParserError, SuspiciousOperation, ValueError) as exc:
        raise protocol.ProtocolError(
            schemas.BAD_FORM, f"The form could not be read: {str(exc)[:200]}", request_id
        ) from None
    frame: PredictFrame = {"type": protocol.PREDICT, "id": request_id}
    if "expect" in fields:
        frame["expect"] = fields["expect"]
    upload = files.get("image")
    if upload is not None:
        data = upload.read()
        if not data:
            raise protocol.ProtocolError(
                protocol.INVALID_IMAGE, "The image file is empty.", request_id
            )
        media_type = _media_type(data, upload.content_type)
        frame["image"] = f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"
    elif "image" in fields:  # a data URL sent as a plain field
        frame["image"] = fields["image"]
    else:
        raise protocol.ProtocolError(
            schemas.BAD_FORM,
            'The form needs the image file in a field named "image" (a PNG, JPEG or WebP).',
            request_id,
        )
    return frame


def json_frame(body: bytes, request_id: str) -> Any:
    """A predict frame from a JSON body: the body's fields under the server's type and id (a
    body that is no object goes on as it is, for `parse_message` to refuse)."""
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise protocol.ProtocolError(
            protocol.BAD_JSON, "The body is not valid JSON.", request_id
        ) from None
    if isinstance(message, dict):
        return {**message, "type": protocol.PREDICT, "id": request_id}
    return message


class PredictApi:
    """The ASGI application of every path under schemas.API_ROOT (one per web process)."""

    # The seams to the rest of the service, replaceable in tests, as the consumer's are.
    queue_request = staticmethod(enqueue.submit)
    worker_presence = staticmethod(presence.from_settings)

    def __init__(self) -> None:
        self._clients = _Clients()
        self._tickets = itertools.count()
        self._replies: dict[asyncio.AbstractEventLoop, asyncio.Task[_Replies]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        headers: Headers = scope.get("headers", [])
        cors = _cors_headers(_header(headers, b"origin"))
        if path == schemas.PREDICT_URL:
            allowed = "POST, OPTIONS"
        elif path in (schemas.OPENAPI_URL, schemas.ASYNCAPI_URL):
            allowed = "GET, HEAD, OPTIONS"
        else:
            error = protocol.error(None, schemas.NOT_FOUND, f"Nothing at {path[:200]}.")
            await _send(send, 404, protocol.encode(error).encode(), cors)
            return
        if method == "OPTIONS":  # a CORS preflight, or a client asking what it may do
            preflight = [
                (b"allow", allowed.encode()),
                (b"access-control-allow-methods", allowed.encode()),
                (b"access-control-allow-headers", b"authorization, content-type"),
                (b"access-control-max-age", str(CORS_MAX_AGE).encode()),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": cors + preflight})
            await send({"type": "http.response.body", "body": b""})
            return
        if method not in allowed.split(", "):
            error = protocol.error(
                None, schemas.METHOD_NOT_ALLOWED, f"{method} is not allowed here; use {allowed}."
            )
            extra = [(b"allow", allowed.encode())]
            await _send(send, 405, protocol.encode(error).encode(), cors + extra)
            return
        if path == schemas.PREDICT_URL:
            await self.predict(scope, receive, send, cors)
            return
        document = schemas.openapi() if path == schemas.OPENAPI_URL else schemas.asyncapi()
        await _send(send, 200, json.dumps(document, indent=1).encode(), cors)

    async def predict(self, scope: Scope, receive: Receive, send: Send, cors: Headers) -> None:
        """POST /api/v1/predict: one request, answered once, as the consumer answers a frame."""
        received = time.perf_counter()
        request_id = uuid.uuid4().hex
        headers: Headers = scope.get("headers", [])
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"

        async def answer(frame: ServerFrame, queued: bool, extra: Headers | None = None) -> None:
            status = schemas.status_for(frame["code"]) if frame["type"] == protocol.ERROR else 200
            body = protocol.encode(frame).encode()
            own = [(b"x-request-id", request_id.encode()), *(extra or [])]
            await _send(send, status, body, cors + own)
            metrics.web_answered(metrics.outcome(frame), time.perf_counter() - received, queued)

        if not self._clients.take(address):
            after = [(b"retry-after", str(retry_after()).encode())]
            await answer(answers.rate_limited(request_id), False, after)
            return
        refusal = self._refuse_key(_header(headers, b"authorization"), request_id)
        if refusal is not None:
            extra = [(b"www-authenticate", b'Bearer realm="digits"')]
            await answer(refusal, False, extra if refusal["code"] == schemas.UNAUTHORIZED else [])
            return
        too_large = protocol.error(
            request_id,
            schemas.BODY_TOO_LARGE,
            f"The body is larger than the limit of {schemas.MAX_BODY_BYTES:,} bytes.",
        )
        close = [(b"connection", b"close")]  # the rest of the body is not worth reading
        length = _header(headers, b"content-length")
        if length is not None and length.isdigit() and int(length) > schemas.MAX_BODY_BYTES:
            await answer(too_large, False, close)
            return
        content_type = _header(headers, b"content-type") or ""
        media_type = content_type.split(";", 1)[0].strip().lower()
        is_form = media_type == "multipart/form-data"
        if not (is_form or media_type in ("", "application/json") or media_type.endswith("+json")):
            unsupported = protocol.error(
                request_id,
                protocol.UNSUPPORTED_TYPE,
                f"A body of type {media_type[:60]} is not accepted; send application/json or "
                "multipart/form-data.",
            )
            await answer(unsupported, False)
            return
        try:
            body = await read_body(receive, schemas.MAX_BODY_BYTES)
        except _BodyTooLarge:
            await answer(too_large, False, close)
            return
        except _Disconnected:
            return
        try:
            if is_form:
                frame = form_frame(content_type, body, request_id)
            else:
                frame = json_frame(body, request_id)
            request = protocol.parse_message(frame, ink_limits())
        except protocol.ProtocolError as exc:
            await answer(protocol.error(request_id, exc.code, exc.message), False)
            return

        if not self._clients.in_flight.acquire(address, settings.DIGITS_MAX_IN_FLIGHT):
            crowded = answers.too_many_in_flight(request_id, "from your address")
            await answer(crowded, False, [(b"retry-after", b"1")])
            return
        try:
            if not await self.worker_presence().available():
                await answer(answers.no_worker(request_id), False, [(b"retry-after", b"1")])
                return
            await answer(await self._queue(request, received), True)
        finally:
            self._clients.in_flight.release(address)

    def _refuse_key(self, authorization: str | None, request_id: str) -> ErrorFrame | None:
        """The 401 or 403 answer when DIGITS_API_KEYS is set and the request's key is missing or
        none of them; None when it may go on."""
        keys = settings.DIGITS_API_KEYS
        if not keys:
            return None
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return protocol.error(
                request_id,
                schemas.UNAUTHORIZED,
                'This service wants an API key: send "Authorization: Bearer <key>".',
            )
        given = key.strip().encode()
        # Every key compared, in constant time each: the time says nothing about which matched.
        matched = [hmac.compare_digest(given, k.encode()) for k in keys]
        if not any(matched):
            return protocol.error(request_id, schemas.FORBIDDEN, "That API key is not valid.")
        return None

    async def _queue(self, request: protocol.Request, received: float) -> ServerFrame:
        """Queue a checked request and wait for its answer, or its deadline."""
        loop = asyncio.get_running_loop()
        try:
            replies = await self._replies_of(loop)
        except Exception as exc:
            logger.warning("Could not open the channel for HTTP answers: %r", exc)
            return answers.not_queued(request.id)
        timeout = settings.DIGITS_REQUEST_TIMEOUT
        remaining = max(0.0, timeout - (time.perf_counter() - received))
        ticket = next(self._tickets)
        future: asyncio.Future[ServerFrame | str] = loop.create_future()
        replies.pending[ticket] = future
        timer = loop.call_later(remaining, replies.resolve, ticket, _TIMED_OUT)
        try:
            try:
                deadline = time.time() + remaining
                await self.queue_request(request, replies.channel, ticket, deadline, "")
            except Exception as exc:
                logger.warning("Could not queue request %r: %r", request.id, exc)
                return answers.not_queued(request.id)
            result = await future
        finally:
            timer.cancel()
            replies.pending.pop(ticket, None)
        if result == _TIMED_OUT:
            return answers.timed_out(request.id)
        if result == _LOST or not isinstance(result, dict):
            return answers.lost(request.id)
        return answers.stamp_server_time(result, received)

    async def _replies_of(self, loop: asyncio.AbstractEventLoop) -> _Replies:
        """This event loop's replies channel and its reader, started by the first request (and
        again after a reader lost the layer)."""
        opening = self._replies.get(loop)
        if opening is not None and opening.done():
            failed = opening.cancelled() or opening.exception() is not None
            reader = None if failed else opening.result().reader
            if reader is None or reader.done():
                opening = None
        if opening is None:
            opening = loop.create_task(self._open_replies())
            for other in [other for other in self._replies if other.is_closed()]:
                del self._replies[other]  # event loops that ended (tests run several)
            self._replies[loop] = opening
        return await asyncio.shield(opening)

    @staticmethod
    async def _open_replies() -> _Replies:
        layer = get_channel_layer()
        replies = _Replies(await layer.new_channel())
        replies.reader = asyncio.ensure_future(replies.read(layer))
        return replies

    async def close(self) -> None:
        """Stop this event loop's reader (tests close their loop's layer after it)."""
        opening = self._replies.pop(asyncio.get_running_loop(), None)
        if opening is None:
            return
        replies = await opening
        if replies.reader is not None:
            replies.reader.cancel()
            await asyncio.gather(replies.reader, return_exceptions=True)


def mount(django_app: ASGIApp, api: ASGIApp | None = None) -> ASGIApp:
    """The site's HTTP application: paths under schemas.API_ROOT go to the API, the rest to
    Django."""
    api = api or PredictApi()

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].startswith(schemas.API_ROOT):
            await api(scope, receive, send)
        else:
            await django_app(scope, receive, send)

    return application

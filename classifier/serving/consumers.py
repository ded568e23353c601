"""The websocket consumer at /ws/predict/: checks frames, queues work, forwards answers.

A `feedback` frame (a correction: what was really drawn) takes exactly the path of a `predict`:
the same checks and limits, queued to the same workers, answered once. The consumer never
touches the database (the worker stores corrections); it only adds the salted hash of the
client's address (`client_hash`), computed once per socket, so that no address is stored.

It never runs the model and never blocks the event loop: a valid request is queued for the
workers without blocking (classifier.serving.enqueue), and the answer arrives later as a
channel-layer message on this consumer's own channel. Every accepted request is answered exactly
once: with the worker's answer, or with a `timeout` error at its deadline (channels_redis may drop
a message: a full channel, or one older than its expiry; a worker may die mid-batch), or with
`unavailable` when no worker is alive, when it could not be queued, or when Redis went away
while it was in flight.

Before a request is queued it must pass, in order: the frame checks (`protocol.parse_frame`),
the connection's rate limit, its cap on requests in flight, and the presence of a live worker.
A refused request is answered at once and never queued; the socket stays open. A client address
with too many sockets open is told so and its new socket closed.

Every answer frame sent for a request, and the `too_many_connections` frame, goes through
`_answer`, the one place it is counted (classifier.serving.metrics): the sum of
`digits_requests_total` over outcomes is the number of answers sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from classifier.serving import answers, enqueue, metrics, presence, protocol
from classifier.serving.limits import ConnectionCounter, TokenBucket
from classifier.serving.messages import AnswerMessage, ServerFrame
from classifier.transport.consumer import DatabaseFreeWebsocketConsumer

logger = logging.getLogger(__name__)

# Open sockets per client address, in this process.
_connections = ConnectionCounter()


@dataclass
class _Pending:
    request_id: str
    received: float  # when the frame arrived (time.perf_counter())
    timer: asyncio.TimerHandle


def ink_limits() -> protocol.InkLimits:
    """The limits on a request's ink, from the settings (DIGITS_MAX_INK_*)."""
    return protocol.InkLimits(settings.DIGITS_MAX_INK_STROKES, settings.DIGITS_MAX_INK_POINTS)


def client_hash(address: str) -> str:
    """The salted SHA-256 (hex) of a client address: stored with a correction instead of the
    address, so one writer's corrections can be told apart without knowing who they are. The
    salt (DIGITS_FEEDBACK_SALT) keeps the hash of the few IPv4 addresses from being reversed
    by trying them all."""
    salt = settings.DIGITS_FEEDBACK_SALT
    return hashlib.sha256(f"{salt}{address}".encode()).hexdigest()


# Channels' consumer without its database hop before every message (classifier/transport/
# consumer.py): this consumer never uses the database.
class PredictConsumer(DatabaseFreeWebsocketConsumer):
    # The seams to the rest of the service, replaceable in tests: how a request is queued (a
    # coroutine that returns once the broker holds it) and who says whether a worker is alive.
    queue_request = staticmethod(enqueue.submit)
    worker_presence = staticmethod(presence.from_settings)

    async def connect(self) -> None:
        # Tickets, not client ids, key the requests in flight: a client may reuse an id.
        opened = time.perf_counter()
        self._tickets = itertools.count()
        self._pending: dict[int, _Pending] = {}
        self._sends: set[asyncio.Task[None]] = set()
        self._bucket = TokenBucket(settings.DIGITS_RATE_LIMIT, settings.DIGITS_RATE_BURST)
        client = self.scope.get("client")
        self._address = str(client[0]) if client else "unknown"
        self._client_hash = client_hash(self._address)
        limit = settings.DIGITS_MAX_CONNECTIONS_PER_CLIENT
        self._counted = _connections.acquire(self._address, limit)
        await self.accept()
        self._open = True
        metrics.WEBSOCKET_CONNECTIONS.inc()
        if not self._counted:
            # Accepted first so the client can read why: a refused handshake is an anonymous
            # 403 to a browser, and the server sends no close reason.
            logger.info("Refused a websocket from %s: %d already open", self._address, limit)
            await self._refuse(
                None,
                protocol.TOO_MANY_CONNECTIONS,
                f"Too many connections from your address (the limit is {limit}); "
                "close some and try again.",
                opened,
            )
            await self.close(code=protocol.CLOSE_TOO_MANY_CONNECTIONS)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "_open", False):
            self._open = False
            metrics.WEBSOCKET_CONNECTIONS.dec()
        for pending in self._pending.values():
            pending.timer.cancel()
        self._pending.clear()
        if self._counted:
            self._counted = False
            _connections.release(self._address)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        loop = asyncio.get_running_loop()
        # Not the loop's clock: uvloop's counts whole milliseconds.
        received = time.perf_counter()
        if not self._counted:
            return  # refused connection, closing
        refusal: protocol.ProtocolError | None = None
        try:
            request = protocol.parse_frame(text_data, bytes_data, ink_limits())
        except protocol.ProtocolError as exc:
            refusal = exc
        request_id = refusal.request_id if refusal else request.id

        # Every frame takes a token, a malformed one too: a flood of garbage costs as much.
        if not self._bucket.take():
            await self._answer(answers.rate_limited(request_id), received, queued=False)
            return
        if refusal is not None:
            await self._refuse(refusal.request_id, refusal.code, refusal.message, received)
            return
        if len(self._pending) >= settings.DIGITS_MAX_IN_FLIGHT:
            frame = answers.too_many_in_flight(request_id, "on this connection")
            await self._answer(frame, received, queued=False)
            return
        if not await self.worker_presence().available():
            await self._answer(answers.no_worker(request_id), received, queued=False)
            return

        timeout = settings.DIGITS_REQUEST_TIMEOUT
        ticket = next(self._tickets)
        self._pending[ticket] = _Pending(
            request.id, received, loop.call_later(timeout, self._on_deadline, ticket)
        )
        try:
            await self.queue_request(
                request, self.channel_name, ticket, time.time() + timeout, self._client_hash
            )
        except Exception as exc:
            # Redis unreachable, typically: one line per request, not a traceback each.
            logger.warning("Could not queue request %r: %r", request.id, exc)
            await self._finish(ticket, answers.not_queued(request.id))

    async def digits_answer(self, event: AnswerMessage) -> None:
        """A worker's answer (protocol.ANSWER_MESSAGE) for one of this socket's requests."""
        frame = event["frame"]
        pending = self._pending.get(event["ticket"])
        if pending is not None:
            answers.stamp_server_time(frame, pending.received)
        await self._finish(event["ticket"], frame)

    async def digits_layer_lost(self, event: dict[str, Any]) -> None:
        """The channel layer lost Redis (classifier.transport.channel_layer.LAYER_LOST): the
        answers to what is in flight cannot arrive, so say so now rather than at the deadline."""
        for ticket, pending in list(self._pending.items()):
            await self._finish(ticket, answers.lost(pending.request_id))

    def _on_deadline(self, ticket: int) -> None:
        pending = self._pending.get(ticket)
        if pending is None:
            return
        task = asyncio.ensure_future(self._finish(ticket, answers.timed_out(pending.request_id)))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _finish(self, ticket: int, frame: ServerFrame) -> None:
        """Answer a request once: whatever comes second (a late answer, a deadline) is dropped."""
        pending = self._pending.pop(ticket, None)
        if pending is None:
            return
        pending.timer.cancel()
        await self._answer(frame, pending.received, queued=True)

    async def _refuse(
        self, request_id: str | None, code: str, message: str, received: float
    ) -> None:
        """Refuse a request at once (never queued); `received` is when its frame arrived."""
        await self._answer(protocol.error(request_id, code, message), received, queued=False)

    async def _answer(self, frame: ServerFrame, received: float, queued: bool) -> None:
        """Send one answer frame, and count it: the one place every answer is counted."""
        await self.send(text_data=protocol.encode(frame))
        elapsed = time.perf_counter() - received
        metrics.web_answered(metrics.outcome(frame), elapsed, queued)

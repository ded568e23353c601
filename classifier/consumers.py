"""The websocket consumer at /ws/predict/: checks frames, queues work, forwards answers.

It never runs the model and never blocks the event loop: a valid request is handed to Celery
from a thread (publishing is blocking socket I/O), and the answer arrives later as a
channel-layer message on this consumer's own channel. Every accepted request is answered exactly
once: with the worker's answer, or with a `timeout` error at its deadline (channels_redis may drop
a message: a full channel, or one older than its expiry), or with `unavailable` when it could
not be queued.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from classifier import protocol
from classifier.tasks import submit

logger = logging.getLogger(__name__)

# Publishing threads, shared by all sockets of the process. Few are needed: a publish takes
# about a millisecond, and Celery's producer pool is shared by them all.
_publisher = ThreadPoolExecutor(max_workers=4, thread_name_prefix="digits-publish")


@dataclass
class _Pending:
    request_id: str
    received: float  # loop time the frame arrived
    timer: asyncio.TimerHandle


class PredictConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        # Tickets, not client ids, key the requests in flight: a client may reuse an id.
        self._tickets = itertools.count()
        self._pending: dict[int, _Pending] = {}
        self._sends: set[asyncio.Task[None]] = set()
        await self.accept()

    async def disconnect(self, code: int) -> None:
        for pending in self._pending.values():
            pending.timer.cancel()
        self._pending.clear()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        loop = asyncio.get_running_loop()
        received = loop.time()
        try:
            request = protocol.parse_frame(text_data, bytes_data)
        except protocol.ProtocolError as exc:
            await self._send_frame(protocol.error(exc.request_id, exc.code, exc.message))
            return

        timeout = settings.DIGITS_REQUEST_TIMEOUT
        ticket = next(self._tickets)
        self._pending[ticket] = _Pending(
            request.id, received, loop.call_later(timeout, self._on_deadline, ticket)
        )
        try:
            await loop.run_in_executor(
                _publisher, submit, request, self.channel_name, ticket, time.time() + timeout
            )
        except Exception:
            logger.exception("Could not queue request %r", request.id)
            await self._finish(
                ticket,
                protocol.error(
                    request.id,
                    protocol.UNAVAILABLE,
                    "The service could not take the request just now; please try again.",
                ),
            )

    async def digits_answer(self, event: dict[str, Any]) -> None:
        """A worker's answer (protocol.ANSWER_MESSAGE) for one of this socket's requests."""
        frame = event["frame"]
        pending = self._pending.get(event["ticket"])
        if pending is not None and "timings_ms" in frame:
            frame["timings_ms"]["server"] = round(
                (asyncio.get_running_loop().time() - pending.received) * 1000, 3
            )
        await self._finish(event["ticket"], frame)

    def _on_deadline(self, ticket: int) -> None:
        pending = self._pending.get(ticket)
        if pending is None:
            return
        frame = protocol.error(
            pending.request_id,
            protocol.TIMEOUT,
            f"No answer within {settings.DIGITS_REQUEST_TIMEOUT:g} s; please try again.",
        )
        task = asyncio.ensure_future(self._finish(ticket, frame))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _finish(self, ticket: int, frame: dict[str, Any]) -> None:
        """Answer a request once: whatever comes second (a late answer, a deadline) is dropped."""
        pending = self._pending.pop(ticket, None)
        if pending is None:
            return
        pending.timer.cancel()
        await self._send_frame(frame)

    async def _send_frame(self, frame: dict[str, Any]) -> None:
        await self.send(text_data=protocol.encode(frame))

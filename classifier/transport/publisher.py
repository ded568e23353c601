"""Queuing requests for the workers from the web process's event loop: one LPUSH for all waiting.

Writes Celery 5.6's task messages (protocol 2) in kombu 5.7's Redis storage format itself, as
`Celery.send_task` would through kombu's `Producer.publish` and the Redis `Channel._put`: the
same envelope (headers from Celery's own `AMQP.as_task_v2`, the body serialised and base64
encoded, the same properties and delivery info), pushed on the same list. The worker cannot tell
the difference; a test compares the two envelopes key by key.

Why, measured with benchmarks/load.py on the 2-core machine: `send_task` is blocking I/O, so each
request went to a publishing thread and back (two hand-offs under the GIL), and each call built
its message through kombu's producer pool, retry wrapper and declaration cache: about 40% of the
web process's time at 32 clients (py-spy). Here a request's message is built on the event loop
in a few tens of microseconds and joins the next LPUSH: one round trip for every request that
arrived meanwhile, on one connection per event loop that lives as long as it.

`DIGITS_TRANSPORT=stock` publishes with `send_task` instead (classifier.serving.enqueue), and so
does a broker with a global key prefix or priority steps in use, which this module does not
write.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import uuid
import weakref
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import redis.asyncio
from celery import Celery
from kombu.utils.json import dumps

# One LPUSH carries at most this many messages, and more than one only while they total at most
# PUSH_MAX_BYTES: a burst of large images goes in several commands of a few MB.
PUSH_MAX = 64
PUSH_MAX_BYTES = 4 * 1024 * 1024


def supports(app: Celery) -> bool:
    """Whether this module writes what the app's broker expects: a Redis broker with no global
    key prefix (kombu would prepend it to the queue's key)."""
    url = str(app.conf.broker_url or "")
    options = app.conf.broker_transport_options or {}
    return url.startswith(("redis://", "rediss://", "unix://")) and not options.get(
        "global_keyprefix"
    )


class TaskEncoder:
    """Builds the Redis list entry `send_task(name, kwargs=..., expires=..., ignore_result=True)`
    would push, with the app's own `as_task_v2`."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        # What kombu's producer and Celery's app would add per process.
        self.origin = f"gen{os.getpid()}@{socket.gethostname()}"
        self.reply_to = str(app.thread_oid)
        self.delivery_mode = 2  # persistent, Celery's task_default_delivery_mode

    def encode(
        self,
        name: str,
        kwargs: Mapping[str, Any],
        queue: str,
        deadline: float,
        now: float,
        kwargsrepr: str,
    ) -> bytes:
        """The message for one task on `queue`, as JSON bytes; `deadline` and `now` are epoch
        seconds."""
        task_id = str(uuid.uuid4())
        expires = datetime.fromtimestamp(deadline, UTC)
        headers, properties, body, _ = self.app.amqp.as_task_v2(
            task_id,
            name,
            args=(),
            kwargs=kwargs,
            expires=expires,
            ignore_result=True,
            argsrepr="()",
            kwargsrepr=kwargsrepr,
            origin=self.origin,
            reply_to=self.reply_to,
        )
        # send_task's options become properties too (celery/app/base.py, send_task).
        properties.update(
            argsrepr="()",
            kwargsrepr=kwargsrepr,
            delivery_mode=self.delivery_mode,
            expiration=str(int(max(0.0, deadline - now) * 1000)),
            delivery_info={"exchange": "", "routing_key": queue},
            priority=0,
            body_encoding="base64",
            delivery_tag=str(uuid.uuid4()),
        )
        message = {
            "body": base64.b64encode(dumps(body).encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": properties,
        }
        return dumps(message).encode()


class Publisher:
    """Pushes encoded messages on the queue from one event loop, all that wait in one LPUSH.

    `publish` returns once Redis holds the message (raising what went wrong otherwise), so the
    consumer still tells a client at once when its request could not be queued.
    """

    def __init__(
        self, url: str, queue: str, timeout: float = 10.0, connect_timeout: float = 2.0
    ) -> None:
        self.queue = queue
        self._client = redis.asyncio.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=connect_timeout
        )
        self._waiting: list[tuple[bytes, asyncio.Future[None]]] = []
        self._flusher: asyncio.Future[None] | None = None

    async def publish(self, message: bytes) -> None:
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((message, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.ensure_future(self._flush())
        await future

    async def _flush(self) -> None:
        """Push what waits, then what arrived during that push, until nothing waits."""
        while self._waiting:
            size = count = 0
            for message, _ in self._waiting[:PUSH_MAX]:
                size += len(message)
                if count and size > PUSH_MAX_BYTES:
                    break
                count += 1
            batch, self._waiting = self._waiting[:count], self._waiting[count:]
            try:
                # LPUSH adds its values left to right and workers pop from the right: the
                # first request in is the first out.
                await self._client.lpush(self.queue, *(message for message, _ in batch))
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in batch:
                    if not future.done():
                        future.set_result(None)

    async def close(self) -> None:
        await self._client.aclose()


# The publishers of each event loop, by (URL, queue): redis.asyncio's connections belong to the
# loop that made them, and die with it.
_publishers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str], Publisher]
] = weakref.WeakKeyDictionary()


def for_loop(
    url: str, queue: str, timeout: float = 10.0, connect_timeout: float = 2.0
) -> Publisher:
    """The running loop's publisher to `url` and `queue`, made at its first use."""
    publishers = _publishers.setdefault(asyncio.get_running_loop(), {})
    publisher = publishers.get((url, queue))
    if publisher is None:
        publisher = publishers[url, queue] = Publisher(url, queue, timeout, connect_timeout)
    return publisher

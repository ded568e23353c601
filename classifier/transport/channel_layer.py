"""The channel layer: channels_redis, read by one task per web process, and a receive that
outlives a Redis outage.

Overrides channels_redis 4.3's `RedisChannelLayer.receive` (channels_redis/core.py) for the
process-local channels the consumers use: its `receive_buffer`, `non_local_name`,
`consistent_hash`, `connection` and `deserialize` are used as 4.3 has them, and the messages
are those its `send` (and classifier.transport.replies) store. The measured effects are in the
classes' docstrings. The process-local receive lock this replaces is discussed upstream in
django/channels_redis#163; the redis-py read timeout that killed idle sockets is
django/channels_redis#422 (worked around in digits_site/settings.py). With
`DIGITS_TRANSPORT=stock` the service uses `channels_redis.core.RedisChannelLayer` itself.

Channels runs each consumer's `channel_layer.receive()` next to its websocket; when it raises,
the consumer dies and the web server closes the socket with 1011. With plain channels_redis a Redis
restart therefore closed every open websocket at once, and every page reconnected together.
Here a failed receive returns a `LAYER_LOST` message instead, so the consumer answers
its requests in flight with `unavailable` (their replies cannot arrive: Redis lost them) and keeps
the socket; the next receive retries after a short backoff, shared by all sockets of the process
so an outage costs Redis a few connection attempts a second, not one per socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import redis
from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

# The message type a failed receive returns; Channels calls the consumer's `digits_layer_lost`.
LAYER_LOST = "digits.layer_lost"

# Retry delays after a failed receive: doubling from the first to the last, with jitter.
RETRY_FIRST = 0.1
RETRY_MAX = 2.0


# Most messages the reader takes off the process's channel in one round trip.
RECEIVE_BATCH = 64


@dataclass(frozen=True)
class _ReaderFailed:
    """Put in every socket's buffer when the reader loses Redis: each receive raises it."""

    error: BaseException


class BatchedReceiveRedisChannelLayer(RedisChannelLayer):
    """`RedisChannelLayer` whose sockets' answers are read by one task per process.

    All sockets of a web process share one Redis key for their answers (the process-local
    channel `specific.<id>!`). channels_redis reads it from inside the sockets' own receives:
    whichever socket holds a lock takes one message for anyone, four round trips each (restore
    the backup, BZPOPMIN, back the message up, delete the backup, so that a receive cancelled
    mid-read loses nothing). Under load answers waited there: 200 to 300 ms at 60 answers/s on
    the shared 2-core machine (benchmarks/load.py). Worse, an answer could wait for the next
    one: a socket holding the lock blocks in BZPOPMIN for everybody and does not see its own
    buffer fill meanwhile; the last answers of a burst waited seconds, or timed out.

    Here one reader task per process, started by the first receive and ending when nobody
    receives, does the reading: BZPOPMIN, the message straight into its socket's buffer, then
    one ZPOPMIN for up to RECEIVE_BATCH - 1 others that waited behind it. Two round trips per
    burst of answers, none on a lone answer's path after the pop, and a receive is only a wait
    on the socket's own buffer. Sockets come and go without touching Redis, so no read is ever
    cancelled halfway, and no backup is needed; a reader ends only with its process (or its
    event loop), whose sockets die with it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reader: asyncio.Task[None] | None = None
        self._receiving = 0

    async def receive(self, channel: str) -> dict[str, Any]:
        if "!" not in channel:  # a shared (non-local) channel: channels_redis's own way
            return await super().receive(channel)
        assert self.require_valid_channel_name(channel)
        real_channel = self.non_local_name(channel)
        assert real_channel.endswith(self.client_prefix + "!"), "Wrong client prefix"
        buffer = self.receive_buffer[channel]
        self._receiving += 1
        try:
            if self._reader is None or self._reader.done():
                self._reader = asyncio.ensure_future(self._read(real_channel))
            message = await buffer.get()
        except asyncio.CancelledError:
            # The socket is closing: its buffer goes, and answers still to come are dropped.
            self.receive_buffer.pop(channel, None)
            raise
        finally:
            self._receiving -= 1
        if isinstance(message, _ReaderFailed):
            raise message.error
        return message

    async def _read(self, real_channel: str) -> None:
        """Move every answer for this process from Redis to its socket's buffer, while any
        socket receives."""
        connection = self.connection(self.consistent_hash(real_channel))
        key = self.prefix + real_channel
        try:
            while self._receiving > 0:
                popped = await connection.bzpopmin(key, timeout=self.brpop_timeout)
                if popped is None:
                    continue
                self._deliver(popped[1])
                for item, _score in await connection.zpopmin(key, RECEIVE_BATCH - 1):
                    self._deliver(item)
        except asyncio.CancelledError:
            raise  # the event loop or the layer is closing
        except Exception as exc:
            # Every socket hears of it from its receive (ResilientRedisChannelLayer answers
            # their requests in flight); the next receive starts a new reader.
            for name, buffer in self.receive_buffer.items():
                if "!" in name:  # the sockets' own channels, not shared ones
                    buffer.put_nowait(_ReaderFailed(exc))

    def _deliver(self, item: bytes) -> None:
        message = self.deserialize(item)
        target = message.pop("__asgi_channel__", None)
        for name in target if isinstance(target, list) else [target]:
            buffer = self.receive_buffer.get(name)
            if buffer is not None:  # else its socket has closed
                buffer.put_nowait(message)

    async def close_pools(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        await super().close_pools()


class ResilientRedisChannelLayer(BatchedReceiveRedisChannelLayer):
    """`RedisChannelLayer` whose `receive` reports a lost Redis instead of raising."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retry_delay = 0.0
        self._retry_at = 0.0

    async def receive(self, channel: str) -> dict[str, Any]:
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            try:
                await asyncio.sleep(wait)
            except asyncio.CancelledError:
                self.receive_buffer.pop(channel, None)  # the socket closed meanwhile
                raise
        try:
            message = await super().receive(channel)
        except (redis.RedisError, OSError) as exc:
            if self._retry_delay == 0:
                logger.warning("The channel layer lost Redis (%s); retrying", exc)
            self._retry_delay = min(RETRY_MAX, max(RETRY_FIRST, self._retry_delay * 2))
            self._retry_at = time.monotonic() + self._retry_delay * random.uniform(0.5, 1.0)
            return {"type": LAYER_LOST, "error": str(exc)}
        if self._retry_delay:
            logger.info("The channel layer reaches Redis again")
            self._retry_delay = 0.0
            self._retry_at = 0.0
        return message

"""The channel layer: channels_redis, with a receive that outlives a Redis outage.

Channels runs each consumer's `channel_layer.receive()` next to its websocket; when it raises,
the consumer dies and daphne closes the socket with 1011. With plain channels_redis a Redis
restart therefore closed every open websocket at once, and every page reconnected together.
Here a failed receive returns a `LAYER_LOST` message instead, so the consumer answers
its requests in flight with `unavailable` (their replies cannot arrive: Redis lost them) and keeps
the socket; the next receive retries after a short backoff, shared by all sockets of the process
so an outage costs Redis a few connection attempts a second, not one per socket.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import redis
from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

# The message type a failed receive returns; Channels calls the consumer's `digits_layer_lost`.
LAYER_LOST = "digits.layer_lost"

# Retry delays after a failed receive: doubling from the first to the last, with jitter.
RETRY_FIRST = 0.1
RETRY_MAX = 2.0


# Most messages one receive takes off a process's channel in one go.
RECEIVE_BATCH = 64
# KEYS: the channel's sorted set and its backup. ARGV: how many. Moves up to that many of the
# oldest messages to the backup, as `_brpop_with_clean` does with the one it pops, and returns
# them (member, score, member, score...).
POP_MORE_SCRIPT = """
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
for i = 1, #popped, 2 do
    redis.call('ZADD', KEYS[2], popped[i + 1], popped[i])
end
return popped
"""


class BatchedReceiveRedisChannelLayer(RedisChannelLayer):
    """`RedisChannelLayer` taking every waiting answer of the process in one receive.

    All sockets of a web process share one Redis key for their answers (the process-local
    channel `specific.<id>!`), and channels_redis takes messages off it one at a time: four
    round trips each (restore the backup, BZPOPMIN, back the message up, delete the backup),
    on the event loop that also serves every socket. Under load answers waited there: 200 to
    300 ms at 60 answers/s on the shared 2-core machine (benchmarks/load.py). Here, after the
    blocking pop of the first, one script moves every other waiting message to the backup and
    returns it (the same crash-safety: a message stays in the backup until it is buffered), and
    each is put in its socket's buffer as channels_redis does with the one it pops: 20 ms.
    """

    async def receive_single(self, channel: str) -> tuple[Any, dict[str, Any]]:
        if "!" not in channel:  # a shared (non-local) channel: one message, as before
            return await super().receive_single(channel)
        assert self.require_valid_channel_name(channel, receive=True)
        index = self.consistent_hash(channel)
        channel_key = self.prefix + channel
        backup = self._backup_channel_name(channel_key)
        await self.receive_clean_locks.acquire(channel_key)
        try:
            content = None
            while content is None:  # cancellation loses nothing: the backup keeps it
                content = await self._brpop_with_clean(index, channel_key, self.brpop_timeout)
            connection = self.connection(index)
            more = await connection.eval(POP_MORE_SCRIPT, 2, channel_key, backup, RECEIVE_BATCH - 1)
            contents = [content, *more[::2]]
            # Delete them from the backup once buffered, as channels_redis's cleaner does.
            cleaner = asyncio.ensure_future(connection.zpopmin(backup, len(contents)))
            self.receive_cleaners.append(cleaner)

            def cleaned(task: asyncio.Future[Any]) -> None:
                self.receive_cleaners.remove(task)
                self.receive_clean_locks.release(channel_key)

            cleaner.add_done_callback(cleaned)
        except BaseException:
            self.receive_clean_locks.release(channel_key)
            raise
        messages = []
        for item in contents:
            message = self.deserialize(item)
            messages.append((message.pop("__asgi_channel__", channel), message))
        # `receive` buffers the first as soon as this returns, with no await in between; the
        # others go after it, so each socket gets its answers in the order they were sent.
        asyncio.get_running_loop().call_soon(self._buffer_messages, messages[1:])
        return messages[0]

    def _buffer_messages(self, messages: list[tuple[Any, dict[str, Any]]]) -> None:
        for target, message in messages:
            for name in target if isinstance(target, list) else [target]:
                self.receive_buffer[name].put_nowait(message)


class ResilientRedisChannelLayer(BatchedReceiveRedisChannelLayer):
    """`RedisChannelLayer` whose `receive` reports a lost Redis instead of raising."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._retry_delay = 0.0
        self._retry_at = 0.0

    async def receive(self, channel: str) -> dict[str, Any]:
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
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

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


class ResilientRedisChannelLayer(RedisChannelLayer):
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

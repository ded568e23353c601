"""Sending the worker's answers to the consumers' channels: a batch's answers in one round trip.

Overrides channels_redis 4.3's storage from outside: `SEND_MANY_SCRIPT` does what
`RedisChannelLayer.send` (channels_redis/core.py) does for one message (drop expired messages,
count them against the channel's capacity, add, set the expiry), for every answer of a batch in
one script call, with the layer's own keys, serialisation and capacity. Why, measured with
benchmarks/load.py on the 2-core machine: the layer's own `send` is asyncio code awaiting four
round trips per message; run on an event loop in a helper thread it cost 1.8 ms of CPU and
4.7 ms of waiting per lone answer; the script costs one round trip per batch. Calling
`async_to_sync(layer.send)` per answer instead would also build a loop and a Redis connection
per message (channels_redis issues #125 and #332).

With `direct=False` (`DIGITS_TRANSPORT=stock`), and for any other layer, answers go through the
layer's own `send` on one event loop that lives in a background thread for the whole process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis
from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from redis.commands.core import Script

logger = logging.getLogger(__name__)


# `RedisChannelLayer.send` for many messages at once: the same four commands per message (drop
# expired messages, count them against the capacity, add, set the expiry), for every message of
# a batch in one script call, as the layer's own `group_send` does. KEYS: the channels' keys.
# ARGV: now, expiry, then message and capacity per key. Returns 1 for each message refused
# because its channel is full, else 0.
SEND_MANY_SCRIPT = """
local now = tonumber(ARGV[1])
local expiry = tonumber(ARGV[2])
local full = {}
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], 0, math.floor(now) - expiry)
    if redis.call('ZCOUNT', KEYS[i], '-inf', '+inf') < tonumber(ARGV[2 + 2 * i]) then
        redis.call('ZADD', KEYS[i], ARGV[1], ARGV[1 + 2 * i])
        redis.call('EXPIRE', KEYS[i], expiry)
        full[i] = 0
    else
        full[i] = 1
    end
end
return full
"""


# Run by its SHA1 (EVALSHA; loaded once when Redis does not know it): no script text to send and
# hash per batch.
# redis-py runs an unbound script on the client each call passes; its hints want a client here.
SEND_MANY = Script(None, SEND_MANY_SCRIPT.encode())  # type: ignore[arg-type]


class ReplySender:
    """Sends the worker's answers through the channel layer, from the worker's own thread.

    With channels_redis (what the service runs) the answers of a batch go to Redis in one
    script call per Redis host, over a blocking redis-py client: the keys, serialisation and
    capacity check are the layer's, only the round trips are fewer. The layer's own `send` is
    asyncio code awaiting four round trips per message; run on an event loop in a helper thread,
    it cost 1.8 ms of CPU and 4.7 ms of waiting per lone answer on a busy 2-core machine (two
    thread hand-offs and four trips to Redis), against one trip now (benchmarks/load.py).

    Any other layer is sent to through its `send`, on one event loop that lives in a background
    thread for the life of the process: each `async_to_sync` call would run a fresh loop, and
    channels_redis keeps its connections per loop, so that leaks connections and pays a connect
    per answer (channels_redis issues #125, #332).
    """

    def __init__(
        self, layer: BaseChannelLayer | None = None, timeout: float = 5.0, direct: bool = True
    ) -> None:
        self.layer = layer if layer is not None else get_channel_layer()
        if self.layer is None:
            raise RuntimeError("No channel layer is configured (settings.CHANNEL_LAYERS).")
        self.timeout = timeout
        self._clients: dict[int, redis.Redis] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Sentinel-managed hosts need the layer's own connection logic.
        self._direct = (
            direct
            and isinstance(self.layer, RedisChannelLayer)
            and not any("master_name" in host for host in self.layer.hosts)
        )
        if not self._direct:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="digits-replies", daemon=True
            )
            self._thread.start()

    def send(self, messages: Sequence[tuple[str, Mapping[str, Any]]]) -> int:
        """Send (channel, message) pairs; return how many could not be sent.

        Waits for the sends, so a worker never runs ahead of a Redis it cannot reach. A message
        that cannot be sent is logged and dropped: its client gets a `timeout` error instead.
        """
        if not messages:
            return 0
        results = self._send_direct(messages) if self._direct else self._send_async(messages)
        failed = 0
        for (channel, _), result in zip(messages, results, strict=True):
            if isinstance(result, BaseException):
                failed += 1
                if isinstance(result, ChannelFull):
                    logger.warning("Channel %s is full; answer dropped", channel)
                else:
                    logger.error("Answer to %s not sent: %r", channel, result)
        return failed

    def _send_direct(
        self, messages: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[BaseException | None]:
        layer = self.layer
        assert isinstance(layer, RedisChannelLayer)
        by_host: dict[int, list[int]] = {}
        keys: list[str] = []
        args: list[tuple[bytes, int]] = []
        for position, (channel, message) in enumerate(messages):
            non_local = layer.non_local_name(channel)
            if non_local != channel:  # a process-local channel: the receiver dispatches on this
                message = {**message, "__asgi_channel__": channel}
            by_host.setdefault(layer.consistent_hash(non_local), []).append(position)
            keys.append(layer.prefix + non_local)
            args.append((layer.serialize(message), layer.get_capacity(channel)))
        results: list[BaseException | None] = [None] * len(messages)
        for host, positions in by_host.items():
            argv: list[Any] = [time.time(), int(layer.expiry)]
            for position in positions:
                argv.extend(args[position])
            try:
                full = SEND_MANY(
                    keys=[keys[p] for p in positions], args=argv, client=self._client(host)
                )
            except redis.RedisError as exc:  # every answer to this host is lost
                for position in positions:
                    results[position] = exc
                continue
            for position, refused in zip(positions, full, strict=True):
                if refused:
                    results[position] = ChannelFull()
        return results

    def _client(self, host: int) -> redis.Redis:
        client = self._clients.get(host)
        if client is None:
            assert isinstance(self.layer, RedisChannelLayer)
            options = {**self.layer.hosts[host], "socket_timeout": self.timeout}
            address = options.pop("address", None)
            client = redis.Redis.from_url(address, **options) if address else redis.Redis(**options)
            self._clients[host] = client
        return client

    def _send_async(self, messages: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Any]:
        assert self._loop is not None

        async def send_all() -> list[Any]:
            return await asyncio.gather(
                *(self.layer.send(channel, message) for channel, message in messages),
                return_exceptions=True,
            )

        future = asyncio.run_coroutine_threadsafe(send_all(), self._loop)
        try:
            return future.result(self.timeout)
        except TimeoutError as exc:
            future.cancel()
            logger.error("Sending %d answers took over %.1f s", len(messages), self.timeout)
            return [exc] * len(messages)

    def close(self, timeout: float = 5.0) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
        if self._loop is None or not self._loop.is_running():
            return
        close_pools = getattr(self.layer, "close_pools", None)
        if close_pools is not None:
            try:
                asyncio.run_coroutine_threadsafe(close_pools(), self._loop).result(timeout)
            except Exception:
                logger.debug("Closing the channel layer's connections failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        if not self._loop.is_running():
            # Closed here, not by the garbage collector, where channels_redis's close hook
            # (it flushes the layer's pools) would run inside whatever loop is running then.
            self._loop.close()

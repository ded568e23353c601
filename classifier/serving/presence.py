"""Worker presence in Redis: each worker's heartbeat keeps a short-lived key there; the web side
reads them.

Why: with Redis as the broker, a request queued while no worker runs waits in silence until its
deadline, and nothing else tells the web side that nobody is listening. So every worker, once
its model is loaded, refreshes `digits:workers:<queue>:<node>` every `interval` seconds with a
time to live of `ttl` (a few intervals), from a background thread (a long batch must not make a
live worker look dead). A clean stop deletes the key; SIGKILL or a lost machine just stops the
refreshes and the key expires. The key's value says which model the worker serves.

The web side (`Presence`) reads the keys before queuing a request, cached for a fraction of a
second, and answers `unavailable` at once when there are none; `/readyz` shows the same list.
A set per queue names the workers, so readers never SCAN a shared Redis.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from django.conf import settings
from redis.backoff import NoBackoff

logger = logging.getLogger(__name__)

KEY_PREFIX = "digits:workers"
# Redis calls here must fail fast: a dead Redis is itself the answer ("unavailable"). One retry
# on a fresh connection covers a connection left stale by a Redis restart; redis-py's default
# (ten retries with backoff) would take seconds to admit that Redis is down.
REDIS_TIMEOUT = 1.0


def _client_options(retry: type[redis.retry.Retry | redis.asyncio.retry.Retry]) -> dict[str, Any]:
    return {
        "socket_timeout": REDIS_TIMEOUT,
        "socket_connect_timeout": REDIS_TIMEOUT,
        "retry": retry(NoBackoff(), 1),
    }


def registry_key(queue: str) -> str:
    """The set of worker names that have announced themselves on `queue`."""
    return f"{KEY_PREFIX}:{queue}"


def worker_key(queue: str, node: str) -> str:
    """One worker's presence key; it exists while the worker is alive."""
    return f"{KEY_PREFIX}:{queue}:{node}"


class Heartbeat:
    """A daemon thread that keeps this worker's presence key alive.

    `describe()` is called on every beat and its dict stored with the node name and pid, so a
    model swapped at run time shows up within one interval.
    """

    def __init__(
        self,
        redis_url: str,
        queue: str,
        node: str,
        describe: Callable[[], dict[str, Any]],
        interval: float = 1.0,
        ttl: float = 3.0,
    ) -> None:
        if ttl <= interval:
            raise ValueError("The heartbeat's ttl must exceed its interval.")
        self.queue = queue
        self.node = node
        self.describe = describe
        self.interval = interval
        self.ttl = ttl
        self._client = redis.Redis.from_url(redis_url, **_client_options(redis.retry.Retry))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def beat(self) -> None:
        """Write the presence key once (raises `redis.RedisError` when Redis is unreachable)."""
        value = json.dumps({"node": self.node, "pid": os.getpid(), **self.describe()})
        ttl_ms = int(self.ttl * 1000)
        pipe = self._client.pipeline(transaction=False)
        pipe.set(worker_key(self.queue, self.node), value, px=ttl_ms)
        pipe.sadd(registry_key(self.queue), self.node)
        pipe.pexpire(registry_key(self.queue), ttl_ms)
        pipe.execute()

    def start(self) -> None:
        """Beat once now (so the worker is visible as soon as it is ready), then in the
        background; a Redis outage is logged once and retried every interval."""
        self._beat_logged()
        self._thread = threading.Thread(target=self._run, name="digits-heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and remove the key: a clean stop is seen at once, not after the ttl."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.interval + REDIS_TIMEOUT * 3)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.delete(worker_key(self.queue, self.node))
            pipe.srem(registry_key(self.queue), self.node)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("Could not remove the heartbeat of %s: %s", self.node, exc)
        finally:
            self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._beat_logged()

    def _beat_logged(self) -> None:
        try:
            self.beat()
        except Exception as exc:  # a beat must never kill the thread
            if not self._failing:
                logger.warning(
                    "Worker heartbeat failed (%s); retrying every %.1f s", exc, self.interval
                )
            self._failing = True
        else:
            if self._failing:
                logger.info("Worker heartbeat restored")
            self._failing = False


async def read_workers(client: redis.asyncio.Redis, queue: str) -> list[dict[str, Any]]:
    """The live workers on `queue`, each the dict its heartbeat stored; forgets dead names."""
    nodes = sorted(
        n.decode() if isinstance(n, bytes) else n
        for n in await client.smembers(registry_key(queue))
    )
    if not nodes:
        return []
    values = await client.mget([worker_key(queue, node) for node in nodes])
    workers, dead = [], []
    for node, value in zip(nodes, values, strict=True):
        if value is None:
            dead.append(node)
            continue
        try:
            workers.append(json.loads(value))
        except ValueError:
            workers.append({"node": node})
    if dead:
        await client.srem(registry_key(queue), *dead)
    return workers


class Presence:
    """The web side's view of the workers on one queue, cached for `cache_for` seconds.

    One Redis client per event loop (redis.asyncio connections belong to the loop that opened
    them); concurrent callers share one lookup.
    """

    def __init__(self, redis_url: str, queue: str, cache_for: float = 0.5) -> None:
        self.redis_url = redis_url
        self.queue = queue
        self.cache_for = cache_for
        self._client: redis.asyncio.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checked_at = -float("inf")
        self._available = False
        self._lookup: asyncio.Future[bool] | None = None

    def _redis(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = redis.asyncio.Redis.from_url(
                self.redis_url, **_client_options(redis.asyncio.retry.Retry)
            )
            self._loop = loop
            self._lookup = None
        return self._client

    async def workers(self) -> list[dict[str, Any]]:
        """The live workers now (no cache); raises `redis.RedisError` or `OSError`."""
        return await read_workers(self._redis(), self.queue)

    async def available(self) -> bool:
        """Whether any worker is alive, as seen at most `cache_for` seconds ago. An unreachable
        Redis counts as none: nothing could be queued anyway."""
        if time.monotonic() - self._checked_at < self.cache_for:
            return self._available
        client = self._redis()
        if self._lookup is None or self._lookup.done():
            self._lookup = asyncio.ensure_future(self._look(client))
        return await asyncio.shield(self._lookup)

    async def _look(self, client: redis.asyncio.Redis) -> bool:
        try:
            available = bool(await read_workers(client, self.queue))
        except (redis.RedisError, OSError) as exc:
            logger.warning("Cannot read worker presence from Redis: %s", exc)
            available = False
        self._available = available
        self._checked_at = time.monotonic()
        return available


@functools.cache
def shared_presence(redis_url: str, queue: str, cache_for: float) -> Presence:
    """The process's one `Presence` for a queue (the consumer and /readyz share its cache)."""
    return Presence(redis_url, queue, cache_for)


def from_settings() -> Presence:
    """The process's `Presence` for the configured Redis and queue (the consumer's and
    /readyz's)."""
    return shared_presence(
        settings.REDIS_URL, settings.DIGITS_INFERENCE_QUEUE, settings.DIGITS_PRESENCE_CACHE
    )


# --- The worker process's own heartbeat ----------------------------------------------------------

_running: Heartbeat | None = None


def start(
    redis_url: str,
    queue: str,
    node: str,
    describe: Callable[[], dict[str, Any]],
    interval: float,
    ttl: float,
) -> Heartbeat:
    """Start this process's heartbeat (once the model is loaded and the worker consumes)."""
    global _running
    if _running is None:
        _running = Heartbeat(redis_url, queue, node, describe, interval, ttl)
        _running.start()
    return _running


def stop() -> None:
    """Stop this process's heartbeat and remove its key (a clean shutdown)."""
    global _running
    running, _running = _running, None
    if running is not None:
        running.stop()

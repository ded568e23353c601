"""Worker presence (classifier/serving/presence.py) against a real Redis: keys appear, expire,
survive a Redis restart, and the web side's cached view follows them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio

from classifier.management.devstack import EmbeddedRedis, free_port
from classifier.serving.presence import Heartbeat, Presence, read_workers, registry_key, worker_key


@pytest.fixture
def queue(redis_url: str) -> Iterator[str]:
    """A queue name of this test's own; its presence keys are removed afterwards."""
    name = f"test-presence-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    nodes = client.smembers(registry_key(name))
    client.delete(registry_key(name), *(worker_key(name, n.decode()) for n in nodes))
    client.close()


def workers(url: str, queue: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        client = redis.asyncio.Redis.from_url(url)
        try:
            return await read_workers(client, queue)
        finally:
            await client.aclose()

    return asyncio.run(read())


def wait_until(condition: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_beating_worker_is_listed_with_its_model_and_gone_at_once_when_stopped(
    redis_url: str, queue: str
) -> None:
    model = {"model": "v1"}
    heartbeat = Heartbeat(redis_url, queue, "w1@host", lambda: dict(model), 0.1, 0.5)
    heartbeat.start()
    try:
        (listed,) = workers(redis_url, queue)
        assert listed["node"] == "w1@host" and listed["model"] == "v1" and listed["pid"] > 0
        model["model"] = "v2"  # a model swap shows within one interval
        assert wait_until(lambda: workers(redis_url, queue)[0]["model"] == "v2")
    finally:
        heartbeat.stop()
    assert workers(redis_url, queue) == []


def test_a_worker_that_stops_beating_expires_after_its_ttl(redis_url: str, queue: str) -> None:
    """As after SIGKILL: nothing is cleaned up, the key just runs out; readers then also
    forget the name."""
    heartbeat = Heartbeat(redis_url, queue, "w1@host", dict, 0.1, 0.4)
    heartbeat.beat()
    assert len(workers(redis_url, queue)) == 1
    time.sleep(0.6)
    assert workers(redis_url, queue) == []
    client = redis.Redis.from_url(redis_url)
    assert not client.exists(registry_key(queue))
    client.close()


def test_several_workers_are_listed_and_each_leaves_alone(redis_url: str, queue: str) -> None:
    beats = [Heartbeat(redis_url, queue, f"w{n}@host", dict, 0.1, 0.5) for n in range(3)]
    for heartbeat in beats:
        heartbeat.start()
    try:
        assert sorted(w["node"] for w in workers(redis_url, queue)) == [
            "w0@host",
            "w1@host",
            "w2@host",
        ]
        beats[1].stop()
        assert sorted(w["node"] for w in workers(redis_url, queue)) == ["w0@host", "w2@host"]
    finally:
        for heartbeat in (beats[0], beats[2]):
            heartbeat.stop()


def test_the_ttl_must_outlast_the_interval(redis_url: str) -> None:
    with pytest.raises(ValueError):
        Heartbeat(redis_url, "q", "n", dict, interval=1.0, ttl=1.0)


def test_the_heartbeat_survives_a_redis_restart(tmp_path: Any) -> None:
    """Redis killed under a beating worker: the thread keeps trying, and the key is back soon
    after Redis is (an empty Redis: nothing survived the restart)."""
    server = EmbeddedRedis(tmp_path)
    server.start()
    heartbeat = Heartbeat(server.url, "q", "w1@host", dict, 0.1, 0.5)
    try:
        heartbeat.start()
        assert len(workers(server.url, "q")) == 1
        server.process.kill()
        server.process.wait()
        time.sleep(0.5)
        server.start()
        assert wait_until(lambda: len(workers(server.url, "q")) == 1)
        assert heartbeat._thread is not None and heartbeat._thread.is_alive()
    finally:
        heartbeat.stop()
        server.stop()


def test_presence_is_cached_briefly_and_follows_the_workers(redis_url: str, queue: str) -> None:
    async def scenario() -> list[bool]:
        presence = Presence(redis_url, queue, cache_for=0.3)
        seen = [await presence.available()]
        heartbeat = Heartbeat(redis_url, queue, "w1@host", dict, 0.1, 0.5)
        heartbeat.start()
        seen.append(await presence.available())  # still the cached "none"
        await asyncio.sleep(0.35)
        seen.append(await presence.available())
        # Many sockets asking at once share one lookup.
        seen.extend(await asyncio.gather(*(presence.available() for _ in range(50))))
        await asyncio.to_thread(heartbeat.stop)
        await asyncio.sleep(0.35)
        seen.append(await presence.available())
        return seen

    seen = asyncio.run(scenario())
    assert seen[:3] == [False, False, True]
    assert all(seen[3:-1])
    assert seen[-1] is False


def test_an_unreachable_redis_means_no_worker() -> None:
    async def scenario() -> bool:
        presence = Presence(f"redis://127.0.0.1:{free_port()}/0", "q")
        available = await presence.available()
        with pytest.raises(redis.ConnectionError):
            await presence.workers()
        return available

    assert asyncio.run(scenario()) is False

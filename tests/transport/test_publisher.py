"""The web process's publisher (classifier/transport/publisher.py) against a real Redis of this
module's own: everything published while a push is in flight goes in the next LPUSH, in order,
bounded in count and bytes; a Redis that is gone fails each publish, and one that is back is used
again. That the message is the one `send_task` writes: tests/serving/test_tasks.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
import redis

from classifier.management.devstack import EmbeddedRedis
from classifier.transport import publisher
from classifier.transport.publisher import PUSH_MAX, PUSH_MAX_BYTES, Publisher


@pytest.fixture
def raw(private_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis.url)
    yield client
    client.close()


def lpush_calls(client: redis.Redis) -> int:
    return int(client.info("commandstats").get("cmdstat_lpush", {}).get("calls", 0))


def publish_together(url: str, queue: str, messages: list[bytes]) -> None:
    """Publish all at once from one event loop, as many sockets' requests arrive together."""

    async def scenario() -> None:
        sender = Publisher(url, queue)
        try:
            await asyncio.gather(*(sender.publish(m) for m in messages))
        finally:
            await sender.close()

    asyncio.run(scenario())


def test_messages_waiting_together_go_in_one_push_each_once_in_order(
    private_redis: EmbeddedRedis, raw: redis.Redis
) -> None:
    queue = f"publish-{uuid.uuid4().hex[:8]}"
    messages = [f"m{n}".encode() for n in range(PUSH_MAX + 36)]
    before = lpush_calls(raw)
    publish_together(private_redis.url, queue, messages)
    assert lpush_calls(raw) - before == 2  # PUSH_MAX, then the rest
    # Workers pop from the right: the first published is the first taken.
    assert [raw.rpop(queue) for _ in messages] == messages
    assert raw.llen(queue) == 0


def test_large_messages_are_pushed_a_few_megabytes_at_a_time(
    private_redis: EmbeddedRedis, raw: redis.Redis
) -> None:
    queue = f"publish-{uuid.uuid4().hex[:8]}"
    big = PUSH_MAX_BYTES // 2 + 1
    messages = [bytes([n]) * big for n in range(3)] + [b"small"]
    before = lpush_calls(raw)
    publish_together(private_redis.url, queue, messages)
    assert lpush_calls(raw) - before == 3  # no push over PUSH_MAX_BYTES but a lone message
    assert [raw.rpop(queue) for _ in messages] == messages


def test_a_lost_redis_fails_each_publish_and_a_restarted_one_is_used_again(
    private_redis: EmbeddedRedis, raw: redis.Redis
) -> None:
    queue = f"publish-{uuid.uuid4().hex[:8]}"

    async def scenario() -> list[BaseException | None]:
        sender = Publisher(private_redis.url, queue, timeout=2.0)
        try:
            await sender.publish(b"before")
            private_redis.stop()
            lost = await asyncio.gather(
                *(sender.publish(b"lost") for _ in range(3)), return_exceptions=True
            )
            await asyncio.to_thread(private_redis.start)
            await sender.publish(b"after")
            return list(lost)
        finally:
            await sender.close()

    lost = asyncio.run(scenario())
    assert all(isinstance(e, (redis.ConnectionError, OSError)) for e in lost), lost
    assert raw.lrange(queue, 0, -1) == [b"after"]  # Redis keeps nothing across a restart


def test_each_event_loop_has_its_own_publisher() -> None:
    """redis.asyncio's connections belong to the loop that made them."""

    async def get() -> Publisher:
        first = publisher.for_loop("redis://127.0.0.1:1/0", "q")
        assert publisher.for_loop("redis://127.0.0.1:1/0", "q") is first
        assert publisher.for_loop("redis://127.0.0.1:1/0", "other") is not first
        return first

    assert asyncio.run(get()) is not asyncio.run(get())

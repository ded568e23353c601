"""The channel layer's receive (classifier/transport/channel_layer.py), against a real Redis of this
module's own: one reader per process takes every waiting answer in one go, each reaches its own
socket in order and at once, and sockets closing hold up nobody."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer

from classifier.management.devstack import EmbeddedRedis, free_port
from classifier.transport.channel_layer import LAYER_LOST, RECEIVE_BATCH, ResilientRedisChannelLayer


@pytest.fixture
def config(private_redis: EmbeddedRedis) -> dict[str, Any]:
    return {"hosts": [private_redis.url], "prefix": f"layer-{uuid.uuid4().hex[:8]}"}


def test_waiting_answers_are_taken_together_and_reach_their_own_sockets(config) -> None:
    async def scenario() -> tuple[dict[str, int], int]:
        web = ResilientRedisChannelLayer(**config)  # one web process, several sockets
        worker = RedisChannelLayer(**config)
        channels = [await web.new_channel() for _ in range(5)]
        for channel in channels:  # each socket's buffer is made by its first receive
            web.receive_buffer[channel]
        expected = {channel: [] for channel in channels}
        for n in range(40):  # sent while nobody receives, as under load
            channel = channels[n % 5]
            expected[channel].append(n)
            await worker.send(channel, {"type": "digits.answer", "n": n})
        first = {channel: asyncio.ensure_future(web.receive(channel)) for channel in channels}

        received = {}
        for channel in channels:
            received[channel] = [await_n(await asyncio.wait_for(first[channel], 10))]
        # The reader took the first alone and the other 39 in one more read: they wait in
        # their sockets' buffers (8 each, one of them received), and nothing is left in Redis.
        buffered = {channel: web.receive_buffer[channel].qsize() for channel in channels}
        left = await web.connection(0).zcard(web.prefix + web.non_local_name(channels[0]))
        for channel in channels:
            while len(received[channel]) < len(expected[channel]):
                received[channel].append(await_n(await web.receive(channel)))
        await web.close_pools()
        await worker.close_pools()
        assert received == expected
        return buffered, left

    buffered, left = asyncio.run(scenario())
    assert sorted(buffered.values()) == [7] * 5, buffered
    assert left == 0
    assert RECEIVE_BATCH >= 40


def test_the_last_answer_of_a_burst_comes_at_once(config) -> None:
    """Sockets receiving in a loop, as consumers do, get every answer of each burst promptly:
    none waits for a later answer to wake the reader (channels_redis's own receive could leave
    one in a buffer while the socket that held its lock blocked in Redis for everybody)."""

    async def scenario() -> list[float]:
        web = ResilientRedisChannelLayer(**config)
        worker = RedisChannelLayer(**config)
        channels = [await web.new_channel() for _ in range(6)]
        arrived: dict[int, float] = {}

        async def consume(channel: str) -> None:
            while True:
                arrived[await_n(await web.receive(channel))] = time.monotonic()

        consumers = [asyncio.ensure_future(consume(channel)) for channel in channels]
        delays = []
        for burst in range(20):
            await asyncio.sleep(0.05)
            numbers = range(burst * 7, burst * 7 + 7)
            sent = time.monotonic()
            await asyncio.gather(
                *(worker.send(channels[n % 6], {"type": "digits.answer", "n": n}) for n in numbers)
            )
            deadline = sent + 10
            while not all(n in arrived for n in numbers) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            delays.append(max(arrived.get(n, deadline) for n in numbers) - sent)
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        await web.close_pools()
        await worker.close_pools()
        return delays

    delays = asyncio.run(scenario())
    assert max(delays) < 1.0, [round(d, 3) for d in delays]


def test_a_socket_closing_mid_receive_holds_up_no_other_socket(config) -> None:
    """A socket closes while it receives (Channels cancels the receive). Another socket's answer
    must still come at once, and the closed socket's late answer must reach nobody."""

    async def scenario() -> tuple[float, list[int], bool]:
        web = ResilientRedisChannelLayer(**config)
        worker = RedisChannelLayer(**config)
        closing, staying = await web.new_channel(), await web.new_channel()
        blocked = asyncio.ensure_future(web.receive(closing))
        waiting = asyncio.ensure_future(web.receive(staying))
        await asyncio.sleep(0.2)  # both wait, the reader in BZPOPMIN
        blocked.cancel()
        await asyncio.sleep(0.05)
        await worker.send(closing, {"type": "digits.answer", "n": -1})
        sent = time.monotonic()
        await worker.send(staying, {"type": "digits.answer", "n": 1})
        received = [await_n(await asyncio.wait_for(waiting, 10))]
        took = time.monotonic() - sent
        await worker.send(staying, {"type": "digits.answer", "n": 2})
        received.append(await_n(await asyncio.wait_for(web.receive(staying), 10)))
        kept = closing in web.receive_buffer
        await web.close_pools()
        await worker.close_pools()
        return took, received, kept

    took, received, kept = asyncio.run(scenario())
    assert received == [1, 2]
    assert took < 1.0, f"the answer waited {took:.1f} s behind the closed socket"
    assert not kept, "the closed socket's answer was kept"


def await_n(message: dict[str, Any]) -> int:
    assert message["type"] == "digits.answer"
    return message["n"]


def test_every_socket_hears_that_redis_is_gone() -> None:
    """The reader cannot reach Redis: each socket's receive reports it (the consumer then answers
    its requests in flight), rather than one socket hearing of it and the others waiting."""
    config = {
        "hosts": [{"address": f"redis://127.0.0.1:{free_port()}/0", "socket_connect_timeout": 1}],
        "prefix": f"layer-{uuid.uuid4().hex[:8]}",
    }

    async def scenario() -> list[str]:
        web = ResilientRedisChannelLayer(**config)
        channels = [await web.new_channel() for _ in range(3)]
        messages = await asyncio.wait_for(
            asyncio.gather(*(web.receive(channel) for channel in channels)), 10
        )
        await web.close_pools()
        return [message["type"] for message in messages]

    assert asyncio.run(scenario()) == [LAYER_LOST] * 3

"""The channel layer's batched receive (classifier/channel_layer.py), against a real Redis of
this module's own: every answer waiting for a web process is taken in one go, reaches its own
socket in order, and leaves no backup behind."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from channels_redis.core import RedisChannelLayer

from classifier.channel_layer import RECEIVE_BATCH, ResilientRedisChannelLayer
from digits_site.embedded_redis import EmbeddedRedis


def test_waiting_answers_are_taken_together_and_reach_their_own_sockets(
    private_redis: EmbeddedRedis,
) -> None:
    config = {"hosts": [private_redis.url], "prefix": f"layer-{uuid.uuid4().hex[:8]}"}

    async def scenario() -> tuple[dict[str, int], int]:
        web = ResilientRedisChannelLayer(**config)  # one web process, several sockets
        worker = RedisChannelLayer(**config)
        channels = [await web.new_channel() for _ in range(5)]
        expected = {channel: [] for channel in channels}
        for n in range(40):  # sent while nobody receives, as under load
            channel = channels[n % 5]
            expected[channel].append(n)
            await worker.send(channel, {"type": "digits.answer", "n": n})

        received = {channels[0]: [await_n(await web.receive(channels[0]))]}
        await asyncio.sleep(0)
        # That one receive took everything off Redis: the other sockets' answers wait in
        # their buffers, and the receive of each gets them without another trip to Redis.
        buffered = {channel: web.receive_buffer[channel].qsize() for channel in channels[1:]}
        for channel in channels:
            while len(received.setdefault(channel, [])) < len(expected[channel]):
                received[channel].append(await_n(await web.receive(channel)))
        await asyncio.gather(*web.receive_cleaners)
        backups = await web.connection(0).zcard(
            web._backup_channel_name(web.prefix + web.non_local_name(channels[0]))
        )
        await web.close_pools()
        await worker.close_pools()
        assert received == expected
        return buffered, backups

    buffered, backups = asyncio.run(scenario())
    assert all(count == 8 for count in buffered.values()), buffered
    assert backups == 0
    assert RECEIVE_BATCH >= 40


def await_n(message: dict[str, Any]) -> int:
    assert message["type"] == "digits.answer"
    return message["n"]

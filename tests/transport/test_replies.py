"""The worker's road back to the consumers (classifier/transport/replies.py), against a real Redis:
a batch's answers in one script call (tuned), or through the layer's own `send` (stock, and any
other layer), read by a real channels_redis receive."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from typing import Any

import pytest
from channels_redis.core import RedisChannelLayer

from classifier.transport.replies import ReplySender


@pytest.fixture
def layer_config(redis_url: str) -> Mapping[str, Any]:
    return {"hosts": [redis_url], "prefix": f"test-sender-{uuid.uuid4().hex[:8]}"}


def make_sender(mode: str, layer: RedisChannelLayer) -> ReplySender:
    """`tuned`: the script; `stock`: the same layer through its own `send`; `other`: a layer that
    is not channels_redis's."""
    if mode == "other":
        return ReplySender(_NotRedis(layer), timeout=5.0)
    return ReplySender(layer, timeout=5.0, direct=mode == "tuned")


MODES = ["tuned", "stock", "other"]


@pytest.mark.parametrize("mode", MODES)
def test_the_reply_sender_delivers_every_answer_to_its_channel(
    layer_config: Mapping[str, Any], mode: str
) -> None:
    """Both roads (one script per batch for channels_redis, the layer's own `send` on a
    background loop for any other layer) deliver what a real consumer's `receive` reads:
    process-local channels of two processes, several answers to one of them."""
    receivers = [RedisChannelLayer(**layer_config), RedisChannelLayer(**layer_config)]
    sender = make_sender(mode, RedisChannelLayer(**layer_config))
    assert sender._direct is (mode == "tuned")
    try:

        async def receive_all() -> list[dict[str, Any]]:
            channels = [await receivers[n % 2].new_channel() for n in range(20)]
            messages = [
                (channel, {"type": "digits.answer", "n": n}) for n, channel in enumerate(channels)
            ]
            # Two batches, from a thread as the worker sends them.
            assert await asyncio.to_thread(sender.send, messages[:10]) == 0
            assert await asyncio.to_thread(sender.send, messages[10:]) == 0
            received = [
                await asyncio.wait_for(receivers[n % 2].receive(c), 5)
                for n, c in enumerate(channels)
            ]
            for receiver in receivers:
                await receiver.close_pools()
            return received

        received = asyncio.run(receive_all())
        assert [m["n"] for m in received] == list(range(20))
        assert all(m["type"] == "digits.answer" for m in received)
    finally:
        sender.close()
    assert sender._thread is None or not sender._thread.is_alive()


class _NotRedis:
    """A layer that is not a RedisChannelLayer (it forwards to one, to have a real Redis)."""

    def __init__(self, layer: RedisChannelLayer) -> None:
        self._layer = layer

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._layer.send(channel, message)

    async def close_pools(self) -> None:
        await self._layer.close_pools()


@pytest.mark.parametrize("mode", MODES)
def test_the_reply_sender_counts_what_it_could_not_send(
    layer_config: Mapping[str, Any], mode: str
) -> None:
    sender = make_sender(mode, RedisChannelLayer(**layer_config, capacity=2))
    try:
        channel = f"specific.{uuid.uuid4().hex}!x"
        answers = [(channel, {"type": "digits.answer", "n": n}) for n in range(4)]
        # Nobody reads the channel: once it holds two, answers are dropped and counted.
        assert sender.send(answers[:1]) == 0
        assert sender.send(answers[1:2]) == 0
        if mode == "tuned":
            assert sender.send(answers[2:]) == 2  # the script checks each answer in turn
        else:
            # The layer's `send` counts before it adds, so within one batch it is racy.
            assert sender.send(answers[2:3]) == 1
    finally:
        sender.close()


def test_the_reply_sender_reports_an_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    sender = ReplySender(RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"]), timeout=1.0)
    try:
        assert sender.send([("specific.abc!def", {"type": "digits.answer"})]) == 1
    finally:
        sender.close()
    assert "not sent" in caplog.text

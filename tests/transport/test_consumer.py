"""classifier.transport.consumer against the channels it overrides (channels 4.3's
`AsyncConsumer.dispatch`): the same handler lookup and errors, without the database hop."""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import pytest
from channels import consumer as channels_consumer
from channels.generic.websocket import AsyncWebsocketConsumer

from classifier.serving.consumers import PredictConsumer
from classifier.transport import TESTED_VERSIONS, minor
from classifier.transport.consumer import DatabaseFreeWebsocketConsumer


def _consumers() -> tuple[type[AsyncWebsocketConsumer], type[AsyncWebsocketConsumer]]:
    """The same consumer twice: on channels' base as it ships, and on the override."""

    class Handlers:
        def __init__(self) -> None:
            self.handled: list[dict[str, Any]] = []

        async def digits_answer(self, message: dict[str, Any]) -> None:
            self.handled.append(message)

    class Stock(Handlers, AsyncWebsocketConsumer):
        pass

    class Overridden(Handlers, DatabaseFreeWebsocketConsumer):
        pass

    return Stock, Overridden


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every `aclose_old_connections` channels' dispatch awaits (the hop to a thread)."""
    calls: list[str] = []

    async def counted() -> None:
        calls.append("close_old_connections")

    monkeypatch.setattr(channels_consumer, "aclose_old_connections", counted)
    return calls


def test_channels_is_the_version_the_override_copies() -> None:
    assert minor(version("channels")) == TESTED_VERSIONS["channels"][0]
    assert "classifier.transport.consumer" in TESTED_VERSIONS["channels"][1]


def test_the_override_hands_each_message_to_its_handler_without_the_hop(hops: list[str]) -> None:
    stock_class, overridden_class = _consumers()
    stock, overridden = stock_class(), overridden_class()
    message = {"type": "digits.answer", "ticket": 3}
    asyncio.run(stock.dispatch(message))
    # Upstream still takes the hop: were it gone from channels, the override would be obsolete.
    assert hops == ["close_old_connections"]
    asyncio.run(overridden.dispatch(message))
    assert hops == ["close_old_connections"]
    assert overridden.handled == stock.handled == [message]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "digits.unknown"},  # no handler
        {"type": "_digits.answer"},  # a leading underscore: never a handler
        {"ticket": 3},  # no type
    ],
)
def test_the_override_refuses_what_channels_refuses(
    hops: list[str], message: dict[str, Any]
) -> None:
    stock_class, overridden_class = _consumers()
    with pytest.raises(ValueError) as stock_error:
        asyncio.run(stock_class().dispatch(message))
    with pytest.raises(ValueError) as overridden_error:
        asyncio.run(overridden_class().dispatch(message))
    assert str(overridden_error.value) == str(stock_error.value)
    assert hops == []


def test_the_service_consumer_uses_the_override() -> None:
    assert issubclass(PredictConsumer, DatabaseFreeWebsocketConsumer)
    assert PredictConsumer.dispatch is DatabaseFreeWebsocketConsumer.dispatch

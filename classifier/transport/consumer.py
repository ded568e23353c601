"""The websocket consumer's base: Channels' `AsyncWebsocketConsumer` without a database hop.

Overrides channels 4.3's `AsyncConsumer.dispatch` (channels/consumer.py), which awaits
`aclose_old_connections()` before every message it hands to a handler: Django's
`close_old_connections` run on a worker thread and back (`database_sync_to_async`). The
consumer (classifier.serving.consumers) never touches the database (the workers store
corrections), so for it the hop closes nothing; it happens twice per request (the frame, then
the answer from the channel layer) and cost about 1 ms of the web process's CPU per request
(benchmarks/load.py; docs/performance.md). `dispatch` here is upstream's minus that call: the
same handler lookup (channels' own `get_handler_name`) and the same error for a message with
no handler.

Unlike the other overrides this one is not switched by `DIGITS_TRANSPORT`: it changes nothing
on the wire or in Redis, and what it leaves out does nothing for this consumer, so both
transports skip the hop (the figures for both were measured so). A consumer that does use the
database must not derive from this class.
"""

from __future__ import annotations

from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer


class DatabaseFreeWebsocketConsumer(AsyncWebsocketConsumer):
    """`AsyncWebsocketConsumer` whose `dispatch` does not close old database connections."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

"""Celery's Redis transport, taking a backlog in one round trip and acknowledging in another.

Overrides kombu 5.7's Redis transport (kombu/transport/redis.py): `Channel._brpop_read` is a
copy of kombu's with the delivery changed, and `QoS.append`/`QoS.ack` skip or gather kombu's
per-message round trips (`Channel.close` sends gathered acknowledgements first).

kombu's Redis transport reads one message per BRPOP, records each as unacknowledged (so that the
requests of a worker that dies are delivered again) with a second round trip, and removes that
record at the acknowledgement with a third. A worker draining a backlog of 64 requests
made about 190 round trips, one after the other, on the thread that also runs the model; on
the shared 2-core machine a round trip took 1 to 5 ms, so intake and acknowledgements, not the
model, set the pace (benchmarks/load.py: batches of 6 where 64 were waiting, 60 answers/s).

This transport keeps kombu's storage and semantics exactly and changes only the number of trips:

- after each BRPOP, one script records the message as unacknowledged, as kombu's `QoS.append`
  does (same keys, same format), pops whatever else waits in the queue (up to what the prefetch
  limit leaves room for) and records those too; they are delivered in a row, and the channel's
  `run_left` tells the receiver when the last of them comes (`StreamBatches` then flushes);
- `QoS.ack` sends the acknowledgements of one turn of the worker's event loop (Celery queues a
  batch's on it together) in one pipeline, at the next turn.

Chosen with `CELERY_BROKER_TRANSPORT` (digits_site/settings.py) when `DIGITS_TRANSPORT=tuned`,
the default; a `redis://` URL is unchanged. `DIGITS_TRANSPORT=stock` runs kombu's own transport.
A Redis before 6.2 (no RPOP count) or a global key prefix falls back to kombu's path by itself.
"""

from __future__ import annotations

import logging
import time
from queue import Empty
from typing import Any

from kombu.asynchronous import get_event_loop
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.commands.core import Script

logger = logging.getLogger(__name__)

# KEYS: the queue, kombu's unacked index (zset) and unacked store (hash). ARGV: the message BRPOP
# returned, how many more to pop at most, now. Records the message, pops up to that many more
# from the right as BRPOP does (oldest first), records each, and returns those. A record is what
# kombu's `QoS.append` writes: index score = now, store value = JSON [message, exchange,
# routing key].
TAKE_SCRIPT = """
local function record(item)
    local properties = cjson.decode(item)['properties']
    local tag = properties['delivery_tag']
    local info = properties['delivery_info']
    redis.call('ZADD', KEYS[2], ARGV[3], tag)
    redis.call('HSET', KEYS[3], tag, '[' .. item .. ',' .. cjson.encode(info['exchange'])
        .. ',' .. cjson.encode(info['routing_key']) .. ']')
end
record(ARGV[1])
if tonumber(ARGV[2]) < 1 then
    return {}
end
local items = redis.call('RPOP', KEYS[1], ARGV[2])
if not items then
    return {}
end
for _, item in ipairs(items) do
    record(item)
end
return items
"""


# redis-py runs an unbound script on the client each call passes; its hints want a client here.
TAKE = Script(None, TAKE_SCRIPT.encode())  # type: ignore[arg-type]


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, told which messages the drain script recorded already, and sending
    the acknowledgements of one turn of the event loop in one round trip."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()
        self._pending_acks: list[str] = []  # acknowledged, not yet removed from Redis
        self._ack_client: Any = None

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)  # the in-memory part only
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """Acknowledge in memory now, in Redis at the next turn of the worker's event loop,
        together with every other acknowledgement of this turn.

        Celery 5.6 queues each acknowledgement on its event loop (`Consumer.call_soon`), so a
        batch's come in one turn, after the batch; kombu would remove each from its unacked
        store with its own round trip, on a client it builds for each (measured: a tenth of the
        worker's time at 32 clients). Outside an event loop (no hub) this is kombu's `ack`.
        """
        hub = get_event_loop()
        if hub is None:
            super().ack(delivery_tag)
            return
        virtual.QoS.ack(self, delivery_tag)
        self._pending_acks.append(delivery_tag)
        if len(self._pending_acks) == 1:
            hub.call_soon(self.flush_acks)

    def flush_acks(self) -> None:
        """Send the acknowledgements made so far to Redis in one pipeline.

        Should Redis be unreachable, they are logged and lost, as kombu loses one: the messages
        stay recorded and are delivered again after the visibility timeout.
        """
        tags, self._pending_acks = self._pending_acks, []
        if not tags:
            return
        try:
            if self._ack_client is None:  # one for good: kombu builds one per call
                self._ack_client = self.channel._create_client()
            with self.pipe_or_acquire(client=self._ack_client) as pipe:
                for tag in tags:
                    self._remove_from_indices(tag, pipe)
                pipe.execute()
        except self.channel.connection_errors as exc:
            logger.error("Could not acknowledge %d messages: %r", len(tags), exc)


class Channel(kombu_redis.Channel):
    QoS = QoS
    # Messages of the current run still to be delivered after the one being delivered: 0 at
    # the last of a run, None outside a run (kombu's own path). `StreamBatches` flushes its
    # batch at the end of a run: everything that was waiting is in it.
    run_left: int | None = None
    # A Redis without RPOP's count argument (before 6.2), or a key prefix: kombu's own path.
    _take_failed = False

    def close(self) -> None:
        """kombu's, after sending the acknowledgements still waiting for the event loop's turn
        (kombu then puts back what was taken and not acknowledged)."""
        if self._qos is not None:
            self._qos.flush_acks()
        super().close()

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's `_brpop_read` (5.7), but the message BRPOP returned is recorded together
        with whatever else waits, in one round trip, and all are delivered in a row."""
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # Disconnect, so that the next turn of the loop reconnects.
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
        finally:
            # kombu's class declares it False, then stores a connection or None in it, as here.
            self._in_poll = None  # type: ignore[assignment]
            reauth = getattr(self, "_flush_brpop_reauth", None)  # kombu >= 5.6
            if reauth is not None:
                reauth()
        first = bytes_to_str(item)
        rest = self._take(dest, first)
        if rest is None:  # kombu's own path: `QoS.append` records the message
            self.connection._deliver(loads(first), dest)
            return True
        messages = [loads(first), *(loads(bytes_to_str(raw)) for raw in rest)]
        self.qos.recorded.update(m["properties"]["delivery_tag"] for m in messages)
        try:
            for left in range(len(messages) - 1, -1, -1):
                self.run_left = left
                self.connection._deliver(messages[len(messages) - 1 - left], dest)
        finally:
            self.run_left = None
        return True

    def _take(self, queue: str, first: str) -> list[Any] | None:
        """Record `first` and take what else waits in `queue`, within the prefetch limit; None
        when the script cannot run here (then nothing was recorded)."""
        if self._take_failed or self.global_keyprefix:
            return None
        room = self.qos.can_consume_max_estimate()
        room = 1000 if room is None else room - 1  # `first` takes one place
        try:
            # On the BRPOP connection: idle now (its reply is read, the next BRPOP not sent),
            # and no client object to build (redis-py's take a fifth of a millisecond).
            # By its SHA1 (EVALSHA; loaded once when Redis does not know it): no script text
            # to send and hash per batch.
            return TAKE(
                keys=[queue, self.unacked_index_key, self.unacked_key],
                args=[first, max(0, room), time.time()],
                client=self.client,
            )
        except self.connection_errors:
            raise  # the consumer reconnects, as after a failed BRPOP
        except Exception as exc:  # a script error: one message per BRPOP, as kombu does
            logger.warning("Taking one message per round trip from now on: %r", exc)
            self._take_failed = True
            return None


class Transport(kombu_redis.Transport):
    Channel = Channel

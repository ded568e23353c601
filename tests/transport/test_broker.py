"""The Redis transport (classifier/transport/broker.py) against a real Redis of this module's
own: a backlog taken in one drain, recorded for redelivery exactly as kombu records it, within
the prefetch limit, and acknowledged a loop turn at a time."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.asynchronous import get_event_loop, set_event_loop
from kombu.transport import redis as kombu_redis

from classifier.management.devstack import EmbeddedRedis
from classifier.transport.broker import Transport


@pytest.fixture
def queue() -> Queue:
    name = f"broker-test-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


@pytest.fixture
def raw(private_redis: EmbeddedRedis) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(private_redis.url)
    yield client
    client.close()


def publish(url: str, queue: Queue, count: int) -> None:
    with Connection(url, transport=Transport) as connection:
        producer = Producer(connection.default_channel)
        for n in range(count):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key,
                             declare=[queue], serializer="json")  # fmt: skip


def consume_once(
    url: str, queue: Queue, prefetch: int, transport: Any = Transport
) -> tuple[list[Any], Connection]:
    """Messages delivered by one `drain_events` (one BRPOP wake-up), unacknowledged."""
    connection = Connection(url, transport=transport)
    received: list[Any] = []

    def on_message(_body: Any, message: Any) -> None:
        message.run_left = getattr(message.channel, "run_left", None)  # as delivered
        received.append(message)

    consumer = Consumer(connection.default_channel, [queue], callbacks=[on_message])
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    connection.drain_events(timeout=5)
    return received, connection


def test_a_backlog_comes_in_one_wake_up_recorded_as_kombu_records_it(
    private_redis: EmbeddedRedis, raw: redis.Redis, queue: Queue
) -> None:
    publish(private_redis.url, queue, 6)
    received, connection = consume_once(private_redis.url, queue, prefetch=100)
    try:
        assert [m.payload["n"] for m in received] == list(range(6))  # oldest first
        # The receiver is told when the last of the run comes (StreamBatches flushes then).
        assert [m.run_left for m in received] == [5, 4, 3, 2, 1, 0]
        assert raw.llen(queue.name) == 0
        ours = [json.loads(raw.hget("unacked", m.delivery_tag)) for m in received]
        assert all(raw.zscore("unacked_index", m.delivery_tag) for m in received)
    finally:
        connection.release()

    # kombu's own transport, for the format of the record it keeps for redelivery.
    publish(private_redis.url, queue, 1)
    stock, stock_connection = consume_once(private_redis.url, queue, 100, kombu_redis.Transport)
    try:
        theirs = json.loads(raw.hget("unacked", stock[0].delivery_tag))
    finally:
        stock_connection.release()
    for record in ours:
        assert record[1:] == theirs[1:]  # exchange, routing key
        assert record[0].keys() == theirs[0].keys()
        assert record[0]["properties"].keys() == theirs[0]["properties"].keys()


def test_the_prefetch_limit_caps_what_one_wake_up_takes(
    private_redis: EmbeddedRedis, raw: redis.Redis, queue: Queue
) -> None:
    publish(private_redis.url, queue, 5)
    received, connection = consume_once(private_redis.url, queue, prefetch=3)
    try:
        assert [m.payload["n"] for m in received] == [0, 1, 2]
        assert raw.llen(queue.name) == 2
    finally:
        connection.release()


def test_messages_taken_but_never_acknowledged_are_delivered_again(
    private_redis: EmbeddedRedis, raw: redis.Redis, queue: Queue
) -> None:
    """What a worker killed mid-batch leaves behind: the sweep that every live worker runs
    (visibility timeout) puts the messages back in the queue."""
    publish(private_redis.url, queue, 4)
    received, connection = consume_once(private_redis.url, queue, prefetch=100)
    assert len(received) == 4 and raw.llen(queue.name) == 0
    # Dropped without acknowledging or restoring (as SIGKILL would).
    connection.default_channel.qos.restore_at_shutdown = False
    connection.release()

    options = {"visibility_timeout": 0}
    with Connection(private_redis.url, transport=Transport, transport_options=options) as other:
        other.default_channel.qos.restore_visible()
    assert raw.llen(queue.name) == 4
    assert all(raw.hget("unacked", m.delivery_tag) is None for m in received)


class FakeHub:
    """Stands in for the worker's kombu event loop: keeps what is called soon for a test to run."""

    def __init__(self) -> None:
        self.soon: list[Any] = []

    def call_soon(self, callback: Any, *args: Any) -> None:
        self.soon.append(lambda: callback(*args))


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    fake = FakeHub()
    previous = get_event_loop()
    set_event_loop(fake)
    try:
        yield fake
    finally:
        set_event_loop(previous)


def test_acknowledgements_of_one_loop_turn_reach_redis_together(
    private_redis: EmbeddedRedis, raw: redis.Redis, queue: Queue, hub: FakeHub
) -> None:
    """Acknowledgements made in one turn of the event loop (as Celery makes a batch's) are
    done in memory at once and in Redis at the next turn, by one call."""
    publish(private_redis.url, queue, 5)
    received, connection = consume_once(private_redis.url, queue, prefetch=100)
    try:
        qos = connection.default_channel.qos
        for message in received:
            message.ack()
        # Nothing has reached Redis yet; kombu's own bookkeeping is done.
        assert all(raw.hget("unacked", m.delivery_tag) for m in received)
        assert all(m.acknowledged for m in received)
        assert qos.can_consume_max_estimate() == 100
        assert len(hub.soon) == 1
        hub.soon.pop()()
        assert all(raw.hget("unacked", m.delivery_tag) is None for m in received)
        assert all(raw.zscore("unacked_index", m.delivery_tag) is None for m in received)
    finally:
        connection.release()


def test_acknowledgements_still_waiting_reach_redis_when_the_channel_closes(
    private_redis: EmbeddedRedis, raw: redis.Redis, queue: Queue, hub: FakeHub
) -> None:
    """A worker stopping between an acknowledgement and the loop's next turn sends it, and
    puts back only what it never acknowledged."""
    publish(private_redis.url, queue, 3)
    received, connection = consume_once(private_redis.url, queue, prefetch=100)
    received[0].ack()
    received[1].ack()
    connection.release()
    assert all(raw.hget("unacked", m.delivery_tag) is None for m in received)
    assert raw.llen(queue.name) == 1  # the third, put back


def test_without_an_event_loop_an_acknowledgement_goes_at_once(
    private_redis: EmbeddedRedis, raw: redis.Redis, queue: Queue
) -> None:
    assert get_event_loop() is None
    publish(private_redis.url, queue, 1)
    (message,), connection = consume_once(private_redis.url, queue, prefetch=100)
    try:
        message.ack()
        assert raw.hget("unacked", message.delivery_tag) is None
    finally:
        connection.release()


def test_a_lone_message_is_the_last_of_its_run(
    private_redis: EmbeddedRedis, raw: redis.Redis, queue: Queue
) -> None:
    publish(private_redis.url, queue, 1)
    received, connection = consume_once(private_redis.url, queue, prefetch=100)
    try:
        assert [(m.payload["n"], m.run_left) for m in received] == [(0, 0)]
        assert raw.hget("unacked", received[0].delivery_tag)
    finally:
        connection.release()

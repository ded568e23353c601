"""celery-batches for serving: a batch goes as soon as nothing more is waiting for it.

Overrides private parts of celery-batches 0.11 (`Batches._tref`, `_buffer`, `_do_flush` and its
`Strategy`; celery_batches/__init__.py) running on Celery 5.6's worker. Why, measured with
benchmarks/load.py on the 2-core machine: with stock celery-batches a lone request waits up to a
whole flush interval, and over Redis a backlog of 64 requests was served in batches of 1.0 on
average (the timer fired after every message or two); after a Redis restart stock
celery-batches never re-arms its flush timer, and requests waited 34 s for 64 to pile up. No
upstream issue covers serving latency; the timer's re-arming is the bug this module works around.

`DIGITS_TRANSPORT=stock` uses celery-batches' own `Batches` instead
(classifier.serving.tasks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis
from celery_batches import Batches


class StreamBatches(Batches):
    """celery-batches for serving: a batch goes as soon as nothing more is waiting for it.

    celery-batches flushes when `flush_every` requests are buffered, or when its repeating
    `flush_interval` timer fires. Two traps for serving: a lone request waits up to a whole
    interval; and over Redis a worker took one message per event-loop turn, so under a backlog
    the timer fired after every message or two and batches stayed at one (measured: 1.0 on
    average for 64 queued requests).

    With the service's transport (classifier.transport.broker) the worker takes everything
    waiting in Redis in one round trip and delivers it in a row; the batch goes at the last
    message of that run (`flush_every` still splits a long one). A lone request goes at once, a
    backlog in full batches, and nothing more is asked of Redis.

    With kombu's own transport (a Redis before 6.2, a key prefix) the queue's length decides:
    a request alone in the buffer with nothing queued behind it goes at once; otherwise a timer
    tick flushes only when the queue is empty, the batch is full, or its first request has
    waited `max_wait`. The length is asked again only once as many messages as it last
    reported have arrived: each LLEN is a round trip that holds up the worker's event loop
    (1 to 5 ms on the busy 2-core machine).
    """

    abstract = True
    max_wait: float = 0.02

    def __init__(self) -> None:
        super().__init__()
        self._first_arrival = 0.0
        self._broker: redis.Redis | None = None
        self._expected = 0  # messages the last LLEN saw queued that have not arrived yet

    def Strategy(self, task: Batches, app: Any, consumer: Any) -> Callable[..., None]:
        # Called again whenever the consumer restarts (a lost broker connection). Celery clears
        # its timer then, but celery-batches keeps a reference to its cancelled flush timer and
        # never arms a new one: after a Redis restart batches only went when 64 had piled up
        # (measured: requests stuck 34 s). Forget it, and re-arm it for what is buffered.
        self._tref = None
        if not self._buffer.empty():
            self._tref = consumer.timer.call_repeatedly(self.flush_interval, self._do_flush)
        buffer_message = super().Strategy(task, app, consumer)

        def on_message(message: Any, *args: Any, **kwargs: Any) -> None:
            first = self._buffer.empty()
            if first:
                self._first_arrival = time.monotonic()
            self._expected = max(0, self._expected - 1)
            # classifier.transport.broker delivers everything that waited in Redis in one run, and
            # says when its last message comes: then the batch holds all there is, so it goes.
            run_left = getattr(message.channel, "run_left", None)
            buffer_message(message, *args, **kwargs)
            if run_left is not None:
                if run_left == 0 and not self._buffer.empty():
                    Batches._do_flush(self)
            elif first and self._buffer.qsize() == 1 and not self._more_coming():
                Batches._do_flush(self)  # alone: go now, not at the next timer tick

        return on_message

    def _do_flush(self) -> None:
        if (
            0 < self._buffer.qsize() < self.flush_every
            and time.monotonic() - self._first_arrival < self.max_wait
            and self._more_coming()
        ):
            return  # the next turns of the event loop bring more: let the batch grow
        super()._do_flush()

    def _more_coming(self) -> bool:
        """Whether requests wait in Redis (another worker may take them: `max_wait` bounds
        the cost of a stale count)."""
        if self._expected <= 0:
            self._expected = self._queued_in_broker()
        return self._expected > 0

    def _queued_in_broker(self) -> int:
        """Requests still waiting in Redis for any worker (0 when Redis cannot tell us)."""
        if self._broker is None:
            self._broker = redis.Redis.from_url(self.app.conf.broker_url, socket_timeout=0.5)
        try:
            return int(self._broker.llen(self.app.conf.task_default_queue))
        except redis.RedisError:
            return 0

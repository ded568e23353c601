"""The Celery side of serving: the batched predict task and the worker's start and stop.

Thin on purpose: the consumer calls `submit()`, the worker process runs `classifier.worker`. The
web process imports this module to queue tasks, so everything that loads torch is imported
only inside the worker's signal handlers and the task body.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from typing import Any

import redis
from celery import signals
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task
from django.conf import settings

from classifier import heartbeat
from classifier.protocol import PredictRequest
from digits_site.celery import app

logger = logging.getLogger(__name__)

PREDICT_TASK = "classifier.predict"
# Logged once a worker has its model and listens; tests and operators wait for this line.
READY_MESSAGE = "Digits worker ready"


class StreamBatches(Batches):
    """celery-batches for serving: a batch goes as soon as nothing more is waiting for it.

    celery-batches flushes when `flush_every` requests are buffered, or when its repeating
    `flush_interval` timer fires. Two traps for serving: a lone request waits up to a whole
    interval; and over Redis a worker took one message per event-loop turn, so under a backlog
    the timer fired after every message or two and batches stayed at one (measured: 1.0 on
    average for 64 queued requests).

    With the service's transport (classifier.broker) the worker takes everything waiting in
    Redis in one round trip and delivers it in a row; the batch goes at the last message of
    that run (`flush_every` still splits a long one). A lone request goes at once, a backlog in
    full batches, and nothing more is asked of Redis.

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
            # classifier.broker delivers everything that waited in Redis in one run, and says
            # when its last message comes: then the batch holds all there is, so it goes.
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

    def flush(self, requests: Collection[Request]) -> Any:
        """celery-batches' `flush`, with a batch's acknowledgements sent to Redis together
        (classifier.broker: one round trip for the batch, not one per request)."""
        early = [r for r in requests if not r.task.acks_late]
        late = [r for r in requests if r.task.acks_late]

        def acknowledge(batch: list[Request]) -> None:
            if not batch:
                return
            qos = batch[0].message.channel.qos
            with getattr(qos, "acks_together", contextlib.nullcontext)():
                for request in batch:
                    request.acknowledge()

        return self._pool.apply_async(
            apply_batches_task,
            (self, ([SimpleRequest.from_request(r) for r in requests],), 0, None),
            accept_callback=lambda *_: acknowledge(early),
            callback=lambda *_: acknowledge(late),
        )

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


@app.task(
    base=StreamBatches,
    name=PREDICT_TASK,
    flush_every=settings.DIGITS_BATCH_SIZE,
    flush_interval=settings.DIGITS_BATCH_FLUSH_MS / 1000,
    max_wait=settings.DIGITS_BATCH_MAX_WAIT_MS / 1000,
    ignore_result=True,
)
def predict(requests: list[SimpleRequest]) -> None:
    from classifier import worker

    worker.state().serve([request.kwargs for request in requests])


def submit(request: PredictRequest, reply_channel: str, ticket: int, deadline: float) -> None:
    """Queue one request for the workers; blocking network I/O, so never on an event loop.

    The task carries where to answer (the consumer's channel and its ticket for the request) and
    the client's deadline (epoch seconds). celery-batches does not honour Celery's `expires`, so
    the worker drops requests past `deadline` itself; `expires` is set too, for any other reader.
    """
    kwargs: dict[str, Any] = {
        "reply_channel": reply_channel,
        "ticket": ticket,
        "id": request.id,
        "image": request.image,
        "deadline": deadline,
        "sent_at": time.time(),
    }
    predict.apply_async(
        kwargs=kwargs,
        expires=datetime.fromtimestamp(deadline, UTC),
        # Celery would otherwise build these with its safe repr of every argument, the image
        # included: a third of the cost of queuing (measured), and base64 noise in its logs.
        argsrepr="()",
        kwargsrepr=repr({"id": request.id, "ticket": ticket}),
    )


@signals.worker_process_init.connect
def _load_model(**_: Any) -> None:
    """Load the model as the worker process starts; refuse to start without a usable one.

    Celery logs and swallows exceptions from signal handlers, so the refusal is a SystemExit.
    """
    from classifier import worker

    try:
        worker.start(
            settings.DIGITS_WEIGHTS,
            device=settings.DIGITS_DEVICE,
            reload_interval=settings.DIGITS_RELOAD_INTERVAL,
            send_timeout=settings.DIGITS_REQUEST_TIMEOUT,
            torch_threads=settings.DIGITS_TORCH_THREADS,
            preprocess_threads=settings.DIGITS_PREPROCESS_THREADS,
        )
    except worker.WorkerStartError as exc:
        logger.critical("The Digits worker cannot start. %s", exc)
        raise SystemExit(1) from exc


@signals.worker_ready.connect
def _announce(sender: Any = None, **_: Any) -> None:
    from classifier import worker

    predictor = worker.state().model.predictor
    # Tell the web side (and /readyz) that a worker with a model is listening on the queue.
    heartbeat.start(
        settings.REDIS_URL,
        settings.DIGITS_INFERENCE_QUEUE,
        node=getattr(sender, "hostname", None) or f"{socket.gethostname()}.{os.getpid()}",
        describe=lambda: {
            "model": worker.state().model.predictor.version,
            "device": str(worker.state().model.predictor.device),
        },
        interval=settings.DIGITS_HEARTBEAT_INTERVAL,
        ttl=settings.DIGITS_HEARTBEAT_TTL,
    )
    logger.info(
        "%s: model %s on %s, queue %r, batches of up to %d within %.1f ms",
        READY_MESSAGE,
        predictor.version,
        predictor.device,
        settings.DIGITS_INFERENCE_QUEUE,
        settings.DIGITS_BATCH_SIZE,
        settings.DIGITS_BATCH_FLUSH_MS,
    )


@signals.worker_shutdown.connect
def _close(**_: Any) -> None:
    from classifier import worker

    heartbeat.stop()  # first: from now on no request should be sent here
    worker.stop()

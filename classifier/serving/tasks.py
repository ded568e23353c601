"""The worker's side of Celery: the batched predict task, and the worker process's start and stop.

Imported by the worker process only (`celery -A digits_site worker` autodiscovers it); the web
process queues requests by name (classifier.serving.publish) and never imports this module.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import signals
from celery_batches import Batches, SimpleRequest
from django.conf import settings

from classifier import transport
from classifier.serving import presence, worker
from classifier.serving.publish import PREDICT_TASK
from classifier.transport.batching import StreamBatches
from digits_site.celery import app

logger = logging.getLogger(__name__)

# Logged once a worker has its model and listens; tests and operators wait for this line.
READY_MESSAGE = "Digits worker ready"


@app.task(
    base=StreamBatches if settings.TUNED_TRANSPORT else Batches,
    name=PREDICT_TASK,
    flush_every=settings.DIGITS_BATCH_SIZE,
    flush_interval=settings.DIGITS_BATCH_FLUSH_MS / 1000,
    max_wait=settings.DIGITS_BATCH_MAX_WAIT_MS / 1000,
    ignore_result=True,
)
def predict(requests: list[SimpleRequest]) -> None:
    worker.state().serve([request.kwargs for request in requests])


@signals.worker_process_init.connect
def _load_model(**_: Any) -> None:
    """Load the model as the worker process starts; refuse to start without a usable one.

    Celery logs and swallows exceptions from signal handlers, so the refusal is a SystemExit.
    """
    if settings.TUNED_TRANSPORT:
        for problem in transport.version_problems():
            logger.warning("%s", problem)
    try:
        worker.start(
            settings.DIGITS_WEIGHTS,
            device=settings.DIGITS_DEVICE,
            reload_interval=settings.DIGITS_RELOAD_INTERVAL,
            send_timeout=settings.DIGITS_REQUEST_TIMEOUT,
            torch_threads=settings.DIGITS_TORCH_THREADS,
            preprocess_threads=settings.DIGITS_PREPROCESS_THREADS,
            direct_replies=settings.TUNED_TRANSPORT,
        )
    except worker.WorkerStartError as exc:
        logger.critical("The Digits worker cannot start. %s", exc)
        raise SystemExit(1) from exc


@signals.worker_ready.connect
def _announce(sender: Any = None, **_: Any) -> None:
    predictor = worker.state().model.predictor
    # Tell the web side (and /readyz) that a worker with a model is listening on the queue.
    presence.start(
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
        "%s: model %s on %s, queue %r, batches of up to %d within %.1f ms, %s transport",
        READY_MESSAGE,
        predictor.version,
        predictor.device,
        settings.DIGITS_INFERENCE_QUEUE,
        settings.DIGITS_BATCH_SIZE,
        settings.DIGITS_BATCH_FLUSH_MS,
        settings.DIGITS_TRANSPORT,
    )


@signals.worker_shutdown.connect
def _close(**_: Any) -> None:
    presence.stop()  # first: from now on no request should be sent here
    worker.stop()

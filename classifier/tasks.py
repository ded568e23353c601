"""The Celery side of serving: the batched predict task and the worker's start and stop.

Thin on purpose: the consumer calls `submit()`, the worker process runs `classifier.worker`. The
web process imports this module to queue tasks, so everything that loads torch is imported
only inside the worker's signal handlers and the task body.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from celery import signals
from celery_batches import Batches, SimpleRequest
from django.conf import settings

from classifier.protocol import PredictRequest
from digits_site.celery import app

logger = logging.getLogger(__name__)

PREDICT_TASK = "classifier.predict"
# Logged once a worker has its model and listens; tests and operators wait for this line.
READY_MESSAGE = "Digits worker ready"


# celery-batches buffers the requests a worker receives and calls the task once with all of them:
# when `flush_every` have arrived, or every `flush_interval` seconds (a repeating timer started by
# the first request, so a lone request waits up to one interval).
@app.task(
    base=Batches,
    name=PREDICT_TASK,
    flush_every=settings.DIGITS_BATCH_SIZE,
    flush_interval=settings.DIGITS_BATCH_FLUSH_MS / 1000,
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
    predict.apply_async(kwargs=kwargs, expires=datetime.fromtimestamp(deadline, UTC))


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
        )
    except worker.WorkerStartError as exc:
        logger.critical("The Digits worker cannot start. %s", exc)
        raise SystemExit(1) from exc


@signals.worker_ready.connect
def _announce(**_: Any) -> None:
    from classifier import worker

    predictor = worker.state().model.predictor
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

    worker.stop()

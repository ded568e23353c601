"""The worker's side of Celery: the batched predict task, and the worker process's start and stop.

Imported by the worker process only (`celery -A digits_site worker` autodiscovers it); the web
process queues requests by name (classifier.serving.enqueue) and never imports this module.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import shared_task, signals
from celery_batches import Batches, SimpleRequest
from django.conf import settings

from classifier import transport
from classifier.serving import metrics, presence, worker
from classifier.serving.enqueue import PREDICT_TASK
from classifier.transport.batching import StreamBatches

logger = logging.getLogger(__name__)

# Logged once a worker has its model and listens; tests and operators wait for this line.
READY_MESSAGE = "Digits worker ready"

# This process's metrics server, once the worker is ready (None when its port was taken).
_metrics_server: metrics.WorkerMetricsServer | None = None


# A shared task: it binds to the site's app (digits_site/celery.py), which this module never
# imports; the worker (`celery -A digits_site worker`) finds it by autodiscovery, by this name.
@shared_task(
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


def start_metrics() -> str | None:
    """Serve this worker's metrics on DIGITS_WORKER_METRICS_PORT; their URL, or None when the
    port is taken (logged: the worker serves requests all the same)."""
    global _metrics_server
    if _metrics_server is None:
        _metrics_server = metrics.start_worker_server(
            settings.DIGITS_WORKER_METRICS_PORT,
            metrics.AllowList(settings.DIGITS_METRICS_ALLOWED),
        )
    if _metrics_server is None:
        return None
    # Looked up only here, in the worker: a reverse lookup can be slow, and the web process
    # never needs the name.
    host = settings.DIGITS_WORKER_METRICS_HOST or socket.getfqdn()
    return _metrics_server.url(host)


def describe(state: worker.WorkerState, metrics_url: str | None) -> dict[str, Any]:
    """The worker's heartbeat (and so /readyz and the status page): its model, device and
    answers, and where its metrics are (left out when it has none)."""
    return {**state.describe(), **({"metrics": metrics_url} if metrics_url else {})}


@signals.worker_ready.connect
def _announce(sender: Any = None, **_: Any) -> None:
    predictor = worker.state().model.predictor
    metrics_url = start_metrics()
    # Tell the web side (and /readyz) that a worker with a model is listening on the queue.
    presence.start(
        settings.REDIS_URL,
        settings.DIGITS_INFERENCE_QUEUE,
        node=getattr(sender, "hostname", None) or f"{socket.gethostname()}.{os.getpid()}",
        describe=lambda: describe(worker.state(), metrics_url),
        interval=settings.DIGITS_HEARTBEAT_INTERVAL,
        ttl=settings.DIGITS_HEARTBEAT_TTL,
    )
    logger.info(
        "%s: model %s on %s, queue %r, batches of up to %d within %.1f ms, %s transport, "
        "metrics at %s",
        READY_MESSAGE,
        predictor.version,
        predictor.device,
        settings.DIGITS_INFERENCE_QUEUE,
        settings.DIGITS_BATCH_SIZE,
        settings.DIGITS_BATCH_FLUSH_MS,
        settings.DIGITS_TRANSPORT,
        metrics_url or "(none)",
    )


@signals.worker_shutdown.connect
def _close(**_: Any) -> None:
    global _metrics_server
    presence.stop()  # first: from now on no request should be sent here
    worker.stop()
    if _metrics_server is not None:
        _metrics_server.close()
        _metrics_server = None

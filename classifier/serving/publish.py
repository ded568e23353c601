"""Queuing a request for the workers: what the web process sends, and how.

The consumer publishes by task name through the Celery app, so the web process never imports
the task's module (celery-batches, the worker, torch).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from classifier.serving.protocol import PredictRequest
from digits_site.celery import app

# The batched task workers run (classifier.serving.tasks.predict).
PREDICT_TASK = "classifier.predict"


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
    app.send_task(
        PREDICT_TASK,
        kwargs=kwargs,
        expires=datetime.fromtimestamp(deadline, UTC),
        ignore_result=True,
        # Celery would otherwise build these with its safe repr of every argument, the image
        # included: a third of the cost of queuing (measured), and base64 noise in its logs.
        argsrepr="()",
        kwargsrepr=repr({"id": request.id, "ticket": ticket}),
    )

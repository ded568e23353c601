"""Queuing a request for the workers: what the web process sends, and how.

The consumer publishes by task name through the Celery app, so the web process never imports
the task's module (celery-batches, the worker, torch).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from classifier.serving.protocol import EXPECT_DIGIT, FeedbackRequest, PredictRequest, Request
from digits_site.celery import app

# The batched task workers run (classifier.serving.tasks.predict): it answers predictions and
# stores feedback alike, so both share one queue, one batch and one model call.
PREDICT_TASK = "classifier.predict"


def task_kwargs(
    request: Request,
    reply_channel: str,
    ticket: int,
    deadline: float,
    client_hash: str,
    sent_at: float,
) -> dict[str, Any]:
    """The task's kwargs for one request, as the worker's `classifier.serving.batch` reads them.

    Every request says where to answer (the consumer's channel and its ticket for it), by when
    (`deadline`, epoch seconds) and its `kind` (`predict` or `feedback`; a message without one
    is a predict). A predict that reads a number carries `expect` ("number"). A feedback adds
    the label, what the client says it was told, the data URL's media type (stored with the
    image) and `client_hash`, the salted hash of the client's address (never the address).
    """
    kwargs: dict[str, Any] = {
        "reply_channel": reply_channel,
        "ticket": ticket,
        "id": request.id,
        "kind": request.kind,
        "image": request.image,
        "deadline": deadline,
        "sent_at": sent_at,
    }
    if isinstance(request, PredictRequest) and request.expect != EXPECT_DIGIT:
        kwargs["expect"] = request.expect  # a missing `expect` is a digit, as before numbers
    if isinstance(request, FeedbackRequest):
        kwargs.update(
            {
                "media_type": request.media_type,
                "label": request.label,
                "client_predicted": request.predicted,
                "client_model": request.model,
                "client_hash": client_hash,
            }
        )
    return kwargs


def submit(
    request: Request, reply_channel: str, ticket: int, deadline: float, client_hash: str = ""
) -> None:
    """Queue one request for the workers; blocking network I/O, so never on an event loop.

    The task carries where to answer (the consumer's channel and its ticket for the request) and
    the client's deadline (epoch seconds). celery-batches does not honour Celery's `expires`, so
    the worker drops requests past `deadline` itself; `expires` is set too, for any other reader.
    `client_hash` (the consumer's salted hash of the client's address) travels with feedback
    only.
    """
    app.send_task(
        PREDICT_TASK,
        kwargs=task_kwargs(request, reply_channel, ticket, deadline, client_hash, time.time()),
        expires=datetime.fromtimestamp(deadline, UTC),
        ignore_result=True,
        # Celery would otherwise build these with its safe repr of every argument, the image
        # included: a third of the cost of queuing (measured), and base64 noise in its logs.
        argsrepr="()",
        kwargsrepr=repr({"id": request.id, "ticket": ticket, "kind": request.kind}),
    )

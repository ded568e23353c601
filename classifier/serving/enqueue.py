"""Queuing a request for the workers: what the web process sends (the task's kwargs, typed in
classifier.serving.messages), and how.

The consumer publishes by task name, so the web process never imports the task's module
(celery-batches, the worker, torch). With the service's transport (`DIGITS_TRANSPORT=tuned`, the
default) the task message is written from the event loop by classifier.transport.publisher, all
waiting requests in one round trip; with `stock`, by Celery's `send_task` on a thread.
"""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from celery import current_app as app  # the site's app: digits_site/celery.py makes it the default
from django.conf import settings

from classifier.serving.messages import EXPECT_DIGIT, TaskKwargs
from classifier.serving.protocol import FeedbackRequest, PredictRequest, Request
from classifier.transport import publisher

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
) -> TaskKwargs:
    """The task's kwargs for one request, as the worker's `classifier.serving.batch` reads them
    (`messages.Task`, which holds the defaults of what is left out).

    Every request says where to answer (the consumer's channel and its ticket for it), by when
    (`deadline`, epoch seconds) and its `kind` (`predict` or `feedback`; a message without one
    is a predict). It carries its drawing as `image` (base64) or as `ink` (the checked strokes;
    then there is no `image`). A predict that reads a number carries `expect` ("number"). A
    feedback adds the label, what the client says it was told, the data URL's media type (stored
    with the image) and `client_hash`, the salted hash of the client's address (never the
    address).
    """
    kwargs: TaskKwargs = {
        "reply_channel": reply_channel,
        "ticket": ticket,
        "id": request.id,
        "kind": request.kind,
        "deadline": deadline,
        "sent_at": sent_at,
    }
    if request.ink is not None:
        kwargs["ink"] = request.ink
    else:
        kwargs["image"] = request.image
    if isinstance(request, PredictRequest) and request.expect != EXPECT_DIGIT:
        kwargs["expect"] = request.expect  # a missing `expect` is a digit, as before numbers
    if isinstance(request, FeedbackRequest):
        kwargs["media_type"] = request.media_type
        kwargs["label"] = request.label
        kwargs["client_predicted"] = request.predicted
        kwargs["client_model"] = request.model
        kwargs["client_hash"] = client_hash
    return kwargs


# `send_task` is blocking network I/O: with the stock transport it runs on these threads, shared
# by all sockets of the process (a publish takes about a millisecond).
_threads = ThreadPoolExecutor(max_workers=4, thread_name_prefix="digits-publish")


@dataclass(frozen=True)
class Destination:
    """Where the event loop pushes task messages itself (classifier.transport.publisher)."""

    url: str
    queue: str
    timeout: float  # seconds, as Celery's (CELERY_BROKER_TRANSPORT_OPTIONS)
    connect_timeout: float
    encoder: publisher.TaskEncoder


def destination() -> Destination | None:
    """Where the event loop writes the task messages itself, or None where Celery's `send_task`
    publishes (`DIGITS_TRANSPORT=stock`, or a broker the publisher does not write for).

    Read from Django's settings, which the Celery app reads too (namespace CELERY): Celery's own
    configuration lookups cost 15 us a request (measured), the settings' under one.
    """
    return _destination(
        settings.TUNED_TRANSPORT, settings.CELERY_BROKER_URL, settings.CELERY_TASK_DEFAULT_QUEUE
    )


@functools.lru_cache(maxsize=8)
def _destination(tuned: bool, url: str, queue: str) -> Destination | None:
    if not (tuned and publisher.supports(app)):
        return None
    options = app.conf.broker_transport_options or {}
    timeout = float(options.get("socket_timeout", 10.0))
    connect_timeout = float(options.get("socket_connect_timeout", 2.0))
    return Destination(url, queue, timeout, connect_timeout, publisher.TaskEncoder(app))


async def submit(
    request: Request, reply_channel: str, ticket: int, deadline: float, client_hash: str = ""
) -> None:
    """Queue one request for the workers; returns once Redis holds it, else raises.

    The task carries where to answer (the consumer's channel and its ticket for the request) and
    the client's deadline (epoch seconds). celery-batches does not honour Celery's `expires`, so
    the worker drops requests past `deadline` itself; `expires` is set too, for any other reader.
    `client_hash` (the consumer's salted hash of the client's address) travels with feedback
    only.
    """
    now = time.time()
    kwargs = task_kwargs(request, reply_channel, ticket, deadline, client_hash, now)
    # Celery would otherwise build this with its safe repr of every argument, the image included:
    # a third of the cost of `send_task` (measured), and base64 noise in its logs.
    kwargsrepr = repr({"id": request.id, "ticket": ticket, "kind": request.kind})
    to = destination()
    if to is not None:
        message = to.encoder.encode(PREDICT_TASK, kwargs, to.queue, deadline, now, kwargsrepr)
        sender = publisher.for_loop(to.url, to.queue, to.timeout, to.connect_timeout)
        await sender.publish(message)
        return
    await asyncio.get_running_loop().run_in_executor(
        _threads,
        functools.partial(
            app.send_task,
            PREDICT_TASK,
            kwargs=kwargs,
            expires=datetime.fromtimestamp(deadline, UTC),
            ignore_result=True,
            argsrepr="()",
            kwargsrepr=kwargsrepr,
        ),
    )

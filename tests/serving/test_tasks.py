"""The Celery side: how the predict task is configured and what goes on the wire.

A request nobody serves in time: its client gets `timeout` at the deadline
(tests/serving/test_consumers.py), and a worker drops the task once past that deadline
(tests/serving/test_worker.py). A lone request is not held for the flush timer:
tests/e2e/test_service.py."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import redis
from celery_batches import Batches
from django.conf import settings

from classifier.serving import publish
from classifier.serving.protocol import FeedbackRequest, PredictRequest
from classifier.serving.tasks import PREDICT_TASK, StreamBatches, predict
from digits_site.celery import app
from tests.helpers import delete_queue, render_digit_png


def test_predict_is_a_batched_task_with_the_configured_size_and_window() -> None:
    assert isinstance(predict, StreamBatches) and isinstance(predict, Batches)
    assert predict.name == PREDICT_TASK
    assert predict.flush_every == settings.DIGITS_BATCH_SIZE
    assert predict.flush_interval == pytest.approx(settings.DIGITS_BATCH_FLUSH_MS / 1000)
    assert predict.max_wait == pytest.approx(settings.DIGITS_BATCH_MAX_WAIT_MS / 1000)
    assert predict.ignore_result


def test_a_worker_may_hold_more_messages_than_one_batch() -> None:
    """celery-batches buffers unacknowledged messages: with a prefetch limit at or below
    flush_every, batches would silently stop growing at the prefetch count."""
    concurrency = 1  # the solo pool
    assert app.conf.worker_pool == "solo"
    assert app.conf.worker_prefetch_multiplier * concurrency > predict.flush_every


def test_only_json_crosses_the_broker() -> None:
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.result_backend is None
    assert app.conf.task_default_queue == settings.DIGITS_INFERENCE_QUEUE


def test_a_queued_request_is_plain_json_naming_it_without_its_image(
    redis_url: str, settings: Any
) -> None:
    """`publish.submit` with the real Celery app, on a queue of this test's own in the real
    Redis: the message is JSON; it names the task, carries Celery's own expiry, and says where
    to answer (the consumer's channel and ticket) and by when; what Celery logs and reports for
    it (`kwargsrepr`) names the request without its image."""
    broker = app.conf.broker_url
    if broker != redis_url:
        pytest.skip(f"the Celery app publishes to {broker}, not this session's Redis")
    queue = f"test-publish-{uuid.uuid4().hex[:10]}"
    image = base64.b64encode(render_digit_png(6)).decode()
    request = PredictRequest(id="orphan", media_type="image/png", image=image)
    deadline = time.time() + 10
    # The app reads its CELERY_* settings from Django's at each use: a task with no route of
    # its own goes to this test's queue.
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    assert app.conf.task_default_queue == queue
    try:
        publish.submit(request, "specific.test!reply", 7, deadline)
        client = redis.Redis.from_url(redis_url)
        try:
            raw = client.lrange(queue, 0, -1)
        finally:
            client.close()
    finally:
        delete_queue(redis_url, queue)

    assert len(raw) == 1
    message = json.loads(raw[0])
    assert message["content-type"] == "application/json"
    assert message["headers"]["task"] == PREDICT_TASK
    assert message["headers"]["expires"]  # Celery's own expiry is set too
    _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert kwargs == {
        "reply_channel": "specific.test!reply",
        "ticket": 7,
        "id": "orphan",
        "kind": "predict",
        "image": image,
        "deadline": deadline,
        "sent_at": pytest.approx(time.time(), abs=5),
    }
    assert message["headers"]["argsrepr"] == "()"
    assert "orphan" in message["headers"]["kwargsrepr"]
    assert len(message["headers"]["kwargsrepr"]) < 100 < len(kwargs["image"])


def test_a_queued_feedback_carries_its_label_and_the_clients_hash(
    redis_url: str, settings: Any
) -> None:
    """A correction goes to the same task on the same queue, marked `kind: feedback`, with the
    label, what the client says it was told, the image's media type and the client's hash."""
    broker = app.conf.broker_url
    if broker != redis_url:
        pytest.skip(f"the Celery app publishes to {broker}, not this session's Redis")
    queue = f"test-publish-{uuid.uuid4().hex[:10]}"
    image = base64.b64encode(render_digit_png(6)).decode()
    request = FeedbackRequest(
        id="fix", media_type="image/png", image=image, label=6, predicted=5, model="v1"
    )
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    try:
        publish.submit(request, "specific.test!reply", 8, time.time() + 10, "ab" * 32)
        client = redis.Redis.from_url(redis_url)
        try:
            raw = client.lrange(queue, 0, -1)
        finally:
            client.close()
    finally:
        delete_queue(redis_url, queue)

    message = json.loads(raw[0])
    assert message["headers"]["task"] == PREDICT_TASK
    _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert {k: kwargs[k] for k in ("id", "kind", "image", "label")} == {
        "id": "fix",
        "kind": "feedback",
        "image": image,
        "label": 6,
    }
    assert (kwargs["client_predicted"], kwargs["client_model"]) == (5, "v1")
    assert (kwargs["media_type"], kwargs["client_hash"]) == ("image/png", "ab" * 32)
    assert "feedback" in message["headers"]["kwargsrepr"]
    assert len(message["headers"]["kwargsrepr"]) < 100

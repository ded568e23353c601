"""The Celery side: how the predict task is configured and what goes on the wire.

A request nobody serves in time: its client gets `timeout` at the deadline
(tests/serving/test_consumers.py), and a worker drops the task once past that deadline
(tests/serving/test_worker.py). A lone request is not held for the flush timer:
tests/e2e/test_service.py."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import celery
import pytest
import redis
from celery_batches import Batches
from django.conf import settings

from classifier.serving import enqueue
from classifier.serving.protocol import FeedbackRequest, PredictRequest
from classifier.serving.tasks import PREDICT_TASK, StreamBatches, predict
from digits_site.celery import app
from tests.helpers import delete_queue, render_digit_png


def take_queue(redis_url: str, queue: str) -> list[bytes]:
    """Every message on `queue`, newest first as Redis lists them; the queue is deleted."""
    client = redis.Redis.from_url(redis_url)
    try:
        return client.lrange(queue, 0, -1)
    finally:
        client.close()
        delete_queue(redis_url, queue)


def test_predict_is_a_batched_task_with_the_configured_size_and_window() -> None:
    assert isinstance(predict, StreamBatches) and isinstance(predict, Batches)
    assert predict.name == PREDICT_TASK
    assert predict.flush_every == settings.DIGITS_BATCH_SIZE
    assert predict.flush_interval == pytest.approx(settings.DIGITS_BATCH_FLUSH_MS / 1000)
    assert predict.max_wait == pytest.approx(settings.DIGITS_BATCH_MAX_WAIT_MS / 1000)
    assert predict.ignore_result


def test_the_shared_task_is_the_site_apps_under_its_name_in_every_thread() -> None:
    """classifier.serving imports no digits_site: the task is a shared task, and the web side
    queues through `celery.current_app`, which must be the site's app on any thread (the stock
    transport's publishes run on a thread pool), not Celery's unconfigured fallback."""
    assert app.tasks[PREDICT_TASK] is predict._get_current_object()
    assert celery.current_app._get_current_object() is app
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(lambda: celery.current_app._get_current_object()).result() is app


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
    """`enqueue.submit` with the real Celery app, on a queue of this test's own in the real
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
        asyncio.run(enqueue.submit(request, "specific.test!reply", 7, deadline))
    finally:
        raw = take_queue(redis_url, queue)

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
        asyncio.run(enqueue.submit(request, "specific.test!reply", 8, time.time() + 10, "ab" * 32))
    finally:
        raw = take_queue(redis_url, queue)

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


def _published(redis_url: str, settings: Any, tuned: bool, requests: list[PredictRequest]) -> list:
    """The messages `enqueue.submit` pushes for `requests`, sent together, with the service's
    transport (`tuned`) or Celery's `send_task`, oldest first (as a worker pops them)."""
    queue = f"test-publish-{uuid.uuid4().hex[:10]}"
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    settings.TUNED_TRANSPORT = tuned
    assert (enqueue.destination() is not None) is tuned

    async def send_all() -> None:
        await asyncio.gather(
            *(
                enqueue.submit(r, "specific.t!r", n, time.time() + 10)
                for n, r in enumerate(requests)
            )
        )

    try:
        asyncio.run(send_all())
    finally:
        raw = take_queue(redis_url, queue)
    return [json.loads(item) for item in reversed(raw)]


def test_the_service_writes_the_task_message_celery_would(redis_url: str, settings: Any) -> None:
    """classifier.transport.publisher writes Celery's task message itself (kombu's Redis format):
    every header, property and the body match what `send_task` pushes for the same request,
    but for the ids, tags, and times, which differ per message."""
    if app.conf.broker_url != redis_url:
        pytest.skip(f"the Celery app publishes to {app.conf.broker_url}, not this session's Redis")
    image = base64.b64encode(render_digit_png(3)).decode()
    request = PredictRequest(id="same", media_type="image/png", image=image)
    (ours,) = _published(redis_url, settings, True, [request])
    (celerys,) = _published(redis_url, settings, False, [request])

    def comparable(message: dict[str, Any]) -> dict[str, Any]:
        args, kwargs, embed = json.loads(base64.b64decode(message["body"]))
        headers = dict(message["headers"])
        properties = dict(message["properties"])
        for key in ("id", "root_id", "expires", "origin"):
            assert headers.pop(key)
        for key in ("correlation_id", "delivery_tag", "reply_to", "expiration"):
            assert properties.pop(key)
        assert properties["delivery_info"]["routing_key"].startswith("test-publish-")
        properties["delivery_info"] = {**properties["delivery_info"], "routing_key": "the queue"}
        assert 9000 < int(message["properties"]["expiration"]) <= 10000
        assert headers["kwargsrepr"].startswith("{'id': 'same'")
        kwargs.pop("sent_at")
        kwargs.pop("deadline")
        return {
            **{k: v for k, v in message.items() if k not in ("body", "headers", "properties")},
            "headers": headers,
            "properties": properties,
            "body": [args, kwargs, embed],
        }

    assert comparable(ours) == comparable(celerys)
    assert ours["properties"]["correlation_id"] == ours["headers"]["id"]
    assert ours["headers"]["root_id"] == ours["headers"]["id"]
    assert ours["properties"]["delivery_tag"] != celerys["properties"]["delivery_tag"]
    assert ours["headers"]["origin"].split("@")[1] == celerys["headers"]["origin"].split("@")[1]


def test_requests_arriving_together_are_queued_in_order(redis_url: str, settings: Any) -> None:
    """Many requests published at once (one LPUSH for those that wait together) reach the
    queue once each, in the order they were published, each with its own id."""
    if app.conf.broker_url != redis_url:
        pytest.skip(f"the Celery app publishes to {app.conf.broker_url}, not this session's Redis")
    image = base64.b64encode(render_digit_png(1)).decode()
    requests = [PredictRequest(id=f"r{n}", media_type="image/png", image=image) for n in range(40)]
    messages = _published(redis_url, settings, True, requests)
    tickets = [json.loads(base64.b64decode(m["body"]))[1]["ticket"] for m in messages]
    assert tickets == list(range(40))
    assert len({m["headers"]["id"] for m in messages}) == 40


def test_a_broker_that_cannot_be_reached_fails_the_publish(settings: Any) -> None:
    """The consumer answers `unavailable` when a publish raises: it must raise, not hang."""
    settings.TUNED_TRANSPORT = True
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    settings.CELERY_TASK_DEFAULT_QUEUE = f"test-publish-{uuid.uuid4().hex[:10]}"
    assert enqueue.destination() is not None
    request = PredictRequest(id="lost", media_type="image/png", image="aGk=")
    with pytest.raises(redis.exceptions.ConnectionError):
        asyncio.run(
            asyncio.wait_for(enqueue.submit(request, "specific.t!r", 0, time.time() + 5), 10)
        )

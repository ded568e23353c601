"""The Celery side: how the predict task is configured, what goes on the wire, and what happens
to a request nobody serves in time."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from celery_batches import Batches
from django.conf import settings

from classifier.serving import protocol
from classifier.serving.presence import Heartbeat
from classifier.serving.tasks import PREDICT_TASK, StreamBatches, predict
from digits_site.celery import app
from tests.conftest import _delete_queue
from tests.helpers import TEST_REQUEST_TIMEOUT, Stack, render_digit_png, service_env


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


def _queued_messages(redis_url: str, queue: str, timeout: float = 10.0) -> list[dict[str, Any]]:
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            raw = client.lrange(queue, 0, -1)
            if raw:
                return [json.loads(message) for message in raw]
            time.sleep(0.02)
        return []
    finally:
        client.close()


@pytest.mark.slow
def test_a_request_nobody_serves_gets_a_timeout_and_its_task_is_dropped_later(
    stack: Stack, redis_url: str, session_names: dict[str, str]
) -> None:
    """With no worker consuming (but one announced: a hung worker, or one killed less than a
    heartbeat's ttl ago), a request waits in the queue as plain JSON; its client gets a
    `timeout` error at the deadline; a worker started afterwards drops the stale task (its
    client has had its answer) and serves new requests."""
    queue = session_names["DIGITS_INFERENCE_QUEUE"]
    stack.stop_worker()
    # With no worker announced at all the request would be refused at once (`unavailable`,
    # tests/e2e/test_faults.py); a heartbeat with nobody behind it lets it be queued.
    ghost = Heartbeat(redis_url, queue, "ghost", lambda: {"model": "none"}, 0.5, 2.0)
    ghost.start()
    try:

        async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], float, float]:
            async with stack.client() as client:
                sent, sent_at = time.monotonic(), time.time()
                await client.send_image("orphan", render_digit_png(6))
                queued = await asyncio.to_thread(_queued_messages, redis_url, queue)
                answer = await client.receive(timeout=TEST_REQUEST_TIMEOUT + 15)
                return queued, answer, sent_at, time.monotonic() - sent

        queued, answer, sent_at, waited = asyncio.run(scenario())
    finally:
        ghost.stop()
        stack.start_worker()

    assert len(queued) == 1
    message = queued[0]
    assert message["content-type"] == "application/json"
    assert message["headers"]["task"] == PREDICT_TASK
    assert message["headers"]["expires"]  # Celery's own expiry is set too
    _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    assert kwargs["id"] == "orphan"
    # What Celery logs and reports for the task names the request, without the image.
    assert "orphan" in message["headers"]["kwargsrepr"]
    assert len(message["headers"]["kwargsrepr"]) < 100 < len(kwargs["image"])
    assert kwargs["reply_channel"].startswith("specific.")  # the consumer's own channel
    assert kwargs["deadline"] == pytest.approx(sent_at + TEST_REQUEST_TIMEOUT, abs=1)

    assert answer["type"] == protocol.ERROR
    assert (answer["id"], answer["code"]) == ("orphan", protocol.TIMEOUT)
    assert TEST_REQUEST_TIMEOUT - 0.5 <= waited <= TEST_REQUEST_TIMEOUT + 5

    deadline = time.monotonic() + 30
    while "Dropped request 'orphan'" not in stack.worker_log_text():
        assert time.monotonic() < deadline, "the restarted worker did not drop the stale task"
        time.sleep(0.1)

    async def fresh() -> dict[str, Any]:
        async with stack.client() as client:
            return await client.predict(render_digit_png(6))

    assert asyncio.run(fresh())["type"] == protocol.PREDICTION


@pytest.mark.slow
def test_a_lone_request_does_not_wait_for_the_flush_timer(
    redis_url: str, weights_copy: Path, tmp_path: Path
) -> None:
    """celery-batches flushes on a repeating timer, so a request alone in the queue would wait
    up to a whole flush interval. With that interval far beyond the request deadline, lone
    requests are answered all the same, each in a batch of its own: the worker sends a request
    at once when nothing waits behind it in Redis."""
    tag = uuid.uuid4().hex[:10]
    names = {"DIGITS_INFERENCE_QUEUE": f"test-lone-{tag}", "DIGITS_CHANNEL_PREFIX": f"lone-{tag}"}
    env = service_env(
        redis_url, names, DIGITS_WEIGHTS=str(weights_copy), DIGITS_BATCH_FLUSH_MS="600000"
    )
    stack = Stack(tmp_path, env, weights_copy)
    try:
        stack.start()

        async def lone_requests() -> list[dict[str, Any]]:
            async with stack.client() as client:
                return [await client.predict(render_digit_png(d)) for d in (3, 8)]

        answers = asyncio.run(lone_requests())
    finally:
        stack.stop()
        _delete_queue(redis_url, names["DIGITS_INFERENCE_QUEUE"])
    assert [a["type"] for a in answers] == [protocol.PREDICTION] * 2, answers
    assert [a["digit"] for a in answers] == [3, 8]
    assert [a["batch"] for a in answers] == [1, 1]

"""`DIGITS_TRANSPORT=stock`: the service on kombu, celery-batches and channels_redis as they ship.

The fallback for a library release the overrides in classifier/transport do not fit yet. A
real worker and uvicorn, nothing of classifier.transport in the path: every request answered,
each with its own digit, on several sockets at once.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

from classifier.serving import protocol
from tests.conftest import _delete_queue
from tests.helpers import REPO, Stack, render_digit_png, service_env

pytestmark = pytest.mark.slow


def test_the_stock_libraries_serve_every_request(
    redis_url: str, weights_copy: Path, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:10]
    names = {"DIGITS_INFERENCE_QUEUE": f"test-stock-{tag}", "DIGITS_CHANNEL_PREFIX": f"stock-{tag}"}
    env = service_env(redis_url, names, DIGITS_WEIGHTS=str(weights_copy), DIGITS_TRANSPORT="stock")
    stack = Stack(tmp_path, env, weights_copy)
    sockets, in_flight = 4, 5

    async def one_socket(number: int) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        async with stack.client() as client:
            expected = {}
            for k in range(in_flight):
                digit = (number * in_flight + k) % 10
                expected[f"s{number}-{k}"] = digit
                await client.send_image(f"s{number}-{k}", render_digit_png(digit))
            return expected, await client.receive_many(in_flight)

    async def scenario() -> list[tuple[dict[str, int], dict[str, dict[str, Any]]]]:
        return await asyncio.gather(*(one_socket(n) for n in range(sockets)))

    try:
        stack.start()
        results = asyncio.run(scenario())
    finally:
        stack.stop()
        _delete_queue(redis_url, names["DIGITS_INFERENCE_QUEUE"])

    for expected, answers in results:
        assert answers.keys() == expected.keys()
        for request_id, digit in expected.items():
            answer = answers[request_id]
            assert answer["type"] == protocol.PREDICTION, answer
            assert answer["digit"] == digit, answer
            assert 1 <= answer["batch"] <= settings.DIGITS_BATCH_SIZE
    log = stack.worker_log_text()
    assert "stock transport" in log  # the worker's ready line names it
    assert "Traceback" not in log


def test_with_the_stock_transport_no_override_is_in_the_worker(redis_url: str) -> None:
    """The task and the broker channel the worker builds, and the web side's channel layer, are
    the libraries' own."""
    probe = """
import django, json
django.setup()
from celery_batches import Batches
from channels.layers import get_channel_layer
from classifier.serving.tasks import predict
from digits_site.celery import app
from classifier.transport.batching import StreamBatches
with app.connection_for_read() as connection:
    channel = type(connection.default_channel)
print(json.dumps({
    "batches": isinstance(predict, Batches),
    "stream": isinstance(predict, StreamBatches),
    "channel": channel.__module__,
    "layer": type(get_channel_layer()).__module__,
}))
"""
    env = service_env(redis_url, {}, DIGITS_TRANSPORT="stock")
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {
        "batches": True,
        "stream": False,
        "channel": "kombu.transport.redis",
        "layer": "channels_redis.core",
    }

"""A real HTTP server for the client: the service's API (`PredictApi`) under uvicorn in a thread,
on a real Redis channel layer, whose queued requests a stand-in worker answers at once.

Everything the client touches is real: the socket, uvicorn's HTTP parsing, the API's checks,
limits, keys and status codes, the channel layer carrying each answer back. Only the worker is
a stand-in (`EchoWorker`, at the API's publish seam): it records each request and answers it
without a model, so the tests can say exactly what the client sent. The client against the real
worker and model is tests/e2e/test_http_api.py.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import uvicorn
from channels.layers import get_channel_layer

from classifier.management.devstack import free_port
from classifier.serving import protocol
from classifier.serving.http import PredictApi
from classifier.serving.presence import Heartbeat, registry_key
from classifier.serving.protocol import PredictRequest, Request

# The digit the stand-in worker answers every digit request with.
ANSWERED_DIGIT = 3


@dataclass
class EchoWorker:
    """Stands in for the workers at `PredictApi.queue_request`: records each request and sends
    a prediction to its reply channel, as a worker does (a number for "expect": "number")."""

    requests: list[Request] = field(default_factory=list)

    async def __call__(
        self, request: Request, reply_channel: str, ticket: int, deadline: float, client_hash: str
    ) -> None:
        self.requests.append(request)
        probabilities = [0.01] * 10
        probabilities[ANSWERED_DIGIT] = 0.91
        preview = "data:image/png;base64,AA=="
        assert isinstance(request, PredictRequest)
        if request.expect == protocol.EXPECT_NUMBER:
            piece = protocol.number_digit(probabilities, (0, 0, 10, 10), preview, True)
            frame = protocol.number_prediction(request.id, [piece, piece], "echo", {"worker": 0.1})
        else:
            frame = protocol.prediction(request.id, probabilities, "echo", preview, {"worker": 0.1})
        await get_channel_layer().send(reply_channel, protocol.answer_message(ticket, frame))


@dataclass
class ApiServer:
    url: str
    worker: EchoWorker


@pytest.fixture
def api_server(settings: Any, redis_url: str) -> Iterator[ApiServer]:
    """The API on a free port of 127.0.0.1, with a live worker's heartbeat, until the test ends.
    Limits are off and no keys are set; a test changes `settings` as its rule needs."""
    tag = uuid.uuid4().hex[:10]
    queue, prefix = f"test-client-{tag}", f"test-client-{tag}"
    layers = copy.deepcopy(settings.CHANNEL_LAYERS)
    layers["default"]["CONFIG"]["hosts"][0]["address"] = redis_url
    layers["default"]["CONFIG"]["prefix"] = prefix
    settings.CHANNEL_LAYERS = layers
    settings.REDIS_URL = redis_url
    settings.DIGITS_INFERENCE_QUEUE = queue
    settings.DIGITS_RATE_LIMIT = 0
    settings.DIGITS_MAX_IN_FLIGHT = 1000
    settings.DIGITS_REQUEST_TIMEOUT = 10.0
    settings.DIGITS_API_KEYS = []
    worker = EchoWorker()

    class Api(PredictApi):
        queue_request = staticmethod(worker)

    port = free_port()
    config = uvicorn.Config(
        Api(), host="127.0.0.1", port=port, loop="asyncio", lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api-server", daemon=True)
    heartbeat = Heartbeat(redis_url, queue, f"echo-{tag}", lambda: {}, 0.5, 2.0)
    heartbeat.start()
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield ApiServer(f"http://127.0.0.1:{port}", worker)
    finally:
        server.should_exit = True
        thread.join(10)
        heartbeat.stop()
        client = redis.Redis.from_url(redis_url)
        try:
            client.delete(registry_key(queue))
            keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()

"""/healthz and /readyz on real servers: ready with a worker, not ready (503, saying why)
without one or without Redis, while /healthz stays up. Without a worker or Redis a websocket
request is answered `unavailable` at once."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest

from classifier.management.devstack import free_port
from classifier.ml.weights import read_metadata
from classifier.serving import protocol
from tests.helpers import Stack, render_digit_png

pytestmark = pytest.mark.slow


def fetch(url: str, method: str = "GET") -> tuple[int, Message, Any]:
    """Status, headers (their names in any case, as HTTP has them) and the body, as JSON when it
    is."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        status, headers, body = error.code, error.headers, error.read()
    return status, headers, json.loads(body) if body.startswith(b"{") else body


def ask(web: Stack) -> dict[str, Any]:
    async def scenario() -> dict[str, Any]:
        async with web.client() as client:
            return await client.predict(render_digit_png(1))

    return asyncio.run(scenario())


@pytest.fixture(scope="module")
def web_only(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """`web_only(**env)`: a web server without a worker of its own, on the session's Redis unless
    told otherwise."""
    started: list[Stack] = []

    def start(**env: str) -> Stack:
        web = Stack(tmp_path_factory.mktemp("web"), {**stack.env, **env}, stack.weights_path)
        started.append(web)
        web.start_web()
        return web

    yield start
    for web in started:
        web.stop_web()


def test_with_a_worker_the_service_is_ready_and_names_its_model(stack: Stack) -> None:
    status, headers, body = fetch(stack.http_url + "healthz")
    assert (status, body) == (200, {"status": "ok"})
    status, headers, body = fetch(stack.http_url + "readyz")
    assert status == 200, body
    assert body["ready"] is True and body["redis"] == "ok"
    assert body["queue"] == stack.env["DIGITS_INFERENCE_QUEUE"]
    (worker,) = body["workers"]
    assert worker["model"] == read_metadata(stack.weights_path)["version"]
    assert worker["device"] == "cpu"
    assert "no-cache" in headers["Cache-Control"]


def test_probes_only_read(stack: Stack) -> None:
    assert fetch(stack.http_url + "readyz", method="POST")[0] in {403, 405}  # CSRF, or method
    assert fetch(stack.http_url + "healthz", method="HEAD")[0] == 200


def test_without_a_worker_it_is_alive_but_not_ready_and_says_unavailable(web_only: Any) -> None:
    web = web_only(DIGITS_INFERENCE_QUEUE=f"nobody-{uuid.uuid4().hex[:8]}")
    assert fetch(web.http_url + "healthz")[0] == 200
    status, _, body = fetch(web.http_url + "readyz")
    assert status == 503
    assert body["ready"] is False and body["redis"] == "ok" and body["workers"] == []
    assert "No inference worker" in body["reason"]
    answer = ask(web)
    assert (answer["type"], answer["code"]) == (protocol.ERROR, protocol.UNAVAILABLE)


def test_without_redis_it_is_alive_but_not_ready_and_says_unavailable(web_only: Any) -> None:
    web = web_only(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert fetch(web.http_url + "healthz")[0] == 200
    status, _, body = fetch(web.http_url + "readyz")
    assert status == 503
    assert body["ready"] is False and body["redis"] == "unreachable"
    assert "Redis is unreachable" in body["reason"]
    answer = ask(web)
    assert (answer["type"], answer["code"]) == (protocol.ERROR, protocol.UNAVAILABLE)

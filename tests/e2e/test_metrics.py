"""The metrics of a real service: a worker and uvicorn of this module's own (`make run`'s command
lines, a queue nobody else serves), so every count starts at zero and must end exact.

After N answered requests the web's `digits_requests_total` sums to N, by outcome; the worker,
found through the metrics URL its heartbeat publishes in /readyz, counts the batches it served
(read back from the answers: each prediction says how many images shared its model call) and
the answers it sent.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from classifier.ml.weights import read_metadata
from classifier.serving import protocol
from tests.helpers import (
    Stack,
    blank_png,
    delete_queue,
    render_digit_png,
    service_env,
    shipped_weights,
)

pytestmark = pytest.mark.slow

DIGITS_PER_SOCKET = 10
SOCKETS = 2


@pytest.fixture(scope="module")
def metered(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    names = {"DIGITS_INFERENCE_QUEUE": f"metrics-{tag}", "DIGITS_CHANNEL_PREFIX": f"metrics-{tag}"}
    env = service_env(
        redis_url,
        names,
        DIGITS_WEIGHTS=str(shipped_weights()),
        DIGITS_WORKER_METRICS_HOST="127.0.0.1",
    )
    assert env["DIGITS_WORKER_METRICS_PORT"] == "0"  # tests/helpers.py: a free port each
    stack = Stack(tmp_path_factory.mktemp("metrics"), env, shipped_weights())
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        delete_queue(redis_url, names["DIGITS_INFERENCE_QUEUE"])


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus scrape, by name and labels."""
    found = {}
    for family in text_string_to_metric_families(fetch(url)):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def by_label(scrape: dict[Any, float], name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: value for (n, labels), value in scrape.items() if n == name}


def readyz_worker(stack: Stack) -> dict[str, Any]:
    (worker,) = json.loads(fetch(stack.http_url + "readyz"))["workers"]
    return worker


async def traffic(stack: Stack) -> list[dict[str, Any]]:
    """Digits sent all at once on two sockets (so batches form), blanks and bad frames."""

    async def one_socket(k: int) -> list[dict[str, Any]]:
        async with stack.client() as client:
            for n in range(DIGITS_PER_SOCKET):
                await client.send_image(f"s{k}-d{n}", render_digit_png(n % 10, index=k))
            await client.send_image(f"s{k}-blank", blank_png())
            await client.send_raw("not json")
            answers = []
            for _ in range(DIGITS_PER_SOCKET + 2):
                answers.append(await client.receive())
            return answers

    results = await asyncio.gather(*(one_socket(k) for k in range(SOCKETS)))
    return [answer for answers in results for answer in answers]


def test_the_counts_are_exact_on_the_web_and_on_the_worker(metered: Stack) -> None:
    worker = readyz_worker(metered)
    worker_url = worker["metrics"]
    assert worker_url.startswith("http://127.0.0.1:") and worker_url.endswith("/metrics")
    assert not worker_url.startswith("http://127.0.0.1:9101/")  # port 0: a free one
    web_url = metered.http_url + "metrics"

    web_before, worker_before = samples(web_url), samples(worker_url)
    assert sum(by_label(web_before, "digits_requests_total", "outcome").values()) == 0
    assert worker_before[("digits_batch_size_count", ())] == 0
    version = read_metadata(metered.weights_path)["version"]
    assert by_label(worker_before, "digits_model_info", "version") == {version: 1}
    assert by_label(worker_before, "digits_model_info", "device") == {"cpu": 1}

    answers = asyncio.run(traffic(metered))
    outcomes = Counter(
        a["type"] if a["type"] == protocol.PREDICTION else a["code"] for a in answers
    )
    digits = SOCKETS * DIGITS_PER_SOCKET
    assert outcomes == {
        protocol.PREDICTION: digits,
        protocol.EMPTY: SOCKETS,
        protocol.BAD_JSON: SOCKETS,
    }
    # Each prediction says how many images its model call scored: a batch of b answers b
    # predictions that each say b, so the calls number the sum of 1/b.
    batches = sum(1 / a["batch"] for a in answers if a["type"] == protocol.PREDICTION)
    assert abs(batches - round(batches)) < 1e-6
    batches = round(batches)

    time.sleep(0.3)  # the sockets' disconnects reach the consumer
    web = samples(web_url)
    # The outcomes sent, and the series made at 0 before any answer (a refused correction's,
    # so an alert on it has a series to read).
    assert by_label(web, "digits_requests_total", "outcome") == {
        protocol.FEEDBACK_LIMIT: 0.0,
        **{outcome: float(count) for outcome, count in outcomes.items()},
    }
    assert sum(by_label(web, "digits_requests_total", "outcome").values()) == len(answers)
    assert web[("digits_request_duration_seconds_count", ())] == len(answers)
    assert web[("digits_websocket_connections", ())] == 0
    assert web[("digits_workers", ())] == 1
    assert web[("digits_queue_depth", ())] == 0
    assert web[("digits_redis_up", ())] == 1

    served = samples(worker_url)
    assert served[("digits_batch_size_count", ())] == batches
    assert served[("digits_batch_size_sum", ())] == digits
    assert served[("digits_inference_seconds_count", ())] == batches
    assert by_label(served, "digits_worker_answers_total", "outcome") == {
        protocol.FEEDBACK_LIMIT: 0.0,
        protocol.PREDICTION: digits,
        protocol.EMPTY: SOCKETS,  # the bad frames never reached a worker
    }
    assert served[("digits_queue_wait_seconds_count", ())] == digits + SOCKETS
    assert served[("digits_model_swaps_total", ())] == 0

    # The heartbeat carries the worker's answers to /readyz and the status page.
    deadline = time.monotonic() + 10
    while readyz_worker(metered)["answers"] != digits + SOCKETS:
        assert time.monotonic() < deadline, readyz_worker(metered)
        time.sleep(0.2)
    assert readyz_worker(metered)["answers_per_second"] > 0

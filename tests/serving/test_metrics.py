"""The metrics, in this process: the consumer's counts (driven as in tests/serving/test_consumers
.py: a real channel layer and real heartbeats on a real Redis, the publish seam a queue the test
reads), a worker's counts (the real model on real batches, answers sent through a real channel
layer), the worker's metrics server, the allow-list, `/metrics` and `/status.json` through
Django's test client, and the rolling window's arithmetic.

The counters are the process's own and other tests move them too, so every check compares a
reading before and after.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from channels_redis.core import RedisChannelLayer
from django.test import Client

from classifier.management.devstack import free_port
from classifier.serving import metrics, protocol
from classifier.serving.presence import Heartbeat, registry_key
from classifier.serving.window import RollingWindow, percentile
from tests.catalogue import digit_png
from tests.digits_site.test_settings import clean_env, settings_with
from tests.helpers import REPO, blank_png, shipped_weights
from tests.serving import test_consumers
from tests.serving.test_consumers import Service, fresh_address, prediction

PROMPTLY = 5.0
# Whitenoise, built with the site's HTTP application, warns that `collectstatic` never ran.
pytestmark = pytest.mark.filterwarnings("ignore:No directory at:UserWarning")

# The consumer on names of the test's own, and a live worker's heartbeat: test_consumers.py's
# fixtures, used here under the same names.
service = test_consumers.service
worker = test_consumers.worker


@contextlib.contextmanager
def port_in_use() -> Iterator[int]:
    """A port another socket listens on, on every interface, while the block runs."""
    holder = socket.socket()
    try:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        yield holder.getsockname()[1]
    finally:
        holder.close()


def web_value(name: str, **labels: str) -> float:
    return metrics.WEB_REGISTRY.get_sample_value(name, labels) or 0.0


def worker_value(name: str, **labels: str) -> float:
    return metrics.WORKER_REGISTRY.get_sample_value(name, labels) or 0.0


def requests_by_outcome() -> dict[str, float]:
    (family,) = metrics.REQUESTS.collect()
    return {s.labels["outcome"]: s.value for s in family.samples if s.name.endswith("_total")}


def grown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What grew between two readings by outcome (outcomes that did not grow left out)."""
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


# --- The web process: every answer counted once ------------------------------------------------


def test_every_answer_is_counted_once_by_outcome_with_its_duration(
    service: Service, worker: Heartbeat, settings: Any
) -> None:
    """Requests with every kind of ending, on three sockets: predictions and a worker's error
    answered by the test, refused frames, a flood over the rate limit, a publish that fails, a
    deadline missed (and its late answer dropped), a socket over the per-address cap. The
    counter grows by exactly one per answer the clients received, each outcome by its own
    count; the duration histogram by as many; the connections gauge follows the sockets."""
    before, count_before = requests_by_outcome(), web_value("digits_request_duration_seconds_count")
    window_before = metrics.WINDOW.totals()
    connections_before = web_value("digits_websocket_connections")
    address = fresh_address()

    async def scenario() -> tuple[list[dict[str, Any]], list[float]]:
        received: list[dict[str, Any]] = []
        gauge: list[float] = []
        async with service.socket(address) as first:
            gauge.append(web_value("digits_websocket_connections"))
            for k in range(3):
                await first.predict(f"p{k}")
            await first.predict("blank", blank_png())
            queued = [await service.published.next() for _ in range(4)]
            for q in queued[:3]:
                await service.answer(q, prediction(q.request.id))
            await service.answer(queued[3], protocol.error("blank", protocol.EMPTY, "Blank."))
            received += [await first.receive() for _ in range(4)]

            await first.send("not json")
            await first.send(digit_png(3))  # binary
            received += [await first.receive() for _ in range(2)]

            service.published.failure = redis.ConnectionError("refused")
            service.published.failures = 1
            await first.predict("unqueued")
            received.append(await first.receive())

            settings.DIGITS_REQUEST_TIMEOUT = 0.3
            await first.predict("slow")
            slow = await service.published.next()
            received.append(await first.receive())  # its timeout
            settings.DIGITS_REQUEST_TIMEOUT = 30.0
            await service.answer(slow, prediction("slow"))  # too late: dropped
            assert await first.silent(0.3)

            settings.DIGITS_RATE_LIMIT = 0.001
            settings.DIGITS_RATE_BURST = 1
            settings.DIGITS_MAX_CONNECTIONS_PER_CLIENT = 2
            async with service.socket(address) as second:
                gauge.append(web_value("digits_websocket_connections"))
                await second.send("not json")  # takes the one token
                await second.predict("flood")
                received += [await second.receive(), await second.receive()]
                third = service.socket(address)
                assert await third.connect()
                received.append(await third.receive())
                assert await third.closed_with() == protocol.CLOSE_TOO_MANY_CONNECTIONS
                await third.close()
            gauge.append(web_value("digits_websocket_connections"))
        await asyncio.sleep(0.05)
        gauge.append(web_value("digits_websocket_connections"))
        return received, gauge

    received, gauge = service.run(scenario)
    expected = {
        protocol.PREDICTION: 3,
        protocol.EMPTY: 1,
        protocol.BAD_JSON: 2,
        protocol.BINARY_FRAME: 1,
        protocol.UNAVAILABLE: 1,
        protocol.TIMEOUT: 1,
        protocol.RATE_LIMITED: 1,
        protocol.TOO_MANY_CONNECTIONS: 1,
    }
    seen: dict[str, int] = {}
    for frame in received:
        seen[metrics.outcome(frame)] = seen.get(metrics.outcome(frame), 0) + 1
    assert seen == expected  # what the clients were told
    answered = len(received)
    assert grown(before, requests_by_outcome()) == expected
    assert sum(grown(before, requests_by_outcome()).values()) == answered == 11
    assert web_value("digits_request_duration_seconds_count") - count_before == answered
    window_after = metrics.WINDOW.totals()
    assert {k: v - window_before.get(k, 0) for k, v in window_after.items()} == {
        k: expected.get(k, 0) for k in window_after
    }
    assert gauge == [
        connections_before + 1,
        connections_before + 2,
        connections_before + 1,
        connections_before,
    ]


def test_the_duration_runs_from_the_frame_to_its_answer(
    service: Service, worker: Heartbeat
) -> None:
    """A request answered a quarter of a second after it was sent adds at least that much to
    the histogram's sum, and no more than the client waited."""
    sum_before = web_value("digits_request_duration_seconds_sum")

    async def scenario() -> float:
        async with service.socket() as socket_:
            sent = time.monotonic()
            await socket_.predict("timed")
            queued = await service.published.next()
            await asyncio.sleep(0.25)
            await service.answer(queued, prediction("timed"))
            await socket_.receive()
            return time.monotonic() - sent

    waited = service.run(scenario)
    added = web_value("digits_request_duration_seconds_sum") - sum_before
    assert 0.25 <= added <= waited


# --- A worker: batches, answers, model ---------------------------------------------------------


@pytest.fixture
def reply_layer(redis_url: str) -> Iterator[RedisChannelLayer]:
    """A channel layer on a prefix of this test's own, as the consumers' side reads it."""
    prefix = f"test-metrics-{uuid.uuid4().hex[:10]}"
    layer = RedisChannelLayer(hosts=[redis_url], prefix=prefix)
    yield layer
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def task(channel: str, request_id: str, image: bytes, deadline_in: float = 60.0) -> dict[str, Any]:
    """Task kwargs as `classifier.serving.enqueue.submit` sends them."""
    return {
        "reply_channel": channel,
        "ticket": 1,
        "id": request_id,
        "image": base64.b64encode(image).decode(),
        "deadline": time.time() + deadline_in,
        "sent_at": time.time() - 0.002,
    }


def test_a_worker_counts_its_batches_and_the_answers_it_sent(
    reply_layer: RedisChannelLayer,
) -> None:
    """Four batches through `WorkerState.serve` with the shipped model, answers sent through a
    real channel layer: two model calls (one batch is only a blank image, one only a request
    past its deadline), so the batch histogram counts 2 with 3 images; the answers counted
    are the 5 that reached their channels, by outcome."""
    from classifier.ml.inference import Predictor
    from classifier.serving.worker import ModelHolder, WorkerState
    from classifier.transport.replies import ReplySender

    channel = f"answers-{uuid.uuid4().hex[:6]}"
    predictor = Predictor.load(shipped_weights(), device="cpu")
    state = WorkerState(ModelHolder(predictor, 3600.0), ReplySender(reply_layer, direct=True))
    names = [
        "digits_batch_size_count",
        "digits_batch_size_sum",
        "digits_inference_seconds_count",
        "digits_preprocess_seconds_count",
        "digits_queue_wait_seconds_count",
        "digits_worker_dropped_total",
    ]
    before = {name: worker_value(name) for name in names}
    answers_before = {
        o: worker_value("digits_worker_answers_total", outcome=o)
        for o in (protocol.PREDICTION, protocol.EMPTY)
    }
    batches = [
        [task(channel, "seven", digit_png(7)), task(channel, "blank-1", blank_png())],
        [task(channel, "three", digit_png(3)), task(channel, "one", digit_png(1))],
        [task(channel, "blank-2", blank_png())],
        [task(channel, "late", digit_png(2), deadline_in=-1.0)],
    ]
    try:
        for batch in batches:
            state.serve(batch)
    finally:
        state.sender.close()

    async def delivered() -> list[dict[str, Any]]:
        frames = []
        for _ in range(5):
            message = await asyncio.wait_for(reply_layer.receive(channel), PROMPTLY)
            frames.append(message["frame"])
        await reply_layer.close_pools()
        return frames

    frames = asyncio.run(delivered())
    assert sorted(f["id"] for f in frames) == ["blank-1", "blank-2", "one", "seven", "three"]
    grew = {name: worker_value(name) - before[name] for name in names}
    assert grew == {
        "digits_batch_size_count": 2,
        "digits_batch_size_sum": 3,
        "digits_inference_seconds_count": 2,
        "digits_preprocess_seconds_count": 5,  # every image not dropped
        "digits_queue_wait_seconds_count": 6,  # every request taken, the late one too
        "digits_worker_dropped_total": 1,
    }
    assert {
        o: worker_value("digits_worker_answers_total", outcome=o) - answers_before[o]
        for o in answers_before
    } == {protocol.PREDICTION: 3, protocol.EMPTY: 2}
    described = state.describe()
    assert described["answers"] == 5
    assert described["model"] == predictor.version and described["device"] == "cpu"


def test_the_model_info_names_the_model_served_and_swaps_are_counted(tmp_path: Path) -> None:
    """New weights written over the served file: the info gauge moves to the new version (one
    label set, never two) and the swap counter grows by one."""
    from classifier.ml.inference import Predictor
    from classifier.ml.weights import load_weights, save_weights
    from classifier.serving.worker import ModelHolder

    path = tmp_path / "weights.safetensors"
    shutil.copyfile(shipped_weights(), path)
    now = [0.0]
    holder = ModelHolder(Predictor.load(path, device="cpu"), 0.5, clock=lambda: now[0])
    old = holder.predictor.version
    assert info_labels() == [{"version": old, "device": "cpu"}]
    swaps = worker_value("digits_model_swaps_total")

    state, metadata = load_weights(path)
    save_weights(state, path, {**metadata, "version": "metrics-next"})
    now[0] = 1.0
    assert holder.current().version == "metrics-next"
    assert info_labels() == [{"version": "metrics-next", "device": "cpu"}]
    assert worker_value("digits_model_swaps_total") - swaps == 1
    now[0] = 2.0
    holder.current()  # unchanged file: no swap
    assert worker_value("digits_model_swaps_total") - swaps == 1


def info_labels() -> list[dict[str, str]]:
    (family,) = metrics.MODEL_INFO.collect()
    assert all(sample.value == 1 for sample in family.samples)
    return [sample.labels for sample in family.samples]


# --- A worker's metrics server -------------------------------------------------------------------


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=PROMPTLY) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_the_worker_server_serves_its_registry_to_allowed_networks_only() -> None:
    allowed = metrics.start_worker_server(0, metrics.AllowList(["127.0.0.0/8"]))
    refused = metrics.start_worker_server(0, metrics.AllowList(["203.0.113.0/24"]))
    assert allowed is not None and refused is not None
    try:
        assert allowed.port > 0 and allowed.port != refused.port
        assert allowed.url("127.0.0.1") == f"http://127.0.0.1:{allowed.port}/metrics"
        assert allowed.url("::1") == f"http://[::1]:{allowed.port}/metrics"
        status, text = get(allowed.url("127.0.0.1"))
        assert status == 200
        assert "digits_batch_size_count" in text and "digits_model_swaps_total" in text
        assert "digits_requests_total" not in text  # the web process's, not a worker's
        status, text = get(refused.url("127.0.0.1"))
        assert status == 403 and "DIGITS_METRICS_ALLOWED" in text
    finally:
        allowed.close()
        refused.close()


def test_a_worker_whose_metrics_port_is_taken_serves_without_metrics(
    settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker's start (classifier.serving.tasks) with its port held by another process:
    an error naming the port and the variable, no server, no URL in the heartbeat; with a free
    port, the URL names DIGITS_WORKER_METRICS_HOST and answers."""
    from classifier.serving import tasks

    class State:
        def describe(self) -> dict[str, Any]:
            return {"model": "m", "device": "cpu", "answers": 0, "answers_per_second": 0.0}

    with port_in_use() as port:
        settings.DIGITS_WORKER_METRICS_PORT = port
        with caplog.at_level("ERROR", logger="classifier.serving.metrics"):
            assert tasks.start_metrics() is None
    assert str(port) in caplog.text and "DIGITS_WORKER_METRICS_PORT" in caplog.text
    assert "metrics" not in tasks.describe(State(), None)  # type: ignore[arg-type]

    settings.DIGITS_WORKER_METRICS_PORT = 0
    settings.DIGITS_WORKER_METRICS_HOST = "127.0.0.1"
    try:
        url = tasks.start_metrics()
        assert url is not None and url.startswith("http://127.0.0.1:")
        assert get(url)[0] == 200
        assert tasks.describe(State(), url)["metrics"] == url  # type: ignore[arg-type]
    finally:
        if tasks._metrics_server is not None:
            tasks._metrics_server.close()
            tasks._metrics_server = None


# --- Who may read: the allow-list --------------------------------------------------------------


DEFAULT_ALLOWED = [
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"
]  # fmt: skip


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("10.1.2.3", True),
        ("172.31.255.1", True),
        ("192.168.0.9", True),
        ("fd12::1", True),
        ("::ffff:10.0.0.7", True),  # an IPv4 client on an IPv6 socket
        ("8.8.8.8", False),
        ("172.32.0.1", False),
        ("2001:db8::1", False),
        ("::ffff:8.8.8.8", False),
        ("", False),
        (None, False),
        ("unix-socket", False),
    ],
)
def test_the_default_allow_list_is_loopback_and_private_ranges(
    address: str | None, allowed: bool
) -> None:
    assert metrics.AllowList(DEFAULT_ALLOWED).allows(address) is allowed


def test_the_settings_default_is_that_list_and_a_malformed_network_refuses_to_start() -> None:
    values = settings_with(
        "DIGITS_METRICS_ALLOWED", "DIGITS_WORKER_METRICS_PORT", "DIGITS_WORKER_METRICS_HOST"
    )
    assert values == {
        "DIGITS_METRICS_ALLOWED": DEFAULT_ALLOWED,
        "DIGITS_WORKER_METRICS_PORT": 9101,
        "DIGITS_WORKER_METRICS_HOST": "",  # the worker asks socket.getfqdn()
        "web_argv": values["web_argv"],
    }
    assert settings_with("DIGITS_METRICS_ALLOWED", DIGITS_METRICS_ALLOWED=" 10.1.0.0/16, ::1 ")[
        "DIGITS_METRICS_ALLOWED"
    ] == ["10.1.0.0/16", "::1"]
    done = subprocess.run(
        [sys.executable, "-c", "import digits_site.settings"],
        cwd=REPO,
        env=clean_env(DIGITS_METRICS_ALLOWED="10.0.0.0/8,intranet"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "DIGITS_METRICS_ALLOWED" in done.stderr and "'intranet'" in done.stderr


@pytest.fixture
def site(settings: Any, redis_url: str) -> Iterator[dict[str, Any]]:
    """Django's test client on this test's own queue in the real Redis."""
    queue = f"test-metrics-{uuid.uuid4().hex[:10]}"
    settings.REDIS_URL = redis_url
    settings.DIGITS_INFERENCE_QUEUE = queue
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    client = redis.Redis.from_url(redis_url)
    try:
        yield {"client": Client(HTTP_HOST="127.0.0.1"), "queue": queue, "redis": client}
    finally:
        client.delete(queue, registry_key(queue))
        client.close()


PAGES = ["/metrics", "/status/", "/status.json"]


@pytest.mark.parametrize("path", PAGES)
@pytest.mark.parametrize(
    ("address", "status"),
    [
        ("127.0.0.1", 200),
        ("10.20.30.40", 200),
        ("::1", 200),
        ("8.8.8.8", 403),
        ("2001:db8::5", 403),
    ],
)
def test_metrics_and_status_are_refused_outside_the_allowed_networks(
    site: dict[str, Any], path: str, address: str, status: int
) -> None:
    response = site["client"].get(path, REMOTE_ADDR=address)
    assert response.status_code == status
    if status == 403:
        assert b"DIGITS_METRICS_ALLOWED" in response.content
        assert b"digits_" not in response.content


def test_the_allowed_networks_are_the_operators_to_set(site: dict[str, Any], settings: Any) -> None:
    settings.DIGITS_METRICS_ALLOWED = ["203.0.113.0/24"]
    client = site["client"]
    assert client.get("/metrics", REMOTE_ADDR="203.0.113.9").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    settings.DIGITS_METRICS_ALLOWED = ["0.0.0.0/0", "::/0"]
    assert client.get("/status.json", REMOTE_ADDR="8.8.8.8").status_code == 200


# --- /metrics and /status.json -----------------------------------------------------------------


def scrape(client: Client) -> dict[str, float]:
    """The unlabelled samples of a scrape, by name."""
    response = client.get("/metrics", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert "no-cache" in response["Cache-Control"]
    samples = {}
    for line in response.content.decode().splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_a_scrape_reads_the_queue_depth_and_the_live_workers_from_redis(
    site: dict[str, Any], redis_url: str
) -> None:
    """Three requests waiting in the queue and two heartbeats: the scrape says so; a worker
    gone and the queue drained, the next scrape says that."""
    client, queue, r = site["client"], site["queue"], site["redis"]
    r.rpush(queue, "a", "b", "c")
    beats = [Heartbeat(redis_url, queue, f"w{k}", lambda: {}, 0.5, 2.0) for k in range(2)]
    for beat in beats:
        beat.start()
    try:
        samples = scrape(client)
        assert samples["digits_queue_depth"] == 3
        assert samples["digits_workers"] == 2
        assert samples["digits_redis_up"] == 1
        assert "digits_request_duration_seconds_count" in samples
        assert "digits_websocket_connections" in samples
        assert "process_cpu_seconds_total" in samples
        assert not any(name.startswith("digits_batch") for name in samples)
        beats.pop().stop()
        r.delete(queue)
        samples = scrape(client)
        assert (samples["digits_queue_depth"], samples["digits_workers"]) == (0, 1)
    finally:
        for beat in beats:
            beat.stop()


def test_without_redis_a_scrape_says_so_and_leaves_out_what_it_cannot_know(
    site: dict[str, Any], settings: Any
) -> None:
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens there
    samples = scrape(site["client"])
    status = site["client"].get("/status.json", REMOTE_ADDR="127.0.0.1").json()
    assert samples["digits_redis_up"] == 0
    assert "digits_queue_depth" not in samples and "digits_workers" not in samples
    assert "digits_request_duration_seconds_count" in samples  # the process's own still are
    assert (status["redis"], status["queue_depth"], status["workers"]) == ("unreachable", None, [])


def test_status_json_lists_the_workers_queue_series_and_errors(
    site: dict[str, Any], redis_url: str
) -> None:
    """The shape the status page reads: each worker as its heartbeat describes it, the queue
    depth, the answers since start, the last minute, ten minutes in 5-second points, and the
    errors by code (most frequent first)."""
    client, queue, r = site["client"], site["queue"], site["redis"]
    r.rpush(queue, "waiting")
    described = {
        "model": "status-model",
        "device": "cpu",
        "answers": 12,
        "answers_per_second": 1.5,
        "metrics": "http://127.0.0.1:9999/metrics",
    }
    beat = Heartbeat(redis_url, queue, "status-worker", lambda: described, 0.5, 2.0)
    beat.start()
    before = client.get("/status.json", REMOTE_ADDR="127.0.0.1").json()
    try:
        metrics.web_answered(protocol.PREDICTION, 0.012, queued=True)
        metrics.web_answered(protocol.TIMEOUT, 5.0, queued=True)
        for _ in range(2):
            metrics.web_answered(protocol.BAD_JSON, 0.0001, queued=False)
        response = client.get("/status.json", REMOTE_ADDR="127.0.0.1")
    finally:
        beat.stop()
    assert response.status_code == 200 and "no-cache" in response["Cache-Control"]
    status = response.json()
    assert status["redis"] == "ok" and status["queue"] == queue and status["queue_depth"] == 1
    (worker_,) = status["workers"]
    assert worker_ == {"node": "status-worker", "pid": worker_["pid"], **described}
    assert status["answers_total"] - before["answers_total"] == 4
    assert isinstance(status["connections"], (int, float))
    series = status["series"]
    assert (series["step"], series["seconds"], len(series["points"])) == (5, 600, 120)
    assert [set(p) for p in series["points"][:1]] == [
        {"t", "answers", "errors", "per_second", "p50_ms", "p95_ms"}
    ]
    assert all(b["t"] - a["t"] == 5 for a, b in itertools.pairwise(series["points"]))
    assert status["recent"]["seconds"] == 60
    assert {"answers", "per_second", "p50_ms", "p95_ms", "outcomes"} <= set(status["recent"])
    errors = {e["code"]: e for e in status["errors"]}
    assert protocol.PREDICTION not in errors
    assert errors[protocol.BAD_JSON]["total"] >= 2 and errors[protocol.TIMEOUT]["total"] >= 1
    totals = [e["total"] for e in status["errors"]]
    assert totals == sorted(totals, reverse=True)


def test_the_status_page_is_a_page_that_polls_status_json(site: dict[str, Any]) -> None:
    response = site["client"].get("/status/", REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert 'data-status-url="/status.json"' in html
    assert "frontend/status.js" in html and "frontend/status.css" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # no CDN


# --- The rolling window and the rate meter ------------------------------------------------------


def test_the_window_groups_seconds_and_reads_percentiles_off_its_buckets() -> None:
    now = [1000.2]
    window = RollingWindow(span=60, clock=lambda: now[0])
    for ms in range(1, 101):  # 1..100 ms in second 1000
        window.record(protocol.PREDICTION, ms / 1000, queued=True)
    window.record(protocol.RATE_LIMITED, 0.00001, queued=False)  # counted, no latency
    now[0] = 1003.5
    window.record(protocol.TIMEOUT, 10.0, queued=True)

    before, group = window.series(step=2, until=1001)[-2:]
    assert (before["t"], before["answers"], before["p50_ms"]) == (998, 0, None)
    assert (group["t"], group["answers"], group["errors"]) == (1000, 101, 1)
    assert group["per_second"] == 50.5
    assert group["p50_ms"] == pytest.approx(50, rel=0.1)
    assert group["p95_ms"] == pytest.approx(95, rel=0.1)
    assert len(window.series(step=2)) == 30
    latest = window.series(step=2)[-1]
    assert (latest["t"], latest["answers"]) == (1001, 0)  # second 1003 is still running
    now[0] = 1004.0
    last = window.series(step=2)[-1]
    assert (last["t"], last["answers"], last["p50_ms"]) == (1002, 1, pytest.approx(10000, 0.1))
    assert window.totals() == {protocol.PREDICTION: 100, protocol.RATE_LIMITED: 1, "timeout": 1}
    recent = window.summary(10)
    assert recent["answers"] == 102 and recent["outcomes"][protocol.RATE_LIMITED] == 1

    now[0] = 1061.5  # second 1000 has left the window (1001..1060); the totals stay
    assert window.summary(60)["answers"] == 1
    assert sum(window.totals().values()) == 102


def test_a_second_of_the_ring_is_reused_for_a_new_time() -> None:
    now = [10.0]
    window = RollingWindow(span=5, clock=lambda: now[0])
    window.record(protocol.PREDICTION, 0.001, queued=True)
    now[0] = 15.0  # the same slot, five seconds on
    window.record(protocol.PREDICTION, 0.001, queued=True)
    now[0] = 16.0
    assert window.summary(5)["answers"] == 1


def test_percentiles_of_no_latencies_are_none_and_beyond_the_last_bound_are_capped() -> None:
    from classifier.serving.window import LATENCY_BOUNDS_MS

    assert percentile([0] * (len(LATENCY_BOUNDS_MS) + 1), 0.5) is None
    counts = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    counts[-1] = 3
    assert percentile(counts, 0.95) == round(LATENCY_BOUNDS_MS[-1], 2)


def test_the_rate_meter_averages_over_its_span() -> None:
    now = [0.0]
    meter = metrics.RateMeter(span=10, clock=lambda: now[0])
    assert meter.rate(0) == 0.0
    for second in range(1, 21):
        now[0] = float(second)
        rate = meter.rate(second * 5)  # 5 a second
    assert rate == pytest.approx(5.0)
    now[0] = 30.0
    assert meter.rate(100) == pytest.approx(0.0)  # idle since second 20: 100 at 20, at 30
    now[0] = 31.0
    assert meter.rate(100) == pytest.approx(0.0)

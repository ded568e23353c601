"""Prometheus metrics of the web process and of each worker, and who may read them.

Why two registries rather than prometheus_client's default one: the web process and a worker
import this same module, and each must expose only its own series (a web `/metrics` full of
worker histograms stuck at zero would mislead). Each registry also carries the standard
process, platform and garbage-collector series.

The web process counts every answer frame sent for a request in one place
(`PredictConsumer._answer`, through `web_answered`), so the sum of `digits_requests_total` over
its outcomes is exactly the number of requests answered. The queue depth and the live workers
are read from Redis when `/metrics` is scraped (classifier/serving/status.py), never cached.

A worker observes its batches (classifier.serving.batch), its answers (classifier.serving
.worker) and its model swaps, and serves them on its own small HTTP server
(`WorkerMetricsServer`): the solo pool runs one process, so no multiprocess mode is needed.

This module stays free of torch and numpy: the consumer imports it (pyproject.toml's import
contracts).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from classifier.serving import protocol
from classifier.serving.window import RollingWindow

logger = logging.getLogger(__name__)

# The outcome label of an answer that is a prediction; any other answer's is its error code.
PREDICTION = protocol.PREDICTION

# No `_created` series beside every counter and histogram: in Prometheus's text format each is
# one more gauge per series, of use to nobody here (the process start time is exported anyway).
disable_created_metrics()


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


WEB_REGISTRY = _registry()
WORKER_REGISTRY = _registry()

# Latencies of a whole request: a prediction takes milliseconds, a `timeout` the deadline.
_REQUEST_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0
)  # fmt: skip
_STEP_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# --- The web process -----------------------------------------------------------------------------

REQUESTS = Counter(
    "digits_requests",
    "Answers sent for requests (websocket and HTTP API), by outcome: `prediction`, "
    "`feedback_saved` or the error code.",
    ["outcome"],
    registry=WEB_REGISTRY,
)
REQUESTS.labels(PREDICTION)  # the series exists (at 0) before the first answer
# Corrections refused by the per-client cap (DIGITS_FEEDBACK_PER_HOUR): a series from the start,
# so an alert on its rate needs no first refusal.
REQUESTS.labels(protocol.FEEDBACK_LIMIT)
REQUEST_DURATION = Histogram(
    "digits_request_duration_seconds",
    "Seconds from a request frame's arrival to its answer being sent, every outcome.",
    buckets=_REQUEST_BUCKETS,
    registry=WEB_REGISTRY,
)
WEBSOCKET_CONNECTIONS = Gauge(
    "digits_websocket_connections",
    "Websockets open on this web process now.",
    registry=WEB_REGISTRY,
)


# The last ten minutes of answers, second by second, for the status page (/status.json).
WINDOW = RollingWindow(span=600)


def web_answered(outcome: str, seconds: float, queued: bool) -> None:
    """One answer frame sent for a request: `seconds` since its frame arrived; `queued` when
    the request went to a worker (not refused at once)."""
    REQUESTS.labels(outcome).inc()
    REQUEST_DURATION.observe(seconds)
    WINDOW.record(outcome, seconds, queued)


def outcome(frame: Mapping[str, Any]) -> str:
    """An answer frame's outcome label: `prediction`, `feedback_saved`, or the error frame's
    code."""
    kind = frame.get("type")
    if kind in (protocol.PREDICTION, protocol.FEEDBACK_SAVED):
        return str(kind)
    return str(frame.get("code") or "unknown")


class ScrapeTime:
    """The web registry's series plus what is read from Redis for one scrape: the requests
    waiting in the inference queue and the live workers. None is unknown (Redis unreachable):
    that series is left out of the scrape, and `digits_redis_up` says why."""

    def __init__(self, queue_depth: int | None, workers: int | None) -> None:
        self.queue_depth = queue_depth
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        yield from WEB_REGISTRY.collect()
        reachable = self.workers is not None
        yield GaugeMetricFamily(
            "digits_redis_up", "1 when this scrape could read Redis, else 0.", value=int(reachable)
        )
        if self.queue_depth is not None:
            yield GaugeMetricFamily(
                "digits_queue_depth",
                "Requests waiting in Redis for a worker to take them (LLEN of the inference "
                "queue) at scrape time.",
                value=self.queue_depth,
            )
        if self.workers is not None:
            yield GaugeMetricFamily(
                "digits_workers",
                "Inference workers alive (a fresh heartbeat in Redis) at scrape time.",
                value=self.workers,
            )


# --- A worker ------------------------------------------------------------------------------------

BATCH_SIZE = Histogram(
    "digits_batch_size",
    "Images scored in one model call; one observation per model batch.",
    buckets=_BATCH_BUCKETS,
    registry=WORKER_REGISTRY,
)
QUEUE_WAIT = Histogram(
    "digits_queue_wait_seconds",
    "Seconds from a request's publishing by the web process to the start of its batch.",
    buckets=_REQUEST_BUCKETS,
    registry=WORKER_REGISTRY,
)
PREPROCESS = Histogram(
    "digits_preprocess_seconds",
    "Seconds to decode and preprocess one image.",
    buckets=_STEP_BUCKETS,
    registry=WORKER_REGISTRY,
)
INFERENCE = Histogram(
    "digits_inference_seconds",
    "Seconds of one model call (one batch).",
    buckets=_STEP_BUCKETS,
    registry=WORKER_REGISTRY,
)
WORKER_ANSWERS = Counter(
    "digits_worker_answers",
    "Answers this worker sent (or tried to: see digits_worker_unsent_total), by outcome: "
    "`prediction`, `feedback_saved` or the error code.",
    ["outcome"],
    registry=WORKER_REGISTRY,
)
WORKER_ANSWERS.labels(PREDICTION)
WORKER_ANSWERS.labels(protocol.FEEDBACK_LIMIT)
WORKER_DROPPED = Counter(
    "digits_worker_dropped",
    "Requests dropped unanswered because their deadline had passed (their client was told "
    "`timeout`).",
    registry=WORKER_REGISTRY,
)
WORKER_UNSENT = Counter(
    "digits_worker_unsent",
    "Answers the channel layer refused or could not take (their client gets `timeout`).",
    registry=WORKER_REGISTRY,
)
MODEL_INFO = Gauge(
    "digits_model_info",
    "1 for the model this worker serves now, labelled with its version and device.",
    ["version", "device"],
    registry=WORKER_REGISTRY,
)
MODEL_SWAPS = Counter(
    "digits_model_swaps",
    "Times this worker switched to new weights without a restart.",
    registry=WORKER_REGISTRY,
)


def model_loaded(version: str, device: str) -> None:
    """The worker serves this model now (the info gauge holds one label set at a time)."""
    MODEL_INFO.clear()
    MODEL_INFO.labels(version=version, device=device).set(1)


def model_swapped(version: str, device: str) -> None:
    model_loaded(version, device)
    MODEL_SWAPS.inc()


def worker_answered(frames: Iterable[Mapping[str, Any]]) -> int:
    """Count the answer frames a worker sent; returns how many there were."""
    count = 0
    for frame in frames:
        WORKER_ANSWERS.labels(outcome(frame)).inc()
        count += 1
    return count


class RateMeter:
    """Events a second over the last `span` seconds, from samples of a running total.

    The worker's heartbeat samples its answer count on every beat and publishes the rate, so
    the status page shows every worker's throughput with no state in the web process.
    """

    def __init__(self, span: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.span = span
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, total: int) -> float:
        now = self._clock()
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.span:
            self._samples.popleft()
        then, before = self._samples[0]
        return (total - before) / (now - then) if now > then else 0.0


# --- Who may read the metrics --------------------------------------------------------------------


class AllowList:
    """The networks allowed to read the metrics and the status page (DIGITS_METRICS_ALLOWED).

    An IPv4 client seen on an IPv6 socket (`::ffff:10.0.0.7`) is judged by its IPv4 address;
    an address that is not an IP address at all (a Unix socket's peer) is refused.
    """

    def __init__(self, networks: Sequence[str]) -> None:
        self.networks = [ipaddress.ip_network(n.strip(), strict=False) for n in networks]

    def allows(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address((address or "").strip("[]"))
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)


# --- A worker's metrics server -------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Prometheus scrapes every few seconds: no access log line for each."""


class WorkerMetricsServer:
    """The worker's registry over HTTP at `/metrics` (any path answers, as prometheus_client's
    own server does), for the allowed networks only, from a daemon thread."""

    def __init__(self, port: int, allowed: AllowList, addr: str = "0.0.0.0") -> None:
        metrics_app = make_wsgi_app(WORKER_REGISTRY)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if not allowed.allows(environ.get("REMOTE_ADDR")):
                start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8")])
                return [b"Metrics are only served to the networks in DIGITS_METRICS_ALLOWED.\n"]
            return metrics_app(environ, start_response)

        self._httpd = make_server(addr, port, app, _Server, handler_class=_QuietHandler)
        self.port: int = self._httpd.server_port
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="digits-metrics", daemon=True
        )
        self._thread.start()

    def url(self, host: str) -> str:
        """Where a scraper finds it, on `host` (a name or an address, IPv6 in brackets)."""
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def start_worker_server(port: int, allowed: AllowList) -> WorkerMetricsServer | None:
    """The worker's metrics server on `port` (0: a free one), or None when it cannot listen
    there: a worker without metrics still serves requests, so a taken port is logged, never
    fatal."""
    try:
        return WorkerMetricsServer(port, allowed)
    except OSError as exc:
        logger.error(
            "Cannot serve this worker's metrics on port %d (DIGITS_WORKER_METRICS_PORT): %s. "
            "The worker serves requests without them.",
            port,
            exc,
        )
        return None

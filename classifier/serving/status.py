"""The service's numbers: `/metrics` for Prometheus, `/status/` and `/status.json` for people.

`/metrics` is this web process's registry (classifier.serving.metrics) plus what only Redis
knows, read at scrape time: the requests waiting in the inference queue and the live workers.
Each worker serves its own metrics; their URLs are in /readyz and on the status page.

`/status/` is a page that polls `/status.json` every two seconds: the live workers (from their
heartbeats: model, device, answers a second, metrics URL), the queue depth, and this web
process's last ten minutes of answers (classifier.serving.window). With several web processes,
each shows its own answers; Prometheus sums them.

All three are refused (403) to clients outside DIGITS_METRICS_ALLOWED: they say how busy the
service is and which model it runs, which is the operator's business. All are async views, so
a slow Redis never ties up a thread.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client.exposition import choose_encoder

from classifier.serving import metrics, presence

# The status page's charts: the window in groups of this many seconds, and the span of the
# headline figures (answers a second, p50, p95).
STATUS_STEP = 5
STATUS_RECENT = 60
# How often the page polls /status.json (ms); the template hands it to the script.
STATUS_POLL_MS = 2000

View = Callable[..., Awaitable[HttpResponse]]


def readers_only(view: View) -> View:
    """Refuse, with 403, clients outside DIGITS_METRICS_ALLOWED."""

    @functools.wraps(view)
    async def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        allowed = metrics.AllowList(settings.DIGITS_METRICS_ALLOWED)
        if not allowed.allows(request.META.get("REMOTE_ADDR")):
            return HttpResponseForbidden(
                "Metrics and status are only served to the networks in DIGITS_METRICS_ALLOWED.",
                content_type="text/plain; charset=utf-8",
            )
        return await view(request, *args, **kwargs)

    return guarded


async def read_redis() -> tuple[int | None, list[dict[str, Any]] | None]:
    """(requests waiting in the inference queue, live workers) now; (None, None) when Redis
    cannot be read. A client of its own per call: a scrape every few seconds does not need a
    pool, and nothing is left tied to the event loop that served it."""
    client = redis.asyncio.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=presence.REDIS_TIMEOUT,
        socket_connect_timeout=presence.REDIS_TIMEOUT,
    )
    try:
        # The Celery queue is a Redis list named after it (kombu's Redis transport).
        depth = int(await client.llen(settings.DIGITS_INFERENCE_QUEUE))
        workers = await presence.read_workers(client, settings.DIGITS_INFERENCE_QUEUE)
    except (redis.RedisError, OSError):
        return None, None
    finally:
        await client.aclose()
    return depth, workers


@never_cache
@require_safe
@readers_only
async def prometheus(request: HttpRequest) -> HttpResponse:
    depth, workers = await read_redis()
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    scrape = metrics.ScrapeTime(depth, None if workers is None else len(workers))
    return HttpResponse(encoder(scrape), content_type=content_type)


@never_cache
@require_safe
@readers_only
async def status_page(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "frontend/status.html",
        {"poll_ms": STATUS_POLL_MS, "poll_seconds": f"{STATUS_POLL_MS / 1000:g}"},
    )


@never_cache
@require_safe
@readers_only
async def status_json(request: HttpRequest) -> JsonResponse:
    depth, workers = await read_redis()
    window = metrics.WINDOW
    totals = window.totals()
    recent_errors = window.summary(window.span)["outcomes"]
    errors = [
        {"code": code, "recent": recent_errors.get(code, 0), "total": total}
        for code, total in sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        if code != metrics.PREDICTION
    ]
    return JsonResponse(
        {
            "time": time.time(),
            "queue": settings.DIGITS_INFERENCE_QUEUE,
            "redis": "unreachable" if workers is None else "ok",
            "queue_depth": depth,
            "workers": workers or [],
            "connections": _gauge_value(metrics.WEBSOCKET_CONNECTIONS),
            "answers_total": sum(totals.values()),
            "recent": {"seconds": STATUS_RECENT, **window.summary(STATUS_RECENT)},
            "series": {
                "step": STATUS_STEP,
                "seconds": window.span,
                "points": window.series(STATUS_STEP),
            },
            "errors": errors,
        }
    )


def _gauge_value(gauge: Any) -> float:
    (family,) = gauge.collect()
    return family.samples[0].value

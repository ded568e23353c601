"""Health endpoints for operators and orchestrators.

`/healthz` (liveness): the web process answers HTTP; it checks nothing else, so a Redis outage
never gets a healthy web process restarted. `/readyz` (readiness): Redis answers and at least one
inference worker with a model loaded is alive (its heartbeat, `classifier.serving.presence`);
the JSON body says which workers serve which model, or why the service is not ready, with
status 503.
Both are async views: a slow Redis never ties up a thread.
"""

from __future__ import annotations

import redis
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from classifier.serving import presence


@never_cache
@require_safe
async def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_safe
async def readyz(request: HttpRequest) -> JsonResponse:
    body: dict[str, object] = {"ready": False, "queue": settings.DIGITS_INFERENCE_QUEUE}
    try:
        workers = await presence.from_settings().workers()
    except (redis.RedisError, OSError) as exc:
        body.update(redis="unreachable", reason=f"Redis is unreachable: {exc}", workers=[])
        return JsonResponse(body, status=503)
    body.update(redis="ok", workers=workers)
    if not workers:
        body["reason"] = "No inference worker with a model loaded is alive."
        return JsonResponse(body, status=503)
    body["ready"] = True
    return JsonResponse(body)

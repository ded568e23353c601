"""The answers both ways in (the websocket consumer and the HTTP API) give for the same events.

Why one module: a client reads the same sentence for the same refusal whichever way it came in,
and the two front doors cannot drift apart in what they say or how they stamp the server's time.
Each builds an error frame (protocol.error) from the settings in force.
"""

from __future__ import annotations

import time

from django.conf import settings

from classifier.serving import protocol
from classifier.serving.messages import PREDICTION, ErrorFrame, ServerFrame


def rate_limited(request_id: str | None) -> ErrorFrame:
    """Over the token bucket (DIGITS_RATE_LIMIT, DIGITS_RATE_BURST)."""
    return protocol.error(
        request_id,
        protocol.RATE_LIMITED,
        f"Too many requests: the limit is {settings.DIGITS_RATE_LIMIT:g} a second "
        f"(bursts of {settings.DIGITS_RATE_BURST}); please slow down.",
    )


def too_many_in_flight(request_id: str | None, where: str) -> ErrorFrame:
    """Over DIGITS_MAX_IN_FLIGHT; `where` says whose requests count ("on this connection")."""
    return protocol.error(
        request_id,
        protocol.RATE_LIMITED,
        f"Too many requests in flight {where} (the limit is {settings.DIGITS_MAX_IN_FLIGHT}); "
        "wait for answers before sending more.",
    )


def no_worker(request_id: str | None) -> ErrorFrame:
    return protocol.error(
        request_id,
        protocol.UNAVAILABLE,
        "No model worker is running just now, so nobody can answer; please try again shortly.",
    )


def not_queued(request_id: str | None) -> ErrorFrame:
    """The publish failed (Redis unreachable, typically)."""
    return protocol.error(
        request_id,
        protocol.UNAVAILABLE,
        "The service could not take the request just now; please try again.",
    )


def lost(request_id: str | None) -> ErrorFrame:
    """The channel layer lost Redis while the request was in flight: its answer cannot come."""
    return protocol.error(
        request_id,
        protocol.UNAVAILABLE,
        "The service lost this request while restarting; please try again.",
    )


def timed_out(request_id: str | None) -> ErrorFrame:
    return protocol.error(
        request_id,
        protocol.TIMEOUT,
        f"No answer within {settings.DIGITS_REQUEST_TIMEOUT:g} s; please try again.",
    )


def stamp_server_time(frame: ServerFrame, received: float) -> ServerFrame:
    """Add `timings_ms.server` (since `received`, a time.perf_counter()) to a worker's answer
    that has timings (a prediction); returns the frame."""
    if frame["type"] == PREDICTION:
        frame["timings_ms"]["server"] = round((time.perf_counter() - received) * 1000, 3)
    return frame

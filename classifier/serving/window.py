"""The web process's last minutes of answers, second by second, for the status page.

Why its own: the status page (/status/, classifier/serving/status.py) must show answers a second and
latency percentiles without a Prometheus server to ask. So the web process keeps one slot per
second for the last `span` seconds: the answers by outcome, and a histogram of the latencies on
fixed log-spaced bounds (2**(1/4) apart, so a percentile read off it is within about 10%).
Percentiles over any run of seconds come from adding those histograms: bounded memory however
many requests a second arrive, where a list of every latency would grow with the traffic.

Latencies are kept for the requests that went to a worker (a prediction, a worker's error, a
`timeout`, one lost with Redis): the wait a person sees while their drawing is read. Requests
refused at once (a bad frame, `rate_limited`, `unavailable` with no worker) are counted, but
their microseconds would only hide a slow service under a flood of refusals.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from classifier.serving.protocol import PREDICTION

# Upper bounds (ms) of the latency buckets: 0.25 ms to about 2 minutes, then one for the rest.
LATENCY_BOUNDS_MS = tuple(0.25 * 2 ** (i / 4) for i in range(77))


class _Second:
    __slots__ = ("latencies", "outcomes", "second")

    def __init__(self, second: int) -> None:
        self.second = second
        self.outcomes: Counter[str] = Counter()
        self.latencies: list[int] | None = None  # counts per bucket, once there is one


class RollingWindow:
    """Answers per second over the last `span` seconds (thread-safe; `clock` is epoch seconds,
    so a point's time means the same to the browser)."""

    def __init__(self, span: int = 600, clock: Callable[[], float] = time.time) -> None:
        self.span = span
        self._clock = clock
        self._slots: list[_Second | None] = [None] * span
        self._totals: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, outcome: str, seconds: float, queued: bool) -> None:
        """One answer sent: its outcome, and its latency when the request went to a worker."""
        second = math.floor(self._clock())
        with self._lock:
            index = second % self.span
            slot = self._slots[index]
            if slot is None or slot.second != second:
                slot = self._slots[index] = _Second(second)
            slot.outcomes[outcome] += 1
            self._totals[outcome] += 1
            if queued:
                if slot.latencies is None:
                    slot.latencies = [0] * (len(LATENCY_BOUNDS_MS) + 1)
                slot.latencies[bisect.bisect_left(LATENCY_BOUNDS_MS, seconds * 1000)] += 1

    def totals(self) -> dict[str, int]:
        """Answers by outcome since the process started."""
        with self._lock:
            return dict(self._totals)

    def series(self, step: int, until: int | None = None) -> list[dict[str, Any]]:
        """The window in groups of `step` seconds, oldest first, ending with the last whole
        second: each group's start (epoch seconds), answers, errors, answers a second, and the
        p50 and p95 latency in ms (None without latencies)."""
        end = (math.floor(self._clock()) - 1) if until is None else until
        count = self.span // step
        return [
            self._group(end - (count - k) * step + 1, end - (count - k - 1) * step)
            for k in range(count)
        ]

    def summary(self, seconds: int) -> dict[str, Any]:
        """The last `seconds` whole seconds as one group, plus its answers by outcome."""
        end = math.floor(self._clock()) - 1
        group = self._group(end - seconds + 1, end)
        group["outcomes"] = self._outcomes(end - seconds + 1, end)
        return group

    def _group(self, first: int, last: int) -> dict[str, Any]:
        answers = errors = 0
        latencies = [0] * (len(LATENCY_BOUNDS_MS) + 1)
        with self._lock:
            for slot in self._slots_between(first, last):
                total = sum(slot.outcomes.values())
                answers += total
                errors += total - slot.outcomes[PREDICTION]
                if slot.latencies is not None:
                    latencies = [a + b for a, b in zip(latencies, slot.latencies, strict=True)]
        return {
            "t": first,
            "answers": answers,
            "errors": errors,
            "per_second": round(answers / (last - first + 1), 3),
            "p50_ms": percentile(latencies, 0.50),
            "p95_ms": percentile(latencies, 0.95),
        }

    def _outcomes(self, first: int, last: int) -> dict[str, int]:
        outcomes: Counter[str] = Counter()
        with self._lock:
            for slot in self._slots_between(first, last):
                outcomes.update(slot.outcomes)
        return dict(outcomes)

    def _slots_between(self, first: int, last: int) -> list[_Second]:
        """The slots of seconds first..last that are still in the window (lock held)."""
        first = max(first, last - self.span + 1)
        slots = []
        for second in range(first, last + 1):
            slot = self._slots[second % self.span]
            if slot is not None and slot.second == second:
                slots.append(slot)
        return slots


def percentile(counts: list[int], q: float) -> float | None:
    """The `q` quantile (ms) of latencies counted per bucket of LATENCY_BOUNDS_MS, interpolated
    within its bucket; None when there are none."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index == len(LATENCY_BOUNDS_MS):
                return round(LATENCY_BOUNDS_MS[-1], 2)  # beyond the last bound
            low = LATENCY_BOUNDS_MS[index - 1] if index else 0.0
            high = LATENCY_BOUNDS_MS[index]
            return round(low + (high - low) * (rank - seen) / count, 2)
        seen += count
    return round(LATENCY_BOUNDS_MS[-1], 2)

"""Per-client limits of the websocket: a token bucket per connection, connections per address.

Plain logic with an injectable clock, so the consumer stays thin and the arithmetic is tested
without a server. Both are per web process: several web processes behind a load balancer each
apply them (a proxy's own limits cover the whole site).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable


class TokenBucket:
    """Allows `rate` events a second on average and bursts of up to `burst` at once.

    A `rate` of 0 or less means no limit. Refused events take no token, so a client that
    backs off is served again as soon as the bucket refills.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()

    def take(self) -> bool:
        """Take one token if there is one; False means the event is over the limit."""
        if self.rate <= 0:
            return True
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class ConnectionCounter:
    """Open connections per client address; `acquire` refuses those over a limit."""

    def __init__(self) -> None:
        self._open: Counter[str] = Counter()

    def acquire(self, address: str, limit: int) -> bool:
        """Count a new connection from `address`, unless `limit` (> 0) are open already; False
        (and nothing counted) then."""
        if limit > 0 and self._open[address] >= limit:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def count(self, address: str) -> int:
        return self._open[address]

"""The per-client limits' arithmetic (classifier/serving/limits.py), on a clock the test turns."""

from __future__ import annotations

from classifier.serving.limits import ConnectionCounter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def takes(bucket: TokenBucket, attempts: int) -> int:
    return sum(bucket.take() for _ in range(attempts))


def test_a_full_bucket_allows_a_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=2, burst=5, clock=Clock())
    assert takes(bucket, 8) == 5


def test_the_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2, burst=5, clock=clock)
    takes(bucket, 5)
    clock.now += 1.0
    assert takes(bucket, 5) == 2
    clock.now += 0.25
    assert not bucket.take()  # half a token
    clock.now += 0.25
    assert bucket.take()
    clock.now += 3600
    assert takes(bucket, 10) == 5  # never more than the burst


def test_refused_events_take_nothing() -> None:
    """A client hammering an empty bucket is served as soon as one token is back."""
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=1, clock=clock)
    assert bucket.take()
    for _ in range(100):
        clock.now += 0.005
        bucket.take()
    clock.now += 0.51  # 1.01 s after the last token was taken
    assert bucket.take()


def test_a_rate_of_zero_means_no_limit() -> None:
    assert takes(TokenBucket(rate=0, burst=1, clock=Clock()), 10_000) == 10_000


def test_connections_are_counted_per_address_up_to_the_limit() -> None:
    counter = ConnectionCounter()
    assert [counter.acquire("10.0.0.1", 2) for _ in range(3)] == [True, True, False]
    assert counter.acquire("10.0.0.2", 2)  # another address has its own count
    assert counter.count("10.0.0.1") == 2
    counter.release("10.0.0.1")
    assert counter.acquire("10.0.0.1", 2)
    for _ in range(2):
        counter.release("10.0.0.1")
    assert counter.count("10.0.0.1") == 0
    assert "10.0.0.1" not in counter._open  # no memory kept for addresses that left


def test_a_limit_of_zero_means_no_limit() -> None:
    counter = ConnectionCounter()
    assert all(counter.acquire("10.0.0.1", 0) for _ in range(1000))

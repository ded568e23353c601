"""How runstack decides to restart a dead worker (classifier.management.devstack.RestartPolicy),
on a fake clock; the real processes are in tests/e2e/test_runstack.py."""

from __future__ import annotations

import pytest

from classifier.management.devstack import RestartPolicy, worker_metrics_port


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_worker_that_dies_at_once_waits_1_2_4_8_16_s_then_the_sixth_exit_stops_it(
    clock: FakeClock,
) -> None:
    policy = RestartPolicy(clock=clock)
    delays = []
    for number in range(1, 6):
        decision = policy.exited("worker1")
        assert decision.restart
        assert decision.restarts == number
        delays.append(decision.delay)
        clock.now += decision.delay + 3  # the wait, then a start that fails after 3 s
    assert delays == [1, 2, 4, 8, 16]
    last = policy.exited("worker1")  # 46 s after the first exit: still within the minute
    assert not last.restart
    assert last.exits == {"worker1": 6}


def test_the_limit_counts_restarts_of_all_workers_together(clock: FakeClock) -> None:
    policy = RestartPolicy(limit=3, clock=clock)
    assert policy.exited("worker1").restart
    assert policy.exited("worker2").restart
    clock.now += 10
    assert policy.exited("worker2").restart
    decision = policy.exited("worker1")
    assert not decision.restart
    assert decision.exits == {"worker1": 2, "worker2": 2}


def test_restarts_older_than_the_window_no_longer_count(clock: FakeClock) -> None:
    policy = RestartPolicy(limit=2, window=60, clock=clock)
    assert policy.exited("worker1").restart
    clock.now += 30
    assert policy.exited("worker1").restart
    clock.now += 30.5  # the first restart is now more than 60 s old
    decision = policy.exited("worker1")
    assert decision.restart
    assert decision.restarts == 2
    assert decision.exits == {"worker1": 2}


def test_a_worker_that_ran_for_a_whole_window_starts_again_from_the_first_backoff(
    clock: FakeClock,
) -> None:
    policy = RestartPolicy(backoff=1, clock=clock)
    assert policy.exited("worker1").delay == 1
    clock.now += 5
    assert policy.exited("worker1").delay == 2
    clock.now += 61  # it served for more than a minute
    assert policy.exited("worker1").delay == 1


def test_each_worker_has_its_own_backoff(clock: FakeClock) -> None:
    policy = RestartPolicy(backoff=0.5, clock=clock)
    assert policy.exited("worker1").delay == 0.5
    assert policy.exited("worker1").delay == 1.0
    assert policy.exited("worker2").delay == 0.5


def test_the_backoff_stops_doubling_at_its_maximum(clock: FakeClock) -> None:
    policy = RestartPolicy(limit=100, backoff=1, backoff_max=5, clock=clock)
    delays = [policy.exited("worker1").delay for _ in range(6)]
    assert delays == [1, 2, 4, 5, 5, 5]


def test_a_limit_of_zero_never_restarts(clock: FakeClock) -> None:
    decision = RestartPolicy(limit=0, clock=clock).exited("worker1")
    assert not decision.restart
    assert decision.exits == {"worker1": 1}


@pytest.mark.parametrize(
    "options",
    [{"limit": -1}, {"window": 0}, {"backoff": -1}, {"backoff": 10, "backoff_max": 5}],
)
def test_nonsense_limits_are_refused(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**options)  # type: ignore[arg-type]


def test_the_limit_reads_as_the_issue_puts_it() -> None:
    assert RestartPolicy().describe_limit() == "at most 5 a minute"
    assert RestartPolicy(limit=2, window=10).describe_limit() == "at most 2 in 10 s"


def test_each_worker_of_a_stack_gets_its_own_metrics_port_or_a_free_one() -> None:
    assert [worker_metrics_port(9101, i) for i in (1, 2, 3)] == [9101, 9102, 9103]
    assert [worker_metrics_port(0, i) for i in (1, 2)] == [0, 0]

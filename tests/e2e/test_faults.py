"""Faults, for real: a worker SIGKILLed mid-batch, no worker at all, Redis killed and restarted,
weights that cannot be served.

The service runs on a Redis of this module's own (the machine's shared one must stay up), with
two workers and one uvicorn started exactly as `make run` starts them. Every test of the running
service checks that every accepted request got exactly one answer (a prediction, or an error
saying why), and ends with a good request answered. The figures are printed (`pytest -s`)
for docs/testing.md.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import websockets

from classifier.management.devstack import EmbeddedRedis, worker_argv
from classifier.serving import protocol
from classifier.serving.presence import registry_key
from tests.helpers import Stack, render_digit_png, service_env, shipped_weights

pytestmark = pytest.mark.slow

# This suite's request deadline: long enough for a loaded 2-core machine to start over.
DEADLINE = 20.0
# Unacknowledged requests go back to the queue after this long (DIGITS_REDELIVER_AFTER).
REDELIVER_AFTER = 3.0
# How long a test waits for its answers: past the deadline, so silence would show.
WAIT = DEADLINE + 20


def figures(name: str, counts: dict[str, Any]) -> None:
    """The counts docs/testing.md reports (visible with `pytest -s`)."""
    print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in counts.items()))


@pytest.fixture(scope="module")
def service(
    private_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, Stack]]:
    """Two stacks on the private Redis and one queue: `main` (worker A and uvicorn) and
    `spare` (worker B only). The workers start together."""
    tag = uuid.uuid4().hex[:8]
    names = {"DIGITS_INFERENCE_QUEUE": f"faults-{tag}", "DIGITS_CHANNEL_PREFIX": f"faults-{tag}"}
    env = service_env(
        private_redis.url,
        names,
        DIGITS_WEIGHTS=str(shipped_weights()),
        DIGITS_REQUEST_TIMEOUT=str(DEADLINE),
        DIGITS_REDELIVER_AFTER=str(REDELIVER_AFTER),
    )
    directory = tmp_path_factory.mktemp("faults")
    main = Stack(directory / "main", env, shipped_weights())
    spare = Stack(directory / "spare", env, shipped_weights())
    for stack in (main, spare):
        stack.directory.mkdir()
    try:
        starting = threading.Thread(target=spare.start_worker)
        starting.start()
        main.start()
        starting.join()
        assert spare.worker is not None and spare.worker.poll() is None, spare.log_tail()
        yield main, spare
    finally:
        for stack in (main, spare):
            if stack.worker is not None and stack.worker.poll() is None:
                os.kill(stack.worker.pid, signal.SIGCONT)
            stack.stop()


def readiness(stack: Stack) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(stack.http_url + "readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def unacked_ids(url: str) -> set[str]:
    """Ids of the requests a worker holds without having acknowledged them (kombu's `unacked`
    hash: a delivered message waits there until its ack, or its redelivery)."""
    client = redis.Redis.from_url(url)
    try:
        held = client.hgetall("unacked")
    finally:
        client.close()
    ids = set()
    for raw in held.values():
        message, _exchange, _routing_key = json.loads(raw)
        _args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        ids.add(kwargs["id"])
    return ids


async def collect(client: Any, ids: set[str], stamps: dict[str, float]) -> dict[str, Any]:
    """The answers to `ids`, each stamped with its arrival; then a short wait proves no id is
    answered twice (receive_many fails on a second answer)."""
    answers = await client.receive_many(len(ids), timeout=WAIT)
    for request_id in answers:
        stamps[request_id] = time.monotonic()
    assert answers.keys() == ids
    with pytest.raises(TimeoutError):
        await client.receive(timeout=2)
    return answers


def good_request(stack: Stack) -> dict[str, Any]:
    async def ask() -> dict[str, Any]:
        async with stack.client() as client:
            return await client.predict(render_digit_png(8))

    return asyncio.run(ask())


def test_a_worker_killed_mid_batch_loses_no_request(
    service: tuple[Stack, Stack], private_redis: EmbeddedRedis
) -> None:
    """Worker B is paused, so worker A takes every request; A is SIGKILLed while it holds
    requests it has not acknowledged (mid-batch), and B resumes. Those requests go back to
    the queue after DIGITS_REDELIVER_AFTER and B answers them: every request gets exactly one
    answer, and the ones A died with are answered with predictions, within the deadline."""
    main, spare = service
    sockets, per_socket = 3, 8
    image = render_digit_png(2, size=1200)  # about a tenth of a second of work each
    stamps: dict[str, float] = {}
    orphans: set[str] = set()
    killed_at = 0.0

    def kill_a_mid_batch() -> None:
        nonlocal killed_at, orphans
        wait_until(lambda: unacked_ids(private_redis.url), 30, "worker A holds requests")
        main.kill_worker()
        killed_at = time.monotonic()
        orphans = unacked_ids(private_redis.url)  # A is dead: nobody will acknowledge these
        os.kill(spare.worker.pid, signal.SIGCONT)

    async def scenario() -> dict[str, Any]:
        async with main.client() as c0, main.client() as c1, main.client() as c2:
            clients = [c0, c1, c2]
            ids = [{f"s{n}-{k}" for k in range(per_socket)} for n in range(sockets)]
            for client, socket_ids in zip(clients, ids, strict=True):
                for request_id in sorted(socket_ids):
                    await client.send_image(request_id, image)
            killing = asyncio.create_task(asyncio.to_thread(kill_a_mid_batch))
            results = await asyncio.gather(
                *(collect(c, i, stamps) for c, i in zip(clients, ids, strict=True))
            )
            await killing
            return {k: v for answers in results for k, v in answers.items()}

    os.kill(spare.worker.pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # B's pending BRPOP (1 s) runs out: B takes nothing more
        answers = asyncio.run(scenario())
    finally:
        os.kill(spare.worker.pid, signal.SIGCONT)

    codes = Counter(
        a["type"] if a["type"] == protocol.PREDICTION else a["code"] for a in answers.values()
    )
    answered_after_kill = sum(stamps[i] > killed_at for i in answers)
    redelivered = [i for i in orphans if answers[i]["type"] == protocol.PREDICTION]
    figures(
        "worker SIGKILL mid-batch",
        {
            "requests": len(answers),
            "held_unacknowledged_by_killed_worker": len(orphans),
            "redelivered_and_answered": len(redelivered),
            "answered_after_kill": answered_after_kill,
            **codes,
        },
    )
    assert set(codes) <= {protocol.PREDICTION, protocol.TIMEOUT}, codes
    assert orphans, "worker A was killed holding no request"
    assert redelivered, "no request of the killed worker was redelivered and answered"
    assert all(answers[i]["digit"] == 2 for i in redelivered)
    assert unacked_ids(private_redis.url) == set()  # nothing is left behind
    assert good_request(main)["type"] == protocol.PREDICTION


def test_with_no_worker_alive_requests_are_answered_unavailable_at_once(
    service: tuple[Stack, Stack],
) -> None:
    """Every worker SIGKILLed: their heartbeats expire, /readyz says so, and requests are
    answered `unavailable` at once instead of waiting out the deadline in silence. A worker
    started again serves the next request."""
    main, spare = service
    for stack in (main, spare):
        stack.kill_worker()
    wait_until(lambda: readiness(main)[0] == 503, 30, "/readyz reports no worker")
    _, body = readiness(main)
    assert (
        body["redis"] == "ok" and body["workers"] == [] and "No inference worker" in body["reason"]
    )

    async def ask() -> tuple[dict[str, dict[str, Any]], float]:
        async with main.client() as client:
            started = time.monotonic()
            for k in range(5):
                await client.send_image(f"nobody-{k}", render_digit_png(4))
            answers = await client.receive_many(5, timeout=WAIT)
            return answers, time.monotonic() - started

    answers, waited = asyncio.run(ask())
    figures(
        "no worker alive",
        {
            "requests": len(answers),
            "seconds_for_all": round(waited, 2),
            **Counter(a["code"] for a in answers.values()),
        },
    )
    assert {a["code"] for a in answers.values()} == {protocol.UNAVAILABLE}
    assert all("No model worker" in a["message"] for a in answers.values())

    main.start_worker()
    wait_until(lambda: readiness(main)[0] == 200, 30, "/readyz reports the new worker")
    assert good_request(main)["type"] == protocol.PREDICTION


def test_redis_killed_and_restarted_under_traffic_everything_reconnects(
    service: tuple[Stack, Stack], private_redis: EmbeddedRedis
) -> None:
    """Four sockets keep asking while Redis is SIGKILLed and, 2 s later, started again on the
    same port (empty: no persistence). No socket is closed; every request gets one answer
    (`unavailable` while Redis is down, predictions before and after); web and worker reconnect
    by themselves, and a new socket is served too."""
    main, _ = service
    if main.worker is None or main.worker.poll() is not None:
        main.start_worker()
    image = render_digit_png(6)
    phase = {"now": "before"}
    log: list[tuple[str, str, str]] = []  # (phase sent in, id, outcome)
    closed: list[str] = []
    restarted_at: list[float] = []
    served_again: list[float] = []

    async def traffic(number: int, stop: asyncio.Event, recovered: asyncio.Event) -> None:
        after = 0
        async with main.client() as client:
            k = 0
            while not stop.is_set() or after < 3:
                request_id = f"s{number}-{k}"
                k += 1
                sent_in = phase["now"]
                try:
                    await client.send_image(request_id, image)
                    answer = await client.receive(timeout=WAIT)
                except websockets.exceptions.ConnectionClosed:
                    closed.append(request_id)
                    return
                assert answer["id"] == request_id, answer
                outcome = (
                    answer["type"] if answer["type"] == protocol.PREDICTION else answer["code"]
                )
                log.append((sent_in, request_id, outcome))
                if sent_in == "after" and outcome == protocol.PREDICTION:
                    after += 1
                    served_again.append(time.monotonic())
                if after >= 3:
                    recovered.set()
                await asyncio.sleep(0.05)

    async def outage(stop: asyncio.Event) -> None:
        await asyncio.sleep(1.0)
        phase["now"] = "outage"
        private_redis.process.kill()
        private_redis.process.wait()
        await asyncio.sleep(2.0)
        await asyncio.to_thread(private_redis.start)
        phase["now"] = "after"
        restarted_at.append(time.monotonic())
        stop.set()

    async def scenario() -> None:
        stop = asyncio.Event()
        recovered = [asyncio.Event() for _ in range(4)]
        await asyncio.wait_for(
            asyncio.gather(outage(stop), *(traffic(n, stop, recovered[n]) for n in range(4))),
            timeout=120,
        )

    asyncio.run(scenario())
    by_phase = {p: Counter(o for s, _, o in log if s == p) for p in ("before", "outage", "after")}
    figures(
        "Redis SIGKILL + restart under traffic",
        {
            "requests": len(log),
            "sockets_closed": len(closed),
            "s_from_restart_to_first_prediction": round(min(served_again) - restarted_at[0], 2),
            **{f"{p}:{o}": n for p, c in by_phase.items() for o, n in sorted(c.items())},
        },
    )
    assert not closed, f"sockets closed by the outage: {closed}"
    assert len({i for _, i, _ in log}) == len(log)  # one answer each
    assert {o for _, _, o in log} <= {protocol.PREDICTION, protocol.UNAVAILABLE, protocol.TIMEOUT}
    assert by_phase["before"][protocol.PREDICTION] >= 4
    assert by_phase["outage"][protocol.UNAVAILABLE] >= 1
    assert by_phase["after"][protocol.PREDICTION] >= 12  # three on each socket
    wait_until(lambda: readiness(main)[0] == 200, 30, "/readyz is ready again")
    assert good_request(main)["type"] == protocol.PREDICTION
    assert main.web.poll() is None and main.worker.poll() is None  # nothing was restarted


def test_a_worker_with_truncated_weights_refuses_to_start_saying_why(
    private_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """It exits non-zero naming the file and the reason, and never announces itself (so the
    web side keeps answering `unavailable` and /readyz stays 503). Missing and foreign files:
    tests/serving/test_worker.py."""
    path = tmp_path / "digits-cnn.safetensors"
    path.write_bytes(shipped_weights().read_bytes()[:20_000])
    queue = f"refusing-{uuid.uuid4().hex[:8]}"
    env = service_env(
        private_redis.url,
        {"DIGITS_INFERENCE_QUEUE": queue, "DIGITS_CHANNEL_PREFIX": queue},
        DIGITS_WEIGHTS=str(path),
    )
    done = subprocess.run(
        worker_argv(f"{queue}@%h"), env=env, capture_output=True, text=True, timeout=180
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "cannot start" in output and str(path) in output
    assert "truncated" in output
    client = redis.Redis.from_url(private_redis.url)
    assert not client.exists(registry_key(queue))  # never announced
    client.close()

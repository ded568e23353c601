"""`make run`: `manage.py runstack` starts Redis, a worker and uvicorn, restarts a worker that
dies, and stops them all.

The restart tests print their figures (`pytest -s`): answers by kind, and how long after the
SIGKILL predictions came back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from classifier.management.devstack import free_port, port_open
from classifier.serving import protocol
from classifier.serving.tasks import READY_MESSAGE
from tests.helpers import (
    REPO,
    UNLIMITED,
    WORKER_START_TIMEOUT,
    DigitsClient,
    delete_queue,
    render_digit_png,
    shipped_weights,
)

SERVING = "Digits is serving at"
STARTED = re.compile(r"Started (\w+) \(pid (\d+)\)")


class Runstack:
    """`manage.py runstack ...` in a child process, its output collected line by line."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "runstack", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float, count: int = 1) -> None:
        """Wait until `text` is in the output (`count` times)."""
        deadline = time.monotonic() + timeout
        while self.output.count(text) < count:
            tail = self.output[-5000:]
            assert self.process.poll() is None, f"runstack exited early:\n{tail}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{tail}"
            time.sleep(0.1)

    def finish(self, timeout: float) -> int:
        """Wait for runstack to exit and its output to be read; return its exit code."""
        code = self.process.wait(timeout)
        self._reader.join(10)
        return code

    def started(self, name: str) -> list[int]:
        """The pids runstack logged starting `name` with, in order ("Started worker1 (pid N)")."""
        return [int(pid) for who, pid in STARTED.findall(self.output) if who == name]

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def stop(self) -> None:
        """SIGTERM (runstack stops its processes in order), then SIGKILL for it and them: they
        run in sessions of their own and would outlive a killed runstack."""
        if self.process.poll() is not None:
            return
        children = self.children()
        self.process.terminate()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            for pid in [self.process.pid, *children]:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait()


def alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def make_run_env(**overrides: str) -> dict[str, str]:
    """The environment `make run` gives runstack: DEBUG on, no REDIS_URL unless told."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update({"DIGITS_DEBUG": "1", "DIGITS_DEVICE": "cpu", "PYTHONUNBUFFERED": "1", **overrides})
    return env


def test_make_run_runs_runstack_with_debug_on() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "run"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "DIGITS_DEBUG=${DIGITS_DEBUG:-1}" in dry_run
    assert "manage.py runstack" in dry_run


@pytest.mark.slow
def test_with_no_redis_url_it_starts_a_private_redis_serves_and_stops_cleanly() -> None:
    port = free_port()
    runstack = Runstack(["--port", str(port)], make_run_env())
    try:
        runstack.wait_for(SERVING, WORKER_START_TIMEOUT)
        runstack.wait_for(READY_MESSAGE, WORKER_START_TIMEOUT)
        match = re.search(r"Private Redis at redis://127\.0\.0\.1:(\d+)/", runstack.output)
        assert match, runstack.output
        redis_port = int(match[1])
        children = runstack.children()
        assert len(children) == 3  # redis-server, the worker, uvicorn

        async def one_prediction() -> dict[str, Any]:
            client = DigitsClient.connect(
                f"ws://127.0.0.1:{port}/ws/predict/", f"http://127.0.0.1:{port}"
            )
            async with client as connected:
                return await connected.predict(render_digit_png(8))

        answer = asyncio.run(one_prediction())
        assert answer["type"] == protocol.PREDICTION
        assert answer["digit"] == 8

        runstack.process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert runstack.process.wait(60) == 0, runstack.output
    finally:
        runstack.stop()
    assert not port_open("127.0.0.1", port)
    assert not port_open("127.0.0.1", redis_port)
    assert not [pid for pid in children if alive(pid)]


@pytest.mark.slow
def test_when_a_process_dies_the_rest_stop_and_it_fails(redis_url: str) -> None:
    port = free_port()
    runstack = Runstack(["--only", "web", "--port", str(port)], make_run_env(REDIS_URL=redis_url))
    try:
        runstack.wait_for(SERVING, 60)
        assert f"Using Redis at {redis_url}" in runstack.output
        [web] = runstack.children()
        os.kill(web, signal.SIGKILL)
        assert runstack.process.wait(30) != 0
    finally:
        runstack.stop()
    assert "The web process exited" in runstack.output


# --- Supervision: a dead worker is restarted --------------------------------------------------


def stack_env(redis_url: str, **overrides: str) -> dict[str, str]:
    """`make run`'s environment against the session's Redis, with a queue and channel prefix of
    this test's own, the per-client limits off, and each worker's metrics on a free port."""
    tag = uuid.uuid4().hex[:10]
    return make_run_env(
        REDIS_URL=redis_url,
        DIGITS_INFERENCE_QUEUE=f"test-runstack-{tag}",
        DIGITS_CHANNEL_PREFIX=f"test-runstack-{tag}",
        DIGITS_WORKER_METRICS_PORT="0",
        DIGITS_WORKER_METRICS_HOST="127.0.0.1",
        **UNLIMITED,
        **overrides,
    )


def batches_by_worker(port: int) -> dict[str, float]:
    """Model batches each worker has run so far, by node name: `digits_batch_size_count` from
    the metrics URL each worker's heartbeat lists in /readyz."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
        workers = json.loads(response.read())["workers"]
    batches = {}
    for worker in workers:
        with urllib.request.urlopen(worker["metrics"], timeout=5) as response:
            text = response.read().decode()
        batches[worker["node"]] = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "digits_batch_size_count"
        )
    return batches


@dataclass
class Traffic:
    """What the clients saw: every answer with the times its request went and came back."""

    sent: int = 0
    answers: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # ids answered twice, or never asked
    unanswered: int = 0

    def kinds(self) -> Counter[str]:
        return Counter(a.get("code", a["type"]) for _, _, a in self.answers)

    def first_prediction_sent_after(self, moment: float) -> float | None:
        """When the first prediction to a request sent after `moment` came back."""
        times = [
            received
            for sent, received, answer in self.answers
            if sent > moment and answer["type"] == protocol.PREDICTION
        ]
        return min(times, default=None)


async def drive(
    url: str,
    origin: str,
    clients: int,
    inflight: int,
    traffic: Traffic,
    stop: asyncio.Event,
) -> None:
    """`clients` sockets, each keeping `inflight` requests outstanding until `stop`, then
    waiting for the answers to all of them."""
    image = render_digit_png(3)

    async def one(number: int) -> None:
        pending: dict[str, float] = {}
        async with DigitsClient.connect(url, origin) as client:

            async def send() -> None:
                request_id = f"c{number}-{traffic.sent}"
                traffic.sent += 1
                pending[request_id] = time.monotonic()
                await client.send_image(request_id, image)

            for _ in range(inflight):
                await send()
            while pending:
                try:
                    answer = await client.receive(timeout=30)
                except TimeoutError:
                    break
                sent_at = pending.pop(answer["id"], None)
                if sent_at is None:
                    traffic.unexpected.append(answer["id"])
                    continue
                traffic.answers.append((sent_at, time.monotonic(), answer))
                if answer["type"] != protocol.PREDICTION:
                    await asyncio.sleep(0.05)  # `unavailable` comes at once: no busy loop
                if not stop.is_set():
                    await send()
            traffic.unanswered += len(pending)

    await asyncio.gather(*(one(n) for n in range(clients)))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_worker_killed_under_traffic_is_restarted_and_every_request_is_answered(
    redis_url: str, workers: int
) -> None:
    port = free_port()
    env = stack_env(redis_url)
    runstack = Runstack(["--port", str(port), "--workers", str(workers)], env)
    victim = f"worker{workers}"  # with two, worker1 serves on while worker2 is restarted
    traffic = Traffic()
    try:
        runstack.wait_for(SERVING, WORKER_START_TIMEOUT)
        runstack.wait_for(READY_MESSAGE, WORKER_START_TIMEOUT, count=workers)
        [pid] = runstack.started(victim)

        async def scenario() -> dict[str, Any]:
            stop = asyncio.Event()
            load = asyncio.create_task(
                drive(
                    f"ws://127.0.0.1:{port}/ws/predict/",
                    f"http://127.0.0.1:{port}",
                    clients=8,
                    inflight=2,
                    traffic=traffic,
                    stop=stop,
                )
            )
            await asyncio.sleep(3)
            batches = await asyncio.to_thread(batches_by_worker, port)
            killed_at = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            resumed_at = None
            while resumed_at is None and time.monotonic() - killed_at < WORKER_START_TIMEOUT:
                await asyncio.sleep(0.1)
                resumed_at = traffic.first_prediction_sent_after(killed_at)
            await asyncio.sleep(2)  # serving on after the restart
            stop.set()
            await load
            return {
                "killed_at": killed_at,
                "resumed_at": resumed_at or float("inf"),
                "batches": batches,
            }

        times = asyncio.run(scenario())
        assert runstack.process.poll() is None, runstack.output[-5000:]
        restarted = runstack.started(victim)
        children = runstack.children()
        runstack.process.send_signal(signal.SIGINT)  # Ctrl-C stops the restarted stack too
        assert runstack.finish(60) == 0, runstack.output[-5000:]
        assert not [child for child in children if alive(child)]
    finally:
        runstack.stop()
        delete_queue(redis_url, env["DIGITS_INFERENCE_QUEUE"])

    kinds = traffic.kinds()
    resumed_after = times["resumed_at"] - times["killed_at"]
    print(
        f"\n[runstack] {workers} worker(s), {victim} SIGKILLed under traffic: {traffic.sent} "
        f"sent, answers {dict(kinds)}, predictions again {resumed_after:.1f} s after the kill; "
        f"batches by worker before it: {times['batches']}"
    )
    # Every request answered exactly once: a prediction, or an error while the worker was gone.
    assert not traffic.unexpected
    assert traffic.unanswered == 0
    assert len(traffic.answers) == traffic.sent
    assert set(kinds) <= {protocol.PREDICTION, protocol.UNAVAILABLE, protocol.TIMEOUT}, kinds
    errors_before_kill = [
        a for _, received, a in traffic.answers if "code" in a and received < times["killed_at"]
    ]
    assert not errors_before_kill
    # Every worker ran batches before the kill (each listed in /readyz with its metrics).
    assert len(times["batches"]) == workers, times
    assert all(count > 0 for count in times["batches"].values()), times
    if workers > 1:
        # The other worker was alive throughout: nobody was told that none is.
        assert kinds[protocol.UNAVAILABLE] == 0, kinds
    # Serving again within seconds: the 1 s backoff, then a worker start on a busy 2-core machine.
    assert resumed_after < 30, runstack.output[-5000:]
    # The same slot restarted once, and the restart said so plainly.
    assert len(restarted) == 2 and restarted[0] == pid and not alive(pid)
    assert (
        f"{victim} exited with code -9; restarting in 1.0 s (restart 1 of at most 5 a minute)"
    ) in runstack.output


@pytest.mark.slow
def test_a_worker_that_keeps_dying_stops_everything_after_five_restarts(
    redis_url: str, tmp_path: Path
) -> None:
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(shipped_weights().read_bytes()[:1000])
    port = free_port()
    env = stack_env(redis_url, DIGITS_WEIGHTS=str(truncated))
    # The limit (5 restarts a minute) with a short backoff: 0.1, 0.2, 0.4, 0.4, 0.4 s.
    args = ["--port", str(port), "--restart-backoff", "0.1", "--restart-backoff-max", "0.4"]
    runstack = Runstack(args, env)
    try:
        code = runstack.finish(6 * WORKER_START_TIMEOUT)
        [web] = runstack.started("web")
        workers = runstack.started("worker1")
    finally:
        runstack.stop()
        delete_queue(redis_url, env["DIGITS_INFERENCE_QUEUE"])
    output = runstack.output
    assert code != 0, output[-5000:]
    assert len(workers) == 6, output[-5000:]  # the first start and five restarts
    delays = re.findall(r"worker1 exited with code 1; restarting in ([\d.]+) s", output)
    assert delays == ["0.1", "0.2", "0.4", "0.4", "0.4"], output[-5000:]
    assert "(restart 5 of at most 5 a minute)" in output
    assert (
        "worker1 exited with code 1. Worker exits within 60 s: worker1 6 times; that is more "
        "restarts than allowed (at most 5 a minute), so everything was stopped."
    ) in output
    assert "The Digits worker cannot start" in output  # the worker's own reason, in the log
    assert not port_open("127.0.0.1", port)
    assert not [pid for pid in [web, *workers] if alive(pid)]

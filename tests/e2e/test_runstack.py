"""`make run`: `manage.py runstack` starts Redis, a worker and daphne, and stops them all."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from classifier.serving import protocol
from classifier.serving.tasks import READY_MESSAGE
from digits_site.devstack import free_port, port_open
from tests.helpers import REPO, WORKER_START_TIMEOUT, DigitsClient, render_digit_png

SERVING = "Digits is serving at"


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

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            tail = self.output[-5000:]
            assert self.process.poll() is None, f"runstack exited early:\n{tail}"
            assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{tail}"
            time.sleep(0.1)

    def children(self) -> list[int]:
        path = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return [int(pid) for pid in path.read_text().split()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
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
        assert len(children) == 3  # redis-server, the worker, daphne

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

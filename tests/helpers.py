"""Helpers for tests of the running service: the stack, test images, a websocket client.

The fixtures that build these live in tests/conftest.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import websockets
from django.conf import settings
from PIL import Image

from classifier.management.devstack import free_port, stop_process, web_argv, worker_argv
from classifier.ml.training.alphabets import fonts_for
from classifier.ml.training.canvas import TEMPLATES, render_template
from classifier.serving import protocol
from classifier.serving.protocol import PREDICT_PATH

REPO = Path(__file__).resolve().parents[1]
MACHINE_REDIS = "redis://127.0.0.1:6379/0"
# The weights the repository ships (what a fresh clone serves).
SHIPPED_WEIGHTS = REPO / "classifier" / "weights" / "digits-cnn.safetensors"
# DejaVu draws the Latin, Greek, Cyrillic, Hebrew, Arabic, Armenian and Georgian letters; a
# machine without fonts-dejavu-core draws the other non-digit families only (the code logs which).
needs_dejavu = pytest.mark.skipif(
    not fonts_for("A"),
    reason="fonts-dejavu-core is not installed (apt-get install fonts-dejavu-core)",
)
# A Python process importing torch and loading a model shares two cores with everything else.
WORKER_START_TIMEOUT = 120.0
WEB_START_TIMEOUT = 60.0
# How long a test waits for one answer (the service's own deadline is DIGITS_REQUEST_TIMEOUT).
ANSWER_TIMEOUT = 30.0
# The service's deadline in tests: long enough for a loaded CI machine, short enough to test.
TEST_REQUEST_TIMEOUT = 10.0


# Settings that turn the per-client abuse limits off.
UNLIMITED = {
    "DIGITS_RATE_LIMIT": "0",
    "DIGITS_MAX_IN_FLIGHT": "100000",
    "DIGITS_MAX_CONNECTIONS_PER_CLIENT": "0",
}


def service_env(redis_url: str, names: dict[str, str], **overrides: str) -> dict[str, str]:
    """The environment for a service process in tests: production-like (DEBUG off, a secret
    key), this session's Redis and names, the CPU, unbuffered logs."""
    env = os.environ.copy()
    env.update(
        {
            "REDIS_URL": redis_url,
            "DIGITS_DEBUG": "0",
            "DIGITS_SECRET_KEY": "test-" + uuid.uuid4().hex,
            "DIGITS_DEVICE": "cpu",
            "DIGITS_REQUEST_TIMEOUT": str(TEST_REQUEST_TIMEOUT),
            "DIGITS_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # Tests drive one socket far harder than a person does; the abuse limits are tested
            # on the consumer in-process (tests/serving/test_consumers.py).
            **UNLIMITED,
            # Several test stacks run workers at once: each takes a free metrics port.
            "DIGITS_WORKER_METRICS_PORT": "0",
            **names,
            **overrides,
        }
    )
    return env


def delete_queue(url: str, queue: str) -> None:
    """Remove a test's Celery queue and kombu's binding for it (never anyone else's keys)."""
    client = redis.Redis.from_url(url)
    with contextlib.suppress(redis.RedisError):
        client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    client.close()


def shipped_weights() -> Path:
    """The weights the service would serve: settings.DIGITS_WEIGHTS (by default the committed
    classifier/weights/digits-cnn.safetensors)."""
    path = Path(settings.DIGITS_WEIGHTS)
    if not path.is_file():
        pytest.fail(f"No weights at {path}: train them (`make train`) first.")
    return path


# --- The stack: a real worker and a real uvicorn --------------------------------------------


# How long `manage.py migrate` may take for a stack's new database.
MIGRATE_TIMEOUT = 120.0


class Stack:
    """One Celery worker and one uvicorn, started with `runstack`'s command lines.

    Each stack has a database of its own, a SQLite file in its directory (unless its env names
    a DATABASE_URL): the worker stores corrections there, and the service's default, in the
    data folder, may be shared by other checkouts. It is migrated before the first process
    starts, as `runstack` does for `make run`.
    """

    def __init__(self, directory: Path, env: dict[str, str], weights_path: Path) -> None:
        self.directory = directory
        self.env = {"DATABASE_URL": f"sqlite:///{directory.resolve() / 'digits.sqlite3'}", **env}
        self.weights_path = weights_path
        self._migrated = False
        self.port = free_port()
        self.http_url = f"http://127.0.0.1:{self.port}/"
        self.ws_url = f"ws://127.0.0.1:{self.port}/{PREDICT_PATH}"
        self.origin = f"http://127.0.0.1:{self.port}"
        self.worker: subprocess.Popen[bytes] | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self.worker_log = directory / "worker.log"
        self.web_log = directory / "web.log"

    def _spawn(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            out.write(f"\n--- {' '.join(argv)}\n".encode())
            out.flush()
            return subprocess.Popen(
                argv, env=self.env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def sqlite_path(self) -> Path | None:
        """The stack's SQLite database file; None when its DATABASE_URL is another database."""
        prefix = "sqlite:///"
        url = self.env["DATABASE_URL"]
        return Path(url[len(prefix) :]) if url.startswith(prefix) else None

    def migrate(self, timeout: float = MIGRATE_TIMEOUT) -> None:
        """Apply the migrations to the stack's database (once; later calls do nothing)."""
        if self._migrated:
            return
        if self.sqlite_path is not None:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "--verbosity", "0"],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed ({done.returncode}):\n{done.stderr[-4000:]}")
        self._migrated = True

    def corrections(self) -> list[dict[str, Any]]:
        """The corrections the stack's workers stored, oldest first (read with sqlite3, not the
        test process's Django database)."""
        assert self.sqlite_path is not None, "the stack's database is not SQLite"
        with contextlib.closing(sqlite3.connect(self.sqlite_path)) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM corrections_correction ORDER BY id").fetchall()
        return [dict(row) for row in rows]

    def start_worker(self, timeout: float = WORKER_START_TIMEOUT) -> None:
        """Start the worker and wait for its ready line (model loaded, consuming)."""
        # Imported here: the task module loads torch, which only a worker's tests need.
        from classifier.serving.tasks import READY_MESSAGE

        assert self.worker is None or self.worker.poll() is not None, "worker already running"
        self.migrate()
        offset = self.worker_log.stat().st_size if self.worker_log.exists() else 0
        nodename = f"test-{uuid.uuid4().hex[:8]}@%h"
        self.worker = self._spawn(worker_argv(nodename), self.worker_log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.worker_log.open("rb") as log:
                log.seek(offset)
                if READY_MESSAGE.encode() in log.read():
                    return
            if self.worker.poll() is not None:
                raise RuntimeError(
                    f"The worker exited ({self.worker.returncode}).\n{self.log_tail()}"
                )
            time.sleep(0.1)
        raise RuntimeError(f"The worker was not ready in {timeout:.0f} s.\n{self.log_tail()}")

    def stop_worker(self, timeout: float = 20.0) -> None:
        if self.worker is not None:
            stop_process(self.worker, timeout)

    def kill_worker(self) -> None:
        """SIGKILL, for fault tests: no warm shutdown, nothing acknowledged or restored."""
        if self.worker is not None and self.worker.poll() is None:
            self.worker.kill()
            self.worker.wait()

    def start_web(self, timeout: float = WEB_START_TIMEOUT) -> None:
        """Start uvicorn and wait until the websocket endpoint accepts a connection."""
        assert self.web is None or self.web.poll() is not None, "web already running"
        self.migrate()
        self.web = self._spawn(web_argv("127.0.0.1", self.port), self.web_log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.web.poll() is not None:
                raise RuntimeError(f"uvicorn exited ({self.web.returncode}).\n{self.log_tail()}")
            if asyncio.run(self._ws_accepts()):
                return
            time.sleep(0.1)
        raise RuntimeError(f"uvicorn was not ready in {timeout:.0f} s.\n{self.log_tail()}")

    async def _ws_accepts(self) -> bool:
        try:
            async with websockets.connect(self.ws_url, origin=self.origin, open_timeout=2):
                return True
        except (OSError, websockets.exceptions.WebSocketException, TimeoutError):
            return False

    def stop_web(self, timeout: float = 10.0) -> None:
        if self.web is not None:
            stop_process(self.web, timeout)

    def restart_web(self) -> None:
        """Stop uvicorn and start it again on the same port (clients must reconnect)."""
        self.stop_web()
        self.start_web()

    def client(self, origin: str | None = None) -> Any:
        """`async with stack.client() as client:` a connected DigitsClient."""
        return DigitsClient.connect(self.ws_url, origin or self.origin)

    def start(self) -> None:
        self.start_worker()
        self.start_web()

    def stop(self) -> None:
        self.stop_web()
        self.stop_worker()

    def worker_log_text(self) -> str:
        return self.worker_log.read_text(errors="replace") if self.worker_log.exists() else ""

    def log_tail(self, chars: int = 6000) -> str:
        parts = []
        for log in (self.worker_log, self.web_log):
            if log.exists():
                parts.append(f"=== {log.name}\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


# --- Images -------------------------------------------------------------------------------------


def mnist_test_digit(digit: int, index: int = 0) -> np.ndarray | None:
    """The `index`-th MNIST test image of `digit` (28x28 uint8, white ink on black), or None
    when MNIST is not where DIGITS_DATA_DIR points."""
    raw = Path(settings.DIGITS_DATA_DIR) / "MNIST" / "raw"
    images_path, labels_path = raw / "t10k-images-idx3-ubyte", raw / "t10k-labels-idx1-ubyte"
    if not (images_path.is_file() and labels_path.is_file()):
        return None
    labels = np.frombuffer(labels_path.read_bytes(), dtype=np.uint8, offset=8)
    images = np.frombuffer(images_path.read_bytes(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    return images[np.flatnonzero(labels == digit)[index]]


def render_digit_png(
    digit: int, index: int = 0, size: int = 280, ink_on_white: bool = True
) -> bytes:
    """A handwritten `digit` as a canvas-sized PNG, dark ink on a white background by default.

    The `index`-th MNIST test image of it, scaled up smoothly, when MNIST is at hand; else (a
    clone with no dataset beside it) the `index`-th stroke template of it drawn with a round
    brush (classifier.ml.training.canvas), so that the service's tests need no dataset.
    """
    mnist = mnist_test_digit(digit, index)
    if mnist is None:
        variants = list(TEMPLATES[digit])
        style = "inverted" if ink_on_white else "page"
        image = render_template(digit, variants[index % len(variants)], style=style, size=size)
        return png_bytes(image.convert("RGBA"))
    image = Image.fromarray(mnist).resize((size, size), Image.Resampling.BILINEAR)
    if ink_on_white:
        image = Image.eval(image, lambda v: 255 - v)
    return png_bytes(image.convert("RGBA"))


def blank_png(size: int = 280, colour: tuple[int, int, int, int] = (255, 255, 255, 255)) -> bytes:
    return png_bytes(Image.new("RGBA", (size, size), colour))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes, media_type: str = "image/png") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def predict_frame(request_id: str, image: bytes, media_type: str = "image/png") -> str:
    return json.dumps(
        {"type": protocol.PREDICT, "id": request_id, "image": data_url(image, media_type)}
    )


def feedback_frame(
    request_id: str,
    image: bytes,
    digit: int,
    predicted: int | None = None,
    model: str | None = None,
    media_type: str = "image/png",
) -> str:
    """A correction: `digit` was drawn; `predicted` and `model` are what the client was told."""
    return json.dumps(
        {
            "type": protocol.FEEDBACK,
            "id": request_id,
            "image": data_url(image, media_type),
            "digit": digit,
            "predicted": predicted,
            "model": model,
        }
    )


# --- A websocket client -------------------------------------------------------------------------


class DigitsClient:
    """A client of /ws/predict/ (the `websockets` library): several requests in flight, answers
    matched by id. Use `async with stack.client() as client:` (or `DigitsClient.connect`)."""

    def __init__(self, connection: websockets.ClientConnection) -> None:
        self.connection = connection
        self.sent_at: dict[str, float] = {}

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, ws_url: str, origin: str) -> Any:
        async with websockets.connect(
            ws_url, origin=origin, max_size=None, open_timeout=10
        ) as connection:
            yield cls(connection)

    async def send_image(
        self, request_id: str, image: bytes, media_type: str = "image/png"
    ) -> None:
        self.sent_at[request_id] = time.perf_counter()
        await self.connection.send(predict_frame(request_id, image, media_type))

    async def feedback(
        self,
        image: bytes,
        digit: int,
        answer: dict[str, Any] | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """Say `digit` was drawn (after `answer`, the prediction the page showed, if any) and
        wait for the answer."""
        request_id = request_id or uuid.uuid4().hex
        predicted = answer["digit"] if answer else None
        model = answer["model"] if answer else None
        await self.connection.send(feedback_frame(request_id, image, digit, predicted, model))
        reply = await self.receive()
        assert reply["id"] == request_id, reply
        return reply

    async def send_raw(self, frame: str | bytes) -> None:
        await self.connection.send(frame)

    async def receive(self, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.connection.recv(), timeout))

    async def receive_many(
        self, count: int, timeout: float = ANSWER_TIMEOUT
    ) -> dict[str, dict[str, Any]]:
        """`count` answers, by id (an id answered twice fails the test)."""
        answers: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < count:
            answer = await self.receive(max(0.01, deadline - time.monotonic()))
            assert answer["id"] not in answers, f"answered twice: {answer['id']!r}"
            answers[answer["id"]] = answer
        return answers

    async def predict(self, image: bytes, request_id: str | None = None) -> dict[str, Any]:
        """Send one image and wait for its answer."""
        request_id = request_id or uuid.uuid4().hex
        await self.send_image(request_id, image)
        answer = await self.receive()
        assert answer["id"] == request_id, answer
        return answer

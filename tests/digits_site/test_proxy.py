"""Proxy headers are trusted only from the proxy: a real uvicorn, started with the command line
`devstack.web_argv` builds from the settings, is sent a forged X-Forwarded-For (and
X-Forwarded-Proto) by a client that is not in DIGITS_TRUSTED_PROXIES, and by one that is.

The client's address decides /metrics (DIGITS_METRICS_ALLOWED, here only 203.0.113.0/24, a
documentation network no test machine has): the forged address must not open it. The scheme
decides the HTTPS redirect (DIGITS_HTTPS): a forged `https` must not skip it.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from classifier.management.devstack import free_port, port_open, stop_process
from tests.helpers import REPO, WEB_START_TIMEOUT

ARGV = """
import json, django
django.setup()
from django.conf import settings
from classifier.management.devstack import web_argv
print(json.dumps({"argv": web_argv("127.0.0.1", %d), "trusted": settings.DIGITS_TRUSTED_PROXIES}))
"""
# The client networks allowed to read /metrics: not 127.0.0.1, where the test connects from.
ALLOWED = "203.0.113.0/24"


def env_for(**env: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DIGITS_", "REDIS_"))}
    return {
        **base,
        "DJANGO_SETTINGS_MODULE": "digits_site.settings",
        "DIGITS_SECRET_KEY": "test-" + uuid.uuid4().hex,
        "DIGITS_DEBUG": "0",
        "DIGITS_METRICS_ALLOWED": ALLOWED,
        "DIGITS_HTTPS": "1",
        "REDIS_URL": "redis://127.0.0.1:1/0",  # /metrics says Redis is down; it still answers
        **env,
    }


def web_command(port: int, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ARGV % port],
        cwd=REPO,
        env=env_for(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def uvicorn(**env: str) -> Iterator[int]:
    """A real uvicorn on a free port, run as `runstack` runs it, with these settings."""
    port = free_port()
    done = web_command(port, **env)
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout.strip().splitlines()[-1])["argv"]
    process = subprocess.Popen(
        argv, cwd=REPO, env=env_for(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + WEB_START_TIMEOUT
        while not port_open("127.0.0.1", port):
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.1)
        yield port
    finally:
        stop_process(process, 10)


def get(port: int, path: str, **headers: str) -> int:
    """The status of GET `path` (redirects not followed)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": "localhost", **headers})
        return connection.getresponse().status
    finally:
        connection.close()


FORGED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


@pytest.mark.slow
def test_a_client_outside_the_trusted_proxies_cannot_forge_its_address() -> None:
    with uvicorn(DIGITS_BEHIND_PROXY="1", DIGITS_TRUSTED_PROXIES="10.99.0.0/16") as port:
        assert get(port, "/metrics", **FORGED) == 403  # still 127.0.0.1, not 203.0.113.7
        assert get(port, "/", **FORGED) == 301  # still plain HTTP: redirected to HTTPS


@pytest.mark.slow
def test_the_trusted_proxy_is_believed_and_what_its_client_forged_is_not() -> None:
    with uvicorn(DIGITS_BEHIND_PROXY="1", DIGITS_TRUSTED_PROXIES="127.0.0.0/8") as port:
        assert get(port, "/metrics") == 403  # the proxy's own address is not allowed
        assert get(port, "/metrics", **FORGED) == 200  # the client the proxy names is
        assert get(port, "/", **FORGED) == 200  # HTTPS at the proxy: no redirect
        # The client sent "X-Forwarded-For: 203.0.113.7" itself; the proxy appended the
        # address it really came from. The right-most address outside the proxies counts.
        chain = {**FORGED, "X-Forwarded-For": "203.0.113.7, 198.51.100.9"}
        assert get(port, "/metrics", **chain) == 403


def test_behind_a_proxy_the_trusted_networks_are_required_and_checked() -> None:
    done = web_command(8000, DIGITS_BEHIND_PROXY="1")
    assert done.returncode != 0
    assert "DIGITS_TRUSTED_PROXIES is not" in done.stderr
    done = web_command(8000, DIGITS_BEHIND_PROXY="1", DIGITS_TRUSTED_PROXIES="10.0.0.0/8,*")
    assert done.returncode != 0
    assert "DIGITS_TRUSTED_PROXIES: '*' is not a network" in done.stderr

    done = web_command(
        8000, DIGITS_BEHIND_PROXY="1", DIGITS_TRUSTED_PROXIES="10.1.2.3/8, 192.168.4.4,fd00::/8"
    )
    assert done.returncode == 0, done.stderr
    values = json.loads(done.stdout.strip().splitlines()[-1])
    assert values["trusted"] == ["10.0.0.0/8", "192.168.4.4/32", "fd00::/8"]
    argv = values["argv"]
    assert "--proxy-headers" in argv
    assert argv[argv.index("--forwarded-allow-ips") + 1] == "10.0.0.0/8,192.168.4.4/32,fd00::/8"

    done = web_command(8000, DIGITS_TRUSTED_PROXIES="10.0.0.0/8")  # no proxy: no headers
    assert done.returncode == 0, done.stderr
    argv = json.loads(done.stdout.strip().splitlines()[-1])["argv"]
    assert "--no-proxy-headers" in argv and "--forwarded-allow-ips" not in argv

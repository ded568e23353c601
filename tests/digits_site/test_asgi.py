"""The ASGI entry point refuses to serve in production without a real secret key."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers import REPO

IMPORT_APP = "import digits_site.asgi as a; print(type(a.application).__name__)"


def import_asgi(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DIGITS_")}
    return subprocess.run(
        [sys.executable, "-c", IMPORT_APP],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_serves_with_a_secret_key() -> None:
    done = import_asgi(DIGITS_DEBUG="0", DIGITS_SECRET_KEY="a-real-secret")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ProtocolTypeRouter"


def test_without_debug_it_needs_a_secret_key() -> None:
    done = import_asgi(DIGITS_DEBUG="0")
    assert done.returncode != 0
    assert "Set DIGITS_SECRET_KEY" in done.stderr

"""Headless Chromium (Debian's package) driven by Playwright, pointed at the real stack.

Playwright's own browser download needs the internet, so the tests launch the system Chromium
(`make browser` installs it). Every page a test opens is screenshotted into
test-artifacts/frontend/ when the test ends, pass or fail, for a person to look at.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "frontend"
LAPTOP = {"viewport": {"width": 1280, "height": 800}}
PHONE = {
    "viewport": {"width": 360, "height": 740},
    "device_scale_factor": 3,
    "is_mobile": True,
    "has_touch": True,
}
# Generous: the first answers come from a worker that shares two CPU cores with everything.
ANSWER_TIMEOUT_MS = 20_000
# Also for `expect(...)` assertions, which do not follow the context's default timeout.
expect.set_options(timeout=ANSWER_TIMEOUT_MS)
# Console noise that is expected: failed reconnection attempts while the server restarts.
EXPECTED_CONSOLE = re.compile(r"WebSocket connection to .* failed")


@dataclass
class Visit:
    """An open page and what it did: the predict requests it sent and any errors it raised."""

    page: Page
    context: BrowserContext
    name: str
    sent: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def snapshot(self, label: str) -> None:
        """Keep a screenshot of the page as it is now, beside the one taken at the end."""
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=ARTIFACTS / f"{self.name}-{label}.png", full_page=True)

    def predictions_sent(self) -> int:
        return sum(1 for message in self.sent if message.get("type") == "predict")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's package (`make browser`).")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(
    browser: Browser, stack: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Visit]]:
    """Open `/` of the running stack in a fresh browser context (laptop-sized unless told
    otherwise) and wait until its socket is connected."""
    visits: list[Visit] = []
    name = re.sub(r"[^\w.-]+", "-", request.node.name).strip("-")

    def open_(**context_options: Any) -> Visit:
        context = browser.new_context(**{**LAPTOP, **context_options})
        context.set_default_timeout(ANSWER_TIMEOUT_MS)
        page = context.new_page()
        visit = Visit(page=page, context=context, name=name)
        visits.append(visit)
        page.on("pageerror", lambda error: visit.errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                visit.errors.append(f"console: {message.text}")
                if message.type == "error" and not EXPECTED_CONSOLE.search(message.text)
                else None
            ),
        )
        page.on(
            "websocket",
            lambda socket: socket.on(
                "framesent",
                lambda payload: (
                    visit.sent.append(json.loads(payload)) if isinstance(payload, str) else None
                ),
            ),
        )
        page.goto(stack.http_url.rstrip("/") + "/")
        expect(page.locator("html")).to_have_attribute("data-connection", "connected")
        return visit

    yield open_

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for index, visit in enumerate(visits):
        suffix = f"-{index + 1}" if len(visits) > 1 else ""
        visit.page.screenshot(path=ARTIFACTS / f"{name}{suffix}.png", full_page=True)
        visit.context.close()
    errors = [error for visit in visits for error in visit.errors]
    assert not errors, f"the page reported errors: {errors}"

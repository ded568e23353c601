"""The status page (/status/) in a real browser against the real stack: it lists the live
worker with its model, and its figures move by themselves when requests are answered."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.helpers import blank_png, render_digit_png

from .conftest import ARTIFACTS, EXPECTED_CONSOLE, LAPTOP, PHONE

pytestmark = pytest.mark.slow

OpenStatus = Callable[..., Page]


@pytest.fixture
def open_status(browser: Browser, stack: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Open /status/ of the running stack in a fresh context; screenshot it at the end, and
    fail the test on any error the page raised."""
    contexts, errors = [], []
    name = re.sub(r"[^\w.-]+", "-", request.node.name).strip("-")

    def open_(**context_options: Any) -> Page:
        context = browser.new_context(**{**LAPTOP, **context_options})
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on(
            "console",
            lambda message: (
                errors.append(f"console: {message.text}")
                if message.type == "error" and not EXPECTED_CONSOLE.search(message.text)
                else None
            ),
        )
        page.goto(stack.http_url + "status/")
        expect(page.locator("#freshness")).to_have_attribute("data-state", "connected")
        return page

    yield open_

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for index, context in enumerate(contexts):
        suffix = f"-{index + 1}" if len(contexts) > 1 else ""
        context.pages[0].screenshot(path=ARTIFACTS / f"{name}{suffix}.png", full_page=True)
        context.close()
    assert not errors, f"the page reported errors: {errors}"


def send_requests(stack: Any, digits: int, blanks: int) -> None:
    """Requests from a websocket client, on a thread of its own (Playwright's sync API holds
    this one's event loop)."""

    async def scenario() -> None:
        async with stack.client() as client:
            for n in range(digits):
                await client.predict(render_digit_png(n % 10), f"status-{uuid.uuid4().hex[:6]}")
            for _ in range(blanks):
                answer = await client.predict(blank_png())
                assert answer["code"] == "empty", answer

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()


def served_model(stack: Any) -> str:
    with urllib.request.urlopen(stack.http_url + "readyz", timeout=10) as response:
        (worker,) = json.loads(response.read())["workers"]
    return worker["model"]


def test_the_worker_is_listed_and_the_figures_move_after_traffic(
    open_status: OpenStatus, stack: Any
) -> None:
    page = open_status()
    row = page.locator("#workers tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator("td.model")).to_have_text(served_model(stack))
    expect(row.locator("td.device")).to_have_text("cpu")
    expect(row.locator("td.metrics a")).to_have_attribute(
        "href", re.compile(r"^http://[^/]+:\d+/metrics$")
    )
    expect(page.locator("#worker-count")).to_have_text("1")
    expect(page.locator("#queue-depth")).to_have_text("0")
    total = page.locator("#answers-total")
    expect(total).to_have_attribute("data-value", re.compile(r"^\d+$"))
    before = int(total.get_attribute("data-value") or 0)

    send_requests(stack, digits=6, blanks=2)

    # Refreshing by itself: no reload, the next polls show the eight answers.
    expect(total).to_have_attribute("data-value", str(before + 8))
    expect(row.locator("td.rate")).not_to_have_text("0")
    expect(page.locator("#rate")).not_to_have_text(re.compile(r"^(0|\u2013)$"))
    expect(page.locator("#p50")).to_have_text(re.compile(r"^[\d.,]+ ms$"))
    expect(page.locator("#p95")).to_have_text(re.compile(r"^[\d.,]+ ms$"))
    # Each chart draws its series: a line, or a dot for a point alone.
    for series in ("#chart-rate .rate", "#chart-latency .p50", "#chart-latency .p95"):
        expect(page.locator(f"{series}:is(.line, .dot)").first).to_be_visible()
    empty = page.locator('#errors tr[data-code="empty"]')
    expect(empty).to_have_count(1)
    assert int(empty.locator("td.recent").inner_text()) >= 2
    expect(page.locator("#no-errors")).to_be_hidden()


def test_the_page_fits_a_phone(open_status: OpenStatus) -> None:
    page = open_status(**PHONE)
    expect(page.locator("#workers tbody tr")).to_have_count(1)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    for chart in ("#chart-rate", "#chart-latency"):
        box = page.locator(chart).bounding_box()
        assert box is not None and 0 < box["width"] <= PHONE["viewport"]["width"]

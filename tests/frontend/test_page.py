"""The drawing page in a real browser against the real stack (uvicorn, Redis, Celery worker).

Every test draws with real input events on the canvas and reads the answer the real model gave.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from .conftest import ANSWER_TIMEOUT_MS, PHONE, Visit
from .pen import (
    DIGITS,
    SEVEN_BAR,
    SEVEN_STEM,
    draw_with_mouse,
    draw_with_touch,
    ink_pixels,
    pad_box,
    swipe_with_touch,
)

pytestmark = pytest.mark.slow

OpenPage = Callable[..., Visit]


def request_id(page: Page) -> int:
    """The id of the request whose answer is on screen (0 when none is)."""
    return int(page.locator("#answer").get_attribute("data-request-id") or 0)


def wait_for_newest_answer(visit: Visit, timeout_ms: int = ANSWER_TIMEOUT_MS) -> None:
    """Wait until the answer on screen is the one to the last request the page sent."""
    for _ in range(timeout_ms // 50):
        if visit.sent and request_id(visit.page) == int(visit.sent[-1]["id"]):
            return
        visit.page.wait_for_timeout(50)
    raise AssertionError(f"no answer to request {visit.sent[-1]['id'] if visit.sent else None}")


def expect_blank(page: Page) -> None:
    expect(page.locator("#prediction")).to_have_text("")
    expect(page.locator("#confidence")).to_have_text("")
    expect(page.locator("#preview")).to_be_hidden()
    assert ink_pixels(page) == 0


@pytest.mark.parametrize("digit", sorted(DIGITS))
def test_drawn_digit_is_read(open_page: OpenPage, digit: str) -> None:
    page = open_page().page
    draw_with_mouse(page, DIGITS[digit])

    expect(page.locator("#prediction")).to_have_text(digit)
    expect(page.locator("#confidence")).to_have_text(re.compile(r"^\d+(\.\d)?% sure"))
    # The bar chart marks the same digit as the most likely one.
    expect(page.locator("#probabilities li.best .label")).to_have_text(f"Digit {digit}")
    # The image the model saw is shown, 28x28 pixels scaled up.
    preview = page.locator("#preview")
    expect(preview).to_be_visible()
    assert preview.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [28, 28]
    expect(page.locator("#model-version")).not_to_have_text("")
    # The backing store matches the canvas's size in device pixels: sharp, not stretched.
    width, css_width, ratio = page.locator("#pad").evaluate(
        "c => [c.width, c.getBoundingClientRect().width, devicePixelRatio]"
    )
    assert width == round(css_width * ratio)


def test_prediction_updates_while_drawing(open_page: OpenPage) -> None:
    visit = open_page()
    page = visit.page
    # A slow "1", and the button still down at the end: no stroke end, no Predict.
    draw_with_mouse(page, DIGITS["1"], pause_ms=25, release=False)
    expect(page.locator("#prediction")).to_have_text("1")
    shown_while_drawing = request_id(page)
    assert shown_while_drawing >= 1
    page.mouse.up()

    # The stroke end asks once more, and the answer on screen is the one to the newest request.
    wait_for_newest_answer(visit)
    assert request_id(page) > shown_while_drawing
    expect(page.locator("#prediction")).to_have_text("1")
    # Requests carry increasing ids and the drawing as ink: the one stroke so far, its points
    # [x, y, t] in whole pixels with times that never go back.
    ids = [int(message["id"]) for message in visit.sent]
    assert ids == sorted(set(ids))
    for message in visit.sent:
        [stroke] = message["ink"]
        assert all(len(p) == 3 and all(isinstance(v, int) for v in p) for p in stroke)
        times = [p[2] for p in stroke]
        assert times == sorted(times) and times[0] == 0


def test_live_requests_are_throttled(open_page: OpenPage) -> None:
    visit = open_page()
    page = visit.page
    left, top, side = pad_box(page)
    strokes, steps = 40, 5
    started = page.evaluate("performance.now()")
    page.mouse.move(left + side * 0.3, top + side * 0.3)
    page.mouse.down()
    # 200 pointer moves: a zigzag, each leg sampled 5 times (Playwright sends those back to back).
    for i in range(strokes):
        x = left + side * (0.3 + 0.4 * (i % 2))
        page.mouse.move(x, top + side * (0.3 + i / 100), steps=steps)
    page.mouse.up()
    elapsed_ms = page.evaluate("performance.now()") - started
    expect(page.locator("#prediction")).not_to_have_text("")
    # One live request per LIVE_INTERVAL_MS (150 ms) at most, plus the one at the stroke end,
    # however many pointer events came in.
    assert 1 <= visit.predictions_sent() <= elapsed_ms / 150 + 2
    assert visit.predictions_sent() < strokes * steps / 4


def test_undo_and_reset(open_page: OpenPage) -> None:
    page = open_page().page
    expect(page.get_by_role("button", name="Undo", exact=True)).to_be_disabled()
    expect(page.get_by_role("button", name="Reset", exact=True)).to_be_disabled()

    draw_with_mouse(page, [SEVEN_STEM])
    expect(page.locator("#prediction")).to_have_text("1")
    stem_only = ink_pixels(page)
    draw_with_mouse(page, [SEVEN_BAR])
    expect(page.locator("#prediction")).to_have_text("7")
    assert ink_pixels(page) > stem_only

    page.get_by_role("button", name="Undo", exact=True).click()
    expect(page.locator("#prediction")).to_have_text("1")
    assert ink_pixels(page) == stem_only

    page.get_by_role("button", name="Reset", exact=True).click()
    expect_blank(page)
    expect(page.get_by_role("button", name="Undo", exact=True)).to_be_disabled()

    # An answer to a drawing that was reset before it came back never shows up.
    draw_with_mouse(page, DIGITS["7"])
    page.keyboard.press("Escape")
    page.wait_for_timeout(1_500)
    expect_blank(page)


def test_keyboard_shortcuts(open_page: OpenPage) -> None:
    page = open_page().page
    draw_with_mouse(page, [SEVEN_STEM, SEVEN_BAR])
    expect(page.locator("#prediction")).to_have_text("7")

    page.keyboard.press("Control+z")
    expect(page.locator("#prediction")).to_have_text("1")

    before = request_id(page)
    page.keyboard.press("Enter")
    expect(page.locator("#answer")).not_to_have_attribute("data-request-id", str(before))
    assert request_id(page) > before
    expect(page.locator("#prediction")).to_have_text("1")

    # After a click on Undo, Enter still predicts rather than pressing Undo again.
    draw_with_mouse(page, [SEVEN_BAR])
    expect(page.locator("#prediction")).to_have_text("7")
    page.get_by_role("button", name="Undo", exact=True).click()
    expect(page.locator("#prediction")).to_have_text("1")
    before = request_id(page)
    page.keyboard.press("Enter")
    expect(page.locator("#answer")).not_to_have_attribute("data-request-id", str(before))
    expect(page.locator("#prediction")).to_have_text("1")

    page.keyboard.press("Escape")
    expect_blank(page)


def test_empty_canvas_asks_for_a_digit(open_page: OpenPage) -> None:
    visit = open_page()
    page = visit.page
    page.get_by_role("button", name="Predict", exact=True).click()
    message = page.locator("#message")
    expect(message).to_have_text("Draw a digit first: the canvas is blank.")
    # The words come from the server's `empty` code, not from a guess made in the page.
    expect(message).to_have_attribute("data-code", "empty")
    assert visit.predictions_sent() == 1
    expect(page.locator("#prediction")).to_have_text("")
    visit.snapshot("empty")

    # Drawing then clears the message and shows the answer.
    draw_with_mouse(page, DIGITS["1"])
    expect(page.locator("#prediction")).to_have_text("1")
    expect(message).to_be_hidden()


def test_touch_drawing_on_a_phone(open_page: OpenPage) -> None:
    visit = open_page(**PHONE)
    page = visit.page
    # Nothing sticks out sideways at 360 px, and the pad with its buttons fits the screen.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    _, top, side = pad_box(page)
    assert 300 <= side <= 360
    predict = page.get_by_role("button", name="Predict", exact=True).bounding_box()
    assert predict is not None and predict["y"] + predict["height"] <= 740
    # Three device pixels per CSS pixel: the backing store is three times the CSS size.
    assert page.locator("#pad").evaluate("c => c.width") == round(side * 3)

    cdp = visit.context.new_cdp_session(page)
    draw_with_touch(page, cdp, DIGITS["7"])
    expect(page.locator("#prediction")).to_have_text("7")
    # Dragging a finger over the canvas drew instead of scrolling the page...
    assert page.evaluate("window.scrollY") == 0
    # ...while the same drag outside the canvas does scroll it.
    swipe_with_touch(page, cdp, (180, top + side + 150), (180, top + side - 150))
    page.wait_for_function("window.scrollY > 0")
    page.evaluate("window.scrollTo(0, 0)")


def in_thread(function: Callable[[], None]) -> None:
    """Run a blocking call in another thread: Playwright's sync API keeps an event loop
    running in this one, so code that calls asyncio.run() (the stack's start_web) fails here."""
    with ThreadPoolExecutor(max_workers=1) as executor:
        executor.submit(function).result()


def watch_connection(page: Page) -> None:
    """Record every change of the page's connection state in window.connectionStates."""
    page.evaluate(
        """() => {
            window.connectionStates = [];
            new MutationObserver(() =>
                window.connectionStates.push(document.documentElement.dataset.connection)
            ).observe(document.documentElement, { attributeFilter: ["data-connection"] });
        }"""
    )


def test_idle_page_stays_connected(open_page: OpenPage) -> None:
    page = open_page().page
    draw_with_mouse(page, DIGITS["1"])
    expect(page.locator("#prediction")).to_have_text("1")
    watch_connection(page)
    # Longer than the channel layer's 5 s blocking read, which once dropped idle sockets.
    page.wait_for_timeout(8_000)
    assert page.evaluate("window.connectionStates") == []
    expect(page.locator("#connection")).to_have_text("Connected")


def test_page_recovers_after_server_restart(open_page: OpenPage, stack: Any) -> None:
    visit = open_page()
    page = visit.page
    draw_with_mouse(page, DIGITS["1"])
    expect(page.locator("#prediction")).to_have_text("1")
    watch_connection(page)

    in_thread(stack.restart_web)
    page.wait_for_function("window.connectionStates.includes('reconnecting')")
    expect(page.locator("html")).to_have_attribute("data-connection", "connected")
    expect(page.locator("#connection")).to_have_text("Connected")
    page.get_by_role("button", name="Reset", exact=True).click()
    draw_with_mouse(page, DIGITS["7"])
    expect(page.locator("#prediction")).to_have_text("7")

    # A digit drawn while the server is down gets its answer once the page is back.
    try:
        stack.stop_web()
        expect(page.locator("html")).not_to_have_attribute("data-connection", "connected")
        page.keyboard.press("Escape")
        draw_with_mouse(page, DIGITS["1"])
        expect(page.locator("#message")).to_contain_text("Not connected")
        expect(page.locator("#prediction")).to_have_text("")
        visit.snapshot("server-down")
    finally:
        in_thread(stack.start_web)
    expect(page.locator("#prediction")).to_have_text("1")
    expect(page.locator("#message")).to_be_hidden()


def test_no_worker_is_explained(open_page: OpenPage, stack: Any) -> None:
    visit = open_page()
    page = visit.page
    try:
        stack.stop_worker()
        draw_with_mouse(page, DIGITS["7"])
        # The service answers within its deadline even with nobody to run the model.
        message = page.locator("#message")
        expect(message).to_have_attribute("data-code", re.compile(r"^(timeout|unavailable)$"))
        expect(message).to_have_text(
            re.compile(r"^(No answer in time: |No model worker is running)")
        )
        expect(page.locator("#prediction")).to_have_text("")
        visit.snapshot("no-worker")
    finally:
        stack.start_worker()
    page.get_by_role("button", name="Predict", exact=True).click()
    expect(page.locator("#prediction")).to_have_text("7")
    expect(page.locator("#message")).to_be_hidden()


def test_reconnect_delays_grow_with_jitter_up_to_a_cap(open_page: OpenPage) -> None:
    page = open_page().page
    low, high, url = page.evaluate(
        """async () => {
            const m = await import("/static/frontend/predictions.js");
            const attempts = [...Array(12).keys()];
            return [
                attempts.map((a) => m.backoffDelay(a, () => 0)),
                attempts.map((a) => m.backoffDelay(a, () => 1)),
                m.socketUrl("/ws/predict/", { protocol: "https:", href: "https://example.org/a" }),
            ];
        }"""
    )
    assert high[:5] == [500, 1000, 2000, 4000, 8000]
    assert set(high[5:]) == {10_000}
    assert low == [delay / 2 for delay in high]
    assert url == "wss://example.org/ws/predict/"

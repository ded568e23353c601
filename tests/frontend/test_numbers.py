"""Number mode on the page, in a real browser against the real stack: a number written with the
mouse and with a finger is read whole, each digit boxed on the pad, its bars on hover or tap.

The digits are the project's stroke templates (classifier/ml/training/canvas.py), drawn side by side
on the 2:1 pad with real input events.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
from playwright.sync_api import CDPSession, Page, expect

from classifier.ml.training.canvas import TEMPLATES

from .conftest import PHONE, Visit

pytestmark = pytest.mark.slow

OpenPage = Callable[..., Visit]
Pixel = tuple[float, float]


def pad_rect(page: Page) -> tuple[float, float, float, float]:
    box = page.locator("#pad").bounding_box()
    assert box is not None, "the drawing canvas is not visible"
    return box["x"], box["y"], box["width"], box["height"]


def number_strokes(page: Page, number: str) -> list[list[Pixel]]:
    """The digits' first template variants, side by side on the pad, in viewport pixels."""
    left, top, width, height = pad_rect(page)
    digit_h = 0.6 * height
    strokes = []
    for index, digit in enumerate(number):
        centre_x = left + width * (0.1 + 0.8 * (index + 0.5) / len(number))
        for stroke in next(iter(TEMPLATES[int(digit)].values())):
            strokes.append(
                [
                    (centre_x + (u - 0.5) * digit_h, top + 0.2 * height + v * digit_h)
                    for u, v in stroke
                ]
            )
    return strokes


def dense(stroke: list[Pixel], spacing: float) -> list[Pixel]:
    """Points every `spacing` pixels along the stroke, as a real pointer reports them."""
    out = [stroke[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(stroke):
        n = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / spacing))
        out += [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(1, n + 1)]
    return out


def write_with_mouse(page: Page, number: str) -> None:
    for stroke in number_strokes(page, number):
        first, *rest = dense(stroke, 6)
        page.mouse.move(*first)
        page.mouse.down()
        for point in rest:
            page.mouse.move(*point)
        page.mouse.up()


def write_with_touch(page: Page, cdp: CDPSession, number: str) -> None:
    for stroke in number_strokes(page, number):
        first, *rest = dense(stroke, 5)
        touch = {"x": first[0], "y": first[1], "id": 1}
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [touch]})
        for x, y in rest:
            cdp.send(
                "Input.dispatchTouchEvent",
                {"type": "touchMove", "touchPoints": [{"x": x, "y": y, "id": 1}]},
            )
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def settled(page: Page) -> None:
    """Wait until no request is in flight: live answers to the half-written number may still
    arrive after the final one is shown, and the checks below are about the final one."""
    expect(page.locator("#answer")).not_to_have_attribute("aria-busy", "true")


def choose_number_mode(page: Page) -> None:
    page.get_by_label("A number").check()
    expect(page.locator("body")).to_have_attribute("data-mode", "number")


def test_a_number_written_with_the_mouse_is_read_with_a_box_per_digit(
    open_page: OpenPage,
) -> None:
    visit = open_page()
    page = visit.page
    choose_number_mode(page)
    _, _, width, height = pad_rect(page)
    assert abs(width / height - 2) < 0.02, "a 2:1 pad on a laptop"

    write_with_mouse(page, "205")

    expect(page.locator("#prediction")).to_have_text("205")
    settled(page)
    boxes = page.locator("#boxes .box")
    expect(boxes).to_have_count(3)
    last = [m for m in visit.sent if m.get("type") == "predict"][-1]
    assert last["expect"] == "number"
    # Sent as ink: the three digits' strokes, in drawing order.
    assert "image" not in last and len(last["ink"]) >= 3
    # The boxes sit left to right over the pad.
    rects = boxes.evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect();"
        " return [r.left, r.top, r.width, r.height]; })"
    )
    assert [r[0] for r in rects] == sorted(r[0] for r in rects)
    pad_left, pad_top, pad_width, pad_height = pad_rect(page)
    for x, y, w, h in rects:
        assert pad_left <= x and x + w <= pad_left + pad_width + 1
        assert pad_top <= y and y + h <= pad_top + pad_height + 1
    # The first digit is shown; hovering the last digit's box shows its bars and image.
    expect(page.locator("#probabilities li.best .label")).to_have_text("Digit 2")
    x, y, w, h = rects[2]
    page.mouse.move(x + w / 2, y + h / 2)
    expect(boxes.nth(2)).to_have_class("box selected")
    expect(page.locator("#probabilities li.best .label")).to_have_text("Digit 5")
    expect(page.locator("#preview")).to_be_visible()
    # Feedback is for single digits.
    expect(page.locator("#feedback")).to_be_hidden()


def test_a_number_written_with_a_finger_on_a_phone_is_read_and_its_digits_tap(
    open_page: OpenPage,
) -> None:
    page = open_page(**PHONE).page
    choose_number_mode(page)
    _, _, width, height = pad_rect(page)
    assert width > 0.85 * 360, "the pad takes the phone's width"
    assert abs(width / height - 2) < 0.02

    write_with_touch(page, page.context.new_cdp_session(page), "47")

    expect(page.locator("#prediction")).to_have_text("47")
    settled(page)
    expect(page.locator("#boxes .box")).to_have_count(2)
    page.locator("#prediction .number-digit").nth(1).tap()
    expect(page.locator("#prediction .number-digit").nth(1)).to_have_class("number-digit selected")
    expect(page.locator("#probabilities li.best .label")).to_have_text("Digit 7")


def test_switching_back_to_one_digit_clears_the_number_and_squares_the_pad(
    open_page: OpenPage,
) -> None:
    visit = open_page()
    page = visit.page
    choose_number_mode(page)
    write_with_mouse(page, "31")
    expect(page.locator("#prediction")).to_have_text("31")
    settled(page)

    page.get_by_label("One digit").check()
    expect(page.locator("#prediction")).to_have_text("")
    expect(page.locator("#boxes .box")).to_have_count(0)
    _, _, width, height = pad_rect(page)
    assert abs(width - height) < 1
    write_with_mouse(page, "7")
    expect(page.locator("#prediction")).to_have_text("7")
    last = [m for m in visit.sent if m.get("type") == "predict"][-1]
    assert "expect" not in last

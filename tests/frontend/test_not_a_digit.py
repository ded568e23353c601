"""A drawing that is no digit, in a real browser against the real stack: the page says so in
place of the digit, greys the bars and offers no "Right"; a digit drawn next is read again."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from .conftest import Visit
from .pen import DIGITS, draw_with_mouse

pytestmark = pytest.mark.slow

OpenPage = Callable[..., Visit]

NOT_A_DIGIT = "That doesn't look like a digit"


def _star() -> list[list[tuple[float, float]]]:
    """A five-pointed star in one stroke, as people draw it."""
    points = [
        (0.5 + 0.3 * math.sin(k * 4 * math.pi / 5), 0.5 - 0.3 * math.cos(k * 4 * math.pi / 5))
        for k in range(6)
    ]
    return [points]


ZIGZAG = [[(0.15 + 0.1 * k, 0.35 if k % 2 == 0 else 0.65) for k in range(8)]]


@pytest.mark.parametrize("drawing", [_star(), ZIGZAG], ids=["star", "zigzag"])
def test_a_drawing_that_is_no_digit_is_answered_as_such(open_page: OpenPage, drawing) -> None:
    visit = open_page()
    page = visit.page
    draw_with_mouse(page, drawing)

    prediction = page.locator("#prediction")
    expect(prediction).to_have_text(NOT_A_DIGIT)
    expect(prediction).not_to_have_text(re.compile(r"\d"))
    expect(page.locator("#probabilities")).to_have_class(re.compile(r"\bnot-digit\b"))
    assert page.locator("#probabilities li.best").count() == 0
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#feedback-right")).to_be_hidden()

    # A real digit on a clean canvas is read again, and the bars lose their grey.
    page.locator("#reset").click()
    expect(prediction).to_have_text("")
    draw_with_mouse(page, DIGITS["3"])
    expect(prediction).to_have_text("3")
    expect(page.locator("#probabilities")).not_to_have_class(re.compile(r"\bnot-digit\b"))
    expect(page.locator("#feedback-right")).to_be_visible()
    assert not visit.errors, visit.errors

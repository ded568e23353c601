"""The page's feedback row in a real browser against the real stack: "Right" or "it was: 0…9"
after an answer, sent on the page's socket, stored by the real worker, thanked for on screen.

Each test draws its own strokes: the same drawing stored twice counts once ("Already saved"),
so a test that expects "Saved, thank you" must not repeat another test's drawing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from .conftest import PHONE, Visit
from .pen import DIGITS, SEVEN_BAR, SEVEN_STEM, draw_with_mouse, draw_with_touch

pytestmark = pytest.mark.slow

OpenPage = Callable[..., Visit]

SAVED = "Saved, thank you"
ALREADY_SAVED = "Already saved"


def it_was(page: Page, digit: int) -> Locator:
    return page.get_by_role("button", name=f"It was {digit}", exact=True)


def right(page: Page) -> Locator:
    return page.get_by_role("button", name="Right", exact=True)


def feedback_buttons(page: Page) -> list[Locator]:
    return [right(page), *(it_was(page, digit) for digit in range(10))]


def expect_feedback_enabled(page: Page, enabled: bool) -> None:
    for button in feedback_buttons(page):
        if enabled:
            expect(button).to_be_enabled()
        else:
            expect(button).to_be_disabled()


def feedback_frames(visit: Visit) -> list[dict[str, Any]]:
    return [message for message in visit.sent if message.get("type") == "feedback"]


def last_predict(visit: Visit) -> dict[str, Any]:
    return [message for message in visit.sent if message.get("type") == "predict"][-1]


def status(page: Page) -> Locator:
    return page.locator("#feedback-status")


def watch_feedback(page: Page) -> None:
    """Record, at every change of the feedback status, its text and whether every feedback
    button was disabled then, in window.feedbackSeen: an answer can come back faster than a
    test can look, so the page notes it."""
    page.evaluate(
        """() => {
            window.feedbackSeen = [];
            const status = document.getElementById("feedback-status");
            const buttons = [...document.querySelectorAll("#feedback button")];
            new MutationObserver(() =>
                window.feedbackSeen.push([status.textContent, buttons.every((b) => b.disabled)])
            ).observe(status, { childList: true, characterData: true, subtree: true });
        }"""
    )


def answer_for_drawing(visit: Visit, digit: str) -> None:
    """Wait for `digit` on screen as the answer to the drawing on the pad now: the feedback
    buttons open once the answer describes the drawing as it is."""
    expect(visit.page.locator("#prediction")).to_have_text(digit)
    expect(right(visit.page)).to_be_enabled()


def test_correct_with_a_key_then_right_then_undo(open_page: OpenPage) -> None:
    visit = open_page()
    page = visit.page
    # No answer, no feedback row.
    expect(page.locator("#feedback")).to_be_hidden()

    # A 7's stem alone reads as a 1; the person says it was a 7 with the key.
    draw_with_mouse(page, [SEVEN_STEM])
    answer_for_drawing(visit, "1")
    expect(page.locator("#feedback")).to_be_visible()
    page.keyboard.press("7")
    expect(status(page)).to_have_text(SAVED)
    expect(status(page)).to_have_attribute("role", "status")
    expect(status(page)).to_have_attribute("aria-live", "polite")

    [sent] = feedback_frames(visit)
    assert sent["digit"] == 7
    assert sent["predicted"] == 1
    assert sent["model"] == page.locator("#model-version").text_content()
    assert sent["model"]
    # The very ink whose answer was on screen, under an id no predict request uses.
    predict = last_predict(visit)
    assert sent["ink"] == predict["ink"]
    assert "image" not in sent
    assert len(sent["ink"]) == 1 and all(len(point) == 3 for point in sent["ink"][0])
    assert sent["id"] not in {m["id"] for m in visit.sent if m.get("type") == "predict"}

    # One feedback per drawing: the buttons and the keys are done with it.
    expect_feedback_enabled(page, False)
    page.keyboard.press("3")
    page.wait_for_timeout(300)
    assert len(feedback_frames(visit)) == 1
    # The thanks goes after a couple of seconds; the answer stays.
    expect(status(page)).to_have_text("", timeout=5_000)
    expect(page.locator("#prediction")).to_have_text("1")

    # A new stroke makes a new drawing: "Right" says the model read it well.
    draw_with_mouse(page, [SEVEN_BAR])
    answer_for_drawing(visit, "7")
    right(page).click()
    expect(status(page)).to_have_text(SAVED)
    second = feedback_frames(visit)[-1]
    assert (second["digit"], second["predicted"]) == (7, 7)
    assert second["ink"] == last_predict(visit)["ink"] != sent["ink"]
    assert second["id"] != sent["id"]
    expect_feedback_enabled(page, False)

    # Undo brings back the first drawing: feedback opens again, and the server knows the image.
    page.get_by_role("button", name="Undo", exact=True).click()
    answer_for_drawing(visit, "1")
    it_was(page, 7).click()
    expect(status(page)).to_have_text(ALREADY_SAVED)
    assert feedback_frames(visit)[-1]["ink"] == sent["ink"]
    expect_feedback_enabled(page, False)

    # Reset: nothing to tell about a blank pad.
    page.get_by_role("button", name="Reset", exact=True).click()
    expect(page.locator("#feedback")).to_be_hidden()
    visit.snapshot("after-reset")


def test_buttons_reopen_after_reset_and_a_new_drawing(open_page: OpenPage) -> None:
    visit = open_page()
    page = visit.page
    draw_with_mouse(page, DIGITS["0"])
    answer_for_drawing(visit, "0")
    it_was(page, 0).click()
    expect(status(page)).to_have_text(SAVED)
    expect_feedback_enabled(page, False)

    page.get_by_role("button", name="Reset", exact=True).click()
    expect(page.locator("#feedback")).to_be_hidden()
    draw_with_mouse(page, DIGITS["3"])
    answer_for_drawing(visit, "3")
    expect_feedback_enabled(page, True)
    right(page).click()
    expect(status(page)).to_have_text(SAVED)
    frames = feedback_frames(visit)
    assert [(f["digit"], f["predicted"]) for f in frames] == [(0, 0), (3, 3)]


def test_an_error_answer_is_shown_and_feedback_can_be_sent_again(
    open_page: OpenPage, stack: Any
) -> None:
    visit = open_page()
    page = visit.page
    draw_with_mouse(page, DIGITS["2"])
    answer_for_drawing(visit, "2")
    watch_feedback(page)
    try:
        stack.stop_worker()
        it_was(page, 2).click()
        # Nobody can store it: the server's own words for its error code.
        expect(status(page)).to_have_attribute("data-code", re.compile(r"^(timeout|unavailable)$"))
        expect(status(page)).to_have_attribute("data-outcome", "error")
        expect(status(page)).not_to_have_text("")
        expect(status(page)).not_to_have_text(SAVED)
        visit.snapshot("feedback-error")
    finally:
        stack.start_worker()
    # While it was in flight, the buttons waited for the answer.
    seen = page.evaluate("window.feedbackSeen")
    assert seen[0] == ["Saving…", True], seen
    assert seen[-1][1] is False, seen
    # Not saved, so the same drawing can be sent again.
    expect_feedback_enabled(page, True)
    it_was(page, 2).click()
    expect(status(page)).to_have_text(SAVED)


def test_feedback_on_a_phone(open_page: OpenPage) -> None:
    visit = open_page(**PHONE)
    page = visit.page
    cdp = visit.context.new_cdp_session(page)
    draw_with_touch(page, cdp, DIGITS["4"])
    answer_for_drawing(visit, "4")

    # No sideways scrolling, and every button is on screen without scrolling, big enough to tap.
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    for button in feedback_buttons(page):
        box = button.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= 360, box
        assert box["y"] >= 0 and box["y"] + box["height"] <= 740, box
        assert box["width"] >= 24 and box["height"] >= 40, box
    visit.snapshot("phone-feedback")

    # Drawing with a finger did not scroll; the thanks is on screen too.
    assert page.evaluate("window.scrollY") == 0
    it_was(page, 4).tap()
    expect(status(page)).to_have_text(SAVED)
    expect(status(page)).to_be_in_viewport()
    [sent] = feedback_frames(visit)
    assert (sent["digit"], sent["predicted"]) == (4, 4)
    expect_feedback_enabled(page, False)

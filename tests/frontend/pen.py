"""Draw digits on the page's canvas the way people do: strokes of a mouse, a finger or a pen.

Digits are stroke paths in canvas-relative units (0..1 on both axes), so the same digit can be
drawn on a laptop-sized pad with the mouse and on a phone-sized pad with touch events.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from playwright.sync_api import CDPSession, Page

Point = tuple[float, float]
Stroke = Sequence[Point]


def _ellipse(cx: float, cy: float, rx: float, ry: float, start: float = -90) -> list[Point]:
    """A closed loop from `start` degrees, as people draw a 0: from the top, anticlockwise."""
    steps = 28
    return [
        (
            cx + rx * math.cos(math.radians(start - 360 * i / steps)),
            cy + ry * math.sin(math.radians(start - 360 * i / steps)),
        )
        for i in range(steps + 2)
    ]


# Each digit: its strokes in the order a person draws them.
DIGITS: dict[str, list[Stroke]] = {
    "0": [_ellipse(0.5, 0.5, 0.19, 0.3)],
    "1": [[(0.53, 0.2), (0.47, 0.8)]],
    "2": [
        [
            (0.32, 0.33),
            (0.36, 0.25),
            (0.45, 0.2),
            (0.56, 0.2),
            (0.65, 0.26),
            (0.67, 0.35),
            (0.62, 0.46),
            (0.48, 0.6),
            (0.3, 0.78),
            (0.72, 0.78),
        ]
    ],
    "3": [
        [
            (0.33, 0.25),
            (0.45, 0.19),
            (0.6, 0.21),
            (0.66, 0.3),
            (0.61, 0.4),
            (0.47, 0.47),
            (0.62, 0.52),
            (0.68, 0.63),
            (0.62, 0.75),
            (0.47, 0.8),
            (0.32, 0.75),
        ]
    ],
    "4": [[(0.55, 0.2), (0.3, 0.6), (0.72, 0.6)], [(0.6, 0.38), (0.6, 0.82)]],
    "7": [[(0.3, 0.22), (0.68, 0.22), (0.45, 0.8)]],
}

# A "7" drawn in two strokes: the stem alone reads as a 1, the bar makes it a 7.
SEVEN_STEM: Stroke = [(0.66, 0.22), (0.47, 0.8)]
SEVEN_BAR: Stroke = [(0.3, 0.22), (0.66, 0.22)]


def pad_box(page: Page) -> tuple[float, float, float]:
    """The pad's top-left corner and side, in CSS pixels of the viewport."""
    box = page.locator("#pad").bounding_box()
    assert box is not None, "the drawing canvas is not visible"
    assert abs(box["width"] - box["height"]) < 1, "the drawing canvas is not square"
    return box["x"], box["y"], box["width"]


def _dense(stroke: Stroke, side: float, spacing_px: float) -> list[tuple[float, float]]:
    """The stroke's corners in pixels with points every `spacing_px` between them, as a real
    pointer reports them."""
    points = [(x * side, y * side) for x, y in stroke]
    out = [points[0]]
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        n = max(1, math.ceil(math.hypot(x1 - x0, y1 - y0) / spacing_px))
        out += [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(1, n + 1)]
    return out


def draw_with_mouse(
    page: Page, strokes: Sequence[Stroke], *, pause_ms: float = 0, release: bool = True
) -> None:
    """Draw strokes with the mouse; `pause_ms` between samples slows the hand down, and with
    `release=False` the button stays down at the end of the last stroke."""
    left, top, side = pad_box(page)
    for index, stroke in enumerate(strokes):
        points = _dense(stroke, side, spacing_px=6)
        page.mouse.move(left + points[0][0], top + points[0][1])
        page.mouse.down()
        for x, y in points[1:]:
            page.mouse.move(left + x, top + y)
            if pause_ms:
                page.wait_for_timeout(pause_ms)
        if release or index < len(strokes) - 1:
            page.mouse.up()


def draw_with_touch(page: Page, cdp: CDPSession, strokes: Sequence[Stroke]) -> None:
    """Draw strokes with one finger through Chromium's touch input (Playwright's touchscreen
    only taps): the page sees pointer events with pointerType "touch", as on a phone."""
    left, top, side = pad_box(page)
    for stroke in strokes:
        points = [(left + x, top + y) for x, y in _dense(stroke, side, spacing_px=5)]
        first, *rest = points
        cdp.send(
            "Input.dispatchTouchEvent",
            {"type": "touchStart", "touchPoints": [{"x": first[0], "y": first[1], "id": 1}]},
        )
        for x, y in rest:
            cdp.send(
                "Input.dispatchTouchEvent",
                {"type": "touchMove", "touchPoints": [{"x": x, "y": y, "id": 1}]},
            )
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def swipe_with_touch(page: Page, cdp: CDPSession, start: Point, end: Point) -> None:
    """A one-finger drag between two viewport points (CSS pixels), e.g. to scroll the page."""
    steps = 20
    cdp.send(
        "Input.dispatchTouchEvent",
        {"type": "touchStart", "touchPoints": [{"x": start[0], "y": start[1], "id": 2}]},
    )
    for i in range(1, steps + 1):
        x = start[0] + (end[0] - start[0]) * i / steps
        y = start[1] + (end[1] - start[1]) * i / steps
        cdp.send(
            "Input.dispatchTouchEvent",
            {"type": "touchMove", "touchPoints": [{"x": x, "y": y, "id": 2}]},
        )
        page.wait_for_timeout(10)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def ink_pixels(page: Page) -> int:
    """How many of the canvas's device pixels are mostly white ink."""
    return page.evaluate(
        """async () => {
            // Strokes are painted on the next animation frame: let it pass first.
            await new Promise((resolve) => requestAnimationFrame(() => resolve()));
            const canvas = document.getElementById("pad");
            const context = canvas.getContext("2d");
            const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
            let ink = 0;
            for (let i = 0; i < data.length; i += 4) if (data[i] > 127) ink++;
            return ink;
        }"""
    )

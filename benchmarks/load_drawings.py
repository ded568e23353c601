"""What benchmarks/load.py sends: the page's drawings as PNG data URLs and as ink.

The PNG canvases are MNIST test digits redrawn as the page draws them (the stroke templates
without MNIST), and numbers drawn from the stroke templates. With ink, every phase draws from
the same drawings both ways: real pen strokes (the pen digits of 30 writers, whom the shipped model
never saw; the stroke templates without the data set) placed on the page's pad as people draw, and
numbers composed of one writer's digits (classifier/ml/training/ink_numbers.py), each drawn to a PNG
the way the page draws.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from classifier.ml.training.canvas import (
    PAGE_EXPORT_SIZE,
    render_canvas_png,
    render_template_png,
    to_png,
)
from classifier.ml.training.data import DataError, load_test_split
from classifier.serving import protocol

# The number pad's export (app.js): twice as wide as the digit pad's, as high.
NUMBER_EXPORT_SIZE = (2 * PAGE_EXPORT_SIZE, PAGE_EXPORT_SIZE)

INPUTS = ("png", "ink")
# Milliseconds between the points of a pen digit (the data set has no times), and between strokes.
PEN_POINT_MS = 10.0
PEN_LIFT_MS = 150.0


@dataclass(frozen=True)
class Images:
    """Data URLs of canvas PNGs with their digits, and the raw PNG bytes; for ink, `inks` holds
    each drawing's strokes as the page sends them (JSON lists), and `input` says which a request
    carries."""

    urls: list[str]
    pngs: list[bytes]
    labels: list[int] | list[str]
    expect: str = protocol.EXPECT_DIGIT  # "number": the labels are the numbers' digits
    inks: list[str] = field(default_factory=list)  # JSON of each drawing's ink
    input: str = "png"

    def body(self, index: int) -> str:
        """The drawing's field of a request frame: `"image": ...` or `"ink": ...`."""
        if self.input == "ink":
            return f'"ink":{self.inks[index]}'
        return f'"image":"{self.urls[index]}"'

    def as_input(self, kind: str) -> Images:
        """The same drawings, sent as `kind` ("png" or "ink")."""
        if kind == "ink" and not self.inks:
            raise ValueError("these drawings have no ink")
        return Images(self.urls, self.pngs, self.labels, self.expect, self.inks, kind)

    def frame_bytes(self) -> float:
        """Mean bytes of a predict frame carrying these drawings."""
        return float(np.mean([len(self.body(i)) + 40 for i in range(len(self.urls))]))


def _timed_ink(ink) -> str:
    """A pen drawing's ink as the page sends it: whole pixels, made-up times in whole ms."""
    from classifier.ml.ink import to_lists

    t = 0.0
    strokes = []
    for stroke in ink:
        timed = stroke.copy()
        timed[:, 2] = t + PEN_POINT_MS * np.arange(len(stroke))
        t = float(timed[-1, 2]) + PEN_LIFT_MS
        strokes.append(timed)
    return json.dumps(to_lists(tuple(strokes), decimals=0), separators=(",", ":"))


def _pen_digits(data_dir: Path) -> tuple[list, str]:
    """Real pen digits (label, ink), or the stroke templates' digits without the data set."""
    from classifier.ml.ink import from_xy
    from classifier.ml.training.canvas import TEMPLATES
    from classifier.ml.training.drawings import pendigits

    path = pendigits.path_in(data_dir.parent if data_dir.name == "MNIST" else data_dir)
    try:
        digits = [(d.label, d.ink) for d in pendigits.read(path)]
        return digits, f"pen digits of 30 writers ({path})"
    except OSError as exc:
        digits = []
        for digit, variants in TEMPLATES.items():
            for strokes in variants.values():
                digits.append((digit, from_xy([np.asarray(s) * 100 for s in strokes])))
        return digits, f"stroke templates (no pen digits: {exc})"


def make_ink_drawings(count: int, seed: int, data_dir: Path) -> tuple[Images, str]:
    """The same drawings as the page's PNG and as its ink: real pen strokes placed on the pad as
    people draw (size and place vary), each drawn to a PNG the way the page draws."""
    from classifier.ml.training.canvas import draw_page, page_ink

    rng = np.random.default_rng(seed)
    digits, source = _pen_digits(data_dir)
    pngs, labels, inks = [], [], []
    for index in rng.permutation(len(digits))[:count]:
        label, ink = digits[int(index)]
        placed = page_ink(ink, PAGE_EXPORT_SIZE, PAGE_EXPORT_SIZE, rng)
        pngs.append(to_png(draw_page(placed, PAGE_EXPORT_SIZE, PAGE_EXPORT_SIZE)))
        inks.append(_timed_ink(placed))
        labels.append(label)
    urls = ["data:image/png;base64," + base64.b64encode(png).decode("ascii") for png in pngs]
    return Images(urls, pngs, labels, inks=inks), source


def make_ink_numbers(count: int, seed: int, length: int, data_dir: Path) -> Images:
    """Numbers of `length` digits composed of one writer's pen digits (templates without the
    data set), as the page's ink and its PNG of the number pad."""
    from classifier.ml.ink import to_lists
    from classifier.ml.training.canvas import draw_page
    from classifier.ml.training.ink_numbers import number_from

    rng = np.random.default_rng(seed)
    digits, _ = _pen_digits(data_dir)
    pool: dict[int, list] = {}
    for label, ink in digits:
        pool.setdefault(label, []).append(ink)
    width, height = NUMBER_EXPORT_SIZE
    pngs, labels, inks = [], [], []
    for n in range(count):
        gap = ("tight", "normal", "wide")[n % 3]
        number = number_from(pool, rng, length, gap=gap, size=NUMBER_EXPORT_SIZE)
        pngs.append(to_png(draw_page(number.ink, width, height)))
        inks.append(json.dumps(to_lists(number.ink, decimals=0), separators=(",", ":")))
        labels.append(number.label)
    urls = ["data:image/png;base64," + base64.b64encode(png).decode("ascii") for png in pngs]
    return Images(urls, pngs, labels, protocol.EXPECT_NUMBER, inks)


def make_numbers(count: int, seed: int, length: int) -> Images:
    """Numbers of `length` digits drawn from the stroke templates on the number canvas, with the
    gaps people leave when writing in a row."""
    from classifier.ml.training.numbers import template_number

    rng = np.random.default_rng(seed)
    pngs: list[bytes] = []
    labels: list[str] = []
    for n in range(count):
        gap = ("tight", "normal", "wide")[n % 3]
        number = template_number(rng, length, gap=gap, size=NUMBER_EXPORT_SIZE)
        pngs.append(to_png(number.image))
        labels.append(number.label)
    urls = ["data:image/png;base64," + base64.b64encode(png).decode("ascii") for png in pngs]
    return Images(urls, pngs, labels, protocol.EXPECT_NUMBER)


def make_images(count: int, seed: int, data_dir: Path) -> tuple[Images, str]:
    """Canvases of MNIST test digits as the page draws them; stroke templates without MNIST."""
    rng = np.random.default_rng(seed)
    pngs: list[bytes] = []
    labels: list[int] = []
    try:
        split = load_test_split(data_dir, download=False)
        source = f"MNIST test digits redrawn as canvases ({data_dir})"
        for index in rng.permutation(len(split))[:count]:
            image = split.images[int(index)].numpy()
            pngs.append(render_canvas_png(image, rng, style="page", size=PAGE_EXPORT_SIZE))
            labels.append(int(split.labels[int(index)]))
    except (DataError, OSError) as exc:
        source = f"stroke templates (no MNIST: {exc})"
        for n in range(count):
            digit = n % 10
            png = render_template_png(digit, rng=rng, style="page", size=PAGE_EXPORT_SIZE)
            pngs.append(png)
            labels.append(digit)
    urls = ["data:image/png;base64," + base64.b64encode(png).decode("ascii") for png in pngs]
    return Images(urls, pngs, labels), source

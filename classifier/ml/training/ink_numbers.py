"""Numbers composed as ink from real writers' digits: how people write several digits in a row.

For measuring and testing the reading of numbers sent as ink (classifier.ml.ink_segmentation), and
for training on numbers. Each digit is a real drawing (e.g. one pendigits writer's), placed left to
right on the page's 768x384 number canvas the way `classifier.ml.training.numbers` places template
and MNIST digits: a gap between neighbouring digits' inks of a chosen kind (`numbers.GAPS`:
overlapping, touching, tight, normal, wide), each digit with its own size, slant and baseline, along
a sloped line. The gap is measured on the ink as the page draws it (points plus half the page's
brush each side), so "touch" and "overlap" mean the same pixels as in `numbers`.

The pen's times are made up, since the data sets have none: each digit is drawn at its own speed
(points spaced in time by the length they cover), with a short lift of the pen between a digit's
strokes and a longer pause between digits. `late` moves a digit's short last stroke (the bar of
a 7 or a 4, the flag of a 5) after the next digit, as people cross their 7s once the number is
written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from classifier.ml.ink import Ink
from classifier.ml.training.canvas import CANVAS_SIZE, PAGE_BRUSH_PX
from classifier.ml.training.numbers import GAPS, NUMBER_CANVAS

Box = tuple[int, int, int, int]

# The pen's speed, in digit heights per second along the stroke.
SPEED = (1.5, 4.0)
# Lifting the pen between two strokes of one digit, and between two digits (ms).
LIFT_MS = (60.0, 300.0)
PAUSE_MS = (200.0, 900.0)
# A last stroke shorter than this share of its digit's height may be drawn late (`late`).
LATE_HEIGHT = 0.5


@dataclass(frozen=True)
class InkNumber:
    """A composed number: its ink, its digits as a string, each digit's box in the ink's
    coordinates (x0, y0, x1, y1 of its points; x1 and y1 exclusive), the gap kind, the page's
    brush (pixels) the gap was measured with, and which digit (index in `label`) each stroke
    belongs to."""

    ink: Ink
    label: str
    boxes: list[Box]
    gap: str
    brush: float
    owners: tuple[int, ...]


def box_of(strokes: Iterable[np.ndarray]) -> Box:
    """The integer box of strokes' points, x1 and y1 exclusive."""
    xy = np.concatenate([s[:, :2] for s in strokes])
    (x0, y0), (x1, y1) = np.floor(xy.min(axis=0)), np.floor(xy.max(axis=0)) + 1
    return int(x0), int(y0), int(x1), int(y1)


def _normalised(ink: Ink) -> list[np.ndarray]:
    """The digit's strokes as (P, 2) float64 points, moved to start at (0, 0), height 1."""
    xy = np.concatenate([s[:, :2] for s in ink]).astype(np.float64)
    low = xy.min(axis=0)
    span = xy.max(axis=0) - low
    height = max(float(span[1]), 0.2 * float(span[0]), 1e-6)
    return [(s[:, :2].astype(np.float64) - low) / height for s in ink]


def compose_number(
    digits: Sequence[Ink],
    label: str,
    rng: np.random.Generator,
    gap: str | None = None,
    size: tuple[int, int] = NUMBER_CANVAS,
    slope_deg: float = 8.0,
    times: bool = True,
    late: float = 0.0,
) -> InkNumber:
    """Place the digits' inks (one per character of `label`) in a row on a canvas of `size`
    (width, height); see the module docstring. Without `times` every t is NaN."""
    width, height = size
    gap = gap or str(rng.choice(list(GAPS)))
    n = len(digits)
    slope = math.tan(math.radians(float(rng.uniform(-slope_deg, slope_deg))))
    slants = rng.uniform(-0.2, 0.2, size=n)
    scales = rng.uniform(0.85, 1.15, size=n)
    shifts = rng.uniform(-0.08, 0.08, size=n)
    gaps = rng.uniform(*GAPS[gap], size=max(0, n - 1))
    shaped = []
    for ink, slant, scale in zip(digits, slants, scales, strict=True):
        strokes = _normalised(ink)
        for s in strokes:
            s[:, 0] -= slant * (s[:, 1] - 0.5)
        left = min(float(s[:, 0].min()) for s in strokes)
        shaped.append([(s - np.array([left, 0.0])) * scale for s in strokes])
    widths = np.array([max(float(s[:, 0].max()) for s in d) for d in shaped])
    brush = PAGE_BRUSH_PX / CANVAS_SIZE * height
    # The row (digit_h times its length in heights, plus a brush per digit) fits the canvas.
    row = max(float(widths.sum() + gaps.sum()), 1e-6)
    digit_h = min(float(rng.uniform(0.3, 0.7)) * height, (0.92 * width - n * brush) / row)
    digit_h = max(min(digit_h, (height - 2 * brush) / 1.4), 0.05 * height)
    total = digit_h * float(widths.sum() + gaps.sum()) + n * brush
    left = float(rng.uniform(brush, max(brush, width - total - brush)))
    middle = float(rng.uniform(0.3, 0.7)) * height
    placed: list[list[np.ndarray]] = []
    x = left
    for k, strokes in enumerate(shaped):
        points = [s * digit_h for s in strokes]
        x_ink = x + brush / 2
        right = max(float(p[:, 0].max()) for p in points)
        bottom = max(float(p[:, 1].max()) for p in points)
        y_mid = middle + slope * (x_ink + right / 2 - left - total / 2) + shifts[k] * digit_h
        placed.append([p + np.array([x_ink, y_mid - bottom / 2]) for p in points])
        x = x_ink + right + brush / 2
        if k < n - 1:
            x += gaps[k] * digit_h
    # Keep the row on the canvas vertically (a steep slope may push an end out).
    ys = np.concatenate([p[:, 1] for d in placed for p in d])
    top, low = float(ys.min()) - brush, float(ys.max()) + brush
    dy = -top if top < 0 else (height - low if low > height else 0.0)
    placed = [[p + np.array([0.0, dy]) for p in d] for d in placed]
    order = _drawing_order(placed, digit_h, rng, late)
    strokes = _timed(placed, order, digit_h, rng) if times else _untimed(placed, order)
    boxes = [box_of(d) for d in placed]
    owners = tuple(digit for digit, _ in order)
    return InkNumber(tuple(strokes), label, boxes, gap, brush, owners)


def _drawing_order(
    placed: list[list[np.ndarray]], digit_h: float, rng: np.random.Generator, late: float
) -> list[tuple[int, int]]:
    """(digit, stroke) in the order they are drawn: digit by digit, except that with chance
    `late` a digit's short last stroke waits until the next digit is written."""
    order: list[tuple[int, int]] = []
    waiting: tuple[int, int] | None = None
    for k, strokes in enumerate(placed):
        last = strokes[-1]
        short = float(np.ptp(last[:, 1])) < LATE_HEIGHT * digit_h
        delay = len(strokes) > 1 and short and k < len(placed) - 1 and rng.random() < late
        order += [(k, i) for i in range(len(strokes) - (1 if delay else 0))]
        if waiting is not None:
            order.append(waiting)
        waiting = (k, len(strokes) - 1) if delay else None
    return order


def _timed(
    placed: list[list[np.ndarray]],
    order: list[tuple[int, int]],
    digit_h: float,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """The strokes with times: each point's t from the length drawn so far at its digit's
    speed, plus the lifts and pauses between strokes (module docstring)."""
    speeds = rng.uniform(*SPEED, size=len(placed)) * digit_h / 1000.0  # pixels per ms
    out: list[np.ndarray] = []
    t = 0.0
    previous = -1
    for digit, index in order:
        if out:
            t += float(rng.uniform(*(LIFT_MS if digit == previous else PAUSE_MS)))
        xy = placed[digit][index]
        steps = np.linalg.norm(np.diff(xy, axis=0), axis=1) if len(xy) > 1 else np.zeros(0)
        times = t + np.concatenate([[0.0], np.cumsum(steps)]) / speeds[digit]
        out.append(np.column_stack([xy, times]).astype(np.float32))
        t = float(times[-1])
        previous = digit
    return out


def _untimed(placed: list[list[np.ndarray]], order: list[tuple[int, int]]) -> list[np.ndarray]:
    out = []
    for digit, index in order:
        xy = placed[digit][index]
        out.append(np.column_stack([xy, np.full(len(xy), np.nan)]).astype(np.float32))
    return out


def number_from(
    pool: Mapping[int, Sequence[Ink]],
    rng: np.random.Generator,
    length: int,
    gap: str | None = None,
    **kwargs,
) -> InkNumber:
    """A random number of `length` digits, each a random drawing of that digit from `pool`
    (digit -> its drawings, e.g. one writer's), composed by `compose_number`."""
    available = sorted(d for d, inks in pool.items() if inks)
    label = "".join(str(int(rng.choice(available))) for _ in range(length))
    digits = [pool[int(c)][int(rng.integers(len(pool[int(c)])))] for c in label]
    return compose_number(digits, label, rng, gap=gap, **kwargs)


def pools(drawings: Iterable) -> dict[int, dict[int, list[Ink]]]:
    """Writer -> digit -> inks, from drawings with `writer`, `label` and `ink` (e.g.
    `drawings.pendigits.PenDigit`): a number is composed of one writer's digits."""
    out: dict[int, dict[int, list[Ink]]] = {}
    for drawing in drawings:
        out.setdefault(drawing.writer, {}).setdefault(drawing.label, []).append(drawing.ink)
    return out

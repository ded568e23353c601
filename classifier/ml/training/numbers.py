"""Numbers drawn as people draw them on the page: several digits in a row on one canvas.

For measuring (benchmarks/number_accuracy.py) and testing the reading of numbers
(classifier.ml.segmentation). Each digit is a set of pen strokes: a stroke template of
`canvas.TEMPLATES` (no dataset needed) or the skeleton of an MNIST digit, so either way the
number is drawn with one round brush, as the page's canvas draws it. Digits are placed left to
right with a chosen gap between their inks (from overlapping to wide; "touch" makes them meet),
each with its own size, slant and baseline offset, along a sloped line.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from classifier.ml.brush import compose, draw_mask
from classifier.ml.training.canvas import (
    CANVAS_SIZE,
    PAGE_BRUSH_PX,
    TEMPLATES,
    skeleton_segments,
    template_segments,
)

# The page's canvas in number mode: twice as wide as high.
NUMBER_CANVAS = (2 * CANVAS_SIZE, CANVAS_SIZE)
# Gap between neighbouring digits' inks, in digit heights: the kinds reported apart.
GAPS: dict[str, tuple[float, float]] = {
    "overlap": (-0.12, -0.03),
    "touch": (-0.03, 0.0),
    "tight": (0.02, 0.12),
    "normal": (0.12, 0.35),
    "wide": (0.35, 0.8),
}


@dataclass(frozen=True)
class DrawnNumber:
    """A drawn number: the image, its digits as a string, each digit's ink box, the gap kind."""

    image: Image.Image
    label: str
    boxes: list[tuple[int, int, int, int]]
    gap: str


def _normalised(segments: np.ndarray) -> np.ndarray:
    """Segments (K, 2, 2) moved to start at (0, 0) and scaled to a height of 1."""
    points = segments.reshape(-1, 2)
    low = points.min(axis=0)
    height = max(float(points[:, 1].max() - low[1]), 1e-6)
    return (segments - low) / height


def template_strokes(digit: int, rng: np.random.Generator) -> np.ndarray:
    """A random variant of a digit's stroke template, normalised (height 1)."""
    variants = TEMPLATES[digit]
    strokes = variants[str(rng.choice(list(variants)))]
    return _normalised(template_segments(strokes))


def mnist_strokes(image28: np.ndarray) -> np.ndarray:
    """The skeleton of an MNIST digit as strokes, normalised (height 1)."""
    segments = skeleton_segments(image28)
    if segments.size == 0:
        segments = np.zeros((1, 2, 2), dtype=np.float32)
    return _normalised(segments)


def draw_number(
    strokes: Sequence[np.ndarray],
    label: str,
    rng: np.random.Generator,
    gap: str | None = None,
    size: tuple[int, int] = NUMBER_CANVAS,
    style: str = "page",
    slope_deg: float = 8.0,
) -> DrawnNumber:
    """Draw the digits' strokes (normalised, one array per digit) in a row on a canvas of
    `size` (width, height) with one brush, and return the image with its boxes."""
    width, height = size
    gap = gap or str(rng.choice(list(GAPS)))
    n = len(strokes)
    slope = math.tan(math.radians(float(rng.uniform(-slope_deg, slope_deg))))
    slants = rng.uniform(-0.25, 0.25, size=n)
    scales = rng.uniform(0.85, 1.15, size=n)
    shifts = rng.uniform(-0.08, 0.08, size=n)
    gaps = rng.uniform(*GAPS[gap], size=max(0, n - 1))
    # Widths at unit height (after slant), to fit the row to the canvas.
    shaped = []
    for digit, slant, scale in zip(strokes, slants, scales, strict=True):
        s = digit.copy()
        s[..., 0] -= slant * (s[..., 1] - 0.5)
        s[..., 0] -= s[..., 0].min()
        shaped.append(s * scale)
    widths = np.array([float(s[..., 0].max()) for s in shaped])
    brush_share = float(rng.uniform(0.5, 1.3)) * PAGE_BRUSH_PX / CANVAS_SIZE
    brush = brush_share * height
    # The row's length in digit heights, brush included (a stroke's ink is wider by a brush).
    row = float(widths.sum() + gaps.sum()) + n * brush_share / 0.5
    digit_h = min(float(rng.uniform(0.3, 0.7)) * height, 0.92 * width / max(row, 1e-6))
    digit_h = min(digit_h, (height - 2 * brush) / 1.4)
    brush = min(brush, 0.22 * digit_h)
    total = digit_h * float(widths.sum() + gaps.sum()) + n * brush
    left = float(rng.uniform(brush, max(brush, width - total - brush)))
    middle = float(rng.uniform(0.3, 0.7)) * height
    placed = []
    boxes = []
    x = left
    for k, s in enumerate(shaped):
        points = s * digit_h
        x_ink = x + brush / 2
        centre_x = x_ink + float(points[..., 0].max()) / 2 - left
        y_mid = middle + slope * (centre_x - total / 2) + shifts[k] * digit_h
        offset = np.array([x_ink, y_mid - float(points[..., 1].max()) / 2], dtype=np.float32)
        points = points + offset
        placed.append(points)
        flat = points.reshape(-1, 2)
        lo, hi = flat.min(axis=0) - brush / 2, flat.max(axis=0) + brush / 2
        boxes.append(
            (
                max(0, int(lo[0])),
                max(0, int(lo[1])),
                min(width, math.ceil(hi[0])),
                min(height, math.ceil(hi[1])),
            )
        )
        x = float(hi[0])
        if k < n - 1:
            x += gaps[k] * digit_h
    # Clamp the row into the canvas vertically (a steep slope may push an end out).
    all_points = np.concatenate([p.reshape(-1, 2) for p in placed])
    dy = 0.0
    top, bottom = float(all_points[:, 1].min()) - brush, float(all_points[:, 1].max()) + brush
    if top < 0:
        dy = -top
    elif bottom > height:
        dy = height - bottom
    placed = [p + np.array([0.0, dy], dtype=np.float32) for p in placed]
    boxes = [(b[0], max(0, int(b[1] + dy)), b[2], min(height, math.ceil(b[3] + dy))) for b in boxes]
    mask = _draw(np.concatenate(placed), width, height, brush)
    return DrawnNumber(compose(mask, style, rng), label, boxes, gap)


def _draw(segments: np.ndarray, width: int, height: int, brush: float) -> Image.Image:
    """`brush.draw_mask` on a wide canvas: drawn on a square as large, then cropped."""
    side = max(width, height)
    return draw_mask(segments, size=side, brush=brush).crop((0, 0, width, height))


def random_label(rng: np.random.Generator, length: int) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, size=length))


def template_number(
    rng: np.random.Generator, length: int, gap: str | None = None, **kwargs
) -> DrawnNumber:
    """A random number of `length` digits drawn from the stroke templates."""
    label = random_label(rng, length)
    strokes = [template_strokes(int(d), rng) for d in label]
    return draw_number(strokes, label, rng, gap=gap, **kwargs)


def mnist_number(
    images: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    length: int,
    gap: str | None = None,
    **kwargs,
) -> DrawnNumber:
    """A number of `length` random MNIST digits (images (N, 28, 28), labels (N,)), redrawn
    along their skeletons."""
    picks = rng.integers(0, len(labels), size=length)
    label = "".join(str(int(labels[i])) for i in picks)
    strokes = [mnist_strokes(images[i]) for i in picks]
    return draw_number(strokes, label, rng, gap=gap, **kwargs)

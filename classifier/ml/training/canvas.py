"""Digits as a browser canvas draws them, for evaluation, tests and benchmarks.

MNIST digits were written with pens and scanned; people on the page draw with a round brush of
one width, at any size and place on a 384x384 canvas. To measure what users will experience, an
MNIST digit is thinned to its skeleton (Zhang-Suen) and redrawn along it with a round brush of a
random width, at a random size and position, in the page's colours (white on black) or others
(black on white, coloured ink, a transparent background). Hand-made stroke templates give digits
in writing styles from around the world (crossed 7, open 4, 1 with a flag, curly 9) with no
dataset at all, which is what the serving tests need.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from classifier.ml.brush import STYLES, compose, draw_mask
from classifier.ml.ink import Ink, bounds, page_curve, transformed

CANVAS_SIZE = 384  # the page's canvas, in pixels
# How often each of `brush.STYLES` comes up in the evaluation set: mostly the page's own colours.
STYLE_WEIGHTS = (0.55, 0.2, 0.1, 0.15)

Point = tuple[float, float]
Polyline = list[Point]


# --- Thinning ------------------------------------------------------------------------------------


def _neighbours(img: np.ndarray) -> list[np.ndarray]:
    """P2..P9 of Zhang-Suen (N, NE, E, SE, S, SW, W, NW) for every pixel of a (..., H, W) array."""
    p = np.pad(img, [(0, 0)] * (img.ndim - 2) + [(1, 1), (1, 1)])
    h, w = img.shape[-2:]

    def at(dy: int, dx: int) -> np.ndarray:
        return p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    return [at(-1, 0), at(-1, 1), at(0, 1), at(1, 1), at(1, 0), at(1, -1), at(0, -1), at(-1, -1)]


def thin(binary: np.ndarray, max_iterations: int = 200) -> np.ndarray:
    """Zhang-Suen thinning of a boolean (H, W) or (N, H, W) array, vectorised over pixels.

    T. Y. Zhang and C. Y. Suen, "A fast parallel algorithm for thinning digital patterns",
    CACM 27(3), 1984. Returns a one-pixel-wide, 8-connected skeleton.
    """
    img = np.asarray(binary, dtype=bool).copy()
    for _ in range(max_iterations):
        changed = False
        for step in (0, 1):
            n = [q.astype(np.uint8) for q in _neighbours(img)]
            p2, _, p4, _, p6, _, p8, _ = n
            count = sum(n)
            ring = [*n, n[0]]
            transitions = sum((ring[i] == 0) & (ring[i + 1] == 1) for i in range(8))
            if step == 0:
                cond = (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)
            else:
                cond = (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)
            remove = img & (count >= 2) & (count <= 6) & (transitions == 1) & cond
            if remove.any():
                img &= ~remove
                changed = True
        if not changed:
            break
    return img


def skeleton_segments(image28: np.ndarray, upsample: int = 3) -> np.ndarray:
    """The skeleton of a 28x28 digit as line segments (K, 2, 2) of (x, y) in 28-px units.

    The digit is enlarged first so the skeleton follows the stroke's middle smoothly rather than
    in whole MNIST pixels.
    """
    grey = Image.fromarray(np.asarray(image28, dtype=np.uint8))
    size = grey.width * upsample
    big = np.asarray(grey.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    skeleton = thin(big >= 0.45 * max(float(big.max()), 1.0))
    ys, xs = np.nonzero(skeleton)
    if ys.size == 0:
        return np.zeros((0, 2, 2), dtype=np.float32)
    # Link each skeleton pixel to its neighbours to the E, SE, S and SW (each pair once).
    index = -np.ones(skeleton.shape, dtype=np.int64)
    index[ys, xs] = np.arange(ys.size)
    padded = np.pad(index, 1, constant_values=-1)
    points = np.stack([xs, ys], axis=1).astype(np.float32)
    segments = [np.stack([points, points], axis=1)]  # isolated pixels still get a dot
    for dy, dx in ((0, 1), (1, 1), (1, 0), (1, -1)):
        other = padded[ys + 1 + dy, xs + 1 + dx]
        linked = other >= 0
        segments.append(np.stack([points[linked], points[other[linked]]], axis=1))
    # Pixel centres, back in 28-px units.
    return (np.concatenate(segments) + 0.5) / upsample


# The page's brush is 6.5% of its 384-pixel canvas (frontend/static/frontend/drawing.js); other
# clients use other widths.
PAGE_BRUSH_PX = 25.0


@dataclass(frozen=True)
class Placement:
    """Where and how big a digit lands on the canvas, and the brush that draws it."""

    height: float  # the digit's height in canvas pixels
    brush: float  # brush width in canvas pixels
    left: float  # top-left corner of the digit's 28x28 frame, canvas pixels
    top: float


def random_placement(
    rng: np.random.Generator,
    size: int = CANVAS_SIZE,
    height: tuple[float, float] = (0.25, 0.9),
    brush: tuple[float, float] = (0.5, 1.5),
    max_brush: float = 0.25,
) -> Placement:
    """A random size (share of the canvas), a brush around the page's (a factor of
    `PAGE_BRUSH_PX`, scaled with the canvas, at most `max_brush` of the digit's height: people
    drawing small with a fat brush stop at blobs) and a position that keeps the whole digit on
    the canvas."""
    digit = float(rng.uniform(*height)) * size
    page = PAGE_BRUSH_PX * size / CANVAS_SIZE
    width = min(float(rng.uniform(*brush)) * page, max_brush * digit)
    # The ink spans about 20 of the frame's 28 units.
    frame = digit * 28.0 / 20.0
    margin = (frame - digit) / 2.0 - width / 2.0
    low, high = -margin, size - frame + margin
    left = float(rng.uniform(low, max(low, high)))
    top = float(rng.uniform(low, max(low, high)))
    return Placement(height=digit, brush=width, left=left, top=top)


def render_canvas(
    image28: np.ndarray,
    rng: np.random.Generator,
    style: str | None = None,
    placement: Placement | None = None,
    size: int = CANVAS_SIZE,
) -> Image.Image:
    """An MNIST digit redrawn as if by a person on the page's canvas (see module docstring)."""
    segments = skeleton_segments(image28)
    placement = placement or random_placement(rng, size)
    scale = placement.height / 20.0  # the MNIST ink is about 20 px tall
    mask = draw_mask(
        segments * scale + np.array([placement.left, placement.top], dtype=np.float32),
        size=size,
        brush=placement.brush,
    )
    style = style or str(rng.choice(STYLES, p=STYLE_WEIGHTS))
    return compose(mask, style, rng)


def to_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def render_canvas_png(
    image28: np.ndarray,
    rng: np.random.Generator | None = None,
    style: str | None = None,
    placement: Placement | None = None,
    size: int = CANVAS_SIZE,
) -> bytes:
    """PNG bytes of `render_canvas`: what the page would send for this digit."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return to_png(render_canvas(image28, rng, style=style, placement=placement, size=size))


# --- Ink as the page draws it ------------------------------------------------------------------

# The page's pad as it exports a drawing, this many pixels high whatever the screen (EXPORT_SIZE
# in frontend/static/frontend/app.js; a number's is twice as wide): the grid of the ink it sends,
# and the size of the PNG it sent before ink (and that `DrawingPad.toDataURL` still renders).
PAGE_EXPORT_SIZE = 192
# The page's brush as a share of its canvas's height (BRUSH in frontend/static/frontend/drawing.js).
PAGE_BRUSH = PAGE_BRUSH_PX / CANVAS_SIZE
# How much of the pad a drawing spans (its box's longest side over the pad's height): fixed
# without a random generator, drawn from the range with one.
PAGE_INK_SHARE = 0.6
PAGE_INK_SHARES = (0.35, 0.85)


def page_ink(
    ink: Ink,
    width: int = PAGE_EXPORT_SIZE,
    height: int = PAGE_EXPORT_SIZE,
    rng: np.random.Generator | None = None,
    share: float | None = None,
) -> Ink:
    """The ink scaled and moved onto a `width` x `height` pad as a person draws there: its box
    spanning `share` of the pad (a random share of `PAGE_INK_SHARES` with `rng`, else
    `PAGE_INK_SHARE`), centred, or at a random place that keeps the brush on the pad."""
    if share is None:
        share = float(rng.uniform(*PAGE_INK_SHARES)) if rng is not None else PAGE_INK_SHARE
    x0, y0, x1, y1 = bounds(ink)
    brush = PAGE_BRUSH * height
    room_w, room_h = max(width - 2 * brush, 1.0), max(height - 2 * brush, 1.0)
    scale = min(share * height / max(x1 - x0, y1 - y0, 1e-6), room_w / max(x1 - x0, 1e-6))
    scale = min(scale, room_h / max(y1 - y0, 1e-6))
    span_w, span_h = (x1 - x0) * scale, (y1 - y0) * scale
    if rng is None:
        left, top = (width - span_w) / 2, (height - span_h) / 2
    else:
        left = float(rng.uniform(brush, max(brush, width - brush - span_w)))
        top = float(rng.uniform(brush, max(brush, height - brush - span_h)))
    matrix = np.eye(2, dtype=np.float32) * scale
    return transformed(ink, matrix, (left - x0 * scale, top - y0 * scale))


def draw_page(
    ink: Ink, width: int = PAGE_EXPORT_SIZE, height: int = PAGE_EXPORT_SIZE
) -> Image.Image:
    """Ink already in the pad's pixels drawn as the page draws it (drawing.js `renderStrokes`):
    white on black, a round brush of `PAGE_BRUSH` of the height, quadratic curves through the
    midpoints between points, a tap a dot as wide as the brush. RGB, `width` x `height`."""
    segments = []
    for stroke in ink:
        if len(stroke) == 0:
            continue
        path = page_curve(stroke[:, :2], pieces=8)
        following = np.concatenate([path[1:], path[-1:]]) if len(path) > 1 else path
        segments.append(np.stack([path, following], axis=1))
    side = max(width, height)
    mask = draw_mask(np.concatenate(segments), size=side, brush=PAGE_BRUSH * height)
    return compose(mask.crop((0, 0, width, height)), "page")


def render_page_png(
    ink: Ink,
    width: int = PAGE_EXPORT_SIZE,
    height: int = PAGE_EXPORT_SIZE,
    rng: np.random.Generator | None = None,
    share: float | None = None,
) -> bytes:
    """PNG bytes of the ink as the page would send it (`page_ink`, then `draw_page`): the same
    drawing as the ink, for benchmarks that send it both ways."""
    return to_png(draw_page(page_ink(ink, width, height, rng, share), width, height))


def render_bitmap_png(image28: np.ndarray, size: int = 28, invert: bool = True) -> bytes:
    """A small bitmap as other clients send it: black ink on white (`invert`), `size` px."""
    array = np.asarray(image28, dtype=np.uint8)
    image = Image.fromarray(255 - array if invert else array)
    if size != array.shape[0]:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return to_png(image)


# --- Stroke templates: digits in several writing styles, no dataset needed ------------------------


def _arc(
    cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 24
) -> Polyline:
    """Points along an ellipse from angle `start` to `end` (degrees, counter-clockwise, y up)."""
    return [
        (cx + rx * math.cos(math.radians(t)), cy - ry * math.sin(math.radians(t)))
        for t in np.linspace(start, end, n)
    ]


def _bezier(p0: Point, p1: Point, p2: Point, n: int = 16) -> Polyline:
    return [
        (
            (1 - t) ** 2 * p0[0] + 2 * (1 - t) * t * p1[0] + t**2 * p2[0],
            (1 - t) ** 2 * p0[1] + 2 * (1 - t) * t * p1[1] + t**2 * p2[1],
        )
        for t in np.linspace(0.0, 1.0, n)
    ]


# Each digit: named variants, each a list of strokes, each a polyline in a unit box (x right,
# y down; the digit spans about 0..1 in height).
TEMPLATES: dict[int, dict[str, list[Polyline]]] = {
    0: {
        "oval": [_arc(0.5, 0.5, 0.3, 0.46, 90, 450, 40)],
        "slashed": [_arc(0.5, 0.5, 0.3, 0.46, 90, 450, 40), [(0.7, 0.12), (0.3, 0.88)]],
    },
    1: {
        "stroke": [[(0.5, 0.04), (0.5, 0.96)]],
        "flag": [[(0.3, 0.28), (0.56, 0.04), (0.56, 0.96)]],
        "serif": [[(0.32, 0.24), (0.55, 0.04), (0.55, 0.96)], [(0.32, 0.96), (0.78, 0.96)]],
    },
    2: {
        "plain": [[*_arc(0.5, 0.3, 0.27, 0.25, 160, -20, 20), (0.2, 0.95), (0.82, 0.95)]],
        "loop": [
            [
                *_arc(0.5, 0.3, 0.27, 0.25, 160, -20, 20),
                (0.3, 0.88),
                *_arc(0.3, 0.86, 0.08, 0.08, 180, 450, 12),
                (0.82, 0.94),
            ]
        ],
    },
    3: {
        "round": [
            _arc(0.48, 0.27, 0.27, 0.23, 150, -90, 20) + _arc(0.48, 0.73, 0.3, 0.23, 90, -150, 20)
        ],
        "flat_top": [
            [(0.22, 0.05), (0.78, 0.05), (0.45, 0.42), *_arc(0.48, 0.7, 0.3, 0.26, 80, -150, 20)]
        ],
    },
    4: {
        "closed": [[(0.66, 0.96), (0.66, 0.04), (0.14, 0.66), (0.86, 0.66)]],
        "open": [[(0.26, 0.04), (0.2, 0.62), (0.84, 0.62)], [(0.66, 0.08), (0.66, 0.96)]],
    },
    5: {
        "plain": [
            [(0.76, 0.05), (0.3, 0.05), (0.26, 0.44), *_arc(0.5, 0.68, 0.28, 0.27, 130, -150, 24)]
        ],
        "two_strokes": [
            [(0.3, 0.06), (0.26, 0.44), *_arc(0.5, 0.68, 0.28, 0.27, 130, -150, 24)],
            [(0.3, 0.06), (0.78, 0.06)],
        ],
    },
    6: {
        "plain": [
            _bezier((0.72, 0.04), (0.22, 0.22), (0.24, 0.72))
            + _arc(0.5, 0.7, 0.26, 0.25, 180, 540, 32)
        ],
    },
    7: {
        "plain": [[(0.18, 0.05), (0.82, 0.05), (0.4, 0.96)]],
        "crossed": [[(0.18, 0.05), (0.82, 0.05), (0.4, 0.96)], [(0.34, 0.5), (0.8, 0.5)]],
        "hooked": [[(0.18, 0.16), (0.2, 0.05), (0.82, 0.05), (0.4, 0.96)]],
    },
    8: {
        "loops": [
            _arc(0.5, 0.27, 0.21, 0.22, -90, 270, 32),
            _arc(0.5, 0.72, 0.27, 0.24, 90, 450, 32),
        ],
        "figure": [
            _bezier((0.72, 0.1), (0.5, -0.1), (0.3, 0.15))
            + _bezier((0.3, 0.15), (0.2, 0.35), (0.5, 0.5))
            + _bezier((0.5, 0.5), (0.85, 0.7), (0.55, 0.95))
            + _bezier((0.55, 0.95), (0.1, 0.95), (0.35, 0.6))
            + _bezier((0.35, 0.6), (0.9, 0.3), (0.72, 0.1))
        ],
    },
    9: {
        "straight": [[*_arc(0.5, 0.3, 0.25, 0.25, 0, 360, 32), (0.75, 0.3), (0.74, 0.96)]],
        "curly": [
            _arc(0.5, 0.3, 0.25, 0.25, 0, 360, 32) + _bezier((0.75, 0.3), (0.76, 1.0), (0.36, 0.92))
        ],
    },
}


def template_variants(digit: int) -> list[str]:
    return list(TEMPLATES[digit])


def template_segments(strokes: Sequence[Polyline]) -> np.ndarray:
    segments = [
        [stroke[i], stroke[min(i + 1, len(stroke) - 1)]]
        for stroke in strokes
        for i in range(len(stroke))
    ]
    return np.asarray(segments, dtype=np.float32)


def render_template(
    digit: int,
    variant: str | None = None,
    rng: np.random.Generator | None = None,
    style: str = "page",
    height: float | None = None,
    brush: float | None = None,
    centre: Point | None = None,
    size: int = CANVAS_SIZE,
    slant: float | None = None,
) -> Image.Image:
    """A digit drawn from a stroke template, as on the page's canvas.

    Without `rng` the result is fixed: a clear, centred digit of the first variant. With it,
    whatever is not given (size, brush, place) is random, within what people draw.
    """
    if digit not in TEMPLATES:
        raise ValueError(f"No template for {digit!r}; digits are 0..9.")
    variants = TEMPLATES[digit]
    if variant is None:
        variant = str(rng.choice(list(variants))) if rng is not None else next(iter(variants))
    strokes = variants[variant]
    if rng is not None:
        height = height or float(rng.uniform(0.25, 0.8)) * size
        brush = brush or float(np.clip(rng.uniform(0.05, 0.12) * height, 6.0, 40.0))
        half = height / 2 + brush
        centre = centre or (
            float(rng.uniform(half * 0.6, size - half * 0.6)),
            float(rng.uniform(half, size - half)),
        )
        slant = float(rng.uniform(-0.25, 0.25)) if slant is None else slant
    slant = slant or 0.0
    height = height or 0.6 * size
    brush = brush or max(6.0, 0.08 * height)
    centre = centre or (size / 2, size / 2)
    segments = template_segments(strokes) - 0.5
    # Slant: x moves with -y (y down), like handwriting leaning right for slant > 0.
    segments[..., 0] -= slant * segments[..., 1]
    segments = segments * height + np.array(centre, dtype=np.float32)
    return compose(draw_mask(segments, size=size, brush=brush), style, rng)


def render_template_png(digit: int, variant: str | None = None, **kwargs) -> bytes:
    """PNG bytes of `render_template`: a known digit, for tests that need no dataset."""
    return to_png(render_template(digit, variant, **kwargs))

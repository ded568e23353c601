"""Ink to the model's 28x28 input, drawn straight from the strokes: no picture in between.

Made the way MNIST was made and the way `preprocessing.ink_to_mnist` makes a canvas PNG into the
model's input: the digit's box (its points' box widened by the pen, so the stroke's width is
inside it) scaled to `DIGIT_BOX` on its longest side keeping the aspect ratio, white ink on
black, the peak at 255, and the centre of mass moved to `CENTRE_OF_MASS` by whole pixels, never
pushing ink off the image. The pen's width is a fixed share of the box (`STROKE_WIDTH` of the
28x28's pixels), so a tall thin "1" stays as thin as MNIST's ones; a client's brush and canvas
size do not matter, the ink has no scale. Strokes are drawn the way the page draws them (quadratic
curves through the midpoints, `ink.page_curve`), and each output pixel's grey is its distance to
the nearest stroke segment: full ink within the pen's radius, a ramp `FEATHER` wide across the
edge (analytic antialiasing, no supersampling).

Two paths, the same pixels (the tests hold them within a couple of grey levels), sharing the
placing (all the batch's strokes at once, in numpy) and the centring. On the CPU, numpy measures
each segment's distance to only the pixels its pen reaches (a window about 5 pixels square for a
short segment) and keeps the nearest per pixel; on a device, torch measures every segment of
every ink against every pixel in one computation, padded to (N, S, 2, 2) with a mask
(`rasterize_on_device`, which also runs on the CPU so the tests exercise it).

Cost is bounded by the ink's path, not its points: after scaling, a point less than `MIN_STEP` of
path after the last one kept is dropped (unless the pen turns back there), so a stroke keeps at
most (its length in output pixels) / `MIN_STEP` + (its turns) + 2 points: 60-150 segments for a
digit. The worst case is ink that turns back at every point or whose every step is longer than
that (a scribble back and forth across the box): then every point stays, each costing one window
on the CPU (at most the whole 28x28 for a segment across the box) and 784 distances on a device;
the serving layer's limits on points bound it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from classifier.ml.ink import Ink, page_curves
from classifier.ml.input import (
    CENTRE_OF_MASS,
    DIGIT_BOX,
    IMAGE_SIZE,
    EmptyImageError,
    InvalidImageError,
)

# The pen's width in the 28x28's pixels, inside the 20-pixel box: chosen on the pen digits'
# writers 1-10 with the shipped model (docs/model.md, "Ink"). MNIST's strokes are 2-3 pixels.
STROKE_WIDTH = 2.4
# Width of the antialiased edge, in output pixels: a pixel whose centre is on the pen's edge
# is half grey.
FEATHER = 2.0
# Path length, in output pixels, below which a point adds nothing worth its cost.
MIN_STEP = 0.5
# Each of the page's quadratic curves is flattened into this many segments (then thinned by
# MIN_STEP).
CURVE_PIECES = 4
# The most distance evaluations (inks x segments x pixels) one device computation holds: about
# 16 M floats per temporary; a bigger batch is drawn in chunks of segments.
DEVICE_CHUNK = 1 << 24

# The pixel centres, in the continuous frame where pixel (i, j) covers [j, j+1] x [i, i+1].
_CENTRES = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5


@dataclass(frozen=True)
class Placed:
    """A batch of inks placed in the 28x28 frame: segments (T, 2, 2) of (x, y), ink by ink,
    `owner` (T,) the ink of each, and `radius` (N,) each ink's pen."""

    segments: np.ndarray
    owner: np.ndarray
    radius: np.ndarray

    def of(self, index: int) -> np.ndarray:
        """The segments of one ink."""
        return self.segments[self.owner == index]


def rasterize(
    inks: Sequence[Ink],
    device: torch.device | str | None = None,
    *,
    width: float | Sequence[float] = STROKE_WIDTH,
    feather: float = FEATHER,
) -> np.ndarray:
    """The model's input (N, 28, 28) uint8 for a batch of inks; on the CPU without a device.

    `width` is the pen's in output pixels, one for all or one per ink (training varies it as
    people's pens vary). Raises `EmptyImageError` for an ink without points and
    `InvalidImageError` for non-finite coordinates (the serving layer refuses both first).
    """
    if device is None or torch.device(device).type == "cpu":
        return rasterize_on_cpu(inks, width=width, feather=feather)
    return rasterize_on_device(inks, device, width=width, feather=feather)


def rasterize_on_cpu(
    inks: Sequence[Ink],
    *,
    width: float | Sequence[float] = STROKE_WIDTH,
    feather: float = FEATHER,
) -> np.ndarray:
    """`rasterize` in numpy: each segment only over the pixels its pen can reach."""
    placed = place(inks, width, feather)
    radius = placed.radius[placed.owner]
    return _finish(_draw_numpy(placed.segments, placed.owner, radius, feather, len(inks)))


def rasterize_on_device(
    inks: Sequence[Ink],
    device: torch.device | str = "cpu",
    *,
    width: float | Sequence[float] = STROKE_WIDTH,
    feather: float = FEATHER,
) -> np.ndarray:
    """`rasterize` in torch on `device`: every segment of every ink in one computation."""
    placed = place(inks, width, feather)
    n = len(inks)
    if n == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    counts = np.bincount(placed.owner, minlength=n)
    slot = np.arange(len(placed.owner)) - (np.cumsum(counts) - counts)[placed.owner]
    padded = np.zeros((n, int(counts.max()), 2, 2), dtype=np.float32)
    mask = np.zeros((n, int(counts.max())), dtype=bool)
    padded[placed.owner, slot] = placed.segments
    mask[placed.owner, slot] = True
    device = torch.device(device)
    coverage = _draw_torch(
        torch.from_numpy(padded).to(device),
        torch.from_numpy(mask).to(device),
        torch.from_numpy(placed.radius).to(device),
        feather,
    )
    return _finish(coverage.cpu().numpy())


# --- Placing ---------------------------------------------------------------------------------


def place(
    inks: Sequence[Ink], width: float | Sequence[float] = STROKE_WIDTH, feather: float = FEATHER
) -> Placed:
    """The inks' strokes as segments in the 28x28 frame, each ink scaled to the box and thinned;
    all the batch's strokes at once.

    The box of the curves the page would draw through an ink's points, widened by the pen's
    width, becomes `DIGIT_BOX` on its longest side, centred on pixel (14, 14); the centring by
    mass comes after drawing. An ink whose points all coincide (a tap) has no size to scale: its
    box is the pen alone, a dot filling the box, as the page's PNG of a tap becomes through
    `ink_to_mnist`.
    """
    n = len(inks)
    if not feather > 0.0:
        raise ValueError(f"The antialiased edge must be wider than 0 pixels, not {feather}.")
    widths = np.broadcast_to(np.asarray(width, dtype=np.float64), (n,))
    if not ((widths > 0.0) & (widths < DIGIT_BOX)).all():
        raise ValueError(f"The pen's width must be between 0 and {DIGIT_BOX} pixels: {width}.")
    strokes = [stroke for ink in inks for stroke in ink]
    stroke_ink = np.repeat(np.arange(n), [len(ink) for ink in inks])
    lengths = np.array([len(stroke) for stroke in strokes], dtype=np.int64)
    sizes = np.bincount(stroke_ink, weights=lengths, minlength=n)
    if (sizes == 0).any():
        raise EmptyImageError("The ink has no points: draw a digit first.")
    if n == 0:
        return Placed(np.zeros((0, 2, 2), np.float32), np.zeros(0, np.int64), np.zeros(0))
    try:
        xy = np.concatenate([stroke[:, :2] for stroke in strokes]).astype(np.float64)
    except IndexError:
        raise TypeError("Expected a sequence of inks, each a tuple of (P, 3) strokes.") from None
    if not np.isfinite(xy).all():
        raise InvalidImageError("The ink has coordinates that are not finite numbers.")
    starts = (np.cumsum(sizes) - sizes).astype(np.int64)
    xy -= np.minimum.reduceat(xy, starts)[np.repeat(np.arange(n), sizes.astype(np.int64))]
    drawn, stroke = page_curves(xy, lengths, CURVE_PIECES)
    owner = stroke_ink[stroke]
    # Each ink's box is its drawn curves' (a sharp corner's point is only a control point).
    drawn_sizes = np.bincount(owner, minlength=n)
    starts = np.cumsum(drawn_sizes) - drawn_sizes
    low, high = np.minimum.reduceat(drawn, starts), np.maximum.reduceat(drawn, starts)
    extent = (high - low).max(axis=1)
    dot = extent <= 0.0
    scale = np.where(dot, 0.0, (DIGIT_BOX - widths) / np.where(dot, 1.0, extent))
    shift = CENTRE_OF_MASS + 0.5 - (high + low) * scale[:, None] / 2  # around pixel 14's centre
    drawn = (drawn * scale[owner, None] + shift[owner]).astype(np.float32)
    kept = thin(drawn, stroke, MIN_STEP)
    drawn, stroke = drawn[kept], stroke[kept]
    # Segments from each kept point to the next of its stroke; a stroke of one point, a dot.
    goes_on = np.zeros(len(stroke), dtype=bool)
    goes_on[:-1] = stroke[1:] == stroke[:-1]
    alone = ~goes_on
    alone[1:] &= ~goes_on[:-1]
    begin = np.flatnonzero(goes_on | alone)
    segments = drawn[np.concatenate([begin, begin + goes_on[begin]])].reshape(2, -1, 2)
    segments = segments.transpose(1, 0, 2)
    radius = np.where(dot, DIGIT_BOX / 2.0, widths / 2.0).astype(np.float32)
    return Placed(segments, stroke_ink[stroke[begin]], radius)


def thin(xy: np.ndarray, stroke: np.ndarray, step: float = MIN_STEP) -> np.ndarray:
    """Which of the points (P, 2) of strokes numbered `stroke` (P,) to keep: those less than
    `step` of path after the last one kept are dropped, except where the pen turns back (the
    tip of a cusp stays where it was drawn) and each stroke's first and last. A stroke keeps at
    most (its path length) / `step` + (its turns) + 2 points."""
    keep = np.ones(len(xy), dtype=bool)
    if len(xy) <= 2:
        return keep
    moves = np.diff(xy.astype(np.float64), axis=0)
    same = stroke[1:] == stroke[:-1]
    path = np.concatenate([[0.0], np.cumsum(np.hypot(moves[:, 0], moves[:, 1]) * same)])
    begins = np.arange(len(xy))
    begins[1:] *= ~same
    path -= path[np.maximum.accumulate(begins)]  # from each stroke's start
    bucket = np.floor(path / step)
    turns = (moves[:-1] * moves[1:]).sum(axis=1) < 0
    keep[1:-1] = (bucket[1:-1] != bucket[:-2]) | turns | ~same[:-1] | ~same[1:]
    return keep


# --- Drawing ---------------------------------------------------------------------------------


def _draw_numpy(
    segments: np.ndarray, owner: np.ndarray, radius: np.ndarray, feather: float, count: int
) -> np.ndarray:
    """Ink coverage (count, 28, 28) of segments (T, 2, 2) of the inks `owner` (T,) with pens
    of `radius` (T,): each segment over the window of pixels its pen reaches, then the nearest
    per pixel (`np.minimum.at`), all the batch's segments in one computation."""
    a, b = segments[:, 0], segments[:, 1]
    reach = (radius + feather / 2.0)[:, None]
    first = np.clip(np.ceil(np.minimum(a, b) - reach - 0.5), 0, IMAGE_SIZE).astype(np.int32)
    stop = np.clip(np.floor(np.maximum(a, b) + reach - 0.5) + 1, 0, IMAGE_SIZE).astype(np.int32)
    span = np.maximum(stop - first, 0)  # (T, 2): columns, rows
    pixels = span[:, 0] * span[:, 1]
    which = np.repeat(np.arange(len(segments)), pixels)
    local = np.arange(len(which), dtype=np.int32) - np.repeat(np.cumsum(pixels) - pixels, pixels)
    columns = span[which, 0]
    ix = first[which, 0] + local % columns
    iy = first[which, 1] + local // columns
    ax, ay = a[which, 0], a[which, 1]
    bx, by = b[which, 0] - ax, b[which, 1] - ay
    px, py = _CENTRES[ix] - ax, _CENTRES[iy] - ay
    t = np.clip((px * bx + py * by) / np.maximum(bx * bx + by * by, 1e-12), 0.0, 1.0)
    dx, dy = px - t * bx, py - t * by
    # How far inside the pen's edge each pixel is: the nearest segment's, per pixel.
    outside = np.full(count * IMAGE_SIZE * IMAGE_SIZE, np.inf, dtype=np.float32)
    flat = (owner[which] * IMAGE_SIZE + iy) * IMAGE_SIZE + ix
    np.minimum.at(outside, flat, np.sqrt(dx * dx + dy * dy) - radius[which])
    return _coverage(outside.reshape(count, IMAGE_SIZE, IMAGE_SIZE), 0.0, feather)


def _coverage(distance, radius, feather: float):
    """Ink at a pixel whose centre is `distance` from the pen's path: numpy or torch alike."""
    return ((radius - distance) / feather + 0.5).clip(0.0, 1.0)


def _draw_torch(
    segments: torch.Tensor, mask: torch.Tensor, radius: torch.Tensor, feather: float
) -> torch.Tensor:
    """Ink coverage (N, 28, 28) of padded segments (N, S, 2, 2), `mask` (N, S) marking the real
    ones, pens of `radius` (N,): chunks of segments, each one computation over the batch."""
    n, count = mask.shape
    centres = torch.from_numpy(_CENTRES).to(segments.device)
    nearest = torch.full((n, IMAGE_SIZE, IMAGE_SIZE), torch.inf, device=segments.device)
    chunk = max(1, DEVICE_CHUNK // max(1, n * IMAGE_SIZE * IMAGE_SIZE))
    for start in range(0, count, chunk):
        part = segments[:, start : start + chunk]
        ax, ay = part[..., 0, 0, None, None], part[..., 0, 1, None, None]  # (N, S, 1, 1)
        bx, by = part[..., 1, 0, None, None] - ax, part[..., 1, 1, None, None] - ay
        px, py = centres.view(1, 1, 1, -1) - ax, centres.view(1, 1, -1, 1) - ay
        length2 = (bx * bx + by * by).clamp_min(1e-12)
        t = ((px * bx + py * by) / length2).clamp(0.0, 1.0)
        dx, dy = px - t * bx, py - t * by
        squared = (dx * dx + dy * dy).masked_fill(
            ~mask[:, start : start + chunk, None, None], torch.inf
        )
        nearest = torch.minimum(nearest, squared.amin(dim=1))
    return _coverage(nearest.sqrt(), radius.view(-1, 1, 1), feather)


# --- Centring ---------------------------------------------------------------------------------


def _finish(coverage: np.ndarray) -> np.ndarray:
    """Coverage (N, 28, 28) to uint8 images: the peak at 255 and the centre of mass moved to
    `CENTRE_OF_MASS` by whole pixels, clamped so no ink leaves the image (as `ink_to_mnist`)."""
    n = len(coverage)
    if n == 0:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    image = coverage / np.maximum(coverage.max(axis=(1, 2), keepdims=True), 1e-6)
    index = np.arange(IMAGE_SIZE, dtype=np.float64)
    mass = np.maximum(image.sum(axis=(1, 2), dtype=np.float64), 1e-12)
    rows, cols = image.sum(axis=2, dtype=np.float64), image.sum(axis=1, dtype=np.float64)
    shift_y = np.rint(CENTRE_OF_MASS - (rows @ index) / mass).astype(np.int64)
    shift_x = np.rint(CENTRE_OF_MASS - (cols @ index) / mass).astype(np.int64)
    shift_y = _keep_on_image(shift_y, rows > 0)
    shift_x = _keep_on_image(shift_x, cols > 0)
    source_y = np.arange(IMAGE_SIZE)[None, :] - shift_y[:, None]  # (N, 28)
    source_x = np.arange(IMAGE_SIZE)[None, :] - shift_x[:, None]
    valid = ((source_y >= 0) & (source_y < IMAGE_SIZE))[:, :, None] & (
        (source_x >= 0) & (source_x < IMAGE_SIZE)
    )[:, None, :]
    moved = image[
        np.arange(n)[:, None, None],
        source_y.clip(0, IMAGE_SIZE - 1)[:, :, None],
        source_x.clip(0, IMAGE_SIZE - 1)[:, None, :],
    ]
    return np.round(np.where(valid, moved, 0.0) * 255.0).astype(np.uint8)


def _keep_on_image(shift: np.ndarray, inked: np.ndarray) -> np.ndarray:
    """Shifts clamped so the inked rows (or columns) (N, 28) stay within the image."""
    first = inked.argmax(axis=1)
    last = IMAGE_SIZE - 1 - inked[:, ::-1].argmax(axis=1)
    return np.clip(shift, -first, IMAGE_SIZE - 1 - last)

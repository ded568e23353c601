"""Ink: a drawing as the pen made it, strokes of points in drawing order.

The one home of the ink's shape in the ML core. A stroke is a float32 array (P, 3) of x, y and
t: x and y in the drawing area's pixels (origin top left, y growing downward), t in milliseconds
(NaN where the client sent no times). Any scale and offset: the rasterizer normalises. The
serving layer checks a client's JSON against the limits (classifier.serving.protocol) before any
of this runs; `from_lists` converts what it accepted.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence

import numpy as np

Stroke = np.ndarray  # (P, 3) float32: x, y, t (ms, NaN when unknown)
Ink = tuple[Stroke, ...]


def from_lists(strokes: Sequence[Sequence[Sequence[float]]]) -> Ink:
    """Ink from JSON-style lists: strokes of points `[x, y]` or `[x, y, t]` (already checked).

    A stroke whose points all have the same length (as every client's do) converts in one numpy
    call; one that mixes the two forms, point by point (the worker does this for every request,
    so the common case must not loop in Python)."""
    ink = []
    for stroke in strokes:
        array = np.full((len(stroke), 3), np.nan, dtype=np.float32)
        width = len(stroke[0]) if len(stroke) else 0
        if 2 <= width <= 3 and all(len(point) == width for point in stroke):
            # fromiter: half the time of np.asarray on nested lists.
            flat = itertools.chain.from_iterable(stroke)
            given = np.fromiter(flat, dtype=np.float32, count=len(stroke) * width)
            array[:, :width] = given.reshape(len(stroke), width)
        else:
            for i, point in enumerate(stroke):
                array[i, : len(point)] = point[:3]
        ink.append(array)
    return tuple(ink)


def to_lists(ink: Ink, decimals: int = 1) -> list[list[list[float]]]:
    """The inverse of `from_lists`, rounded: what a correction stores and a client sends.
    With `decimals` 0 the numbers are ints, as the page sends them (whole pixels and ms)."""
    out = []
    for stroke in ink:
        has_time = not np.isnan(stroke[:, 2]).any()
        columns = np.round((stroke if has_time else stroke[:, :2]).astype(np.float64), decimals)
        out.append((columns.astype(np.int64) if decimals == 0 else columns).tolist())
    return out


def from_xy(strokes: Sequence[np.ndarray], times: Sequence[np.ndarray] | None = None) -> Ink:
    """Ink from (P, 2) point arrays, with per-point times in ms when known."""
    ink = []
    for i, points in enumerate(strokes):
        points = np.asarray(points, dtype=np.float32).reshape(-1, 2)
        t = (
            np.asarray(times[i], dtype=np.float32).reshape(-1, 1)
            if times is not None
            else np.full((len(points), 1), np.nan, dtype=np.float32)
        )
        ink.append(np.concatenate([points, t], axis=1))
    return tuple(ink)


def points(ink: Ink) -> np.ndarray:
    """All the ink's points (N, 2), x and y."""
    if not ink:
        return np.zeros((0, 2), dtype=np.float32)
    return np.concatenate([stroke[:, :2] for stroke in ink])


def bounds(ink: Ink) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the ink's points."""
    xy = points(ink)
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    return float(x0), float(y0), float(x1), float(y1)


def page_curve(xy: np.ndarray, pieces: int = 4) -> np.ndarray:
    """A stroke's points (P, 2) as the page draws them (frontend/static/frontend/drawing.js):
    from the first point, a quadratic curve to the midpoint of each next pair with the point
    between as its control, then a line to the last point; each curve flattened into `pieces`
    segments (float64 points stay float64). Fewer than three points are drawn as they are."""
    xy = np.asarray(xy)
    xy = xy.astype(np.result_type(xy.dtype, np.float32), copy=False).reshape(-1, 2)
    return page_curves(xy, np.array([len(xy)]), pieces)[0]


def page_curves(
    xy: np.ndarray, lengths: np.ndarray, pieces: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """`page_curve` of every stroke at once: `xy` (P, 2) holds the strokes' points one stroke
    after another, `lengths` how many each has. Returns the drawn points and the stroke each
    belongs to: every stroke's first and last points stay, each point between them becomes the
    `pieces` ends of its curve's pieces."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    ends = np.zeros(len(xy), dtype=bool)
    ends[starts[lengths > 0]] = True
    first = ends.copy()
    ends[(starts + lengths - 1)[lengths > 0]] = True
    inner = np.flatnonzero(~ends)
    mids = (xy[inner] + xy[inner + 1]) / 2  # each curve ends at a midpoint ...
    # ... and starts where the last one ended, or at the stroke's first point.
    begins = np.where(first[inner - 1, None], xy[inner - 1], (xy[inner - 1] + xy[inner]) / 2)
    t = _piece_ends(pieces, xy.dtype.str)
    curves = (1 - t) ** 2 * begins + 2 * (1 - t) * t * xy[inner] + t**2 * mids  # (pieces, C, 2)
    count = np.where(ends, 1, pieces)
    at = np.cumsum(count) - count
    drawn = np.empty((int(count.sum()), 2), dtype=xy.dtype)
    drawn[at[ends]] = xy[ends]
    drawn[at[inner, None] + np.arange(pieces)] = curves.transpose(1, 0, 2)
    stroke = np.repeat(np.arange(len(lengths)), lengths)
    return drawn, np.repeat(stroke, count)


@functools.cache
def _piece_ends(pieces: int, dtype: str) -> np.ndarray:
    """Where each of a curve's `pieces` ends along it, (pieces, 1, 1): read-only, shared."""
    ends = np.linspace(0.0, 1.0, pieces + 1, dtype=dtype)[1:, None, None]
    ends.flags.writeable = False
    return ends


def transformed(ink: Ink, matrix: np.ndarray, offset: Sequence[float] = (0.0, 0.0)) -> Ink:
    """Every point p moved to matrix @ p + offset (times kept): for placing and augmenting."""
    matrix = np.asarray(matrix, dtype=np.float32)
    shift = np.asarray(offset, dtype=np.float32)
    out = []
    for stroke in ink:
        moved = stroke.copy()
        moved[:, :2] = stroke[:, :2] @ matrix.T + shift
        out.append(moved)
    return tuple(out)

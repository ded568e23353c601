"""The world's digit styles made from real pen strokes, where the data lacks them.

The pen digits were written by 30 people on one tablet: few of their zeros carry a slash or a dot,
few sevens a bar, few ones a long flag and a foot. Each style here takes a real digit's ink and
adds what a writer of that style adds, as new strokes in drawing order: a slash across a zero
(from below left to above right, past the oval), a dot inside a zero, a bar across a seven's stem
at about half its height, a long flag leading into a one's stem (joined to the stroke that starts
at its top, as people write it in one movement) and a foot under it, and an open four made from a
closed one by standing its diagonal upright. The new points come at the source's own spacing and,
when the source has times, at its own speed after a pause: a style is ink like any other
(classifier.ml.ink), drawn by the rasterizer or the page. A style that the strokes do not allow
(a four written in one stroke) gives None.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from classifier.ml.ink import Ink, bounds

# The pause before an added stroke, in ms, when the source has times (the pen set's `.DT`).
PAUSE_MS = 100.0


@dataclass(frozen=True)
class StyledDigit:
    """A real digit in a style it was not written in: the style, the label, the writer, the ink."""

    style: str
    label: int
    writer: int
    ink: Ink


# --- Helpers: new strokes at the source's pace ---------------------------------------------------


def _step(ink: Ink) -> float:
    """The source's median distance between consecutive points (its sampling, in its units)."""
    steps = [np.hypot(*np.diff(s[:, :2], axis=0).T) for s in ink if len(s) > 1]
    moves = np.concatenate(steps) if steps else np.zeros(0)
    moves = moves[moves > 0]
    x0, y0, x1, y1 = bounds(ink)
    return float(np.median(moves)) if len(moves) else max(x1 - x0, y1 - y0, 1.0) / 20


def _interval(ink: Ink) -> float | None:
    """The source's median time between consecutive points in ms, None when it has no times."""
    each = [np.diff(s[:, 2]) for s in ink if len(s) > 1]
    gaps = np.concatenate(each) if each else np.zeros(0)
    if not len(gaps) or np.isnan(gaps).any():
        return None
    return float(np.median(gaps))


def _line(
    start: Sequence[float] | np.ndarray, end: Sequence[float] | np.ndarray, step: float
) -> np.ndarray:
    """Points (P, 2) from `start` to `end` about `step` apart, both ends included."""
    a, b = np.asarray(start, np.float32), np.asarray(end, np.float32)
    count = max(2, int(np.ceil(np.hypot(*(b - a)) / max(step, 1e-6))) + 1)
    return a + np.linspace(0.0, 1.0, count, dtype=np.float32)[:, None] * (b - a)


def _timed(xy: np.ndarray, start_ms: float, interval: float | None) -> np.ndarray:
    stroke = np.full((len(xy), 3), np.nan, dtype=np.float32)
    stroke[:, :2] = xy
    if interval is not None:
        stroke[:, 2] = start_ms + interval * np.arange(len(xy), dtype=np.float32)
    return stroke


def _then(ink: Ink, *added: np.ndarray) -> Ink:
    """The ink with strokes of points (P, 2) drawn after it, each after a pause when timed."""
    interval = _interval(ink)
    clock = float(ink[-1][-1, 2]) if interval is not None else 0.0
    out = list(ink)
    for xy in added:
        stroke = _timed(xy, clock + PAUSE_MS, interval)
        clock = float(stroke[-1, 2]) if interval is not None else 0.0
        out.append(stroke)
    return tuple(out)


# --- The styles ------------------------------------------------------------------------------


def slashed_zero(ink: Ink, rng: np.random.Generator) -> Ink | None:
    """A slash across the zero, from below left to above right, a little past the oval."""
    x0, y0, x1, y1 = bounds(ink)
    w, h = x1 - x0, y1 - y0
    over = rng.uniform(0.0, 0.15, size=2)
    start = (x0 + w * rng.uniform(-0.1, 0.15), y1 + h * over[0])
    end = (x1 - w * rng.uniform(-0.1, 0.15), y0 - h * over[1])
    return _then(ink, _line(start, end, _step(ink)))


def dotted_zero(ink: Ink, rng: np.random.Generator) -> Ink | None:
    """A dot inside the zero near its middle: a tiny stroke, as a pen's dab leaves."""
    x0, y0, x1, y1 = bounds(ink)
    w, h = x1 - x0, y1 - y0
    centre = np.array([x0 + w * rng.uniform(0.42, 0.58), y0 + h * rng.uniform(0.42, 0.58)])
    size = 0.04 * max(w, h)
    angle = rng.uniform(0, np.pi)
    offset = size * np.array([np.cos(angle), np.sin(angle)])
    return _then(ink, _line(centre - offset, centre + offset, size))


def barred_seven(ink: Ink, rng: np.random.Generator) -> Ink | None:
    """A short bar across the seven's stem at about half its height, slightly tilted."""
    x0, y0, x1, y1 = bounds(ink)
    w, h = x1 - x0, y1 - y0
    y = y0 + h * rng.uniform(0.45, 0.6)
    stem = _crossing(ink, y)
    if stem is None:
        return None
    half = max(w, 0.5 * h) * rng.uniform(0.22, 0.32)
    tilt = h * rng.uniform(-0.04, 0.04)
    return _then(ink, _line((stem - half, y + tilt), (stem + half, y - tilt), _step(ink)))


def _crossing(ink: Ink, y: float) -> float | None:
    """The mean x where the ink's segments cross the height `y`; None where none does."""
    xs = []
    for stroke in ink:
        a, b = stroke[:-1, :2], stroke[1:, :2]
        cross = (a[:, 1] - y) * (b[:, 1] - y) <= 0
        for (ax, ay), (bx, by) in zip(a[cross], b[cross], strict=True):
            t = 0.5 if by == ay else (y - ay) / (by - ay)
            xs.append(ax + t * (bx - ax))
    return float(np.mean(xs)) if xs else None


def flagged_one(ink: Ink, rng: np.random.Generator, foot: bool = False) -> Ink | None:
    """A long flag leading down-left from the one's top, written in the same movement as the
    stem: a short flag the writer drew is replaced, the points before the top dropped. With
    `foot`, a bar under the stem too. None when the stroke holding the top does not go down from
    it (a one written upward)."""
    _, y0, _, y1 = bounds(ink)
    h = y1 - y0
    index = min(range(len(ink)), key=lambda i: float(ink[i][:, 1].min()))
    stroke = ink[index]
    top_at = int(np.argmin(stroke[:, 1]))
    stem = stroke[top_at:]
    if h <= 0 or stem[-1, 1] - stem[0, 1] < 0.6 * h:
        return None
    top = stem[0, :2]
    length = h * rng.uniform(0.3, 0.45)
    angle = np.deg2rad(rng.uniform(20, 45))  # below the horizontal, towards the left
    start = top + length * np.array([-np.cos(angle), np.sin(angle)], dtype=np.float32)
    flag = _line(start, top, _step(ink))[:-1]
    interval = _interval(ink)
    flagged = np.concatenate([_timed(flag, 0.0, interval), stem])
    out = list(ink)
    out[index] = flagged
    if interval is not None:
        # the stroke starts when it did, the stem follows the flag at the pen's pace, and every
        # later stroke moves by as much as this one's end did
        flagged[: len(flag), 2] = stroke[0, 2] + interval * np.arange(len(flag))
        flagged[len(flag) :, 2] += stroke[0, 2] + interval * len(flag) - stem[0, 2]
        delta = flagged[-1, 2] - stroke[-1, 2]
        for later in range(index + 1, len(out)):
            out[later] = out[later].copy()
            out[later][:, 2] += delta
    if not foot:
        return tuple(out)
    bottom_x = float(stem[-1, 0])
    half = h * rng.uniform(0.18, 0.28)
    y = y1 + h * rng.uniform(0.0, 0.03)
    return _then(tuple(out), _line((bottom_x - half, y), (bottom_x + half, y), _step(ink)))


def footed_one(ink: Ink, rng: np.random.Generator) -> Ink | None:
    """`flagged_one` with a foot."""
    return flagged_one(ink, rng, foot=True)


def open_four(ink: Ink, rng: np.random.Generator) -> Ink | None:
    """A closed four (a diagonal down to a corner, then across: one stroke; the stem another)
    opened: the diagonal stood upright above its corner, so the top no longer meets the stem.
    None unless the four is written that way in two or more strokes."""
    if len(ink) < 2:
        return None
    x0, y0, x1, y1 = bounds(ink)
    w, h = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)
    for index, stroke in enumerate(ink):
        xy = stroke[:, :2]
        if len(xy) < 3:
            continue
        corner = int(np.argmax((xy[:, 1] - y0) / h - (xy[:, 0] - x0) / w))
        if corner in (0, len(xy) - 1):
            continue
        start, at, end = xy[0], xy[corner], xy[-1]
        diagonal = start[1] < at[1] - 0.3 * h and start[0] > at[0] + 0.1 * w
        across = end[0] > at[0] + 0.3 * w
        if not (diagonal and across):
            continue
        lean = rng.uniform(-0.05, 0.05) * w
        opened = stroke.copy()
        share = (at[1] - xy[:corner, 1]) / max(at[1] - start[1], 1e-6)  # 0 at the corner, 1 top
        opened[:corner, 0] = at[0] + lean * share
        return (*ink[:index], opened, *ink[index + 1 :])
    return None


# Each style: the digit it applies to and how it is made.
STYLES: dict[str, tuple[int, Callable[[Ink, np.random.Generator], Ink | None]]] = {
    "slashed zero": (0, slashed_zero),
    "dotted zero": (0, dotted_zero),
    "barred seven": (7, barred_seven),
    "one with a long flag": (1, flagged_one),
    "one with a flag and a foot": (1, footed_one),
    "open four": (4, open_four),
}


def make_styles(
    digits: Sequence, seed: int = 0, styles: Sequence[str] | None = None
) -> list[StyledDigit]:
    """Every style of `styles` (all by default) made from each digit it applies to, where the
    strokes allow; `digits` are pen digits (label, writer, ink), their times kept when timed."""
    rng = np.random.default_rng(seed)
    made = []
    for name in styles if styles is not None else STYLES:
        label, make = STYLES[name]
        for digit in digits:
            if digit.label != label:
                continue
            ink = make(digit.ink, rng)
            if ink is not None:
                made.append(StyledDigit(name, label, digit.writer, ink))
    return made

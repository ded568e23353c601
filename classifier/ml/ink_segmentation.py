"""Read a number from ink: its strokes grouped into digits by drawing order, columns and time.

People write a number digit by digit, each digit in one to four strokes drawn one after the
other. So a digit is a run of consecutive strokes, and two digits that touch or overlap in
pixels are still different strokes: no cut through a blob of ink is needed. Three things are
settled before the classifier speaks:

1. The digits' height `H` is measured: for each stroke, the height of all strokes over its
   middle column; the median of those.
2. A short stroke (under `SCRAP` heights: the bar of a 7 or a 4, the flag of a 5, a foot) drawn
   after the next digit was begun, lying over an earlier stroke and not over the one before it,
   is moved back after that earlier stroke: the run stays consecutive. A tiny stroke over
   nothing (a full stop, a slip of the pen) is dropped.
3. A single stroke wider than `WIDE_STROKE` heights may hold several digits written without
   lifting the pen: it (with the short strokes over it drawn next to it) is also drawn as a
   picture and cut as an image is (classifier.ml.segmentation); the reading below takes the
   picture's digits or the stroke's runs, whichever scores better.

Then every run of up to `MAX_RUN` consecutive strokes whose strokes reach each other's columns
and that is no wider than `MAX_WIDTH` heights is a candidate digit, rasterized
(classifier.ml.rasterizer) and scored in the batch's one model call with every other request's
images. `InkSegmentation.read` picks the runs by a shortest path over the strokes, as
segmentation.py picks cuts: the log of each run's top probability, a price per digit beyond the
first, the log-odds that each joined stroke belongs to the run from its geometry (two digits
written overlapping share a sliver of columns and fill the same band of the line; a 4's two
strokes share their columns, a 7's bar sits at its top), a price for a long pause before it
(when the ink has times), and the width and height priors of a digit.

The digits are read left to right by their middles, whatever order they were written in: a
digit added in front afterwards reads first, as on paper. Each digit's box is in the ink's own
coordinates (its points' box, x1 and y1 exclusive). Too many strokes to group (`MAX_STROKES`)
are read as the picture of the whole ink, so the cost stays bounded whatever a client sends.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from classifier.ml.brush import compose, draw_mask
from classifier.ml.ink import Ink, page_curve
from classifier.ml.input import MAX_NUMBER_DIGITS, EmptyImageError, TooManyDigitsError
from classifier.ml.rasterizer import rasterize
from classifier.ml.segmentation import Digit, Segmentation, segment

Box = tuple[int, int, int, int]

# A stroke shorter than this share of the digits' height is part of a digit, never one alone
# without a price (the bar of a 7, the flag of a 5, a 1's foot).
SCRAP = 0.5
# A short stroke lying over an earlier stroke by this share of its width, and over the stroke
# before it by less than LATE_PREVIOUS, was drawn late: it joins the earlier one.
LATE_OVER = 0.5
LATE_PREVIOUS = 0.2
# A stroke smaller than this (heights, either side) that comes within REACH of no other stroke's
# columns is a full stop or a slip of the pen: dropped.
NOISE = 0.15
# A stroke joins a run only when its columns come within this many heights of the run's.
REACH = 0.1
# The most strokes in one digit, and the widest run that is one digit (heights).
MAX_RUN = 4
MAX_WIDTH = 1.6
# A single stroke wider than this (heights) may hold several digits: read as a picture.
WIDE_STROKE = 1.2
# Beyond this many strokes (a 12-digit number has about 30) the ink is read as its picture; at
# most MAX_CANDIDATES runs are rasterized (single strokes first, then pairs, then threes...), and
# at most MAX_PICTURES wide strokes are read as pictures, each of at most PICTURE_CROPS crops. So
# an ink makes at most MAX_CROPS candidates, or, read as a picture, what an image can make.
MAX_STROKES = 60
MAX_CANDIDATES = 120
MAX_PICTURES = 4
PICTURE_CROPS = 40
MAX_CROPS = MAX_CANDIDATES + MAX_PICTURES * PICTURE_CROPS
# Log-price of each digit beyond the first.
SPLIT_COST = 1.5
# Whether a stroke belongs to the run before it, before the classifier speaks: the log-odds
# JOIN_BIAS + JOIN_SHARE * (the share of the narrower one's columns they share) + JOIN_BAND *
# (how far their tops and bottoms differ, as a share of their joint height: a new digit fills the
# same band of the line, a 4's tail or a 7's bar does not) - JOIN_GAP * (the gap between them, in
# heights) - JOIN_TALL * (the stroke's height, in heights: a bar or a flag is short). Fitted
# (logistic regression, 98.8% of pairs right) on the consecutive strokes of numbers composed of
# the pen digits' writers 1-10 (classifier.ml.training.ink_numbers); held at most JOIN_MAX either
# way and weighed JOIN_WEIGHT against the classifier's log-probabilities.
JOIN_BIAS = -2.2
JOIN_SHARE = 4.6
JOIN_BAND = 3.1
JOIN_GAP = 2.7
JOIN_TALL = 1.4
JOIN_MAX = 4.0
JOIN_WEIGHT = 1.0
# A stroke's or run's width is counted as at least this many heights (a "1" has no width).
MIN_WIDTH = 0.15
# With times: log-price per doubling of the pause before a joined stroke beyond PAUSE_MS.
PAUSE_MS = 400.0
PAUSE_COST = 0.5
# A digit shorter than SHORT heights pays SHORT_COST; one wider than WIDE_PART pays WIDE_COST per
# height beyond it. (No price for a narrow one, unlike an image's cut parts: a stroke is never
# half a cut digit, and a narrow part of a digit is priced by how it joins.)
SHORT = 0.55
SHORT_COST = 3.0
WIDE_PART = 1.0
WIDE_COST = 3.0
# A stroke drawn as a picture (WIDE_STROKE, MAX_STROKES): the digits' height in its pixels, and
# the pen's width in heights (the page's brush on a digit of half its canvas).
PICTURE_HEIGHT = 64
PICTURE_SIDE = 800
PICTURE_PEN = 0.13


@dataclass(frozen=True)
class _Stroke:
    index: int  # in the ink as sent
    xy: np.ndarray  # (P, 2)
    t0: float  # first and last time, NaN when unknown
    t1: float
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def width(self) -> float:
        return self.x1 - self.x0


@dataclass(frozen=True)
class _Run:
    """A candidate digit: strokes [start, stop) of the ordered strokes, its crop index and box,
    and its price before the classifier speaks (joins, pauses, width, height)."""

    start: int
    stop: int
    crop: int
    box: Box
    price: float


@dataclass(frozen=True)
class _Picture:
    """Strokes [start, stop) read as a picture: its image segmentation, the index of its first
    crop, and how its pixels map back to the ink (ink = pixel / scale + offset)."""

    start: int
    stop: int
    segmentation: Segmentation
    first: int
    scale: float
    offset: tuple[float, float]


@dataclass(frozen=True)
class InkSegmentation:
    """Every candidate digit the classifier must score for one ink, and how to read the number
    back: `images` and `read` as `segmentation.Segmentation` has them."""

    crops: np.ndarray  # (M, 28, 28) uint8
    height: float  # the digits' height, in the ink's units
    strokes: int  # strokes grouped
    runs: list[_Run] = field(default_factory=list)
    pictures: list[_Picture] = field(default_factory=list)

    def images(self) -> np.ndarray:
        """The candidates' images, (M, 28, 28) uint8, for one model call."""
        return self.crops

    def read(self, probabilities: np.ndarray) -> list[Digit]:
        """The digits, left to right, given the classifier's probabilities (M, 10) for `images`.

        Raises `TooManyDigitsError` when the best reading has more than MAX_NUMBER_DIGITS.
        """
        probabilities = np.asarray(probabilities, dtype=np.float64)
        # Each step covers strokes [start, stop) with its digits and score: a run is one digit,
        # a picture as many as its image segmentation reads.
        steps: dict[int, list[tuple[int, float, list[Digit]]]] = {}
        for run in self.runs:
            probs = probabilities[run.crop]
            score = math.log(max(float(probs.max()), 1e-9)) - run.price
            digit = Digit(self.crops[run.crop], run.box, probs, run.crop)
            steps.setdefault(run.stop, []).append((run.start, score, [digit]))
        for picture in self.pictures:
            count = len(picture.segmentation.crops)
            part = probabilities[picture.first : picture.first + count]
            digits = [
                Digit(
                    d.image,
                    _unmap(d.box, picture.scale, picture.offset),
                    d.probabilities,
                    picture.first + d.crop,
                )
                for d in picture.segmentation.read(part)
            ]
            score = sum(math.log(max(float(d.probabilities.max()), 1e-9)) for d in digits)
            score -= SPLIT_COST * (len(digits) - 1)
            steps.setdefault(picture.stop, []).append((picture.start, score, digits))
        # The best path over the strokes; each digit beyond the first pays SPLIT_COST.
        n = self.strokes
        best = [-math.inf] * (n + 1)
        back: list[tuple[int, list[Digit]] | None] = [None] * (n + 1)
        best[0] = 0.0
        for j in range(1, n + 1):
            for start, score, digits in steps.get(j, []):
                if best[start] == -math.inf:
                    continue
                total = best[start] + score - (SPLIT_COST if start > 0 else 0.0)
                if total > best[j]:
                    best[j], back[j] = total, (start, digits)
        chosen: list[Digit] = []
        j = n
        while j > 0:
            step = back[j]
            assert step is not None  # every end the best path reaches has its step back
            start, digits = step
            chosen += digits
            j = start
        if len(chosen) > MAX_NUMBER_DIGITS:
            raise _too_many(len(chosen))
        return sorted(chosen, key=lambda d: d.box[0] + d.box[2])


def _too_many(count: int) -> TooManyDigitsError:
    return TooManyDigitsError(
        f"The drawing holds {count} digits or more; a number may have at most {MAX_NUMBER_DIGITS}."
    )


def _unmap(box: Box, scale: float, offset: tuple[float, float]) -> Box:
    """A picture's pixel box back in the ink's coordinates."""
    return (
        math.floor(box[0] / scale + offset[0]),
        math.floor(box[1] / scale + offset[1]),
        math.ceil(box[2] / scale + offset[0]),
        math.ceil(box[3] / scale + offset[1]),
    )


# --- Strokes -------------------------------------------------------------------------------------


def _strokes(ink: Ink) -> list[_Stroke]:
    out = []
    for index, stroke in enumerate(ink):
        stroke = np.asarray(stroke, dtype=np.float32)
        if len(stroke) == 0:
            continue
        xy = stroke[:, :2]
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        t = stroke[:, 2] if stroke.shape[1] > 2 else np.full(len(stroke), np.nan)
        out.append(
            _Stroke(
                index, xy, float(t[0]), float(t[-1]), float(x0), float(y0), float(x1), float(y1)
            )
        )
    return out


def digit_height(strokes: list[_Stroke]) -> float:
    """The digits' height: for each stroke, the height of it with the strokes that share most of
    its columns (a 7's bar with its stem, an 8's loops, a 4's two strokes), the median of those."""
    tallest = max(s.height for s in strokes)
    rough = float(np.median([s.height for s in strokes if s.height >= 0.5 * tallest]))
    rough = rough if rough > 0 else max(max(s.width for s in strokes), 1.0)
    heights = []
    for s in strokes:
        over = [o for o in strokes if share(o, s, MIN_WIDTH * rough) >= 0.5]
        heights.append(max(o.y1 for o in over) - min(o.y0 for o in over))
    height = float(np.median(heights))
    if height <= 0:  # every stroke flat: a row of dashes, or one point
        height = max(max(s.width for s in strokes), 1.0)
    return height


def share(a: _Stroke | tuple[float, float], b: _Stroke, least: float) -> float:
    """How much of the narrower one's columns two strokes (or a column range and a stroke)
    share, each at least `least` wide about its middle (a "1" is a line with no width)."""
    ax0, ax1 = (a.x0, a.x1) if isinstance(a, _Stroke) else a
    spans = []
    for x0, x1 in ((ax0, ax1), (b.x0, b.x1)):
        pad = max(0.0, least - (x1 - x0)) / 2
        spans.append((x0 - pad, x1 + pad))
    (ax0, ax1), (bx0, bx1) = spans
    shared = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    return shared / max(min(ax1 - ax0, bx1 - bx0), 1e-9)


def _ordered(strokes: list[_Stroke], height: float) -> list[_Stroke]:
    """The strokes in drawing order with late short strokes moved back and noise dropped."""
    reach = REACH * height
    kept = []
    for s in strokes:
        small = max(s.width, s.height) < NOISE * height
        alone = not any(
            o is not s and o.x0 - reach <= s.x1 and s.x0 <= o.x1 + reach for o in strokes
        )
        if not (small and alone):
            kept.append(s)
    kept = kept or strokes
    ordered: list[_Stroke] = []
    least = MIN_WIDTH * height
    for s in kept:
        if s.height < SCRAP * height and len(ordered) >= 2:
            previous = share(ordered[-1], s, least)
            overs = [share(o, s, least) for o in ordered[:-1]]
            best = int(np.argmax(overs))
            if previous < LATE_PREVIOUS and overs[best] >= LATE_OVER:
                # After the latest of the strokes it lies over as much as over the best.
                at = max(i for i, v in enumerate(overs) if v >= overs[best] - 1e-6)
                ordered.insert(at + 1, s)
                continue
        ordered.append(s)
    return ordered


# --- Candidates ----------------------------------------------------------------------------------


def _pause(a: _Stroke, b: _Stroke) -> float:
    """Milliseconds the pen was up between two strokes (NaN without times)."""
    return b.t0 - a.t1


def _runs(strokes: list[_Stroke], height: float) -> list[tuple[int, int, float]]:
    """Candidate runs (start, stop, price) of up to MAX_RUN consecutive strokes, single strokes
    first, at most MAX_CANDIDATES."""
    n = len(strokes)
    out: list[tuple[int, int, float]] = []
    for length in range(1, MAX_RUN + 1):
        for i in range(n - length + 1):
            if length > 1 and len(out) >= MAX_CANDIDATES:
                return out
            price = _price(strokes[i : i + length], height)  # never None for one stroke
            if price is not None:
                out.append((i, i + length, price))
    return out


def _price(run: list[_Stroke], height: float) -> float | None:
    """The price of one digit of these strokes before the classifier speaks, or None when
    several cannot be one (a stroke out of the others' reach, or too wide together)."""
    x0, x1 = run[0].x0, run[0].x1
    price = 0.0
    for k, (previous, s) in enumerate(itertools.pairwise(run)):
        gap = max(0.0, max(x0, s.x0) - min(x1, s.x1))
        if gap > REACH * height:
            return None
        price -= JOIN_WEIGHT * _join_odds(run[: k + 1], s, x0, x1, gap, height)
        pause = _pause(previous, s)
        if pause > PAUSE_MS:  # False for NaN: no times, no price
            price += PAUSE_COST * math.log2(pause / PAUSE_MS)
        x0, x1 = min(x0, s.x0), max(x1, s.x1)
    if len(run) > 1 and x1 - x0 > MAX_WIDTH * height:
        return None
    y0, y1 = min(s.y0 for s in run), max(s.y1 for s in run)
    if y1 - y0 < SHORT * height:
        price += SHORT_COST
    return price + WIDE_COST * max(0.0, (x1 - x0) / height - WIDE_PART)


def _join_odds(
    run: list[_Stroke], s: _Stroke, x0: float, x1: float, gap: float, height: float
) -> float:
    """The log-odds that stroke `s` belongs to the run of strokes before it (JOIN_BIAS...)."""
    y0, y1 = min(r.y0 for r in run), max(r.y1 for r in run)
    band = (abs(s.y0 - y0) + abs(s.y1 - y1)) / max(max(y1, s.y1) - min(y0, s.y0), 1e-9)
    odds = (
        JOIN_BIAS
        + JOIN_SHARE * share((x0, x1), s, MIN_WIDTH * height)
        + JOIN_BAND * band
        - JOIN_GAP * gap / height
        - JOIN_TALL * s.height / height
    )
    return float(np.clip(odds, -JOIN_MAX, JOIN_MAX))


def _box(run: list[_Stroke]) -> Box:
    return (
        math.floor(min(s.x0 for s in run)),
        math.floor(min(s.y0 for s in run)),
        math.floor(max(s.x1 for s in run)) + 1,
        math.floor(max(s.y1 for s in run)) + 1,
    )


# --- Pictures ------------------------------------------------------------------------------------


def _wide_blocks(strokes: list[_Stroke], height: float) -> list[tuple[int, int]]:
    """[start, stop) of each stroke wider than WIDE_STROKE heights (the MAX_PICTURES widest),
    with the short strokes drawn right before or after it that lie over it."""
    wide = [i for i, s in enumerate(strokes) if s.width > WIDE_STROKE * height]
    wide = sorted(sorted(wide, key=lambda i: -strokes[i].width)[:MAX_PICTURES])
    blocks: list[tuple[int, int]] = []
    for i in wide:
        s = strokes[i]
        start, stop = i, i + 1

        def over(o: _Stroke, s: _Stroke = s) -> bool:
            short = o.height < SCRAP * height and o.width <= WIDE_STROKE * height
            return short and share(o, s, MIN_WIDTH * height) >= LATE_OVER

        while start > 0 and over(strokes[start - 1]):
            start -= 1
        while stop < len(strokes) and over(strokes[stop]):
            stop += 1
        if blocks and start < blocks[-1][1]:
            start = blocks[-1][1]
        blocks.append((start, stop))
    return blocks


def draw_picture(strokes: list[np.ndarray], height: float) -> tuple[Image.Image, float, tuple]:
    """Strokes (P, 2) drawn as the page draws them, white on black, the digits `height` (ink
    units) made PICTURE_HEIGHT pixels (less when the picture would pass PICTURE_SIDE); also the
    scale and offset that map its pixels back (ink = pixel / scale + offset)."""
    xy = np.concatenate(strokes)
    low, high = xy.min(axis=0), xy.max(axis=0)
    extent = float((high - low).max())
    scale = min(PICTURE_HEIGHT / max(height, 1e-6), PICTURE_SIDE / max(extent, 1e-6))
    pen = max(2.0, PICTURE_PEN * height * scale)
    margin = pen
    offset = low - margin / scale
    segments = []
    for points in strokes:
        curve = page_curve((points - offset) * scale)
        if len(curve) == 1:
            curve = np.concatenate([curve, curve])
        segments.append(np.stack([curve[:-1], curve[1:]], axis=1))
    w, h = np.ceil((high - low) * scale + 2 * margin).astype(int)
    side = int(max(w, h))
    mask = draw_mask(np.concatenate(segments), size=side, brush=pen).crop((0, 0, int(w), int(h)))
    return compose(mask, "page"), scale, (float(offset[0]), float(offset[1]))


def _picture(strokes: list[_Stroke], start: int, stop: int, height: float, first: int) -> _Picture:
    image, scale, offset = draw_picture([s.xy for s in strokes[start:stop]], height)
    return _Picture(start, stop, segment(image), first, scale, offset)


# --- Segmenting ----------------------------------------------------------------------------------


def segment_ink(ink: Ink, device=None) -> InkSegmentation:
    """Every candidate digit of a number written as ink (module docstring), rasterized on
    `device` (the CPU by default). Raises `EmptyImageError` for ink without points and
    `TooManyDigitsError` when the strokes are clearly too many digits."""
    strokes = _strokes(ink)
    if not strokes:
        raise EmptyImageError("The ink has no points: draw a number first.")
    height = digit_height(strokes)
    strokes = _ordered(strokes, height)
    _check_count(strokes, height)
    if len(strokes) > MAX_STROKES:
        picture = _picture(strokes, 0, len(strokes), height, 0)
        whole = np.stack([c.image for c in picture.segmentation.crops])
        return InkSegmentation(whole, height, len(strokes), pictures=[picture])
    candidates = _runs(strokes, height)
    images = rasterize(
        [tuple(ink[s.index] for s in strokes[a:b]) for a, b, _ in candidates], device
    )
    runs = [_Run(a, b, k, _box(strokes[a:b]), price) for k, (a, b, price) in enumerate(candidates)]
    crops = [images]
    pictures = []
    first = len(runs)
    for start, stop in _wide_blocks(strokes, height):
        picture = _picture(strokes, start, stop, height, first)
        count = len(picture.segmentation.crops)
        if count > PICTURE_CROPS:
            continue  # a scribble, not digits: its stroke is read as the runs read it
        crops.append(np.stack([c.image for c in picture.segmentation.crops]))
        pictures.append(picture)
        first += count
    return InkSegmentation(np.concatenate(crops), height, len(strokes), runs, pictures)


def _check_count(strokes: list[_Stroke], height: float) -> None:
    """Raise `TooManyDigitsError` when the strokes fall into more column groups than a number
    has digits: a digit is a run of strokes within each other's reach, so each group holds at
    least one."""
    reach = REACH * height
    spans = sorted((s.x0, s.x1) for s in strokes)
    groups, right = 0, -math.inf
    for x0, x1 in spans:
        if x0 > right + reach:
            groups += 1
        right = max(right, x1)
    if groups > MAX_NUMBER_DIGITS:
        raise _too_many(groups)

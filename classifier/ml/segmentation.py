"""Read a number: one drawing of several digits cut into one MNIST image per digit.

The ink (found as `preprocessing` finds it, whatever the polarity or background) is grouped
into connected pieces; pieces whose columns overlap a lot are one digit (the bar of a 5 or the
flag of a 1 drawn apart), and short scraps join their nearest neighbour. A piece too wide for
one digit may be several touching digits: candidate cuts come from the ink's column profile
(its minima, plus a few evenly placed ones), and every part between two cuts is a candidate
digit. Nothing is decided before the classifier has spoken: `segment` returns every crop to
score (so all crops of all requests in a batch share one model call), and `Segmentation.read`
then picks, piece by piece, the cuts whose parts the classifier is surest of, with a price per
extra digit and a prior on a digit's width (a dynamic programme over the cuts); the whole piece
alone on the drawing earns a bonus by how sure the classifier is of it uncut, so a wide
single digit stays whole.

Pieces are ordered left to right by their middle, which holds for sloped lines and uneven
baselines; each digit keeps its box in the image's pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from classifier.ml.input import MAX_NUMBER_DIGITS, EmptyImageError, TooManyDigitsError
from classifier.ml.preprocessing import INK_THRESHOLD, decode_image, ink_map, ink_to_mnist

# A larger image is shrunk (box filter) to at most this many pixels a side before anything else:
# the page's 768x384 number becomes 384x192, where its digits are still 50-130 pixels tall
# (MNIST's box is 20), and cutting it costs a quarter.
WORK_SIDE = 400
# Pieces are found on the ink shrunk again (by its block maximum, so no stroke vanishes) to at
# most this many pixels a side: cheap, and gaps of a pixel or two are closed.
LABEL_SIDE = 200
# Two pieces whose column ranges overlap by this share of the narrower one are one digit.
OVERLAP_TO_JOIN = 0.5
# ...joined when they share at most this share of the shorter one's rows (stacked), when one is
# shorter than SCRAP_RATIO of the other, or when the narrower one's columns are INSIDE the other's.
STACKED = 0.3
SCRAP_RATIO = 0.6
INSIDE = 0.85
# A piece shorter than this share of the digits' height is a scrap of a digit (a bar, a flag,
# a dot): it joins its nearest neighbour rather than counting as a digit.
SCRAP_HEIGHT = 0.35
# Pieces with less than this share of the ink, and small, are noise (a stray touch of the pen).
NOISE_SHARE = 0.004
# A piece wider than this (times the digits' height) may be touching digits: its cuts are scored.
WIDE = 1.0
# The narrowest and widest part of a split piece, times the digits' height.
MIN_PART = 0.12
MAX_PART = 1.25
# At most this many cuts are tried in one wide piece (the parts between them grow as its square).
MAX_CUTS = 7
# Log-price of each digit beyond the first in a piece: splitting must buy that much confidence.
SPLIT_COST = 0.5
# ...and this for each stroke its cut crosses beyond the first.
CROSS_COST = 2.0
# A part narrower than this (times the height) that the classifier does not read as a 1 is
# probably half a digit; each such part pays NARROW_COST.
NARROW = 0.3
NARROW_COST = 2.0
# A part whose ink is shorter than this (times the height) is a stub of a digit (a 5's bar
# cut off), not a digit: it pays SHORT_COST.
SHORT = 0.55
SHORT_COST = 3.0
# A part wider than a digit pays this per height-width beyond WIDE_PART.
WIDE_PART = 0.9
WIDE_COST = 3.0
# A piece alone on the drawing, uncut, is one digit unless a split is clearly better. Single
# MNIST digits reach 1.5 heights wide (a wide 2, 4 or 5) and are then mostly read with near
# certainty, while two touching digits can be as narrow as 1.1 heights and are more often read
# less surely. So the whole of a piece alone earns WHOLE_BONUS per unit of its top class's
# log-odds (capped at MAX_LOGIT) and pays WHOLE_WIDE_COST per height of width beyond
# WHOLE_WIDE. Chosen on single digits and numbers drawn from MNIST's training images and the
# templates with other seeds than the benchmark's.
WHOLE_BONUS = 0.5
MAX_LOGIT = 12.0
WHOLE_WIDE = 0.7
WHOLE_WIDE_COST = 4.0

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class Crop:
    """One candidate digit: its 28x28 image for the model and its box (x0, y0, x1, y1; x1 and
    y1 exclusive) in the image's pixels."""

    image: np.ndarray
    box: Box


@dataclass(frozen=True)
class Digit:
    """One digit of the number read: its image, box and the classifier's probabilities."""

    image: np.ndarray
    box: Box
    probabilities: np.ndarray
    crop: int  # its index in `Segmentation.crops`: where the batch's other scores of it are


@dataclass
class _Piece:
    """One piece of ink: its cut columns (edges included) and the crops between two of them."""

    width: int
    height: float  # the digits' height the piece is judged by
    nodes: list[int]
    parts: dict[tuple[int, int], int] = field(default_factory=dict)  # (i, j) -> crop index
    # Strokes each node's column crosses: two touching digits meet in one, a cut through one
    # wide digit crosses several.
    crossings: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Segmentation:
    """Every crop the classifier must score for one image, and how to read the number back."""

    crops: list[Crop]
    pieces: list[_Piece]

    def images(self) -> np.ndarray:
        """The crops' images, (M, 28, 28) uint8, for one model call (with other requests')."""
        return np.stack([crop.image for crop in self.crops])

    def read(self, probabilities: np.ndarray) -> list[Digit]:
        """The digits, left to right, given the classifier's probabilities (M, 10) for `images`.

        Raises `TooManyDigitsError` when the chosen cuts make more than MAX_NUMBER_DIGITS.
        """
        probabilities = np.asarray(probabilities, dtype=np.float64)
        boxes = [c.box for c in self.crops]
        # A piece alone is a single digit or a number whose digits all touch: only there does
        # the whole piece earn its bonus (in a number of several pieces, the others' height says
        # how wide one digit is).
        alone = len(self.pieces) == 1
        digits: list[Digit] = []
        for piece in self.pieces:
            for index in _best_parts(piece, probabilities, boxes, alone):
                crop = self.crops[index]
                digits.append(Digit(crop.image, crop.box, probabilities[index], index))
        if len(digits) > MAX_NUMBER_DIGITS:
            raise _too_many(len(digits))
        return digits


def _too_many(count: int) -> TooManyDigitsError:
    return TooManyDigitsError(
        f"The drawing holds {count} digits or more; a number may have at most {MAX_NUMBER_DIGITS}."
    )


def _part_score(
    piece: _Piece, i: int, j: int, probs: np.ndarray, box: Box, alone: bool = False
) -> float:
    """The log-confidence of one part, with its width and height priors."""
    aspect = (piece.nodes[j] - piece.nodes[i]) / piece.height
    confidence = float(probs.max())
    score = math.log(max(confidence, 1e-9))
    if alone and (i, j) == (0, len(piece.nodes) - 1):
        # The whole piece: the surer the classifier is of it, the more a split must buy.
        sure = min(math.log(max(confidence, 1e-9) / max(1.0 - confidence, 1e-9)), MAX_LOGIT)
        bonus = WHOLE_BONUS * max(0.0, sure)
        return score + bonus - WHOLE_WIDE_COST * max(0.0, aspect - WHOLE_WIDE)
    if box[3] - box[1] < SHORT * piece.height:
        score -= SHORT_COST
    if aspect < NARROW and int(probs.argmax()) != 1:
        score -= NARROW_COST
    score -= WIDE_COST * max(0.0, aspect - WIDE_PART)
    return score


def _best_parts(
    piece: _Piece, probabilities: np.ndarray, boxes: list[Box], alone: bool = False
) -> list[int]:
    """The crops of the best way to cut one piece (a shortest path over its cuts)."""
    n = len(piece.nodes)
    best = [-math.inf] * n
    back = [-1] * n
    best[0] = 0.0
    for j in range(1, n):
        for i in range(j):
            index = piece.parts.get((i, j))
            if index is None or best[i] == -math.inf:
                continue
            cost = SPLIT_COST + CROSS_COST * max(0, piece.crossings[i] - 1) if i > 0 else 0.0
            part = _part_score(piece, i, j, probabilities[index], boxes[index], alone)
            score = best[i] + part - cost
            if score > best[j]:
                best[j], back[j] = score, i
    chosen: list[int] = []
    j = n - 1
    while j > 0:
        i = back[j]
        chosen.append(piece.parts[(i, j)])
        j = i
    return chosen[::-1]


# --- Finding the pieces --------------------------------------------------------------------------


def _components(mask: np.ndarray) -> tuple[np.ndarray, list[list[int]]]:
    """8-connected components of a boolean (H, W) mask: a label map (0 background, 1..n) and
    each component's box [x0, y0, x1, y1].

    Runs of ink per row, joined with the runs they touch in the row above (union-find): a few
    thousand runs for a canvas, so plain Python is fast enough and no image library is needed.
    """
    height, width = mask.shape
    padded = np.zeros((height, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    steps = np.diff(padded, axis=1)
    starts = np.argwhere(steps == 1)
    ends = np.argwhere(steps == -1)
    rows = starts[:, 0].tolist()
    s = starts[:, 1].tolist()
    e = ends[:, 1].tolist()
    parent = list(range(len(rows)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    # Each row's runs, in order: [first, end) of the run indices, and the row.
    firsts = [0, *(np.flatnonzero(np.diff(starts[:, 0])) + 1).tolist()]
    spans = list(zip(firsts, [*firsts[1:], len(rows)], strict=True))
    for (lo, hi), (above_lo, above_hi) in zip(spans[1:], spans[:-1], strict=True):
        if rows[lo] != rows[above_lo] + 1:
            continue  # a blank row between them
        m = above_lo
        for k in range(lo, hi):
            # Runs above that end before this one starts touch no later run of this row either.
            while m < above_hi and e[m] < s[k]:
                m += 1
            n = m
            while n < above_hi and s[n] <= e[k]:  # 8-connected: touching diagonally counts
                ra, rb = find(k), find(n)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
                n += 1
    labels = np.zeros((height, width), dtype=np.int32)
    roots: dict[int, int] = {}
    boxes: list[list[int]] = []
    for k, row in enumerate(rows):
        label = roots.setdefault(find(k), len(roots) + 1)
        if label > len(boxes):
            boxes.append([s[k], row, e[k], row + 1])
        else:
            box = boxes[label - 1]
            box[0], box[2], box[3] = min(box[0], s[k]), max(box[2], e[k]), row + 1
        labels[row, s[k] : e[k]] = label
    return labels, boxes


@dataclass
class _Group:
    members: list[int]
    x0: int
    y0: int
    x1: int
    y1: int
    mass: float

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    def join(self, other: _Group) -> None:
        self.members += other.members
        self.x0, self.y0 = min(self.x0, other.x0), min(self.y0, other.y0)
        self.x1, self.y1 = max(self.x1, other.x1), max(self.y1, other.y1)
        self.mass += other.mass


def _one_digit(a: _Group, b: _Group) -> bool:
    """Whether two pieces are parts of one digit: in the same columns, and either stacked (the
    halves of a broken 8), one much shorter (a 5's bar, a 1's flag) or one inside the other's
    columns. Two whole digits written overlapping stay apart."""
    if _overlap(a, b) < OVERLAP_TO_JOIN:
        return False
    short, tall = sorted((a.height, b.height))
    shared_rows = max(0, min(a.y1, b.y1) - max(a.y0, b.y0))
    return shared_rows <= STACKED * short or short < SCRAP_RATIO * tall or _overlap(a, b) >= INSIDE


def _overlap(a: _Group, b: _Group) -> float:
    """How much two groups' column ranges overlap, as a share of the narrower one."""
    shared = min(a.x1, b.x1) - max(a.x0, b.x0)
    return max(0.0, shared) / max(1, min(a.width, b.width))


def _gap(a: _Group, b: _Group) -> float:
    """The horizontal distance between two groups' boxes (0 when they overlap)."""
    return max(0, max(a.x0, b.x0) - min(a.x1, b.x1))


def _groups(small: np.ndarray) -> tuple[np.ndarray, list[_Group]]:
    """Label map and the pieces of the shrunk ink, after joining and dropping (module docstring)."""
    labels, boxes = _components(small >= INK_THRESHOLD)
    if not boxes:
        raise EmptyImageError("The image is blank: draw a number first.")
    count = len(boxes)
    masses = np.bincount(labels.ravel(), weights=small.ravel(), minlength=count + 1)[1:]
    groups = [
        _Group([k + 1], x0, y0, x1, y1, float(masses[k]))
        for k, (x0, y0, x1, y1) in enumerate(boxes)
    ]
    total = float(masses.sum())
    tallest = max(g.height for g in groups)
    groups = [
        g
        for g in groups
        if g.mass >= NOISE_SHARE * total or max(g.width, g.height) >= 0.2 * tallest
    ]

    # Pieces stacked in the same columns are one digit.
    merged = True
    while merged:
        merged = False
        groups.sort(key=lambda g: g.x0)
        for a in range(len(groups)):
            for b in range(a + 1, len(groups)):
                if _one_digit(groups[a], groups[b]):
                    groups[a].join(groups.pop(b))
                    merged = True
                    break
            if merged:
                break

    # Scraps (short pieces) join their nearest neighbour.
    height = _digit_height(groups)
    while len(groups) > 1:
        scraps = [g for g in groups if g.height < SCRAP_HEIGHT * height]
        if not scraps:
            break
        scrap = min(scraps, key=lambda g: g.mass)
        groups.remove(scrap)
        nearest = min(groups, key=lambda g: (_gap(g, scrap), -_overlap(g, scrap)))
        nearest.join(scrap)
    groups.sort(key=lambda g: g.x0 + g.x1)
    return labels, groups


def _digit_height(groups: list[_Group]) -> float:
    """The height digits are judged by: the median of the pieces at least half the tallest."""
    tallest = max(g.height for g in groups)
    return float(np.median([g.height for g in groups if g.height >= 0.5 * tallest]))


def _cuts(profile: np.ndarray, height: float) -> list[int]:
    """Candidate cut columns of a wide piece: minima of its column profile, then evenly placed
    cuts for the number of digits its width suggests (touching digits may leave no minimum)."""
    width = profile.size
    margin = max(1, int(MIN_PART * height))
    if width <= 2 * margin:
        return []
    window = max(1, int(0.04 * height))
    smooth = np.convolve(profile, np.ones(2 * window + 1) / (2 * window + 1), mode="same")
    spacing = max(1, int(0.1 * height))
    padded = np.pad(smooth, spacing, constant_values=np.inf)
    lowest = np.lib.stride_tricks.sliding_window_view(padded, 2 * spacing + 1).min(axis=1)
    minima = [int(x) for x in np.flatnonzero(smooth <= lowest) if margin <= x < width - margin]
    minima.sort(key=lambda x: smooth[x])
    even: list[int] = []
    pieces = max(2, round(width / (0.6 * height)))
    for k in range(2, pieces + 1):
        even += [round(width * j / k) for j in range(1, k)]
    chosen: list[int] = []
    for x in minima[: MAX_CUTS // 2 + 1] + even + minima[MAX_CUTS // 2 + 1 :]:
        if margin <= x <= width - margin and all(abs(x - c) >= spacing for c in chosen):
            chosen.append(x)
        if len(chosen) >= MAX_CUTS:
            break
    return sorted(chosen)


def _crop(ink: np.ndarray, left: int, top: int, scale: int) -> Crop | None:
    """The crop of a piece's ink (offset `left`, `top` in the image shrunk `scale` times), or
    None when it has none."""
    rows = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=1))
    cols = np.flatnonzero((ink >= INK_THRESHOLD).any(axis=0))
    if rows.size == 0:
        return None
    box = (
        scale * (left + int(cols[0])),
        scale * (top + int(rows[0])),
        scale * (left + int(cols[-1]) + 1),
        scale * (top + int(rows[-1]) + 1),
    )
    return Crop(ink_to_mnist(ink), box)


def segment(image: Image.Image) -> Segmentation:
    """Every candidate digit of a drawn number (see the module docstring); raises
    `EmptyImageError` when nothing is drawn and `TooManyDigitsError` for too many pieces."""
    scale = math.ceil(max(image.size) / WORK_SIDE)
    if scale > 1:
        if image.mode not in ("L", "LA", "RGB", "RGBA", "I", "F"):
            image = image.convert("RGBA")
        image = image.reduce(scale)
    ink = ink_map(image)
    full_h, full_w = ink.shape
    f = max(1, math.ceil(max(full_h, full_w) / LABEL_SIDE))
    h, w = math.ceil(full_h / f), math.ceil(full_w / f)
    padded = np.zeros((h * f, w * f), dtype=np.float32)
    padded[:full_h, :full_w] = ink
    small = padded[::f, ::f].copy()
    for dy in range(f):
        for dx in range(f):
            np.maximum(small, padded[dy::f, dx::f], out=small)  # a strided max(axis) is slower
    labels, groups = _groups(small)
    if len(groups) > MAX_NUMBER_DIGITS:
        raise _too_many(len(groups))
    height = _digit_height(groups) * f

    crops: list[Crop] = []
    pieces: list[_Piece] = []
    for group in groups:
        # The piece's own ink (not its neighbours'), a pixel wider than its labels so the
        # antialiased edge below the ink threshold stays.
        member = np.isin(labels[group.y0 : group.y1, group.x0 : group.x1], group.members)
        grown = np.pad(member, 1)
        grown = (
            grown[1:-1, 1:-1]
            | grown[:-2, 1:-1]
            | grown[2:, 1:-1]
            | grown[1:-1, :-2]
            | grown[1:-1, 2:]
        )
        x0, y0 = group.x0 * f, group.y0 * f
        x1, y1 = min(full_w, group.x1 * f), min(full_h, group.y1 * f)
        mask = np.repeat(np.repeat(grown, f, axis=0), f, axis=1)[: y1 - y0, : x1 - x0]
        own = ink[y0:y1, x0:x1] * mask
        width = x1 - x0
        cuts = _cuts(own.sum(axis=0), height) if width > WIDE * height else []
        column = own >= INK_THRESHOLD
        crossings = [
            int(np.count_nonzero(np.diff(column[:, min(x, width - 1)].astype(np.int8)) == 1))
            + int(column[0, min(x, width - 1)])
            for x in [0, *cuts, width]
        ]
        piece = _Piece(width=width, height=height, nodes=[0, *cuts, width], crossings=crossings)
        for i in range(len(piece.nodes)):
            for j in range(i + 1, len(piece.nodes)):
                a, b = piece.nodes[i], piece.nodes[j]
                whole = (i, j) == (0, len(piece.nodes) - 1)
                if not whole and not (MIN_PART * height <= b - a <= MAX_PART * height):
                    continue
                crop = _crop(own[:, a:b], x0 + a, y0, scale)
                if crop is not None:
                    piece.parts[(i, j)] = len(crops)
                    crops.append(crop)
        pieces.append(piece)
    return Segmentation(crops, pieces)


def segment_bytes(data: bytes) -> Segmentation:
    """`segment` of image bytes (PNG, JPEG, WebP); raises `ImageError`."""
    return segment(decode_image(data))

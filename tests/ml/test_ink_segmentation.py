"""Numbers read from ink: strokes grouped into digits (classifier.ml.ink_segmentation).

Digits are the stroke templates of `canvas.TEMPLATES` (real strokes in drawing order, no dataset
needed), read by the shipped model. What is right, decided here:
- two digits drawn one after the other are two digits even when their inks touch or overlap;
- a short stroke that lies over an earlier digit (a 7's bar drawn after the next digit, a 5's
  flag, a 4's second stroke) belongs to that digit;
- the number reads left to right, as on paper, whatever order its digits were drawn in (a digit
  added in front afterwards reads first);
- the boxes are in the ink's own coordinates, whatever its scale and offset.
"""

from __future__ import annotations

import numpy as np
import pytest

from classifier.ml import ink_segmentation
from classifier.ml.inference import Predictor
from classifier.ml.ink import Ink
from classifier.ml.ink_segmentation import MAX_CROPS, segment_ink
from classifier.ml.input import (
    MAX_INK_POINTS,
    MAX_INK_STROKES,
    MAX_NUMBER_DIGITS,
    EmptyImageError,
    TooManyDigitsError,
)
from classifier.ml.segmentation import Digit
from classifier.ml.training.canvas import TEMPLATES
from classifier.ml.training.ink_numbers import number_from, pools
from tests.helpers import shipped_weights
from tests.ml.training.test_pendigits import read_or_skip

HEIGHT = 100.0


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(shipped_weights(), device="cpu")


def template(digit: int, variant: str, left: float, top: float = 0.0) -> list[np.ndarray]:
    """A template digit's strokes (P, 2), HEIGHT tall, its points' box starting at `left`."""
    strokes = [np.asarray(s, dtype=np.float64) for s in TEMPLATES[digit][variant]]
    x0 = min(float(s[:, 0].min()) for s in strokes)
    return [(s - [x0, 0.0]) * HEIGHT + [left, top] for s in strokes]


def row(digits: list[tuple[int, str]], gap: float) -> list[list[np.ndarray]]:
    """Digits in a row, each `gap` heights right of the one before (negative: overlapping)."""
    out, left = [], 0.0
    for digit, variant in digits:
        strokes = template(digit, variant, left)
        out.append(strokes)
        left = max(float(s[:, 0].max()) for s in strokes) + gap * HEIGHT
    return out


def ink(strokes: list[np.ndarray], times: bool = True) -> Ink:
    """Strokes in this order as ink: a point every 10 ms, the pen up 150 ms between strokes."""
    out, t = [], 0.0
    for s in strokes:
        stamp = t + 10.0 * np.arange(len(s)) if times else np.full(len(s), np.nan)
        out.append(np.column_stack([s, stamp]).astype(np.float32))
        t += 10.0 * len(s) + 150.0
    return tuple(out)


def read(predictor: Predictor, drawn: Ink) -> list[Digit]:
    found = segment_ink(drawn)
    return found.read(predictor.predict_scored(found.images()).probabilities)


def text(digits: list[Digit]) -> str:
    return "".join(str(int(d.probabilities.argmax())) for d in digits)


def flat(digits: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [s for d in digits for s in d]


@pytest.mark.parametrize("times", [True, False])
@pytest.mark.parametrize("gap", [0.1, 0.0, -0.1])
@pytest.mark.parametrize(
    "digits",
    [
        [(3, "round"), (8, "loops")],
        [(5, "plain"), (6, "plain")],
        [(2, "plain"), (9, "straight")],
        [(4, "closed"), (7, "plain")],
        [(1, "stroke"), (0, "oval")],
    ],
)
def test_touching_and_overlapping_digits_come_apart(
    predictor: Predictor, digits: list[tuple[int, str]], gap: float, times: bool
) -> None:
    """Drawn with the page's pen (about 0.1 heights wide), inks `gap` apart touch (0.1) or
    overlap by a pen's width (0.0) or more (-0.1)."""
    if digits[0][0] == 1 and gap <= 0:
        pytest.skip("a line on or inside the 0's edge is a mark on the 0 as much as a 1")
    drawn = row(digits, gap)
    assert text(read(predictor, ink(flat(drawn), times))) == "".join(str(d) for d, _ in digits)


def test_a_bar_drawn_after_the_next_digit_joins_its_7(predictor: Predictor) -> None:
    (stem, bar), two = row([(7, "crossed"), (2, "plain")], gap=0.05)
    digits = read(predictor, ink([stem, *two, bar]))
    assert text(digits) == "72"
    # The 7's box holds its bar: the bar's columns reach past the stem's.
    assert digits[0].box[0] <= float(bar[:, 0].min())
    assert digits[0].box[2] >= np.floor(bar[:, 0].max()) + 1


def test_a_4_in_two_strokes_and_a_5_with_its_flag_stay_one_digit(predictor: Predictor) -> None:
    drawn = row([(4, "open"), (5, "two_strokes"), (1, "serif")], gap=0.1)
    assert [len(d) for d in drawn] == [2, 2, 2]
    assert text(read(predictor, ink(flat(drawn)))) == "451"


def test_the_number_reads_left_to_right_whatever_the_drawing_order(predictor: Predictor) -> None:
    one, two, three = row([(1, "stroke"), (2, "plain"), (3, "round")], gap=0.15)
    digits = read(predictor, ink([*three, *two, *one]))
    assert text(digits) == "123"
    assert [d.box[0] for d in digits] == sorted(d.box[0] for d in digits)


def test_boxes_are_in_the_inks_own_coordinates(predictor: Predictor) -> None:
    drawn = row([(2, "plain"), (7, "plain")], gap=0.2)
    moved = [[s * 3.7 + [1000.0, -50.0] for s in d] for d in drawn]
    digits = read(predictor, ink(flat(moved)))
    assert text(digits) == "27"
    for digit, strokes in zip(digits, moved, strict=True):
        xy = np.concatenate(strokes).astype(np.float32)
        low, high = np.floor(xy.min(axis=0)), np.floor(xy.max(axis=0)) + 1
        assert digit.box == (int(low[0]), int(low[1]), int(high[0]), int(high[1]))


def test_a_number_written_without_lifting_the_pen_is_cut_as_a_picture(
    predictor: Predictor,
) -> None:
    """Two digits joined by the pen's path, as in cursive: the stroke is cut as an image is."""
    (two,), (three,) = row([(2, "plain"), (3, "round")], gap=0.3)
    found = segment_ink(ink([np.concatenate([two, three])]))
    assert len(found.pictures) == 1
    assert text(found.read(predictor.predict_scored(found.images()).probabilities)) == "23"


def test_too_many_digits_raise(predictor: Predictor) -> None:
    ones = [(1, "stroke")] * (MAX_NUMBER_DIGITS + 1)
    with pytest.raises(TooManyDigitsError):
        segment_ink(ink(flat(row(ones, gap=0.5))))
    assert text(read(predictor, ink(flat(row(ones[:-1], gap=0.5))))) == "1" * MAX_NUMBER_DIGITS


def test_an_ink_without_points_is_empty() -> None:
    with pytest.raises(EmptyImageError):
        segment_ink(())
    with pytest.raises(EmptyImageError):
        segment_ink((np.zeros((0, 3), dtype=np.float32),))


@pytest.mark.parametrize("strokes", [ink_segmentation.MAX_STROKES, MAX_INK_STROKES])
def test_the_largest_ink_stays_bounded(predictor: Predictor, strokes: int) -> None:
    """As many strokes and points as a client may send, scribbled over one another in a few
    columns: grouped (up to MAX_STROKES) or read as its picture, never more than MAX_CROPS
    candidates."""
    rng = np.random.default_rng(0)
    points = MAX_INK_POINTS // strokes
    scribble = []
    for k in range(strokes):
        x = (k % 6) * 60.0 + rng.uniform(0, 80, size=points)
        y = rng.uniform(0, 100, size=points)
        scribble.append(np.column_stack([x, y]))
    found = segment_ink(ink(scribble))
    assert 0 < len(found.images()) <= MAX_CROPS
    try:
        digits = read(predictor, ink(scribble))
    except TooManyDigitsError:
        return
    assert 1 <= len(digits) <= MAX_NUMBER_DIGITS


def test_numbers_of_held_out_writers_are_read(predictor: Predictor) -> None:
    """Real handwriting: numbers composed of the pen digits' writers 21-30, every gap kind."""
    by_writer = pools(d for d in read_or_skip() if d.writer > 20)
    rng = np.random.default_rng(0)
    right = 0
    for k in range(20):
        gap = ("overlap", "touch", "tight", "normal", "wide")[k % 5]
        number = number_from(by_writer[21 + k % 10], rng, 3, gap=gap)
        right += text(read(predictor, number.ink)) == number.label
    assert right >= 16  # about 90% read exactly; the misses are misread digits

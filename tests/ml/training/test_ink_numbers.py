"""Numbers composed as ink from real digits (classifier.ml.training.ink_numbers), with template
digits as the drawings: no dataset needed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from classifier.ml.ink import Ink, from_xy
from classifier.ml.training.canvas import TEMPLATES
from classifier.ml.training.ink_numbers import PAUSE_MS, compose_number, number_from, pools
from classifier.ml.training.numbers import GAPS, NUMBER_CANVAS


def drawing(digit: int, variant: str | None = None) -> Ink:
    """A template digit as ink on a 500-unit tablet (any scale: the composer normalises)."""
    strokes = TEMPLATES[digit][variant or next(iter(TEMPLATES[digit]))]
    return from_xy([np.asarray(s) * 500.0 for s in strokes])


POOL = {d: [drawing(d, v) for v in TEMPLATES[d]] for d in range(10)}


def test_a_number_holds_every_stroke_in_drawing_order_on_the_canvas() -> None:
    rng = np.random.default_rng(0)
    for k in range(30):
        number = number_from(POOL, rng, 2 + k % 7)
        assert len(number.label) == len(number.boxes) == 2 + k % 7
        assert len(number.ink) == len(number.owners)
        assert list(number.owners) == sorted(number.owners)  # digit by digit
        xy = np.concatenate([s[:, :2] for s in number.ink])
        assert xy.min() >= 0 and (xy.max(axis=0) <= NUMBER_CANVAS).all()
        lefts = [b[0] for b in number.boxes]
        assert lefts == sorted(lefts)


@pytest.mark.parametrize("gap", list(GAPS))
def test_the_gap_is_measured_on_the_ink_as_the_page_draws_it(gap: str) -> None:
    """Boxes widened by half the page's brush each side are `gap` heights apart."""
    rng = np.random.default_rng(1)
    low, high = GAPS[gap]
    for _ in range(10):
        number = compose_number([drawing(8), drawing(0)], "80", rng, gap=gap, slope_deg=0.0)
        (_, _, a1, _), (b0, _, _, _) = number.boxes
        height = max(b[3] - b[1] for b in number.boxes)
        between = (b0 - a1 - number.brush) / height
        assert low - 0.03 <= between <= high + 0.03  # boxes are whole pixels


def test_times_run_on_with_longer_pauses_between_digits() -> None:
    rng = np.random.default_rng(2)
    number = compose_number([drawing(4, "open"), drawing(7, "crossed")], "47", rng)
    starts = [float(s[0, 2]) for s in number.ink]
    ends = [float(s[-1, 2]) for s in number.ink]
    for stroke in number.ink:
        assert (np.diff(stroke[:, 2]) >= 0).all()
    lifts = [b - a for a, b in zip(ends, starts[1:], strict=False)]
    assert all(lift > 0 for lift in lifts)
    between = lifts[number.owners.index(1) - 1]
    assert between >= PAUSE_MS[0]
    untimed = compose_number([drawing(1), drawing(2)], "12", rng, times=False)
    assert all(np.isnan(s[:, 2]).all() for s in untimed.ink)


def test_a_late_bar_is_drawn_after_the_next_digit() -> None:
    rng = np.random.default_rng(3)
    number = compose_number([drawing(7, "crossed"), drawing(2)], "72", rng, late=1.0)
    assert number.owners == (0, 1, 0)
    bar = number.ink[2]
    assert np.ptp(bar[:, 1]) < 0.5 * (number.boxes[0][3] - number.boxes[0][1])


def test_pools_group_drawings_by_writer_and_digit() -> None:
    drawings = [
        SimpleNamespace(writer=w, label=d, ink=drawing(d)) for w in (1, 2) for d in (3, 3, 5)
    ]
    grouped = pools(drawings)
    assert sorted(grouped) == [1, 2]
    assert {d: len(inks) for d, inks in grouped[1].items()} == {3: 2, 5: 1}
    number = number_from(grouped[2], np.random.default_rng(4), 6)
    assert set(number.label) <= {"3", "5"}

"""Digit styles made from real strokes: what each adds, in drawing order, at the source's pace."""

from __future__ import annotations

import collections

import numpy as np

from classifier.ml.ink import bounds, from_xy
from classifier.ml.rasterizer import rasterize
from classifier.ml.training.drawings import pendigits, styles
from classifier.ml.training.drawings.pendigits import PenDigit
from tests.ml.training.realdata import pen_digits


def timed(ink):
    return pendigits.with_times(ink)


def ring(n: int = 24):
    angle = np.linspace(0, 2 * np.pi, n)
    return from_xy([np.stack([50 + 20 * np.sin(angle), 50 - 35 * np.cos(angle)], axis=1)])


ZERO = ring()
SEVEN = from_xy([[(10, 10), (40, 10), (25, 50), (15, 90)]])
ONE = from_xy([[(30, 25), (40, 10), (40, 90)]])  # a short flag, then down
CLOSED_FOUR = from_xy([[(40, 10), (10, 60), (60, 60)], [(45, 20), (45, 95)]])


def strictly_timed(ink) -> bool:
    times = np.concatenate([s[:, 2] for s in ink])
    return not np.isnan(times).any() and bool((np.diff(times) > 0).all())


def test_a_slash_crosses_the_zero_from_below_left_after_it():
    rng = np.random.default_rng(0)
    made = styles.slashed_zero(timed(ZERO), rng)
    assert len(made) == 2 and np.array_equal(made[0], timed(ZERO)[0])
    slash = made[1]
    _, y0, _, y1 = bounds(ZERO)
    assert slash[0, 1] >= y1 and slash[-1, 1] <= y0  # from below the oval to above it
    assert slash[0, 0] < slash[-1, 0]
    assert strictly_timed(made)
    assert np.isnan(styles.slashed_zero(ZERO, rng)[1][:, 2]).all()  # no times, none made up


def test_a_dot_sits_inside_the_zero():
    dot = styles.dotted_zero(ZERO, np.random.default_rng(1))[1]
    x0, y0, x1, y1 = bounds(ZERO)
    centre = dot[:, :2].mean(axis=0)
    assert x0 + 0.4 * (x1 - x0) < centre[0] < x0 + 0.6 * (x1 - x0)
    assert np.ptp(dot[:, :2], axis=0).max() < 0.1 * (y1 - y0)


def test_a_bar_crosses_the_sevens_stem():
    made = styles.barred_seven(timed(SEVEN), np.random.default_rng(2))
    bar = made[-1]
    assert len(made) == 2 and strictly_timed(made)
    y = bar[:, 1].mean()
    stem = styles._crossing(SEVEN, y)
    assert bar[:, 0].min() < stem < bar[:, 0].max()
    assert 40 < y < 65


def test_a_long_flag_replaces_the_short_one_and_a_foot_goes_under():
    rng = np.random.default_rng(3)
    flagged = styles.flagged_one(timed(ONE), rng)
    stroke = flagged[0]
    top = int(np.argmin(stroke[:, 1]))
    assert stroke[top, :2].tolist() == [40, 10]  # the stem's top is kept
    assert stroke[0, 0] < 40 - 0.25 * 80 * np.cos(np.deg2rad(45))  # the flag is long
    assert stroke[0, 1] > 10 and strictly_timed(flagged)
    footed = styles.footed_one(timed(ONE), rng)
    foot = footed[-1]
    assert len(footed) == 2 and foot[:, 1].min() >= 90 - 1e-3 and np.ptp(foot[:, 0]) > 20
    upward = from_xy([[(40, 90), (40, 10)]])
    assert styles.flagged_one(upward, rng) is None


def test_a_closed_four_is_opened_where_the_strokes_allow():
    rng = np.random.default_rng(4)
    opened = styles.open_four(CLOSED_FOUR, rng)
    left = opened[0]
    assert abs(left[0, 0] - 10) < 3  # the diagonal now stands above its corner
    assert np.array_equal(opened[1], CLOSED_FOUR[1], equal_nan=True)  # the stem untouched
    assert np.array_equal(left[1:], CLOSED_FOUR[0][1:], equal_nan=True)
    one_stroke = from_xy([[(40, 10), (10, 60), (60, 60), (45, 20), (45, 95)]])
    assert styles.open_four(one_stroke, rng) is None


def test_styles_of_the_shared_pen_digits():
    digits = [d for d in pen_digits() if d.writer == 1]
    made = styles.make_styles(digits, seed=0)
    counts = collections.Counter(s.style for s in made)
    assert set(counts) == set(styles.STYLES)
    for name, (label, _) in styles.STYLES.items():
        of_label = sum(d.label == label for d in digits)
        assert counts[name] <= of_label and counts[name] >= 0.3 * of_label
    assert all(isinstance(s.writer, int) and s.writer == 1 for s in made)
    images = rasterize([s.ink for s in made])
    assert images.shape == (len(made), 28, 28) and (images.max(axis=(1, 2)) == 255).all()


def test_make_styles_keeps_the_writer_and_the_label():
    digits = [PenDigit(0, 7, timed(ZERO)), PenDigit(4, 8, CLOSED_FOUR), PenDigit(7, 9, SEVEN)]
    made = styles.make_styles(digits, styles=["slashed zero", "open four", "barred seven"])
    assert [(s.style, s.label, s.writer) for s in made] == [
        ("slashed zero", 0, 7), ("open four", 4, 8), ("barred seven", 7, 9),
    ]  # fmt: skip

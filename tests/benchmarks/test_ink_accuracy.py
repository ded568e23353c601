"""The ink benchmark's core: the same drawings sent as the page's PNG and as ink, scored alike."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from benchmarks import ink_accuracy as bench
from classifier.ml.inference import Predictor
from classifier.ml.preprocessing import preprocess
from classifier.ml.rasterizer import rasterize
from classifier.ml.training.drawings.pendigits import PenDigit
from tests.helpers import SHIPPED_WEIGHTS
from tests.ml.test_rasterizer import template


def test_a_handful_of_drawings_is_sent_both_ways_and_reported():
    digits = [PenDigit(d, 11 + d % 2, template(d)) for d in range(10)]
    drawings = bench.make_drawings(digits, seed=3)
    predictor = Predictor.load(SHIPPED_WEIGHTS, device="cpu")

    ways = bench.send_both_ways(predictor, drawings)
    lines = bench.report(ways, drawings)

    assert np.array_equal(ways["png"].images, np.stack([preprocess(d.png) for d in drawings]))
    assert np.array_equal(ways["ink"].images, rasterize([d.ink for d in drawings]))
    labels = np.arange(10)
    assert (ways["ink"].predicted == labels).mean() >= 0.9  # the templates read right
    assert 0 < ways["ink"].bytes_per_frame < ways["png"].bytes_per_frame
    assert ways["png"].ms_per_drawing > 0 and ways["ink"].ms_per_drawing > 0
    text = "\n".join(lines)
    assert "ink minus PNG, kept and right" in text and "worst writers" in text
    assert len([line for line in lines if line.startswith(("  PNG", "  ink"))]) == 2  # classes


def test_an_ink_frame_carries_the_strokes_with_times_to_one_decimal():
    (drawing,) = bench.make_drawings([PenDigit(7, 12, template(7))], seed=0)

    frame = json.loads(bench.ink_frame(drawing.ink))

    assert frame["type"] == "predict" and set(frame) == {"type", "id", "ink"}
    first = frame["ink"][0]
    assert len(first) == len(drawing.ink[0]) and len(first[0]) == 3  # x, y, t
    assert [p[2] for p in first[:3]] == [0.0, 100.0, 200.0]  # the tablet's 100 ms
    assert all(round(v, 1) == v for p in first for v in p)
    assert bench.png_frame(drawing.png).startswith('{"type":"predict","id":"1","image":"data:')


def test_writers_are_read_as_ranges_and_lists():
    assert bench.parse_writers("11-30") == set(range(11, 31))
    assert bench.parse_writers("1-3,7") == {1, 2, 3, 7}
    with pytest.raises(argparse.ArgumentTypeError):
        bench.parse_writers("eleven")

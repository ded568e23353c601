"""The real sets' scoring: figures per class, writer and word, look-alikes apart, absent sets."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.ml.inference import Predictor
from classifier.ml.preprocessing import preprocess
from classifier.ml.training import realsets
from classifier.ml.training.canvas import to_png
from classifier.ml.training.drawings import lookalikes
from tests.helpers import SHIPPED_WEIGHTS


def test_digit_figures_per_class_and_writer_with_the_worst():
    labels = np.array([0, 0, 1, 1, 1, 7])
    predicted = np.array([0, 0, 7, 1, 1, 7])
    kept = np.array([True, False, True, True, True, True])
    writers = ["3", "3", "10", "10", "2", "2"]
    f = realsets.digit_figures(labels, predicted, kept, writers, "writer", worst=2)
    assert f["count"] == 6 and f["accuracy"] == round(5 / 6, 4)
    assert f["kept_and_right"] == round(4 / 6, 4) and f["turned_away"] == round(1 / 6, 4)
    assert f["per_class"]["0"] == {
        "count": 2, "accuracy": 1.0, "kept_and_right": 0.5, "turned_away": 0.5,
    }  # fmt: skip
    assert list(f["per_writer"]) == ["2", "3", "10"]  # writers in numeric order
    assert f["worst_writers"] == [["10", 0.5], ["3", 0.5]]  # ties by name


def test_nondigit_figures_keep_the_lookalikes_apart():
    groups = ["circle", "circle", "cat", "cat", "cat", "dog"]
    predicted = np.array([0, 0, 8, 8, 3, 1])
    kept = np.array([True, False, True, True, False, False])
    alike = np.array([lookalikes.is_lookalike("quickdraw", g) for g in groups])
    f = realsets.nondigit_figures(groups, predicted, kept, alike, "word", top=1)
    assert f["count"] == 4 and f["turned_away"] == 0.5  # the circles not counted
    assert f["per_word"] == {"cat": round(1 / 3, 4), "dog": 1.0}
    assert f["most_kept"] == [{"word": "cat", "kept": round(2 / 3, 4), "count": 3, "read_as": 8}]
    assert f["lookalikes"] == {"count": 2, "kept": 0.5, "per_word": {"circle": 0.5}}


def test_absent_sets_are_reported_absent(tmp_path):
    sets = realsets.read_sets(tmp_path)
    assert set(sets) == set(realsets.SETS)
    assert all(isinstance(s, realsets.Absent) for s in sets.values())
    predictor = Predictor.load(SHIPPED_WEIGHTS, device="cpu")
    report = realsets.report(predictor, realsets.prepare_all(sets))
    assert report["quickdraw"] == {"absent": True, "source": str(tmp_path / "quickdraw")}
    assert "pendigits: absent" in realsets.summary_lines(report)[0]
    with pytest.raises(ValueError, match="No real set"):
        realsets.read_sets(tmp_path, names=["mnist"])


def test_a_small_set_is_scored_both_ways(tmp_path):
    folder = tmp_path / "symbols"
    folder.mkdir()
    (folder / "plus.txt").write_text("[[[0,50],[100,50]],[[50,0],[50,100]]]\n")
    (folder / "bar.v.txt").write_text("[[[50,0],[52,100]]]\n")
    sets = realsets.read_sets(tmp_path, names=["symbols"])
    real = sets["symbols"]
    assert real.groups == ["bar.v", "plus"] and real.lookalike.tolist() == [True, False]
    prepared = realsets.prepare(real)
    assert {w: i.shape for w, i in prepared.images.items()} == {
        "ink": (2, 28, 28), "png": (2, 28, 28), "bitmap": (2, 28, 28),
    }  # fmt: skip
    predictor = Predictor.load(SHIPPED_WEIGHTS, device="cpu")
    figures = realsets.score_set(predictor, prepared)
    for way in realsets.WAYS:
        one = figures["ways"][way]
        assert one["count"] == 1 and one["lookalikes"]["count"] == 1
        assert one["refused"] == 0 and set(one["per_symbol"]) == {"plus"}


def test_a_bitmap_from_another_app_is_small_plain_and_either_polarity():
    """`bitmap`: the pad's drawing at 28 pixels, drawn with a plain pen, sent as a PNG; the
    worker's preprocessing finds the ink whichever way round the colours are."""
    ink = (np.array([[96, 40, 0], [96, 150, 50]], np.float32),)  # a "1" on the 192-pixel pad
    rng = np.random.default_rng(0)
    pictures = [realsets.draw_bitmap(ink, rng) for _ in range(12)]
    assert all(p.size == (28, 28) and p.mode == "L" for p in pictures)
    arrays = [np.asarray(p) for p in pictures]
    dark = [a for a in arrays if a[0, 0] == 0]
    light = [a for a in arrays if a[0, 0] == 255]
    assert dark and light and len(dark) + len(light) == 12
    # The stroke lies where the pad has it: column 96 of 192 is column 14 of 28.
    assert all(int(a[10:20].max(axis=0).argmax()) in (13, 14) for a in dark)
    images = [preprocess(to_png(p)) for p in pictures]
    assert all(i.max() > 200 and i[:, :4].max() == 0 for i in images)

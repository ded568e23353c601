"""The not-a-digit benchmark's picture of the held-out letters a model still takes for digits."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from benchmarks import not_a_digit as bench
from classifier.ml.inference import Predictor
from classifier.ml.rejection import outputs_of
from classifier.ml.training.alphabets import SCRIPTS
from classifier.ml.training.calibration import EvaluationSets
from classifier.ml.training.outliers import HELD_OUT_SCRIPTS, families_for, make_outliers
from tests.helpers import SHIPPED_WEIGHTS, needs_dejavu


@needs_dejavu  # the held-out alphabets are DejaVu's
def test_kept_letters_are_drawn_a_row_per_held_out_alphabet(tmp_path):
    outliers, families = make_outliers(60, "eval", seed=3, families=HELD_OUT_SCRIPTS, size=192)
    empty = np.zeros((0, 28, 28), np.uint8)
    labels = np.zeros(0, np.int64)
    sets = EvaluationSets(empty, labels, empty, labels, outliers, families)
    predictor = Predictor.load(SHIPPED_WEIGHTS, device="cpu")
    path = tmp_path / "kept.png"

    bench.draw_kept(predictor, sets, path)

    grid = np.asarray(Image.open(path))[::2, ::2]  # drawn at twice the size
    per_row = bench.KEPT_PER_ROW
    assert grid.shape == (28 * len(HELD_OUT_SCRIPTS), 30 * per_row)
    for row, family in enumerate(HELD_OUT_SCRIPTS):
        images = outliers[np.asarray(families) == family]
        logits, detector = outputs_of(predictor.model, images)
        kept = images[
            predictor.rejection.scores(logits, detector).numpy() >= predictor.rejection.threshold
        ]
        tiles = [grid[28 * row : 28 * (row + 1), 30 * i : 30 * i + 28] for i in range(per_row)]
        drawn = min(len(kept), per_row)
        assert all(
            np.array_equal(tile, image)
            for tile, image in zip(tiles[:drawn], kept[:drawn], strict=True)
        )
        assert all((tile == 128).all() for tile in tiles[drawn:])  # the rest left grey
        assert 0 < len(kept) < len(images)  # some letters are turned away, some taken


@needs_dejavu  # at least the DejaVu alphabets to draw
def test_trained_letters_are_measured_per_alphabet_on_both_sides(monkeypatch):
    drawn: list[tuple[str, int]] = []
    make = bench.make_outliers

    def spy(count, split, seed, families, **kwargs):
        drawn.append((split, seed))
        return make(count, split, seed, families, size=192)

    monkeypatch.setattr(bench, "make_outliers", spy)
    predictor = Predictor.load(SHIPPED_WEIGHTS, device="cpu")

    shares = bench.trained_letters_rejected(predictor, 5)

    alphabets = [f for f in families_for("eval") if f in SCRIPTS]
    assert list(shares) == alphabets and "latin" in shares
    assert drawn == [("train", bench.TRAINED_LETTERS_SEED), ("eval", bench.TRAINED_LETTERS_SEED)]
    counts = 5 * np.array(list(shares.values()))  # shares of 5 drawings each
    assert np.allclose(counts, counts.round())
    assert 0 < np.mean([t for t, _ in shares.values()]) <= 1


def test_the_threshold_rule_is_two_shares():
    assert bench._shares("0.002,0.004") == (0.002, 0.004)
    for bad in ("0.002", "a,b", "0.002,1.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            bench._shares(bad)

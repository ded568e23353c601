"""The real-drawings benchmark's core on a handful of drawings: the table of several weights side
by side, absent sets named, and the picture of the styles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks import real_drawings as bench
from classifier.ml.inference import Predictor
from classifier.ml.training import realsets
from classifier.ml.training.drawings import styles
from classifier.ml.training.drawings.pendigits import PenDigit
from tests.helpers import SHIPPED_WEIGHTS
from tests.ml.training.test_styles import CLOSED_FOUR, ONE, SEVEN, ZERO, timed


def handful() -> dict:
    """Six digits of two writers, their styles, two doodles (one a look-alike), no symbols."""
    inks = [ZERO, ONE, SEVEN, CLOSED_FOUR, ZERO, ONE]
    labels = np.array([0, 1, 7, 4, 0, 1])
    writers = ["1", "1", "1", "2", "2", "2"]
    pen = realsets.RealSet(
        "pendigits", "CC BY 4.0", Path("pen"), inks, writers, labels, np.zeros(6, dtype=bool)
    )
    made = styles.make_styles(
        [PenDigit(int(d), int(w), timed(i)) for d, w, i in zip(labels, writers, inks, strict=True)]
    )
    styled = realsets.RealSet(
        "styles", "CC BY 4.0", Path("pen"), [s.ink for s in made], [s.style for s in made],
        np.array([s.label for s in made]), np.zeros(len(made), dtype=bool),
    )  # fmt: skip
    doodles = realsets.RealSet(
        "quickdraw", "CC BY 4.0", Path("qd"), [ZERO, SEVEN], ["circle", "cat"], None,
        np.array([True, False]),
    )  # fmt: skip
    sets = {"pendigits": pen, "styles": styled, "quickdraw": doodles}
    sets["symbols"] = realsets.Absent("symbols", Path("/nowhere/symbols"))
    return realsets.prepare_all(sets)


def test_weights_are_compared_side_by_side_on_every_set():
    prepared = handful()
    predictors = [Predictor.load(SHIPPED_WEIGHTS, device="cpu") for _ in range(2)]
    results = [bench.measure(p, prepared) for p in predictors]
    assert results[0] == results[1]  # the same weights, the same figures
    assert results[0]["sets"]["pendigits"]["ways"]["ink"]["count"] == 6

    lines = bench.compare(results)
    text = "\n".join(lines)
    assert lines[0].startswith("weights: [0] digits-cnn") and "[1] digits-cnn" in lines[0]
    header = next(line for line in lines if "[0] ink" in line)
    ways = ["ink", "png", "bitmap"]
    assert header.split() == [w for i in (0, 1) for way in ways for w in (f"[{i}]", way)]
    kept = next(line for line in lines if line.strip().startswith("kept_and_right"))
    assert len(kept.split()) == 1 + 6 and all(v.endswith("%") for v in kept.split()[1:])
    assert "class 7, kept and right" in text and "slashed zero, turned away" in text
    assert "[0] ink worst writers: " in text and "[1] png worst styles: " in text
    assert "look-alikes kept" in text and "[0] ink most kept: cat" in text
    assert "symbols: absent (no files at /nowhere/symbols)" in text


def test_the_styles_are_drawn_a_row_each_both_ways(tmp_path):
    pen = [PenDigit(0, 1, timed(ZERO)), PenDigit(1, 1, timed(ONE)), PenDigit(7, 1, SEVEN)]
    pen.append(PenDigit(4, 1, CLOSED_FOUR))
    path = tmp_path / "styles.png"
    bench.draw_styles(path, pen, examples=2)
    grid = np.asarray(Image.open(path))
    assert grid.shape[0] == len(styles.STYLES) * (bench.TILE + 8)
    tile = grid[4 : 4 + bench.TILE, 190 : 190 + bench.TILE]  # the first slashed zero, page-drawn
    assert tile.max() == 255 and (tile == 0).mean() > 0.5  # white ink on the page's black
    empty = grid[4 : 4 + bench.TILE, -bench.TILE :]  # one example only: the second left grey
    assert (empty == 96).all()

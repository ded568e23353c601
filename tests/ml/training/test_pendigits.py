"""The pen digits' reader: UNIPEN text to labelled, per-writer ink, y turned to grow downward."""

from __future__ import annotations

import functools
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from classifier.ml.training.drawings import pendigits
from classifier.ml.training.drawings.pendigits import PenDigit

# Two digits as the file writes them: a header, then per digit its segment, its comment (label,
# writer, index) and pen-down blocks of `x y` lines; `.DT` (the pause between strokes) skipped.
UNIPEN = """\
.INCLUDE        dene.doc

.LEXICON "0" "1" "2" "3" "4" "5" "6" "7" "8" "9"
.HIERARCHY      DIGIT

.SEGMENT DIGIT    0 ? "7"
.COMMENT 7 12  224
.PEN_DOWN
 100  400
 300  400
 150  100
.PEN_UP
.DT 100
.PEN_DOWN
 120  250
 260  250
.PEN_UP

.SEGMENT DIGIT    1 ? "1"
.COMMENT 1 3  9
.PEN_DOWN
 250  480
 250   20
.PEN_UP
"""
# The whole file's counts: digits, writers, and digits of each class.
FILE_DIGITS = 7494
FILE_WRITERS = 30
FILE_CLASSES = {0: 780, 1: 779, 2: 780, 3: 719, 4: 780, 5: 720, 6: 720, 7: 778, 8: 719, 9: 719}


@functools.cache
def read_or_skip() -> list[PenDigit]:
    """Every digit of the shared file, or the calling test skipped with where it was looked for."""
    folder = Path(os.environ.get("DIGITS_DATA_DIR") or settings.DIGITS_DATA_DIR)
    path = pendigits.path_in(folder)
    if not path.is_file():
        pytest.skip(f"the pen digits are not at {path}; set DIGITS_DATA_DIR to ../shared/datasets")
    return pendigits.read(path)


def test_a_unipen_text_gives_labels_writers_and_strokes_with_y_down(tmp_path):
    path = tmp_path / "digits.tra"
    path.write_text(UNIPEN, encoding="ascii")

    seven, one = pendigits.read(path)

    assert (seven.label, seven.writer, len(seven.ink)) == (7, 12, 2)
    assert (one.label, one.writer, len(one.ink)) == (1, 3, 1)
    bar, cross = seven.ink
    assert bar.dtype == np.float32 and bar.shape == (3, 3)
    # y flipped within the 500-unit tablet: the first point, written at the top, is near 0.
    assert bar[:, :2].tolist() == [[100, 100], [300, 100], [150, 400]]
    assert cross[:, :2].tolist() == [[120, 250], [260, 250]]
    assert np.isnan(bar[:, 2]).all()  # the file has no times
    assert one.ink[0][:, 1].tolist() == [20, 480]  # drawn downward


def test_a_digit_without_strokes_or_label_is_left_out(tmp_path):
    path = tmp_path / "digits.tra"
    broken = '.SEGMENT DIGIT 5 ? "3"\n.COMMENT 3 4 1\n.PEN_DOWN\n.PEN_UP\n'
    unlabelled = '.SEGMENT DIGIT 6 ? "?"\n.PEN_DOWN\n 1 2\n.PEN_UP\n'
    path.write_text(broken + unlabelled + UNIPEN.split("\n\n", 2)[2], encoding="ascii")

    digits = pendigits.read(path)

    assert [d.label for d in digits] == [7, 1]


def test_by_writer_keeps_each_writers_digits_together(tmp_path):
    path = tmp_path / "digits.tra"
    path.write_text(UNIPEN, encoding="ascii")

    groups = pendigits.by_writer(pendigits.read(path))

    assert {w: [d.label for d in ds] for w, ds in groups.items()} == {12: [7], 3: [1]}


def test_the_shared_file_has_every_digit_with_its_label_and_writer():
    digits = read_or_skip()

    assert len(digits) == FILE_DIGITS
    assert Counter(d.label for d in digits) == FILE_CLASSES
    writers = Counter(d.writer for d in digits)
    assert sorted(writers) == list(range(1, FILE_WRITERS + 1))
    assert min(writers.values()) >= 247  # about 250 digits each
    extent = np.concatenate([s[:, :2] for d in digits for s in d.ink])
    assert extent.min() >= 0 and extent.max() <= pendigits.TABLET_SIDE
    assert all(len(s) >= 1 for d in digits for s in d.ink)

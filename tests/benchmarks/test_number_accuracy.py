"""The numbers benchmark's writers: by default the validation writers that training never sees."""

from __future__ import annotations

from benchmarks import number_accuracy as bench
from classifier.ml.training.drawings import splits
from tests.ml.training.realdata import pen_digits


def test_real_writers_numbers_are_judged_on_held_out_writers_by_default():
    drawings = pen_digits()
    held_out = bench.pen_writers(bench.HELD_OUT, drawings)
    train, validation = splits.split_pendigits(drawings)
    assert held_out == sorted({d.writer for d in validation})
    assert not set(held_out) & {d.writer for d in train}
    assert bench.pen_writers("11-13", drawings) == [11, 12, 13]

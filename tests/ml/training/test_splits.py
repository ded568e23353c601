"""Splits by writer (word, symbol), never by drawing: disjoint, seeded, whole groups."""

from __future__ import annotations

import pytest

from classifier.ml.training.drawings import pendigits
from classifier.ml.training.drawings.splits import (
    split_by,
    split_doodles,
    split_groups,
    split_pendigits,
    split_symbols,
)
from tests.ml.training.realdata import doodles, pen_digits, symbol_drawings


def test_groups_are_split_whole_disjoint_and_by_seed():
    writers = list(range(1, 31)) * 3
    split = split_groups(writers, 0.2, seed=4)
    assert len(split.held_out) == 6 and len(split.train) == 24
    assert split.train | split.held_out == set(range(1, 31)) and not split.train & split.held_out
    assert split_groups(reversed(writers), 0.2, seed=4) == split  # not the order's
    assert split_groups(writers, 0.2, seed=5) != split
    assert len(split_groups(writers, 3).held_out) == 3
    assert split_groups(["a", "b"], 0.01).held_out  # at least one on each side
    with pytest.raises(ValueError):
        split_groups(writers, 1.5)


def test_items_follow_their_group():
    items = [("a", 1), ("b", 2), ("a", 3), ("c", 4)]
    train, held = split_by(items, lambda i: i[0], 1, seed=0)
    assert sorted(train + held) == sorted(items)
    assert not {i[0] for i in train} & {i[0] for i in held}


def test_the_pen_digits_split_by_writer():
    digits = pen_digits()
    train, validation = split_pendigits(digits, 0.2, seed=0)
    assert len(train) + len(validation) == len(digits)
    assert len({d.writer for d in validation}) == 6
    assert not {d.writer for d in train} & {d.writer for d in validation}
    assert isinstance(train[0], pendigits.PenDigit)


def test_the_doodles_and_symbols_split_by_what_was_drawn():
    train, held = split_doodles(doodles(), 0.2, seed=1)
    assert not {d.word for d in train} & {d.word for d in held}
    assert len({d.word for d in held}) == 69
    train, held = split_symbols(symbol_drawings(), 0.2, seed=1)
    assert not {d.name for d in train} & {d.name for d in held} and held

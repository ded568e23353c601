"""The symbols' reader: one file per symbol, one JSON drawing a line, to ink without times."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.ml.training.drawings import lookalikes, symbols
from tests.ml.training.realdata import symbol_drawings


def test_a_folder_is_read_by_symbol_without_times(tmp_path):
    folder = tmp_path / "symbols"
    folder.mkdir()
    (folder / "emptyset.txt").write_text("[[[1,2],[3,4],[5,6]],[[0,9],[9,0]]]\n[[[7,7]]]\n")
    (folder / "plus.txt").write_text("\n[[[0,5],[10,5]],[[5,0],[5,10]]]\n")
    (folder / "LICENSE").write_text("MIT")

    read = symbols.read(folder)
    assert [d.name for d in read] == ["emptyset", "emptyset", "plus"]
    ring, slash = read[0].ink
    assert ring.dtype == np.float32 and ring[:, :2].tolist() == [[1, 2], [3, 4], [5, 6]]
    assert np.isnan(ring[:, 2]).all() and slash.shape == (2, 3)
    assert [d.name for d in symbols.read(folder, names={"plus"})] == ["plus"]


def test_a_drawing_with_no_points_is_an_error():
    with pytest.raises(ValueError, match="'dot'"):
        symbols.parse("[[]]", "dot")


def test_the_shared_symbols():
    read = symbol_drawings()
    assert len(read) == 1357 and len({d.name for d in read}) == 467
    assert set(lookalikes.SYMBOLS) <= {d.name for d in read}

"""The Quick, Draw! reader: ndjson lines to ink, with the word and country kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classifier.ml.training.drawings import lookalikes, quickdraw
from tests.ml.training.realdata import doodles


def line(word: str, country: str, drawing: list) -> str:
    return json.dumps(
        {"word": word, "countrycode": country, "recognized": True, "drawing": drawing}
    )


def test_a_file_is_read_as_ink_with_word_country_and_times(tmp_path):
    folder = tmp_path / "quickdraw"
    folder.mkdir()
    (folder / "line.ndjson").write_text(
        line("line", "DE", [[[10, 20, 30], [5, 6, 7], [0, 16, 33]]]) + "\n\n"
        + line("line", "BR", [[[1, 2], [3, 4], [0, 8]], [[5], [6], [50]]]) + "\n"
    )  # fmt: skip
    (folder / "circle.ndjson").write_text(line("circle", "", [[[0, 9], [0, 9], [0, 1]]]))
    (folder / "LICENSE").write_text("CC BY 4.0")

    read = quickdraw.read(folder)
    assert [(d.word, d.country) for d in read] == [("circle", ""), ("line", "DE"), ("line", "BR")]
    first = read[1].ink[0]
    assert first.dtype == np.float32 and first.shape == (3, 3)
    assert first.tolist() == [[10, 5, 0], [20, 6, 16], [30, 7, 33]]
    assert [len(s) for s in read[2].ink] == [2, 1]
    assert [d.word for d in quickdraw.read(folder, words={"circle"})] == ["circle"]


def test_a_malformed_line_is_an_error_naming_its_word():
    with pytest.raises(ValueError, match="'moon'"):
        quickdraw.parse(line("moon", "FR", [[[1, 2], [3]]]))
    with pytest.raises(ValueError, match="no points"):
        quickdraw.parse(line("moon", "FR", []))


def test_the_shared_doodles():
    read = doodles()
    assert len(read) == 9570 and len({d.word for d in read}) == 345
    assert len({d.country for d in read}) > 100
    timed = read[0].ink[0][:, 2]
    assert not np.isnan(timed).any() and (np.diff(timed) >= 0).all()
    # every look-alike names a word that is there
    assert set(lookalikes.QUICKDRAW_WORDS) <= {d.word for d in read}

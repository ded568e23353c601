"""The generated non-digits: every family draws, splits stay apart, and they are what a worker
sees (28x28 uint8 from the canvas through `to_mnist`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier.ml.training import outliers
from classifier.ml.training.alphabets import SCRIPTS, Script, fonts_for
from classifier.ml.training.outliers import (
    FAMILIES,
    HELD_OUT_SCRIPTS,
    SPLITS,
    drawable,
    drawn_digits,
    families_for,
    letters,
    looks_like_a_stroke,
    make_outliers,
    outlier_drawing,
    split_rng,
)
from tests.helpers import needs_dejavu


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_draws_something_a_worker_would_see(family: str) -> None:
    if family not in families_for("eval"):
        pytest.skip(f"no installed font draws {family} (apt-get install fonts-noto-core)")
    images, names = make_outliers(6, "eval", families=[family], size=192)
    assert images.shape == (6, 28, 28) and images.dtype == np.uint8
    assert names == [family] * 6
    # What to_mnist makes: ink peaks at white, background black, no two drawings alike.
    assert (images.reshape(6, -1).max(axis=1) == 255).all()
    assert (images[:, 0, :] == 0).mean() > 0.9
    assert len({image.tobytes() for image in images}) == 6


def test_the_same_seed_gives_the_same_drawings_and_splits_differ() -> None:
    first, _ = make_outliers(8, "train", seed=3, size=192)
    again, _ = make_outliers(8, "train", seed=3, size=192)
    other, _ = make_outliers(8, "calibration", seed=3, size=192)
    assert np.array_equal(first, again)
    assert not any(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_evaluation_characters_are_never_trained_on() -> None:
    for script in families_for("eval"):
        if script not in SCRIPTS:
            continue
        train, evaluate = (
            {c for _, chars in letters(script, split) for c in chars} for split in ("train", "eval")
        )
        assert not train & evaluate, script
        assert evaluate, f"no {script} character is kept for evaluation"
        assert len(train) >= len(evaluate), script


def test_a_head_to_ship_learns_every_letter_and_evaluation_keeps_its_third() -> None:
    for script in families_for("eval"):
        if script not in SCRIPTS:
            continue
        train, evaluate, every = (
            {c for _, chars in letters(script, split, every) for c in chars}
            for split, every in (("train", False), ("eval", False), ("train", True))
        )
        assert every == train | evaluate, script
    with pytest.raises(ValueError, match="every_letter"):
        letters("latin", "eval", every_letter=True)


@needs_dejavu
def test_every_letter_reaches_the_drawings(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[str] = []
    real = outliers.font_drawing

    def spy(char: str, *args) -> object:
        drawn.append(char)
        return real(char, *args)

    monkeypatch.setattr(outliers, "font_drawing", spy)
    third = {c for _, chars in letters("latin", "eval") for c in chars}
    make_outliers(60, "train", 0, ["latin"], size=64, every_letter=True)
    assert set(drawn) & third
    drawn.clear()
    make_outliers(60, "train", 0, ["latin"], size=64)
    assert drawn and not set(drawn) & third


@needs_dejavu
def test_a_measuring_run_leaves_whole_alphabets_out_of_training() -> None:
    held = families_for("train", HELD_OUT_SCRIPTS)
    assert not set(HELD_OUT_SCRIPTS) & set(held)
    assert set(HELD_OUT_SCRIPTS) <= set(families_for("eval", HELD_OUT_SCRIPTS))
    assert set(families_for("train")) == set(held) | set(HELD_OUT_SCRIPTS)


def test_a_family_of_several_scripts_draws_each_from_its_own_fonts() -> None:
    indic = letters("indic", "train")
    if not indic:
        pytest.skip("fonts-noto-core is not installed")
    assert len(indic) == len(SCRIPTS["indic"])  # every script has letters to train on
    for script, chars in indic:
        assert set(chars) <= set(script.letters)
        assert all(fonts_for(c, script.fonts) for c in chars)
        assert not fonts_for(chars[0])  # DejaVu has no Indic letters: Noto draws them


def test_missing_fonts_leave_their_family_out(monkeypatch: pytest.MonkeyPatch) -> None:
    ghost = Script("\u0905", (Path("/nonexistent/NotoSansDevanagari-Regular.ttf"),))
    assert fonts_for("\u0905", ghost.fonts) == ()
    monkeypatch.setitem(SCRIPTS, "ghost", (ghost,))
    assert letters("ghost", "train") == []
    assert drawable(("scribble", "ghost"), "train") == ("scribble",)
    with pytest.raises(ValueError, match="No font draws"):
        outlier_drawing("ghost", split_rng("train", 0), "train")


def test_a_straight_line_or_a_dot_is_a_stroke_a_star_is_not() -> None:
    line = np.zeros((28, 28), np.uint8)
    line[4:24, 13:15] = 255
    assert looks_like_a_stroke(line)
    assert looks_like_a_stroke(np.zeros((28, 28), np.uint8))
    star, _ = make_outliers(1, "eval", families=["shape"], size=192)
    assert not looks_like_a_stroke(star[0])


def test_unknown_family_and_split_are_refused() -> None:
    with pytest.raises(ValueError, match="family"):
        outlier_drawing("nope", split_rng("train", 0), "train")
    with pytest.raises(ValueError, match="split"):
        make_outliers(1, "test")
    assert set(SPLITS) == {"train", "calibration", "eval"}


def test_drawn_digits_keep_their_labels_and_look_like_digits() -> None:
    source = np.zeros((4, 28, 28), np.uint8)
    source[:, 5:23, 12:16] = 255  # a 1, four times
    images, labels = drawn_digits(source, np.array([1, 1, 1, 1]), "eval", template_share=0.0)
    assert images.shape == (4, 28, 28) and labels.tolist() == [1, 1, 1, 1]
    assert (images.reshape(4, -1).max(axis=1) == 255).all()
    # Each drawn with its own brush and slant, and a thick 1 is still a stroke, never an outlier.
    assert len({image.tobytes() for image in images}) == 4
    assert all(looks_like_a_stroke(image) for image in images)

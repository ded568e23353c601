"""The alphabets drawn from the fonts: letters written like digits are left out, and the fonts
draw the scripts they are listed for."""

from __future__ import annotations

from classifier.ml.training.alphabets import SCRIPTS, fonts_for
from tests.helpers import needs_dejavu


def test_letters_that_look_like_digits_are_left_out() -> None:
    def letters(family: str) -> str:
        return "".join(script.letters for script in SCRIPTS[family])

    for char in "OoIilZzSsBbGgq":
        assert char not in letters("latin")
    assert "\u0417" not in letters("cyrillic")  # Ze, a 3
    assert "\u039f" not in letters("greek")  # Omicron, a 0


@needs_dejavu
def test_fonts_draw_the_non_latin_alphabets() -> None:
    for char in ("Ж", "Ω", "א", "ب", "Ա", "ა"):
        assert fonts_for(char), char
    assert fonts_for("\U0010fffd") == ()

"""The doodles and symbols that are drawn exactly as people write digits: one home for the list.

Training keeps them out of the "not a digit" negatives (teaching the detector that a circle is
no digit turns zeros away) and evaluation reports them apart, as the share kept rather than
turned away. Chosen by looking at the drawings of every word and symbol that the shipped model
(`digits-cnn-v1-20261130-143437-bbb7400b`) keeps as a digit, rasterized as the service draws
ink: a word or symbol is here when its usual drawing is a digit's shape, not when a few of its
drawings happen to be. Each maps to the digits it is drawn as.
"""

from __future__ import annotations

# Quick, Draw! words (classifier.ml.training.drawings.quickdraw).
QUICKDRAW_WORDS: dict[str, tuple[int, ...]] = {
    "circle": (0,),
    "potato": (0,),  # a plain oval, most of the time
    "hexagon": (0,),  # drawn fast, a polygon's corners round off into a zero at 28x28
    "octagon": (0,),
    "line": (1,),  # slanted or upright (a flat line is no digit, but the word covers both)
    "string bean": (1,),
    "zigzag": (2, 3),  # a Z is a 2 with a sharp corner; three strokes of a zigzag are a 3
    "lollipop": (9,),  # a loop on a straight stick: a nine with a straight tail
    "snowman": (8,),  # two loops stacked
    "peanut": (8,),
}

# Symbols, as their files name them (classifier.ml.training.drawings.symbols).
SYMBOLS: dict[str, tuple[int, ...]] = {
    "emptyset": (0,),  # a slashed zero, as many write zero
    "emptyset.rev": (0,),
    "nothing.rev": (0,),
    "diameter": (0,),
    "Phi": (0,),
    "theta": (0,),  # a zero with a bar
    "OO": (0,),  # a double-struck O is a zero drawn twice over
    "circle.stroked.small": (0,),
    "ellipse.stroked.v": (0,),
    "sigma": (0,),  # a zero whose end overshoots
    "bar.v": (1,),
    "divides": (1,),
    "slash.big": (1,),  # a one leaning right
    "backslash": (1,),  # a one leaning left
}

# The lists by the real set's name in classifier.ml.training.realsets.
BY_SET: dict[str, dict[str, tuple[int, ...]]] = {"quickdraw": QUICKDRAW_WORDS, "symbols": SYMBOLS}


def is_lookalike(dataset: str, name: str) -> bool:
    """Whether the word or symbol `name` of `dataset` ("quickdraw", "symbols") is drawn as a
    digit."""
    return name in BY_SET.get(dataset, {})

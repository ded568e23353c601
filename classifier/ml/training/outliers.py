"""Things people draw on a digit reader that are not digits, made on the fly, each family named.

No set of handwritten non-digits ships with the project, so it draws its own, the way a person
would on the page: scribbles and zigzags, shapes (stars, hearts, arrows, crossed circles...),
glyphs and characters of invented alphabets, pieces of digits, digits turned until they are
none, and several digits in one box, drawn stroke by stroke (`classifier.ml.training.strokes`);
and letters and symbols of some sixty real alphabets from the system's fonts, redrawn along their
skeletons with the canvas brush after a handwriting-like distortion
(`classifier.ml.training.alphabets`). Every drawing goes through `to_mnist`, so the 28x28 image
is what a worker would see.

Three splits keep what trains the model, what chooses its threshold and what measures it apart:
each split has its own seeds, and a third of every alphabet's letters appears only in "eval".
A measuring run also leaves whole alphabets out of training (`families_for(split, held_out)`,
`HELD_OUT_SCRIPTS`), so that evaluation measures alphabets the model never saw. Canvas-style
digits (`drawn_digits`) come from the same brush, for the other side of the threshold.
"""

from __future__ import annotations

import functools
import logging
import math
import zlib
from collections.abc import Sequence

import numpy as np
from PIL import Image

from classifier.ml.input import ImageError
from classifier.ml.preprocessing import to_mnist
from classifier.ml.training.alphabets import SCRIPTS, Script, font_drawing, fonts_for
from classifier.ml.training.canvas import CANVAS_SIZE, render_canvas
from classifier.ml.training.strokes import (
    STROKE_FAMILIES,
    STROKE_MAKERS,
    digit_template,
    draw_strokes,
)

logger = logging.getLogger(__name__)

SPLITS = ("train", "calibration", "eval")
# Mixed with each call's seed, so the three splits never share a drawing.
_SPLIT_SEEDS = {"train": 11, "calibration": 23, "eval": 37}

# The alphabets a measuring run leaves out of training (`families_for(..., held_out)`), so that
# evaluation measures alphabets the model never saw.
HELD_OUT_SCRIPTS = ("armenian", "georgian", "hebrew")
# The help of the `hold_out` option of every run that draws non-digits to learn from.
HOLD_OUT_HELP = (
    "alphabets left out of the non-digits, comma-separated (a measuring run's: "
    f"{','.join(HELD_OUT_SCRIPTS)}); none: every alphabet the fonts draw"
)


def parse_held_out(text: str) -> tuple[str, ...]:
    """The alphabets a comma-separated `hold_out` option names; ValueError for a name that is
    no alphabet."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        raise ValueError(f"hold_out names no alphabet: {', '.join(unknown)}.")
    return names


FAMILIES = (*STROKE_FAMILIES, *SCRIPTS)


# --- Letters of each split ----------------------------------------------------------------------


@functools.cache
def _split_letters(script: Script, split: str, every_letter: bool = False) -> str:
    drawn = [c for c in script.letters if fonts_for(c, script.fonts)]
    if every_letter:
        return "".join(drawn)
    kept = [c for c in drawn if zlib.crc32(c.encode()) % 3 == 0]
    return "".join(kept if split == "eval" else [c for c in drawn if c not in kept])


def letters(family: str, split: str, every_letter: bool = False) -> list[tuple[Script, str]]:
    """Each script of `family` with the letters `split` draws of it (scripts with none left
    out): a fixed third of every alphabet is kept for "eval", the rest for the other splits;
    the fonts must draw them. `every_letter` draws the whole alphabet in a training split (the
    "eval" letters are then no longer unseen by a model trained on it)."""
    _check_split(split)
    if every_letter and split == "eval":
        raise ValueError('every_letter is for training splits; "eval" keeps its third.')
    found = [(script, _split_letters(script, split, every_letter)) for script in SCRIPTS[family]]
    return [(script, chars) for script, chars in found if chars]


# --- Sets ----------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; use one of {', '.join(SPLITS)}.")


def split_rng(split: str, seed: int, *salt: int) -> np.random.Generator:
    """The generator of one split and seed: two splits never draw the same numbers."""
    _check_split(split)
    return np.random.default_rng([_SPLIT_SEEDS[split], seed, *salt])


def families_for(split: str, held_out: Sequence[str] = ()) -> tuple[str, ...]:
    """The families a split draws: all for "eval", less the `held_out` alphabets for the others
    (a measuring run's), and in every split less those whose fonts are not installed (logged)."""
    _check_split(split)
    wanted = tuple(f for f in FAMILIES if split == "eval" or f not in held_out)
    return drawable(wanted, split)


@functools.cache
def drawable(families: tuple[str, ...], split: str) -> tuple[str, ...]:
    """`families` less the alphabets no installed font draws (logged once)."""
    usable = tuple(f for f in families if f not in SCRIPTS or letters(f, split))
    if len(usable) < len(families):
        logger.warning("No font for %s: left out", ", ".join(sorted(set(families) - set(usable))))
    return usable


def outlier_drawing(
    family: str,
    rng: np.random.Generator,
    split: str,
    size: int = CANVAS_SIZE,
    every_letter: bool = False,
) -> Image.Image:
    """One canvas drawing of `family`, as a person would send it (`every_letter`: `letters`)."""
    if family in STROKE_MAKERS:
        return draw_strokes(STROKE_MAKERS[family](rng), rng, size)
    if family in SCRIPTS:
        scripts = letters(family, split, every_letter)
        if not scripts:
            raise ValueError(f"No font draws the {family} characters of the {split} split.")
        script, chars = scripts[int(rng.integers(len(scripts)))]
        return font_drawing(chars[int(rng.integers(len(chars)))], rng, size, script.fonts)
    raise ValueError(f"Unknown outlier family {family!r}; known: {', '.join(FAMILIES)}.")


# Drawings retried when they come out blank or as a single stroke.
MAX_ATTEMPTS = 6
# Below this ratio of the ink's minor to major spread, a drawing is one straight stroke: a 1 to
# anyone, so it is not taught as a non-digit.
MIN_SPREAD_RATIO = 0.3


def looks_like_a_stroke(image28: np.ndarray) -> bool:
    """True when the ink of a 28x28 image is (nearly) a straight line or a dot."""
    ys, xs = np.nonzero(np.asarray(image28) > 64)
    if ys.size < 12:
        return True
    spread = np.linalg.eigvalsh(np.cov(np.stack([xs, ys]).astype(np.float64)))
    return bool(math.sqrt(max(spread[0], 0.0) / max(spread[1], 1e-9)) < MIN_SPREAD_RATIO)


def make_outliers(
    count: int,
    split: str,
    seed: int = 0,
    families: Sequence[str] | None = None,
    size: int = CANVAS_SIZE,
    every_letter: bool = False,
) -> tuple[np.ndarray, list[str]]:
    """`count` outliers of `split` as the model sees them (uint8 (N, 28, 28)) and the family of
    each, the families taking turns. Families whose fonts are missing are left out (logged);
    `every_letter`: see `letters`."""
    usable = drawable(tuple(families), split) if families else families_for(split)
    images, names = [], []
    for index in range(count):
        family = usable[index % len(usable)]
        for attempt in range(MAX_ATTEMPTS):
            rng = split_rng(split, seed, index, attempt)
            try:
                image = to_mnist(outlier_drawing(family, rng, split, size, every_letter))
            except ImageError:  # a drawing that left the canvas blank
                continue
            if not looks_like_a_stroke(image):
                images.append(image)
                names.append(family)
                break
    return np.stack(images) if images else np.zeros((0, 28, 28), np.uint8), names


def drawn_digits(
    images28: np.ndarray,
    labels: np.ndarray,
    split: str,
    seed: int = 0,
    template_share: float = 0.25,
    size: int = CANVAS_SIZE,
) -> tuple[np.ndarray, np.ndarray]:
    """Digits as drawn on the canvas and seen by the model: the given MNIST digits redrawn with
    the brush (`canvas.render_canvas`), a `template_share` of them replaced by stroke templates
    of the same digit. Returns uint8 (N, 28, 28) and the labels."""
    out = np.empty((len(images28), 28, 28), dtype=np.uint8)
    for index, (image, label) in enumerate(zip(images28, labels, strict=True)):
        rng = split_rng(split, seed, 1_000_003, index)
        if rng.random() < template_share:
            strokes = digit_template(rng, (int(label),))
            drawing = draw_strokes(strokes, rng, size, turn=0.2)
        else:
            drawing = render_canvas(np.asarray(image), rng, size=size)
        out[index] = to_mnist(drawing)
    return out, np.asarray(labels, dtype=np.int64)

"""Things people draw on a digit reader that are not digits, made on the fly, each family named.

No set of handwritten non-digits ships with the project, so it draws its own, the way a person
would on the page: scribbles and zigzags, shapes (stars, hearts, arrows, crossed circles...),
letters and symbols of fifteen scripts from the DejaVu fonts, of some forty more from Debian's
Noto fonts and of Korean and Japanese (grouped by region), redrawn along their skeletons with the
canvas brush after a handwriting-like distortion, glyphs of an invented alphabet (a few random
strokes joined), characters of random invented alphabets as people draw an unknown script
(smooth joined strokes, loops, bars, hooks and dots), pieces of digits, digits turned until they
are none, and several digits in one box. Every drawing goes through `to_mnist`, so the 28x28
image is what a worker would see.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from classifier.ml.canvas import (
    CANVAS_SIZE,
    STYLE_WEIGHTS,
    STYLES,
    TEMPLATES,
    Polyline,
    compose,
    draw_mask,
    render_canvas,
    template_segments,
)
from classifier.ml.input import ImageError
from classifier.ml.preprocessing import to_mnist

logger = logging.getLogger(__name__)

SPLITS = ("train", "calibration", "eval")
# Mixed with each call's seed, so the three splits never share a drawing.
_SPLIT_SEEDS = {"train": 11, "calibration": 23, "eval": 37}

# Debian's font packages. Where one is not installed, the families that need it are left out
# (logged); fonts-dejavu-core, for most families, comes with most Debian systems.
FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
NOTO_DIR = Path("/usr/share/fonts/truetype/noto")  # fonts-noto-core
DEJAVU = tuple(
    FONT_DIR / name
    for name in (
        "DejaVuSans.ttf",
        "DejaVuSans-Bold.ttf",
        "DejaVuSans-Oblique.ttf",
        "DejaVuSans-ExtraLight.ttf",
        "DejaVuSansCondensed.ttf",
        "DejaVuSansMono.ttf",
        "DejaVuSerif.ttf",
        "DejaVuSerif-Bold.ttf",
        "DejaVuSerif-Italic.ttf",
        "DejaVuSerifCondensed.ttf",
    )
)
HANGUL_FONTS = tuple(  # fonts-nanum
    Path("/usr/share/fonts/truetype/nanum") / name
    for name in ("NanumGothic.ttf", "NanumGothicBold.ttf", "NanumMyeongjo.ttf", "NanumSquareR.ttf")
)
KANA_FONTS = (  # fonts-ipafont-gothic, fonts-ipafont-mincho
    Path("/usr/share/fonts/opentype/ipafont-gothic/ipag.ttf"),
    Path("/usr/share/fonts/opentype/ipafont-mincho/ipam.ttf"),
)


def _noto(name: str) -> tuple[Path, ...]:
    """The Noto fonts of one script: sans and serif, regular and bold, those that exist."""
    return tuple(
        NOTO_DIR / f"Noto{style}{name}-{weight}.ttf"
        for style in ("Sans", "Serif")
        for weight in ("Regular", "Bold")
    )


def _chars(*ranges: tuple[int, int], leave_out: str = "") -> str:
    return "".join(
        chr(c) for low, high in ranges for c in range(low, high + 1) if chr(c) not in leave_out
    )


@dataclass(frozen=True)
class Script:
    """One alphabet: its letters (those written like digits left out) and the fonts to draw them
    from (a letter is drawn only from the fonts that have it)."""

    letters: str
    fonts: tuple[Path, ...] = DEJAVU


def _noto_script(name: str, *ranges: tuple[int, int], leave_out: str = "") -> Script:
    return Script(_chars(*ranges, leave_out=leave_out), _noto(name))


# Letters that people (and MNIST) write like digits are left out: O/o (0), I/l/i (1), Z/z (2),
# S/s (5), B/b/G/g/q (6, 8, 9), and their look-alikes in other alphabets. A family of several
# scripts picks one script, then one letter, so each script is drawn as often.
SCRIPTS: dict[str, tuple[Script, ...]] = {
    "latin": (Script(_chars((0x41, 0x5A), (0x61, 0x7A), leave_out="OoIilZzSsBbGgqDJjTtCcUuVvx")),),
    "greek": (
        Script(_chars((0x391, 0x3A9), (0x3B1, 0x3C9), leave_out="ΟοΙιΖΒβΘθδσςΤτΧχΥυ\u03a2")),
    ),
    "cyrillic": (Script(_chars((0x410, 0x44F), leave_out="ОоЗзБбЧчВвСсТтУуХх")),),
    "armenian": (
        Script(
            _chars((0x531, 0x556), (0x561, 0x586), leave_out="ՕօՅյՑցԳգ"), DEJAVU + _noto("Armenian")
        ),
    ),
    "georgian": (Script(_chars((0x10D0, 0x10F0)), DEJAVU + _noto("Georgian")),),
    "hebrew": (
        Script(
            _chars((0x5D0, 0x5EA), leave_out="וןך"),
            DEJAVU + _noto("Hebrew") + (NOTO_DIR / "NotoRashiHebrew-Regular.ttf",),
        ),
    ),
    "arabic": (Script(_chars((0x628, 0x63A), (0x641, 0x64A), leave_out="هو")),),
    "symbol": (Script("&@#%$?!§¶†‡∞≈≠±√∑∏∫∂∆∇⊕⊗♥♠♣♦★☆☺☹♪♫☂☀☃✓✗✚✿❀➔⌘©®€£¥¤Ω※⁂"),),
    # More scripts the DejaVu fonts draw, for variety: the more alphabets the detector learns
    # from, the better it turns away those it never saw.
    "ipa": (Script(_chars((0x250, 0x2AF), leave_out="ɑɒɔɜɝɞɡɢɩɪɵʒʓʔʕʖʘʡʢʃʅʆʇʈ")),),
    "tifinagh": (Script(_chars((0x2D30, 0x2D67), leave_out="ⵀⵏⵔⵙⵉ")),),
    "syllabics": (Script(_chars((0x1400, 0x167F))),),
    "nko": (Script(_chars((0x7CA, 0x7EA))),),
    "lao": (Script(_chars((0xE81, 0xEAE))),),
    "lisu": (Script(_chars((0xA4D0, 0xA4F7), leave_out="\ua4f2\ua4f3\ua4dc\ua4e2\ua4dd\ua4d6")),),
    # Letters of African and Native American orthographies and older forms: new shapes, not
    # the Latin ones with accents, nor those like digits (reversed s, yogh...).
    "latin_extended": (
        Script("ƆƇƈƉƊƋƌƎƏƑƒƔƕƗƘƙƚƛƜƝƞƤƥƦƩƪƫƬƭƮƱƲƳƴƶƾƿǄǆǶǷȡȤȥȴȵȶȸȹȺȻȼȽȾȿɀɄɅɆɇɈɉɌɍɎɏ"),
    ),
    # Consonants and vowels of the Noto fonts' alphabets, by region. Loops, hooks and headlines
    # drawn by hand are what unseen alphabets look like to the model.
    "indic": (
        _noto_script("Bengali", (0x985, 0x9B9)),
        _noto_script("Devanagari", (0x905, 0x939)),
        _noto_script("Gujarati", (0xA85, 0xAB9)),
        _noto_script("Gurmukhi", (0xA05, 0xA39)),
        _noto_script("Kannada", (0xC85, 0xCB9)),
        _noto_script("Malayalam", (0xD05, 0xD39)),
        _noto_script("Oriya", (0xB05, 0xB39)),
        _noto_script("Tamil", (0xB85, 0xBB9)),
        _noto_script("Telugu", (0xC05, 0xC39)),
        _noto_script("Sinhala", (0xD85, 0xDC6)),
        _noto_script("Tibetan", (0xF40, 0xF6C)),
        _noto_script("MeeteiMayek", (0xABC0, 0xABDA)),
        _noto_script("SylotiNagri", (0xA800, 0xA82B)),
        _noto_script("Grantha", (0x11305, 0x11339), leave_out="\U00011320"),  # a ring: a 0
    ),
    "asian": (
        _noto_script("Thai", (0xE01, 0xE2E)),
        _noto_script("Khmer", (0x1780, 0x17A2)),
        _noto_script("Myanmar", (0x1000, 0x102A), leave_out="\u101d"),  # wa, a ring: a 0
        _noto_script("Javanese", (0xA984, 0xA9B2)),
        _noto_script("Balinese", (0x1B05, 0x1B33)),
        _noto_script("Tagalog", (0x1700, 0x1711)),
        _noto_script("Yi", (0xA000, 0xA48C)),
        # Loops like 6 and 9 left out, and the double ring (00).
        _noto_script(
            "Mongolian", (0x1820, 0x1842), leave_out="\u182a\u182b\u1833\u1836\u1839\u1842"
        ),
    ),
    "african": (
        _noto_script("Ethiopic", (0x1200, 0x135A)),
        _noto_script("Vai", (0xA500, 0xA60B)),
        _noto_script("Bamum", (0xA6A0, 0xA6EF)),
        _noto_script("Adlam", (0x1E900, 0x1E943)),
    ),
    "west_asian": (
        _noto_script("Syriac", (0x710, 0x72F)),
        _noto_script("Thaana", (0x780, 0x7A5)),
        _noto_script("Samaritan", (0x800, 0x815)),
        _noto_script("Mandaic", (0x840, 0x858)),
        _noto_script("Avestan", (0x10B00, 0x10B35)),
    ),
    "historic": (
        _noto_script("Runic", (0x16A0, 0x16EA), leave_out="ᛁᛂᛌᛍᛧ"),  # bars: a 1
        _noto_script("Glagolitic", (0x2C00, 0x2C2E)),
        _noto_script("Gothic", (0x10330, 0x1034A)),
        _noto_script("OldTurkic", (0x10C00, 0x10C48)),
        _noto_script("LinearB", (0x10000, 0x1005D)),
        _noto_script("OldItalic", (0x10300, 0x1031F)),
        _noto_script("Phoenician", (0x10900, 0x10915)),
        _noto_script("Deseret", (0x10400, 0x1044F)),
        _noto_script("Shavian", (0x10450, 0x1047F)),
        _noto_script("OldHungarian", (0x10C80, 0x10CB2)),
        # Georgian capitals (Asomtavruli), less those written like digits.
        Script(_chars((0x10A0, 0x10C5), leave_out="ႡႣႤႨႩႯႷႺႽჃ"), DEJAVU + _noto("Georgian")),
        # Aramaic, Hebrew's forerunner, less the letters like 0, 1, 3, 4 and 7.
        _noto_script(
            "ImperialAramaic",
            (0x10840, 0x10855),
            leave_out="\U00010843\U00010845\U00010846\U00010848\U0001084e\U00010850",
        ),
    ),
    # Korean letters and Japanese kana, from fonts-nanum and fonts-ipafont. Left out: ieung (a
    # ring), giyeok (a 7), mieum and ro (boxes: a 0), the bars, and kana like 1, 2 or 7.
    "east_asian": (
        Script(_chars((0x3131, 0x314E), leave_out="ㄱㅁㅇ"), HANGUL_FONTS),
        Script(_chars((0x314F, 0x3163), leave_out="ㅡㅣ"), HANGUL_FONTS),
        Script(_chars((0x3041, 0x3096), leave_out="ぃいしっつへ"), KANA_FONTS),
        Script(_chars((0x30A1, 0x30FA), leave_out="ロヘーㇸ"), KANA_FONTS),
    ),
}
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


STROKE_FAMILIES = (
    "scribble",
    "zigzag",
    "shape",
    "glyph",
    "character",
    "digit_piece",
    "turned_digit",
    "multi_digit",
)
FAMILIES = (*STROKE_FAMILIES, *SCRIPTS)


# --- Strokes in a unit box (x right, y down), as canvas.TEMPLATES --------------------------------


def _circle(cx: float, cy: float, r: float, n: int = 32, start: float = 0.0) -> Polyline:
    return [
        (cx + r * math.cos(t), cy + r * math.sin(t))
        for t in np.linspace(start, start + 2 * math.pi, n)
    ]


def _star(rng: np.random.Generator) -> list[Polyline]:
    points = int(rng.choice([5, 5, 6, 7]))
    inner = float(rng.uniform(0.18, 0.3))
    turn = float(rng.uniform(0, 2 * math.pi))
    ring = [
        (
            0.5 + (0.5 if k % 2 == 0 else inner) * math.cos(turn + k * math.pi / points),
            0.5 + (0.5 if k % 2 == 0 else inner) * math.sin(turn + k * math.pi / points),
        )
        for k in range(2 * points + 1)
    ]
    if rng.random() < 0.4:  # the pentagram people draw in one stroke
        ring = [
            (
                0.5 + 0.5 * math.cos(turn + k * 4 * math.pi / 5),
                0.5 + 0.5 * math.sin(turn + k * 4 * math.pi / 5),
            )
            for k in range(6)
        ]
    return [ring]


def _heart(_: np.random.Generator) -> list[Polyline]:
    t = np.linspace(0, 2 * math.pi, 48)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return [list(zip(0.5 + x / 34, 0.45 - y / 34, strict=True))]


def _arrow(rng: np.random.Generator) -> list[Polyline]:
    head = float(rng.uniform(0.2, 0.35))
    return [
        [(0.0, 0.5), (1.0, 0.5)],
        [(1.0 - head, 0.5 - head), (1.0, 0.5), (1.0 - head, 0.5 + head)],
    ]


def _shape(rng: np.random.Generator) -> list[Polyline]:
    kind = str(rng.choice(SHAPES))
    return SHAPE_MAKERS[kind](rng)


SHAPE_MAKERS: dict[str, Callable[[np.random.Generator], list[Polyline]]] = {
    "crossed_circle": lambda r: [
        _circle(0.5, 0.5, 0.5),
        [(0.5, 0.0), (0.5, 1.0)],
        [(0.0, 0.5), (1.0, 0.5)],
    ],
    "x_circle": lambda r: [
        _circle(0.5, 0.5, 0.5),
        [(0.15, 0.15), (0.85, 0.85)],
        [(0.85, 0.15), (0.15, 0.85)],
    ],
    "star": _star,
    "heart": _heart,
    "arrow": _arrow,
    "box": lambda r: [[(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)]],
    "crossed_box": lambda r: [
        [(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)],
        [(0, 0), (1, 1)],
        [(1, 0), (0, 1)],
    ],
    "triangle": lambda r: [[(0.5, 0.0), (1.0, 0.9), (0.0, 0.9), (0.5, 0.0)]],
    "spiral": lambda r: [
        [
            (0.5 + t / 30 * math.cos(t), 0.5 + t / 30 * math.sin(t))
            for t in np.linspace(0.5, 14.5, 60)
        ]
    ],
    "house": lambda r: [[(0, 1), (0, 0.4), (0.5, 0), (1, 0.4), (1, 1), (0, 1)]],
    "hash": lambda r: [
        [(0.35, 0), (0.3, 1)],
        [(0.7, 0), (0.65, 1)],
        [(0, 0.33), (1, 0.33)],
        [(0, 0.67), (1, 0.67)],
    ],
    "smiley": lambda r: [
        _circle(0.5, 0.5, 0.5),
        _circle(0.33, 0.35, 0.05, 8),
        _circle(0.67, 0.35, 0.05, 8),
        [(0.5 + 0.28 * math.cos(t), 0.55 + 0.2 * math.sin(t)) for t in np.linspace(0.3, 2.8, 16)],
    ],
    "diamond": lambda r: [[(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5), (0.5, 0)]],
    "lightning": lambda r: [[(0.6, 0), (0.2, 0.55), (0.7, 0.45), (0.3, 1)]],
    "cloud": lambda r: [
        [
            (
                0.5 + (0.42 + 0.08 * math.cos(7 * t)) * math.cos(t),
                0.5 + (0.3 + 0.06 * math.cos(7 * t)) * math.sin(t),
            )
            for t in np.linspace(0, 2 * math.pi, 70)
        ]
    ],
    "wave": lambda r: [
        [(x, 0.5 + 0.25 * math.sin(x * 4 * math.pi)) for x in np.linspace(0, 1, 40)]
    ],
}
SHAPES = tuple(SHAPE_MAKERS)


def _scribble(rng: np.random.Generator) -> list[Polyline]:
    """A tangle: a random walk with momentum, then smoothed."""
    n = int(rng.integers(40, 120))
    angle = float(rng.uniform(0, 2 * math.pi))
    turn = rng.normal(0, float(rng.uniform(0.4, 1.2)), n)
    angles = angle + np.cumsum(turn)
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * float(rng.uniform(0.5, 1.5))
    points = np.cumsum(steps, axis=0)
    return [[(float(x), float(y)) for x, y in points]]


def _zigzag(rng: np.random.Generator) -> list[Polyline]:
    zigs = int(rng.integers(3, 9))
    amplitude = float(rng.uniform(0.15, 0.5))
    xs = np.linspace(0, 1, zigs + 1) + rng.normal(0, 0.02, zigs + 1)
    ys = (
        0.5
        + amplitude * np.where(np.arange(zigs + 1) % 2 == 0, -1, 1)
        + rng.normal(0, 0.04, zigs + 1)
    )
    stroke = list(zip(xs.tolist(), ys.tolist(), strict=True))
    if rng.random() < 0.3:  # a second row, as in a coiled line
        stroke += [(x, y + 0.6) for x, y in reversed(stroke)]
    return [stroke]


def _glyph(rng: np.random.Generator) -> list[Polyline]:
    """A character of an alphabet nobody knows: 2-5 lines, arcs and loops, mostly joined."""
    strokes: list[Polyline] = []
    at = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)))
    for _ in range(int(rng.integers(2, 6))):
        if strokes and rng.random() < 0.3:
            at = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)))
        kind = rng.choice(["line", "arc", "loop", "hook"], p=[0.4, 0.3, 0.15, 0.15])
        if kind == "line":
            end = (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)))
            stroke = [at, end]
        elif kind == "loop":
            r = float(rng.uniform(0.08, 0.2))
            start = float(rng.uniform(0, 2 * math.pi))
            cx, cy = at[0] - r * math.cos(start), at[1] - r * math.sin(start)
            stroke = _circle(cx, cy, r, 20, start)
        else:
            r = float(rng.uniform(0.15, 0.45))
            start = float(rng.uniform(0, 2 * math.pi))
            sweep = float(rng.uniform(0.6, 2.2 if kind == "arc" else 1.0)) * rng.choice([-1, 1])
            cx, cy = at[0] - r * math.cos(start), at[1] - r * math.sin(start)
            stroke = [
                (cx + r * math.cos(t), cy + r * math.sin(t))
                for t in np.linspace(start, start + sweep, 16)
            ]
            if kind == "hook":
                tip = stroke[-1]
                stroke.append((tip[0] + float(rng.uniform(-0.2, 0.2)), tip[1] + 0.2))
        strokes.append(stroke)
        at = stroke[-1]
    return strokes


def _smooth(points: np.ndarray, rounds: int = 2) -> Polyline:
    """Chaikin's corner cutting: the smooth line a hand draws through the points."""
    for _ in range(rounds):
        if len(points) < 3:
            break
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.concatenate([points[:1], np.stack([q, r], axis=1).reshape(-1, 2), points[-1:]])
    return [(float(x), float(y)) for x, y in points]


def _wander(rng: np.random.Generator, start: np.ndarray, turns: int) -> np.ndarray:
    """A pen's path from `start`: `turns` steps, each turning from the last by a random angle."""
    angle = float(rng.uniform(0, 2 * math.pi))
    points = [start]
    for _ in range(turns):
        angle += float(rng.normal(0, 1.3))
        step = float(rng.uniform(0.15, 0.45))
        points.append(points[-1] + step * np.array([math.cos(angle), math.sin(angle)]))
    return np.asarray(points)


def _character(rng: np.random.Generator) -> list[Polyline]:
    """A character of an alphabet nobody knows, drawn as people draw letters of a script they
    do not know (as in Omniglot): smooth strokes joined to or crossing one another, closed loops
    and shapes, hooks, bars and dots. Random alphabets stand for the real ones the detector is
    never shown."""
    strokes: list[Polyline] = []
    count = int(rng.choice([1, 2, 2, 3, 3, 3, 4, 4, 5]))
    for k in range(count):
        # Mostly joined: a stroke starts on (or crosses) one drawn before.
        if strokes and rng.random() < 0.75:
            line = strokes[int(rng.integers(len(strokes)))]
            start = np.asarray(line[int(rng.integers(len(line)))], dtype=np.float64)
        else:
            start = rng.uniform(0.0, 1.0, 2)
        kind = str(
            rng.choice(
                ["curve", "closed", "bar", "dot", "hook"],
                p=[0.4, 0.2, 0.2, 0.08, 0.12] if k else [0.6, 0.3, 0.0, 0.0, 0.1],
            )
        )
        if kind == "closed":  # a ring or a rounded polygon, from its rim
            corners = int(rng.choice([3, 4, 5, 24]))
            radius = float(rng.uniform(0.12, 0.35))
            turn = float(rng.uniform(0, 2 * math.pi))
            ring = np.asarray(
                [
                    (
                        radius * math.cos(turn + 2 * math.pi * j / corners),
                        radius
                        * float(rng.uniform(0.6, 1.0))
                        * math.sin(turn + 2 * math.pi * j / corners),
                    )
                    for j in range(corners + 1)
                ]
            )
            ring[-1] = ring[0]
            strokes.append(_smooth(ring - ring[0] + start, 1 if corners < 24 else 0))
        elif kind == "bar":  # a straight line through the point
            angle = float(rng.uniform(0, math.pi))
            half = float(rng.uniform(0.15, 0.45)) * np.array([math.cos(angle), math.sin(angle)])
            shift = float(rng.uniform(-0.6, 0.6))
            strokes.append([tuple(start - half * (1 - shift)), tuple(start + half * (1 + shift))])
        elif kind == "dot":  # a dot or a tick beside the rest
            at = start + rng.normal(0, 0.25, 2)
            tick = rng.normal(0, 0.04, 2)
            strokes.append([tuple(at), tuple(at + tick)])
        else:
            path = _wander(rng, start, int(rng.integers(2, 6)))
            if kind == "hook":  # ends curling into a small loop or hook
                r = float(rng.uniform(0.05, 0.12))
                t0 = float(rng.uniform(0, 2 * math.pi))
                sweep = float(rng.uniform(1.0, 2.0)) * math.pi * rng.choice([-1, 1])
                end = path[-1]
                centre = end - r * np.array([math.cos(t0), math.sin(t0)])
                curl = [
                    centre + r * np.array([math.cos(t), math.sin(t)])
                    for t in np.linspace(t0, t0 + sweep, 10)
                ]
                path = np.concatenate([path, np.asarray(curl)[1:]])
            strokes.append(_smooth(path))
    return [[(float(x), float(y)) for x, y in stroke] for stroke in strokes]


def _template(rng: np.random.Generator, digits: Sequence[int] = tuple(range(10))) -> list[Polyline]:
    digit = int(rng.choice(digits))
    variants = TEMPLATES[digit]
    return variants[str(rng.choice(list(variants)))]


def _digit_piece(rng: np.random.Generator) -> list[Polyline]:
    """A digit cut by a line, one side kept; or the two halves pulled apart."""
    strokes = _template(rng, (2, 3, 4, 5, 6, 8, 9))
    angle = float(rng.uniform(0, math.pi))
    normal = np.array([math.cos(angle), math.sin(angle)])
    offset = float(rng.uniform(-0.1, 0.1))
    apart = rng.random() < 0.35
    pieces: list[Polyline] = []
    for stroke in strokes:
        points = np.asarray(stroke) - 0.5
        side = points @ normal > offset
        for keep in (True, False) if apart else (bool(rng.random() < 0.5),):
            shift = normal * (0.35 if keep else -0.35) if apart else 0.0
            run: Polyline = []
            for point, on in zip(points + shift + 0.5, side, strict=True):
                if on == keep:
                    run.append((float(point[0]), float(point[1])))
                elif run:
                    pieces.append(run)
                    run = []
            if run:
                pieces.append(run)
    # Crumbs of a stroke read as dots, not as part of a digit.
    pieces = [piece for piece in pieces if len(piece) >= 4]
    return pieces or strokes[:1]


# Digits turned until they are none: the near misses that show the detector where digits end.
# Turned half way, 6 and 9 are each other, and 0, 1, 2, 5 and 8 look much the same, so those
# are left out; on their side, 5, 6 and 9 (slanted as people slant) can still read as digits.
_TURNS = {"mirror": (3, 4, 6, 7, 9), "half": (3, 4, 7), "quarter": (2, 3, 4, 7)}


def _turned_digit(rng: np.random.Generator) -> list[Polyline]:
    """A digit mirrored, upside down or on its side."""
    turn = str(rng.choice(list(_TURNS)))
    strokes = _template(rng, _TURNS[turn])
    side = 1.0 if rng.random() < 0.5 else -1.0

    def moved(x: float, y: float) -> tuple[float, float]:
        x, y = x - 0.5, y - 0.5
        if turn == "mirror":
            return 0.5 - x, 0.5 + y
        if turn == "half":
            return 0.5 - x, 0.5 - y
        return 0.5 - side * y, 0.5 + side * x

    return [[moved(x, y) for x, y in stroke] for stroke in strokes]


def _multi_digit(rng: np.random.Generator) -> list[Polyline]:
    """Two or three digits side by side (or stacked) in one box."""
    count = int(rng.integers(2, 4))
    stacked = rng.random() < 0.2
    strokes: list[Polyline] = []
    for k in range(count):
        dx, dy = (0.0, 1.1 * k) if stacked else (0.75 * k + float(rng.uniform(-0.05, 0.1)), 0.0)
        strokes += [[(x * 0.6 + dx, y + dy) for x, y in s] for s in _template(rng)]
    return strokes


STROKE_MAKERS: dict[str, Callable[[np.random.Generator], list[Polyline]]] = {
    "scribble": _scribble,
    "zigzag": _zigzag,
    "shape": _shape,
    "glyph": _glyph,
    "character": _character,
    "digit_piece": _digit_piece,
    "turned_digit": _turned_digit,
    "multi_digit": _multi_digit,
}


def draw_strokes(
    strokes: Sequence[Polyline],
    rng: np.random.Generator,
    size: int = CANVAS_SIZE,
    turn: float = 0.5,
) -> Image.Image:
    """Strokes (any box) drawn on a canvas like `canvas.render_template`: a random size, place,
    slant, rotation (up to `turn` radians) and brush, in one of the canvas styles."""
    segments = template_segments(strokes)
    if len(segments) == 0:
        segments = np.zeros((1, 2, 2), dtype=np.float32)
    points = segments.reshape(-1, 2)
    low, high = points.min(axis=0), points.max(axis=0)
    span = float(max(high - low)) or 1.0
    segments = (segments - (low + high) / 2) / span
    angle = float(rng.uniform(-turn, turn))
    shear = float(rng.uniform(-0.3, 0.3))
    rotate = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    segments = segments @ rotate.T.astype(np.float32)
    segments[..., 0] -= shear * segments[..., 1]
    segments[..., 0] *= float(rng.uniform(0.75, 1.25))
    height = float(rng.uniform(0.3, 0.85)) * size
    brush = float(np.clip(rng.uniform(0.04, 0.12) * height, 4.0 * size / CANVAS_SIZE, 40.0))
    half = height / 2 + brush
    centre = (
        float(rng.uniform(half * 0.8, max(half * 0.8, size - half * 0.8))),
        float(rng.uniform(half * 0.8, max(half * 0.8, size - half * 0.8))),
    )
    segments = segments * height + np.array(centre, dtype=np.float32)
    style = str(rng.choice(STYLES, p=STYLE_WEIGHTS))
    return compose(draw_mask(segments, size=size, brush=brush), style, rng)


# --- Letters and symbols from the fonts ----------------------------------------------------------


@functools.cache
def _font(path: Path, size: int) -> ImageFont.FreeTypeFont | None:
    if not path.is_file():  # else Pillow looks for a font of that name in the system's folders
        return None
    try:
        return ImageFont.truetype(str(path), size)
    except OSError:
        return None


@functools.cache
def _missing_glyph(path: Path) -> bytes:
    font = _font(path, 64)
    return bytes(font.getmask("\U0010fffd")) if font else b""


@functools.cache
def fonts_for(char: str, fonts: tuple[Path, ...] = DEJAVU) -> tuple[Path, ...]:
    """The installed `fonts` that draw `char` (not their missing-glyph box)."""
    found = []
    for path in fonts:
        font = _font(path, 64)
        if font is None:
            continue
        mask = font.getmask(char)
        if mask.getbbox() and bytes(mask) != _missing_glyph(path):
            found.append(path)
    return tuple(found)


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


def _elastic(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """A smooth random displacement of a (H, W) float image: the wobble of a hand-drawn line."""
    h, w = image.shape
    coarse = torch.from_numpy(rng.normal(0, strength, (1, 2, 4, 4)).astype(np.float32))
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    grid = torch.stack([xs + field[0, 0], ys + field[0, 1]], dim=-1).unsqueeze(0)
    moved = F.grid_sample(
        torch.from_numpy(image)[None, None], grid, align_corners=True, padding_mode="zeros"
    )
    return moved[0, 0].numpy()


def font_drawing(
    char: str,
    rng: np.random.Generator,
    size: int = CANVAS_SIZE,
    fonts: tuple[Path, ...] = DEJAVU,
) -> Image.Image:
    """`char` from one of the `fonts` that have it, rotated, sheared and wobbled like
    handwriting, then mostly redrawn along its skeleton with the canvas brush (else kept as
    filled, thickened or thinned type)."""
    drawing = fonts_for(char, fonts)
    if not drawing:
        raise ValueError(f"No font draws {char!r}.")
    font = _font(drawing[int(rng.integers(len(drawing)))], 96)
    glyph = Image.new("L", (160, 160), 0)
    ImageDraw.Draw(glyph).text((80, 80), char, fill=255, font=font, anchor="mm")
    angle = float(rng.uniform(-20, 20))
    shear = float(rng.uniform(-0.35, 0.35))
    glyph = glyph.rotate(angle, resample=Image.Resampling.BILINEAR).transform(
        glyph.size,
        Image.Transform.AFFINE,
        (1, shear, -shear * 80, 0, 1, 0),
        Image.Resampling.BILINEAR,
    )
    ink = _elastic(np.asarray(glyph, dtype=np.float32) / 255.0, rng, float(rng.uniform(0.0, 0.06)))
    image28 = to_mnist(Image.fromarray(np.clip(ink * 255, 0, 255).astype(np.uint8)))
    if rng.random() < 0.75:
        return render_canvas(image28, rng, size=size)
    typed = Image.fromarray(image28)
    change = rng.choice(["none", "thicker", "thinner"])
    if change == "thicker":
        typed = typed.filter(ImageFilter.MaxFilter(3))
    elif change == "thinner":
        typed = typed.filter(ImageFilter.MinFilter(3)) if np.asarray(typed).mean() > 40 else typed
    return compose(typed.resize((size, size), Image.Resampling.BILINEAR), "inverted", rng)


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
            strokes = _template(rng, (int(label),))
            drawing = draw_strokes(strokes, rng, size, turn=0.2)
        else:
            drawing = render_canvas(np.asarray(image), rng, size=size)
        out[index] = to_mnist(drawing)
    return out, np.asarray(labels, dtype=np.int64)

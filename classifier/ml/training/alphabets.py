"""Letters and symbols of the world's alphabets, drawn from the system's fonts as a hand would.

Fifteen scripts from the DejaVu fonts, some forty more from Debian's Noto fonts, and Korean and
Japanese (grouped by region), each with the letters people write like digits left out. A letter is
drawn only from the installed fonts that have it (`fonts_for`), rotated, sheared and wobbled like
handwriting, then mostly redrawn along its skeleton with the canvas brush (`font_drawing`). Which
letters each split draws is `classifier.ml.training.outliers`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from classifier.ml.brush import compose
from classifier.ml.preprocessing import to_mnist
from classifier.ml.training.canvas import CANVAS_SIZE, render_canvas

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

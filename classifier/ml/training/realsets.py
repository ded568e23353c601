"""Weights scored on drawings made by people: per class, per writer, and what they turn away.

The real sets (classifier.ml.training.drawings) beside MNIST: the pen digits (30 writers; with
`held_out`, the 6 that training never sees) and the styles made from them (`drawings.styles`), which
should be kept and read right; the Quick, Draw! doodles and the math symbols, which should be turned
away as no digit, except the look-alikes (`drawings.lookalikes`), reported apart as the share kept.
Each drawing goes through the service's ML path each way a client sends it: as ink, through the
serving rasterizer; as the page's PNG (drawn at a random size and place on the page's pad), decoded
and preprocessed as a worker does; and as a 28x28 bitmap another app drew (`draw_bitmap`). "Kept" is
the weights' own `is_digit` (`Predictor.predict_scored`); a PNG the preprocessing refuses (nothing
left to read) counts as turned away, as the service answers it with an error.

Reading and drawing the sets (`read_sets`, `prepare`) is apart from scoring them (`report`), so a
benchmark draws once and scores several weights. A set whose files are absent is reported as absent,
never an error. Used by `manage.py evaluate` and `benchmarks/real_drawings.py`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageOps

from classifier.ml.inference import Predictor
from classifier.ml.ink import Ink
from classifier.ml.input import IMAGE_SIZE, ImageError
from classifier.ml.preprocessing import preprocess
from classifier.ml.rasterizer import rasterize
from classifier.ml.training.canvas import PAGE_EXPORT_SIZE, draw_page, page_ink, to_png
from classifier.ml.training.drawings import (
    lookalikes,
    pendigits,
    quickdraw,
    splits,
    styles,
    symbols,
)

SETS = ("pendigits", "styles", "quickdraw", "symbols")
WAYS = ("ink", "png", "bitmap")
# `bitmap`: a small picture drawn in another app and sent as an image: the pad's drawing scaled to
# this side, drawn with a plain round pen of a random width (pixels at that side), antialiased by
# drawing this many times larger, in either polarity; not centred or boxed as MNIST is.
BITMAP_SIZE = 28
BITMAP_PEN = (1.0, 2.5)
BITMAP_SUPERSAMPLE = 4
# What stands for the writer in each set: the groups its figures are given by.
GROUP = {"pendigits": "writer", "styles": "style", "quickdraw": "word", "symbols": "symbol"}
WORST = 5  # the writers (styles) with the fewest kept and right
MOST_KEPT = 10  # the words (symbols) most often taken for digits
SCORE_BATCH = 512


@dataclass(frozen=True)
class RealSet:
    """One set's drawings: ink, the group of each (writer, style, word, symbol), the digit drawn
    (None for sets of non-digits) and whether each is a look-alike (drawn as a digit)."""

    name: str
    licence: str
    source: Path
    inks: list[Ink]
    groups: list[str]
    labels: np.ndarray | None
    lookalike: np.ndarray


@dataclass(frozen=True)
class Absent:
    """A set whose files are not under the data folder."""

    name: str
    source: Path


@dataclass(frozen=True)
class Prepared:
    """A set drawn each way: the model's inputs (N, 28, 28) per way, and which PNGs the
    preprocessing refused (N,)."""

    real: RealSet
    images: dict[str, np.ndarray]
    refused: dict[str, np.ndarray]


# --- Reading -----------------------------------------------------------------------------------


def read_sets(
    data_dir: Path,
    limit: int | None = None,
    seed: int = 0,
    names: Sequence[str] = SETS,
    held_out: bool = False,
) -> dict[str, RealSet | Absent]:
    """The real sets `names` under `data_dir`, each at most `limit` drawings chosen at random
    (seeded, in file order) when given. With `held_out`, only what training on real drawings
    (classifier.ml.training.realdata) never learns: the validation writers' digits and styles made
    from them, the held-out words and symbols (`drawings.splits`, their defaults)."""
    data_dir = Path(data_dir)
    out: dict[str, RealSet | Absent] = {}
    pen_path = pendigits.path_in(data_dir)
    pen = None
    if {"pendigits", "styles"} & set(names) and pen_path.is_file():
        pen = [
            pendigits.PenDigit(d.label, d.writer, pendigits.with_times(d.ink))
            for d in pendigits.read(pen_path)
        ]
        if held_out:
            pen = splits.split_pendigits(pen)[1]
    for name in names:
        if name in ("pendigits", "styles"):
            if pen is None:
                out[name] = Absent(name, pen_path)
                continue
            items = pen if name == "pendigits" else styles.make_styles(pen, seed)
            groups = [
                str(d.writer) if isinstance(d, pendigits.PenDigit) else d.style for d in items
            ]
            labels = np.array([d.label for d in items], dtype=np.int64)
            inks = [d.ink for d in items]
            licence = pendigits.LICENCE
            source = pen_path
        elif name in ("quickdraw", "symbols"):
            module = quickdraw if name == "quickdraw" else symbols
            source = module.path_in(data_dir)
            if not source.is_dir() or not any(
                source.glob("*.ndjson" if module is quickdraw else "*.txt")
            ):
                out[name] = Absent(name, source)
                continue
            items = module.read(source)
            if held_out:
                split = splits.split_doodles if module is quickdraw else splits.split_symbols
                items = split(items)[1]
            groups = [d.word if module is quickdraw else d.name for d in items]
            inks, labels, licence = [d.ink for d in items], None, module.LICENCE
        else:
            raise ValueError(f"No real set is called {name!r}; the sets are {', '.join(SETS)}.")
        lookalike = np.array([lookalikes.is_lookalike(name, g) for g in groups], dtype=bool)
        keep = _sample(len(inks), limit, seed)
        out[name] = RealSet(
            name,
            licence,
            source,
            [inks[i] for i in keep],
            [groups[i] for i in keep],
            None if labels is None else labels[keep],
            lookalike[keep],
        )
    return out


def _sample(count: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= count:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))


# --- Drawing -----------------------------------------------------------------------------------


def prepare(real: RealSet, seed: int = 0, ways: Sequence[str] = WAYS) -> Prepared:
    """The set as the model sees it each way: the ink placed on the page's pad as a person draws
    (a random size and place), then rasterized (`ink`), drawn as the page draws it into a PNG,
    decoded and preprocessed (`png`), or drawn small by another app (`bitmap`, `BITMAP_SIZE`)
    and sent as a PNG."""
    rng = np.random.default_rng(seed)
    placed = [page_ink(ink, PAGE_EXPORT_SIZE, PAGE_EXPORT_SIZE, rng=rng) for ink in real.inks]
    images, refused = {}, {}
    for way in ways:
        if way == "ink":
            images[way] = _batched_rasterize(placed)
            refused[way] = np.zeros(len(placed), dtype=bool)
        elif way == "png":
            images[way], refused[way] = _sent_as_pictures(placed, draw_page)
        elif way == "bitmap":  # its own generator: the other ways draw as they did without it
            bitmap = functools.partial(draw_bitmap, rng=np.random.default_rng(seed + 1))
            images[way], refused[way] = _sent_as_pictures(placed, bitmap)
        else:
            raise ValueError(f"No way of sending is called {way!r}; the ways are {WAYS}.")
    return Prepared(real, images, refused)


def _batched_rasterize(inks: list[Ink]) -> np.ndarray:
    if not inks:
        return np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    return np.concatenate(
        [rasterize(inks[i : i + SCORE_BATCH]) for i in range(0, len(inks), SCORE_BATCH)]
    )


def _sent_as_pictures(
    inks: list[Ink], draw: Callable[[Ink], Image.Image]
) -> tuple[np.ndarray, np.ndarray]:
    """Each ink drawn by `draw`, sent as a PNG and preprocessed as a worker does; which ones the
    preprocessing refused (nothing left to read)."""
    images = np.zeros((len(inks), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    refused = np.zeros(len(inks), dtype=bool)
    for i, ink in enumerate(inks):
        try:
            images[i] = preprocess(to_png(draw(ink)))
        except ImageError:
            refused[i] = True
    return images, refused


def draw_bitmap(ink: Ink, rng: np.random.Generator, size: int = BITMAP_SIZE) -> Image.Image:
    """Ink on the page's pad drawn as a `size`-pixel bitmap by another app (`BITMAP_SIZE`): a
    round pen of a random width, antialiased, white on black or black on white. Greyscale."""
    big = size * BITMAP_SUPERSAMPLE
    scale = big / PAGE_EXPORT_SIZE
    pen = float(rng.uniform(*BITMAP_PEN)) * BITMAP_SUPERSAMPLE
    picture = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(picture)
    for stroke in ink:
        points = [(float(x) * scale, float(y) * scale) for x, y in stroke[:, :2]]
        if len(points) > 1:
            draw.line(points, fill=255, width=max(1, round(pen)), joint="curve")
        for x, y in (points[0], points[-1]):  # round ends, and a tap a dot
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill=255)
    small = picture.resize((size, size), Image.Resampling.BOX)
    return ImageOps.invert(small) if rng.random() < 0.5 else small


# --- Scoring -----------------------------------------------------------------------------------


def verdicts(predictor: Predictor, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The digit each image is read as (N,) and whether it is kept as a digit (N,)."""
    predicted, kept = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=bool)]
    for start in range(0, len(images), SCORE_BATCH):
        scored = predictor.predict_scored(images[start : start + SCORE_BATCH])
        predicted.append(scored.probabilities.argmax(axis=1))
        kept.append(scored.is_digit.astype(bool))
    return np.concatenate(predicted), np.concatenate(kept)


def _share(mask: np.ndarray) -> float:
    return round(float(mask.mean()), 4) if len(mask) else 0.0


def digit_figures(
    labels: np.ndarray,
    predicted: np.ndarray,
    kept: np.ndarray,
    groups: Sequence[str] | None = None,
    group: str = "writer",
    worst: int = WORST,
) -> dict:
    """Accuracy, kept and right, and the share turned away: overall, per class, and per group
    (`per_<group>`) with the `worst` groups by kept and right (`worst_<group>s`)."""
    right = predicted == labels
    good = right & kept

    def figures(where: np.ndarray) -> dict:
        return {
            "count": int(where.sum()),
            "accuracy": _share(right[where]),
            "kept_and_right": _share(good[where]),
            "turned_away": _share(~kept[where]),
        }

    out = figures(np.ones(len(labels), dtype=bool))
    out["per_class"] = {str(c): figures(labels == c) for c in range(10) if (labels == c).any()}
    if groups is not None:
        by = np.asarray(groups)
        per = {str(g): figures(by == g) for g in _ordered(by)}
        out[f"per_{group}"] = per
        ranked = sorted(per, key=lambda g: (per[g]["kept_and_right"], g))[:worst]
        out[f"worst_{group}s"] = [[g, per[g]["kept_and_right"]] for g in ranked]
    return out


def nondigit_figures(
    groups: Sequence[str],
    predicted: np.ndarray,
    kept: np.ndarray,
    lookalike: np.ndarray,
    group: str = "word",
    top: int = MOST_KEPT,
) -> dict:
    """The share turned away of the drawings that are no digit (look-alikes apart), per group
    (`per_<group>`), the `top` groups most often kept (with the digit they are read as), and
    the share of look-alikes kept, overall and per group."""
    by = np.asarray(groups)
    others = ~lookalike
    per = {str(g): _share(~kept[by == g]) for g in _ordered(by[others])}
    counts = Counter(by[others].tolist())
    most = sorted(per, key=lambda g: (per[g], -counts[g], g))[:top]
    alike = {str(g): _share(kept[by == g]) for g in _ordered(by[lookalike])}
    return {
        "count": int(others.sum()),
        "turned_away": _share(~kept[others]),
        f"per_{group}": per,
        "most_kept": [
            {
                group: g,
                "kept": round(1.0 - per[g], 4),
                "count": counts[g],
                "read_as": _read_as(predicted[(by == g) & kept]),
            }
            for g in most
        ],
        "lookalikes": {
            "count": int(lookalike.sum()),
            "kept": _share(kept[lookalike]),
            f"per_{group}": alike,
        },
    }


def _ordered(values: np.ndarray) -> list[str]:
    """Distinct values, numbers in numeric order (writer 2 before 10), else in name order."""
    distinct = set(values.tolist())
    return sorted(distinct, key=lambda v: (0, int(v), "") if str(v).isdigit() else (1, 0, str(v)))


def _read_as(predicted: np.ndarray) -> int | None:
    return int(np.bincount(predicted, minlength=10).argmax()) if len(predicted) else None


def score_set(predictor: Predictor, prepared: Prepared) -> dict:
    """One prepared set's figures each way, for these weights."""
    real = prepared.real
    out = {"licence": real.licence, "source": str(real.source), "count": len(real.inks)}
    ways = {}
    for way, images in prepared.images.items():
        predicted, kept = verdicts(predictor, images)
        kept &= ~prepared.refused[way]
        if real.labels is not None:
            ways[way] = digit_figures(real.labels, predicted, kept, real.groups, GROUP[real.name])
        else:
            ways[way] = nondigit_figures(
                real.groups, predicted, kept, real.lookalike, GROUP[real.name]
            )
        ways[way]["refused"] = int(prepared.refused[way].sum())
    out["ways"] = ways
    return out


def report(predictor: Predictor, prepared: dict[str, Prepared | Absent]) -> dict:
    """Every set's figures for these weights; an absent set as `{"absent": true, "source"}`."""
    return {
        name: (
            {"absent": True, "source": str(item.source)}
            if isinstance(item, Absent)
            else score_set(predictor, item)
        )
        for name, item in prepared.items()
    }


def prepare_all(
    sets: dict[str, RealSet | Absent], seed: int = 0, ways: Sequence[str] = WAYS
) -> dict[str, Prepared | Absent]:
    """`prepare` of every set read, absent ones passed through."""
    return {
        name: item if isinstance(item, Absent) else prepare(item, seed, ways)
        for name, item in sets.items()
    }


def mnist_figures(predictor: Predictor, images: np.ndarray, labels: np.ndarray) -> dict:
    """MNIST test digits through the same scoring: accuracy, kept and right, turned away, per
    class (MNIST's files name no writers)."""
    predicted, kept = verdicts(predictor, np.asarray(images))
    return digit_figures(np.asarray(labels), predicted, kept)


# --- Text --------------------------------------------------------------------------------------


def summary_lines(figures: dict) -> list[str]:
    """The report of `report` as a few lines for people (`evaluate`'s text output)."""
    lines = []
    for name, one in figures.items():
        if one.get("absent"):
            lines.append(f"{name}: absent (no files at {one['source']})")
            continue
        for way, f in one["ways"].items():
            head = f"{name} as {way} ({f['count']:,} drawings)"
            if "per_class" in f:
                group = GROUP[name]
                worst = ", ".join(f"{g} {100 * v:.1f}%" for g, v in f[f"worst_{group}s"])
                lines.append(
                    f"{head}: {100 * f['kept_and_right']:.2f}% kept and right, "
                    f"{100 * f['turned_away']:.2f}% turned away; per class "
                    + " ".join(
                        f"{c}:{100 * v['kept_and_right']:.1f}" for c, v in f["per_class"].items()
                    )
                    + f"; worst {group}s {worst}"
                )
            else:
                most = ", ".join(
                    f"{m[GROUP[name]]} {100 * m['kept']:.0f}%" for m in f["most_kept"][:5]
                )
                alike = f["lookalikes"]
                lines.append(
                    f"{head}: {100 * f['turned_away']:.1f}% turned away; most kept {most}; "
                    f"look-alikes kept {100 * alike['kept']:.1f}% of {alike['count']}"
                )
    return lines

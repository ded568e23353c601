"""Real drawings for training: pen digits, styles and non-digits, rasterized as the service does.

The network and its "not a digit" head learn from ink drawn by people
(classifier.ml.training.drawings), rendered by the one rasterizer that serves
(`rasterizer.rasterize`), never from a picture of their own. Only the TRAINING side of each
split learns (`drawings.splits`, their default share and seed: the same for training, thresholds
and `evaluate`): the pen digits of the training writers and the styles made from them; the
doodles and symbols of the training words and symbols, minus every look-alike (a circle, a line,
an empty set are drawn as digits and must never be taught as "not a digit"). The validation
writers' digits choose the epoch and the detector's threshold.

Each time a drawing is used it is augmented as ink, with what varies between people and devices
(`InkAugment`): size and aspect, slant, rotation and shear, the pen's width, jitter of the
points, dropped points, the page's whole-pixel coordinates at a random drawing size, and speed.
A real digit is then drawn one of three ways: as ink (the rasterizer), alone on the page's pad as
its PNG (`render_pages`), or inside a number of the same writer's digits as the page's number PNG,
cut out as a number's digit is (`render_in_numbers`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from classifier.ml.ink import Ink, bounds, transformed
from classifier.ml.input import ImageError
from classifier.ml.preprocessing import to_mnist
from classifier.ml.rasterizer import rasterize
from classifier.ml.training.canvas import PAGE_EXPORT_SIZE, draw_page, page_ink
from classifier.ml.training.drawings import (
    lookalikes,
    pendigits,
    quickdraw,
    splits,
    styles,
    symbols,
)
from classifier.ml.training.ink_numbers import compose_number
from classifier.ml.training.numbers import GAPS, NUMBER_CANVAS

# The datasets a model trained on real drawings learned from, with their licences (metadata).
MNIST_LICENCE = "as published by LeCun, Cortes and Burges"
DIGIT_DATASETS = {"MNIST": MNIST_LICENCE, "pendigits": pendigits.LICENCE}
NONDIGIT_DATASETS = {"quickdraw": quickdraw.LICENCE, "symbols": symbols.LICENCE}
RASTER_BATCH = 512
# A digit drawn inside a number (`render_in_numbers`) has 1 to this many of its writer's other
# digits beside it: numbers of 2 to 6 digits, so digits are as small as in long numbers.
NUMBER_NEIGHBOURS = 5


@dataclass(frozen=True)
class InkAugment:
    """How much each thing people and devices vary is varied, per ink (uniform in +-range)."""

    scale: tuple[float, float] = (0.85, 1.0)  # the digit's share of the 20-pixel box
    aspect: float = 0.2  # log-uniform stretch of width against height
    rotation_deg: float = 10.0
    shear_deg: float = 15.0  # slant
    width: tuple[float, float] = (1.6, 3.4)  # the pen, in output pixels (rasterizer: 2.4)
    jitter: float = 0.008  # point noise, a share of the ink's size
    drop: float = 0.25  # at most this share of a stroke's inner points dropped
    page_px: tuple[float, float] = (40.0, 320.0)  # drawing size on a page, whole pixels
    speed: tuple[float, float] = (0.5, 2.0)  # times scaled


def augment_ink(ink: Ink, rng: np.random.Generator, config: InkAugment) -> Ink:
    """`ink` as another person on another device might have drawn it."""
    x0, y0, x1, y1 = bounds(ink)
    size = max(x1 - x0, y1 - y0, 1e-3)
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2], dtype=np.float32)
    angle = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg))
    shear = np.tan(np.deg2rad(rng.uniform(-config.shear_deg, config.shear_deg)))
    stretch = np.exp(rng.uniform(-config.aspect, config.aspect) / 2)
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.array([[cos, -sin], [sin, cos]]) @ np.array([[stretch, shear], [0, 1 / stretch]])
    page = rng.uniform(*config.page_px) / size  # to a drawing `page_px` wide, whole pixels
    speed = rng.uniform(*config.speed)
    out = []
    for stroke in ink:
        xy = stroke[:, :2]
        if len(xy) > 3 and config.drop:
            keep = rng.random(len(xy)) >= rng.uniform(0, config.drop)
            keep[[0, -1]] = True
            xy, t = xy[keep], stroke[keep, 2]
        else:
            t = stroke[:, 2]
        xy = (xy - centre) @ matrix.T.astype(np.float32)
        xy = xy + rng.normal(0.0, config.jitter * size, xy.shape)
        moved = np.empty((len(xy), 3), dtype=np.float32)
        moved[:, :2] = np.round(xy * page)
        moved[:, 2] = t * speed
        out.append(moved)
    return tuple(out)


def render(
    inks: Sequence[Ink], rng: np.random.Generator | None = None, config: InkAugment | None = None
) -> np.ndarray:
    """uint8 (N, 28, 28) of `inks` through the serving rasterizer; with `rng`, each ink
    augmented (`augment_ink`) and drawn with a pen of its own width, within the digit's box
    scaled by `config.scale` (by padding the ink's box, as a small digit drawn in a big one)."""
    if rng is None:
        out = [rasterize(inks[i : i + RASTER_BATCH]) for i in range(0, len(inks), RASTER_BATCH)]
        return np.concatenate(out) if out else np.zeros((0, 28, 28), np.uint8)
    config = config or InkAugment()
    drawn = [augment_ink(ink, rng, config) for ink in inks]
    widths = rng.uniform(*config.width, size=len(drawn))
    images = np.concatenate(
        [
            rasterize(drawn[i : i + RASTER_BATCH], width=widths[i : i + RASTER_BATCH].tolist())
            for i in range(0, len(drawn), RASTER_BATCH)
        ]
    )
    return _shrunk(images, rng.uniform(*config.scale, size=len(images)))


def render_pages(inks: Sequence[Ink], rng: np.random.Generator, config: InkAugment) -> np.ndarray:
    """uint8 (N, 28, 28) of `inks` augmented (`augment_ink`), placed on the page's pad at a random
    size and drawn with its brush, then preprocessed as the worker preprocesses a PNG: what a
    client sending the page's picture instead of its strokes gives the network. The brush is the
    page's, not in proportion to the digit, so a tall one with a long flag looks as it does there.
    A drawing the preprocessing refuses (nothing left) is rasterized as ink instead."""
    out = np.empty((len(inks), 28, 28), np.uint8)
    for i, ink in enumerate(inks):
        drawn = augment_ink(ink, rng, config)
        try:
            out[i] = to_mnist(draw_page(page_ink(drawn, rng=rng)))
        except ImageError:
            out[i] = rasterize([drawn])[0]
    return out


def render_in_numbers(
    inks: Sequence[Ink],
    neighbours: Sequence[Sequence[Ink]],
    rng: np.random.Generator,
    config: InkAugment,
    gaps: Sequence[str] = tuple(GAPS),
) -> np.ndarray:
    """uint8 (N, 28, 28): each ink drawn inside a number, among 1 to `NUMBER_NEIGHBOURS` digits
    drawn from its `neighbours` (the same writer's), spaced, sized and sloped as people write a
    number (`ink_numbers.compose_number`, a gap of one of the kinds `gaps`), drawn as the
    page draws its 768x384 number pad and exported at its PNG's size, then cut out as the number's
    segmentation cuts a digit (classifier.ml.segmentation): the columns of its ink and brush, with
    whatever of a touching or overlapping neighbour lies there, preprocessed as a crop is.

    What a PNG client's number gives the network: digits as small as long numbers make them under
    the page's fixed brush, and a neighbour's ink at the edge. Every drawing is augmented
    (`augment_ink`); one the preprocessing refuses is rasterized as ink instead."""
    width, height = NUMBER_CANVAS
    scale = PAGE_EXPORT_SIZE / height
    export_w = round(width * scale)
    out = np.empty((len(inks), 28, 28), np.uint8)
    for i, (ink, pool) in enumerate(zip(inks, neighbours, strict=True)):
        drawn = augment_ink(ink, rng, config)
        count = int(rng.integers(1, NUMBER_NEIGHBOURS + 1))
        row = [augment_ink(pool[int(j)], rng, config) for j in rng.integers(len(pool), size=count)]
        at = int(rng.integers(count + 1))
        row.insert(at, drawn)
        gap = str(rng.choice(list(gaps)))
        number = compose_number(row, "0" * len(row), rng, gap=gap, times=False)
        x0, _, x1, _ = number.boxes[at]
        margin = number.brush / 2
        left = max(0, int((x0 - margin) * scale))
        right = min(export_w, int(np.ceil((x1 + margin) * scale)))
        # Only the digit and its two neighbours can reach its columns: the others are not drawn,
        # and the pad is drawn from the cut's left edge, as wide as the cut.
        near = [s for s, k in zip(number.ink, number.owners, strict=True) if abs(k - at) <= 1]
        ink = transformed(tuple(near), np.eye(2) * scale, (-left, 0.0))
        try:
            out[i] = to_mnist(draw_page(ink, right - left, PAGE_EXPORT_SIZE))
        except ImageError:
            out[i] = rasterize([drawn])[0]
    return out


def render_copies(inks: Sequence[Ink], copies: int, seed: int, page_copies: int = 0) -> np.ndarray:
    """`inks` as the service draws them, then `copies` augmented versions of them (`render`),
    then `page_copies` augmented versions drawn as the page's PNG (`render_pages`)."""
    rng = np.random.default_rng(seed)
    config = InkAugment()
    return np.concatenate(
        [
            render(inks),
            *(render(inks, rng) for _ in range(copies)),
            *(render_pages(inks, rng, config) for _ in range(page_copies)),
        ]
    )


def _shrunk(images: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Each image's content scaled about its centre by its scale (at most 1: none above)."""
    tensor = torch.from_numpy(images).float().unsqueeze(1)
    scale = torch.from_numpy(np.minimum(scales, 1.0)).float()
    theta = torch.zeros(len(images), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    grid = torch.nn.functional.affine_grid(theta, list(tensor.shape), align_corners=False)
    out = torch.nn.functional.grid_sample(tensor, grid, align_corners=False)
    return out[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


def _timed(digits: Sequence[pendigits.PenDigit]) -> list[pendigits.PenDigit]:
    return [pendigits.PenDigit(d.label, d.writer, pendigits.with_times(d.ink)) for d in digits]


@dataclass(frozen=True)
class RealDigits:
    """Digits drawn by people: ink, label and writer of each."""

    inks: list[Ink]
    labels: np.ndarray  # int64 (N,)
    writers: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.inks)


def _digits(items: Sequence) -> RealDigits:
    return RealDigits(
        [d.ink for d in items],
        np.array([d.label for d in items], dtype=np.int64),
        np.array([d.writer for d in items], dtype=np.int64),
    )


@dataclass(frozen=True)
class PenSplit:
    """The pen digits split by writer, and the styles made from each side's digits."""

    train: RealDigits
    train_styles: RealDigits
    validation: RealDigits
    validation_styles: RealDigits

    def describe(self) -> dict:
        """What the weights' metadata records of the split."""
        return {
            "train_writers": sorted({int(w) for w in self.train.writers}),
            "validation_writers": sorted({int(w) for w in self.validation.writers}),
            "train_digits": len(self.train),
            "train_styles": len(self.train_styles),
        }


def pen_split(data_dir: Path, seed: int = 0) -> PenSplit:
    """The pen digits under `data_dir` (`pendigits.path_in`), split by writer
    (`splits.split_pendigits`, its default share and seed), with times; FileNotFoundError when
    absent. `seed` makes the styles."""
    path = pendigits.path_in(data_dir)
    if not path.is_file():
        raise FileNotFoundError(f"the pen digits are not at {path}")
    train, validation = splits.split_pendigits(_timed(pendigits.read(path)))
    return PenSplit(
        _digits(train),
        _digits(styles.make_styles(train, seed)),
        _digits(validation),
        _digits(styles.make_styles(validation, seed)),
    )


def training_nondigit_sets(data_dir: Path) -> dict[str, list[Ink]]:
    """The training non-digits by set: under "quickdraw" the doodles of the training words,
    under "symbols" the symbols of the training symbols (`splits.split_doodles`,
    `split_symbols`, their defaults), minus every look-alike; a set whose files are absent gives
    nothing."""
    sets: dict[str, list[Ink]] = {"quickdraw": [], "symbols": []}
    folder = quickdraw.path_in(data_dir)
    if folder.is_dir():
        train, _ = splits.split_doodles(quickdraw.read(folder))
        sets["quickdraw"] = [
            d.ink for d in train if not lookalikes.is_lookalike("quickdraw", d.word)
        ]
    folder = symbols.path_in(data_dir)
    if folder.is_dir():
        drawn, _ = splits.split_symbols(symbols.read(folder))
        sets["symbols"] = [d.ink for d in drawn if not lookalikes.is_lookalike("symbols", d.name)]
    return sets


def training_nondigits(data_dir: Path) -> list[Ink]:
    """Every training non-digit (`training_nondigit_sets`), doodles first."""
    sets = training_nondigit_sets(data_dir)
    return sets["quickdraw"] + sets["symbols"]


class RealStream:
    """Batches of augmented real digits for the training loop: pen digits of the training
    writers, and a share `styles_share` of styles made from them, rasterized afresh each time;
    a share `page_share` of them drawn as the page's PNG instead (`render_pages`), and a share
    `number_share` inside a number of their writer's digits (`render_in_numbers`)."""

    def __init__(
        self,
        split: PenSplit,
        styles_share: float,
        seed: int,
        page_share: float = 0.0,
        number_share: float = 0.0,
    ) -> None:
        if page_share + number_share > 1.0:
            raise ValueError("page_share and number_share add up to at most 1.")
        self.split = split
        self.styles_share = styles_share
        self.page_share = page_share
        self.number_share = number_share
        self.rng = np.random.default_rng(seed)
        self.config = InkAugment()
        # Each writer's training digits: the neighbours of a digit drawn inside a number.
        self.by_writer: dict[int, list[Ink]] = {}
        for ink, writer in zip(split.train.inks, split.train.writers, strict=True):
            self.by_writer.setdefault(int(writer), []).append(ink)

    def batch(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (count, 28, 28) and their labels."""
        from_styles = int(self.rng.binomial(count, self.styles_share))
        chosen: list[Ink] = []
        labels: list[np.ndarray] = []
        writers: list[int] = []
        split = self.split
        for pool, n in ((split.train, count - from_styles), (split.train_styles, from_styles)):
            if not n or not len(pool):
                continue
            pick = self.rng.integers(len(pool), size=n)
            chosen += [pool.inks[i] for i in pick]
            labels.append(pool.labels[pick])
            writers += [int(w) for w in pool.writers[pick]]
        if not self.page_share and not self.number_share:
            # The draws of a run with every digit as ink stay as they were.
            images = render(chosen, self.rng, self.config)
        else:
            # 0: ink, 1: alone on the page, 2: inside a number; without numbers, the same
            # draws as before they existed.
            draw = self.rng.random(len(chosen))
            way = (draw < self.page_share).astype(np.int8)
            way[(draw >= self.page_share) & (draw < self.page_share + self.number_share)] = 2
            images = np.empty((len(chosen), 28, 28), np.uint8)
            picked = [[ink for ink, w in zip(chosen, way, strict=True) if w == k] for k in range(3)]
            if picked[0]:
                images[way == 0] = render(picked[0], self.rng, self.config)
            if picked[1]:
                images[way == 1] = render_pages(picked[1], self.rng, self.config)
            if picked[2]:
                pools = [self.by_writer.get(writers[i]) or chosen for i in np.flatnonzero(way == 2)]
                images[way == 2] = render_in_numbers(picked[2], pools, self.rng, self.config)
        return torch.from_numpy(images), torch.from_numpy(np.concatenate(labels))

    def validation(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The validation writers' digits as the service draws them (no augmentation)."""
        digits = self.split.validation
        return torch.from_numpy(render(digits.inks)), torch.from_numpy(digits.labels)

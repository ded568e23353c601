"""A "not a digit" detector head trained on the frozen network, whose digits stay as they were.

Fine-tuning the whole network with outlier exposure turned non-digits away but cost MNIST test
accuracy. Here the convolutions and the classifier are frozen (eval mode, their tensors never
change), and only a small MLP on their features (`DigitsCNN.detector`: the last stage flattened,
the second stage pooled, the ten logits) learns, with binary cross-entropy, digits (MNIST
training digits and the same redrawn with the canvas brush, augmented as in training) from
generated non-digits of the "train" split (`classifier.ml.training.outliers`). The features of every
image are computed once, then only the head trains (minutes on a CPU, with drawing the pools).
The standardisation of the features is folded into the head's first layer, so the served head
is two linear layers.

With `channels`, the head also reads a small convolutional branch of its own on the image
(`DigitsCNN.detector_convs`), trained with it on the stored (augmented) images: features not
learned for telling digits apart. It took four times as long to train and turned away no more
unseen alphabets than the head alone (docs/model.md), so the default is without it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from classifier.ml.model import (
    DETECTOR_PREFIXES,
    DETECTOR_WIDTH,
    DigitsCNN,
    build_model,
    network_tensors,
    normalize,
)
from classifier.ml.training.augment import AugmentConfig, augment_batch
from classifier.ml.training.config import option
from classifier.ml.training.data import Split
from classifier.ml.training.loop import fit, steps_per_epoch, torch_settings
from classifier.ml.training.outliers import (
    HOLD_OUT_HELP,
    drawn_digits,
    families_for,
    make_outliers,
    parse_held_out,
)
from classifier.ml.training.realdata import pen_split, render_copies, training_nondigit_sets

FEATURE_BATCH = 1000
# Drawn on a half-size canvas, as outlier exposure's pools: preprocessing scales every drawing to
# 20 px anyway.
POOL_CANVAS_SIZE = 192


@dataclass(frozen=True)
class DetectorConfig:
    """Everything a detector run depends on; `manage.py train_detector` makes an option of each."""

    width: int = option(DETECTOR_WIDTH, "hidden units of the detector head")
    channels: int = option(
        0, "channels of the detector's own convolutional branch on the image; 0: none"
    )
    spatial: bool = option(
        False, "let the head read where in the image the second stage's features are (3x3 grid)"
    )
    outlier_pool: int = option(38_000, 'generated non-digits of the "train" split (negatives)')
    drawn_pool: int = option(16_000, "training digits redrawn with the canvas brush (positives)")
    mnist_digits: int = option(55_000, "MNIST training digits (positives)")
    copies: int = option(2, "augmented copies of every image besides the image itself")
    epochs: int = option(30, "passes over the features")
    batch_size: int = option(512, "feature rows per step")
    lr: float = option(2e-3, "Adam learning rate (cosine to zero)")
    weight_decay: float = option(1e-2, "AdamW weight decay")
    drawn_weight: float = option(
        2.0,
        "weight of the drawn digits against the MNIST digits, within the digits' half of the loss",
    )
    hold_out: str = option("", HOLD_OUT_HELP)
    real: bool = option(
        False,
        "learn from real drawings under --data-dir too (classifier.ml.training.realdata): the "
        "training writers' pen digits and styles as digits, the training words and symbols of "
        "Quick, Draw! and the symbols, look-alikes apart, as non-digits, each as drawn and in "
        "`copies` versions augmented as ink; the threshold then also keeps the validation "
        "writers' digits",
    )
    real_weight: float = option(
        1.0,
        "weight of the real drawings within each half of the loss, against 1 for MNIST digits "
        "and for generated non-digits",
    )
    symbols_weight: float | None = option(
        None,
        "weight of the real symbols within the non-digits' half of the loss, apart from the "
        "doodles (which keep --real-weight); none: one group with the doodles, weighed by count",
    )
    page_copies: int = option(
        0,
        "versions of every real drawing, augmented as ink, drawn as the page's PNG and "
        "preprocessed as a worker does (realdata.render_pages), besides the ink copies",
    )
    # The shipped head learns every letter: people draw the letters of scripts they know. A
    # measuring run learns two thirds, so that evaluation's third is letters never seen.
    every_letter: bool = option(
        True,
        'learn every letter of every alphabet (the letters of the "eval" split are then seen in '
        "training, and `evaluate` says so)",
        off_help="learn two thirds of every alphabet's letters, so that the \"eval\" split's third "
        "is of letters never seen (a measuring run's)",
    )
    seed: int = option(1, "random seed of the pools, the augmentation and the head")
    threads: int | None = option(1, "CPU threads for torch; none: torch's choice")

    def __post_init__(self) -> None:
        for name in ("width", "outlier_pool", "drawn_pool", "mnist_digits", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1.")
        for name in ("copies", "page_copies", "channels"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative.")
        if self.symbols_weight is not None and self.symbols_weight < 0:
            raise ValueError("symbols_weight must not be negative.")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError("lr must be positive and weight_decay not negative.")
        if self.drawn_weight < 0 or self.real_weight < 0:
            raise ValueError("drawn_weight and real_weight must not be negative.")
        if self.threads is not None and self.threads < 1:
            raise ValueError("threads must be at least 1.")
        parse_held_out(self.hold_out)

    @property
    def held_out(self) -> tuple[str, ...]:
        return parse_held_out(self.hold_out)

    def hyperparameters(self) -> dict[str, Any]:
        return {**asdict(self), "pool_canvas_size": POOL_CANVAS_SIZE, "optimizer": "AdamW"}


@dataclass(frozen=True)
class Pools:
    """The images the head learns from, uint8 (N, 28, 28) each."""

    mnist: np.ndarray
    drawn: np.ndarray
    outliers: np.ndarray
    # Real drawings (`DetectorConfig.real`), each as drawn and in augmented copies already.
    real_digits: np.ndarray = field(default_factory=lambda: np.zeros((0, 28, 28), np.uint8))
    real_outliers: np.ndarray = field(default_factory=lambda: np.zeros((0, 28, 28), np.uint8))
    # The real symbols when they weigh apart (`DetectorConfig.symbols_weight`), else in
    # `real_outliers`.
    real_symbols: np.ndarray = field(default_factory=lambda: np.zeros((0, 28, 28), np.uint8))


def make_pools(config: DetectorConfig, train: Split, data_dir: Path | None = None) -> Pools:
    """MNIST training digits, some redrawn on the canvas, and generated non-digits ("train");
    with `config.real`, the real drawings of the training side under `data_dir` too."""
    images = train.images.cpu().numpy()
    labels = train.labels.cpu().numpy()
    count = min(config.drawn_pool, len(images))
    drawn, _ = drawn_digits(
        images[:count], labels[:count], "train", config.seed, size=POOL_CANVAS_SIZE
    )
    families = families_for("train", config.held_out)
    outliers, _ = make_outliers(
        config.outlier_pool,
        "train",
        config.seed,
        families,
        size=POOL_CANVAS_SIZE,
        every_letter=config.every_letter,
    )
    pools = Pools(images[: config.mnist_digits], drawn, outliers)
    if not config.real:
        return pools
    if data_dir is None:
        raise ValueError("a detector that learns from real drawings needs their data folder")
    split = pen_split(data_dir, config.seed)
    copies = (config.copies, config.seed, config.page_copies)
    real_digits = render_copies(split.train.inks + split.train_styles.inks, *copies)
    nondigits = training_nondigit_sets(data_dir)
    doodles, drawn_symbols = nondigits["quickdraw"], nondigits["symbols"]
    if config.symbols_weight is None:  # one group, weighed by count
        doodles, drawn_symbols = doodles + drawn_symbols, []
    real_outliers = render_copies(doodles, config.copies, config.seed + 1, config.page_copies)
    if not drawn_symbols:
        return replace(pools, real_digits=real_digits, real_outliers=real_outliers)
    real_symbols = render_copies(drawn_symbols, config.copies, config.seed + 2, config.page_copies)
    return replace(
        pools, real_digits=real_digits, real_outliers=real_outliers, real_symbols=real_symbols
    )


def with_detector(
    model: nn.Module, width: int, channels: int = 0, spatial: bool = False
) -> DigitsCNN:
    """A copy of `model` with a fresh detector head of `width` hidden units (and a branch of
    `channels`; reading the spatial grid): the same tensors otherwise, so the same logits."""
    if not isinstance(model, DigitsCNN):
        raise TypeError("a detector head needs a DigitsCNN")
    config = replace(
        model.config, detector_width=width, detector_channels=channels, detector_spatial=spatial
    )
    out = build_model(config)
    state = network_tensors(model.state_dict())
    missing, unexpected = out.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith(DETECTOR_PREFIXES) for k in missing):
        raise ValueError(f"model does not fit {config}: {missing} {unexpected}")
    return out.eval()


@torch.inference_mode()
def features_of(
    model: DigitsCNN,
    images: np.ndarray,
    copies: int,
    generator: torch.Generator,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the detector reads of the frozen network for `images` (uint8 (N, 28, 28)), and the
    uint8 images it read them from (for the branch): the images themselves, then `copies`
    augmented versions of them (`augment_batch`, as in training)."""
    model.eval()
    tensor = torch.as_tensor(images)
    rows, seen = [], []
    for copy in range(copies + 1):
        for start in range(0, len(tensor), FEATURE_BATCH):
            batch = tensor[start : start + FEATURE_BATCH]
            if copy:
                part = None if labels is None else labels[start : start + FEATURE_BATCH]
                augmented = augment_batch(batch, generator, AugmentConfig(), part)
                batch = (augmented[:, 0] * 255).round().to(torch.uint8)
            rows.append(model.frozen_features(normalize(batch))[1].float())
            seen.append(batch)
    return torch.cat(rows), torch.cat(seen)


@dataclass
class DetectorResult:
    model: DigitsCNN  # the frozen network with its trained head, on the CPU, in eval mode
    config: DetectorConfig
    seconds: float  # features and head training, without drawing the pools
    train_loss: float
    counts: dict[str, int]


def train_detector(
    model: nn.Module, pools: Pools, config: DetectorConfig, mnist_labels: torch.Tensor | None = None
) -> DetectorResult:
    """Train a detector head on `model`'s frozen features; returns a copy with the head (the
    network's own tensors untouched)."""
    with torch_settings(threads=config.threads):
        return _train(model, pools, config, mnist_labels)


def _train(
    model: nn.Module, pools: Pools, config: DetectorConfig, mnist_labels: torch.Tensor | None
) -> DetectorResult:
    started = time.perf_counter()
    out = with_detector(model.cpu().eval(), config.width, config.channels, config.spatial)
    x, y, w, images = training_rows(out, pools, config, mnist_labels)
    loss = fit_head(out, x, y, w, config, images)
    return DetectorResult(
        model=out,
        config=config,
        seconds=time.perf_counter() - started,
        train_loss=loss,
        counts={
            "mnist": len(pools.mnist),
            "drawn": len(pools.drawn),
            "outliers": len(pools.outliers),
            "real_digits": len(pools.real_digits),
            "real_outliers": len(pools.real_outliers),
            "real_symbols": len(pools.real_symbols),
            "feature_rows": len(x),
        },
    )


def training_rows(
    model: DigitsCNN, pools: Pools, config: DetectorConfig, mnist_labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The frozen features (N, F), targets (1: digit), loss weights (mean 1) and uint8 images
    (N, 28, 28) the detector learns."""
    generator = torch.Generator().manual_seed(config.seed)
    labels = None if mnist_labels is None else mnist_labels[: len(pools.mnist)].cpu()
    # Each group: its images, pixel copies, labels, whether digits, its weight within its half.
    # The real drawings come augmented (as ink) already: no pixel copies of them.
    sources = [
        (pools.mnist, config.copies, labels, True, 1.0),
        (pools.drawn, config.copies, None, True, config.drawn_weight),
        (pools.real_digits, 0, None, True, config.real_weight),
        (pools.outliers, config.copies, None, False, 1.0),
        (pools.real_outliers, 0, None, False, config.real_weight),
        (pools.real_symbols, 0, None, False, config.symbols_weight or 0.0),
    ]
    groups = [
        (features_of(model, images, copies, generator, known), digit, weight)
        for images, copies, known, digit, weight in sources
        if len(images)
    ]
    x = torch.cat([features for (features, _), _, _ in groups])
    y = torch.cat([torch.full((len(f),), float(digit)) for (f, _), digit, _ in groups])
    # Digits and non-digits weigh half each; within each half, a group weighs its share.
    halves = {
        digit: sum(weight for _, d, weight in groups if d == digit) for digit in (False, True)
    }
    w = torch.cat(
        [
            torch.full((len(f),), 0.5 * weight / max(halves[digit], 1e-9) / max(len(f), 1))
            for (f, _), digit, weight in groups
        ]
    ) * len(x)
    return x, y, w, torch.cat([images for (_, images), _, _ in groups])


def fit_head(
    model: DigitsCNN,
    x: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    config: DetectorConfig,
    images: torch.Tensor | None = None,
) -> float:
    """Train `model.detector` (fresh), and its branch on `images` (uint8 (N, 28, 28), the
    rows' images) when it has one; the rest of the model is left as it is. Returns the last
    epoch's mean loss."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed + 1)
    mean, std = x.mean(dim=0), x.std(dim=0).clamp(min=1e-3)
    xs = (x - mean) / std

    head, convs = model.detector, model.detector_convs
    assert head is not None
    if convs is not None and images is None:
        raise ValueError("a detector with a branch learns from the rows' images")
    trained = nn.ModuleList([head] if convs is None else [head, convs])
    with torch.no_grad():
        for layer in trained.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset) and layer is not trained:
                reset()
    optimizer = torch.optim.AdamW(
        trained.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    steps = config.epochs * steps_per_epoch(len(xs), config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

    def loss(index: torch.Tensor) -> tuple[torch.Tensor, int]:
        """The rows' weighted binary cross-entropy, digits (1) against non-digits (0)."""
        inputs = xs[index]
        if convs is not None and images is not None:  # a branch has its images (checked above)
            inputs = torch.cat([inputs, convs(normalize(images[index]))], dim=1)
        logit = head(inputs).squeeze(1)
        value = F.binary_cross_entropy_with_logits(logit, y[index], weight=w[index])
        return value, len(index)

    last = fit(
        trained,
        loss,
        optimizer,
        schedule,
        size=len(xs),
        batch_size=config.batch_size,
        epochs=config.epochs,
        generator=generator,
        sum_dtype=torch.float64,
    )
    trained.eval()
    # Fold the standardisation into the first layer's columns of the frozen features:
    # W (x - m) / s + b = (W / s) x + (b - W m / s); the branch's columns read it as it is.
    first = head[0]
    assert isinstance(first, nn.Linear)  # the head's first layer (model.DigitsCNN)
    frozen = x.shape[1]
    with torch.no_grad():
        scaled = first.weight[:, :frozen] / std
        first.bias.sub_(scaled @ mean)
        first.weight[:, :frozen] = scaled
    model.eval()
    return last.loss

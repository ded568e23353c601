"""Real drawings for training (classifier.ml.training.realdata): split by writer, look-alikes never
taught as non-digits, augmented as ink and drawn by the serving rasterizer; the training loop, the
detector's rows and its threshold take them."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from classifier.ml.model import ARCHITECTURE, ModelConfig, build_model, normalize
from classifier.ml.rasterizer import rasterize
from classifier.ml.training import realdata
from classifier.ml.training.calibration import (
    DRAWN_MAX_REJECTED,
    MNIST_MAX_REJECTED,
    MNIST_MAX_REJECTED_WITH_REAL,
    REAL_MAX_REJECTED,
    choose_threshold,
)
from classifier.ml.training.config import TrainConfig
from classifier.ml.training.detector import DetectorConfig, Pools, training_rows, with_detector
from classifier.ml.training.drawings import lookalikes, splits
from classifier.ml.training.realsets import read_sets
from classifier.ml.training.train import train
from tests.ml.training.realdata import data_folder, doodles, pen_digits, symbol_drawings


@pytest.fixture(scope="module")
def split() -> realdata.PenSplit:
    pen_digits()  # skips when the pen digits are absent
    return realdata.pen_split(data_folder())


def test_writers_split_and_styles_come_from_their_own_side(split):
    train_writers = set(split.train.writers.tolist())
    validation_writers = set(split.validation.writers.tolist())
    assert train_writers and validation_writers and not train_writers & validation_writers
    assert len(train_writers | validation_writers) == 30
    assert set(split.train_styles.writers.tolist()) <= train_writers
    assert set(split.validation_styles.writers.tolist()) <= validation_writers
    assert split.describe()["validation_writers"] == sorted(validation_writers)
    # The same writers as the split `evaluate --held-out` and the benchmark judge on.
    assert realdata.pen_split(data_folder()).describe() == split.describe()


def test_augmented_ink_differs_but_keeps_its_strokes(split):
    ink = split.train.inks[0]
    rng = np.random.default_rng(0)
    moved = realdata.augment_ink(ink, rng, realdata.InkAugment())
    assert len(moved) == len(ink)
    assert all(len(m) >= 2 and m.dtype == np.float32 for m in moved)
    assert all(np.array_equal(m[:, :2], np.round(m[:, :2])) for m in moved)  # whole pixels
    plain = realdata.render([ink])
    assert np.array_equal(plain, rasterize([ink]))  # the service's drawing, unaugmented
    augmented = realdata.render([ink] * 8, np.random.default_rng(1))
    assert augmented.shape == (8, 28, 28) and augmented.dtype == np.uint8
    assert len({a.tobytes() for a in augmented}) == 8
    assert all(a.max() > 200 for a in augmented)


def test_stream_batches_are_seeded_and_mix_in_styles(split):
    a, b = realdata.RealStream(split, 0.5, 3), realdata.RealStream(split, 0.5, 3)
    images, labels = a.batch(64)
    again, same = b.batch(64)
    assert images.shape == (64, 28, 28) and labels.shape == (64,)
    assert torch.equal(images, again) and torch.equal(labels, same)
    styled = realdata.RealStream(split, 1.0, 0).batch(64)[1]
    assert set(styled.tolist()) <= {0, 1, 4, 7}  # the digits styles are made of
    validation, truth = a.validation()
    assert len(validation) == len(truth) == len(split.validation)


def test_page_drawings_are_the_pngs_the_worker_reads(split):
    """A share of the stream drawn as the page's PNG: the page's brush and the worker's
    preprocessing, not the rasterizer's pen in proportion to the digit."""
    inks = split.train.inks[:6]
    pages = realdata.render_pages(inks, np.random.default_rng(0), realdata.InkAugment())
    assert pages.shape == (6, 28, 28) and pages.dtype == np.uint8
    assert all(p.max() > 200 for p in pages)
    assert not np.array_equal(pages, realdata.render(inks, np.random.default_rng(0)))
    paged = realdata.RealStream(split, 0.25, 3, page_share=1.0)
    images, labels = paged.batch(32)
    again, same = realdata.RealStream(split, 0.25, 3, page_share=1.0).batch(32)
    assert torch.equal(images, again) and torch.equal(labels, same)
    # Without pages the stream draws exactly as before the option existed.
    a, b = realdata.RealStream(split, 0.5, 3), realdata.RealStream(split, 0.5, 3, page_share=0.0)
    assert torch.equal(a.batch(16)[0], b.batch(16)[0])
    mixed = realdata.RealStream(split, 0.25, 5, page_share=0.5).batch(64)[0]
    assert mixed.shape == (64, 28, 28) and bool((mixed.flatten(1).amax(1) > 200).all())


def test_digits_inside_numbers_are_cut_out_as_a_number_s_digit_is(split):
    """A share of the stream drawn inside a number of its writer's digits, as the page's number
    PNG, and cut out as the segmentation cuts a digit: seeded, and other pictures than alone."""
    inks = split.train.inks[:8]
    neighbours = [split.train.inks[8:40]] * len(inks)
    drawn = realdata.render_in_numbers(
        inks, neighbours, np.random.default_rng(0), realdata.InkAugment()
    )
    assert drawn.shape == (8, 28, 28) and drawn.dtype == np.uint8
    assert all(d.max() > 200 for d in drawn)
    again = realdata.render_in_numbers(
        inks, neighbours, np.random.default_rng(0), realdata.InkAugment()
    )
    assert np.array_equal(drawn, again)
    alone = realdata.render_pages(inks, np.random.default_rng(0), realdata.InkAugment())
    assert not np.array_equal(drawn, alone)
    numbered = realdata.RealStream(split, 0.25, 3, number_share=1.0)
    images, labels = numbered.batch(24)
    again_images, same = realdata.RealStream(split, 0.25, 3, number_share=1.0).batch(24)
    assert torch.equal(images, again_images) and torch.equal(labels, same)
    assert bool((images.flatten(1).amax(1) > 200).all())
    # Each digit's neighbours are its own writer's training digits.
    writers = {int(w) for w in split.train.writers}
    assert set(numbered.by_writer) == writers
    assert sum(len(v) for v in numbered.by_writer.values()) == len(split.train)
    # Without numbers the page share draws exactly as before the option existed.
    a = realdata.RealStream(split, 0.5, 3, page_share=0.4)
    b = realdata.RealStream(split, 0.5, 3, page_share=0.4, number_share=0.0)
    assert torch.equal(a.batch(16)[0], b.batch(16)[0])
    three = realdata.RealStream(split, 0.25, 5, page_share=0.3, number_share=0.3).batch(48)[0]
    assert three.shape == (48, 28, 28) and bool((three.flatten(1).amax(1) > 200).all())
    with pytest.raises(ValueError, match="add up"):
        realdata.RealStream(split, 0.25, 3, page_share=0.6, number_share=0.5)


def test_a_number_s_digit_holds_what_a_touching_neighbour_leaves_in_its_columns():
    """The cut takes the digit's columns (and its brush): neighbours written apart leave nothing
    in it, neighbours written over it leave their ink."""
    a = np.linspace(0, 2 * np.pi, 40)
    ring = (np.column_stack([40 * np.cos(a), 50 * np.sin(a), a * 100]).astype(np.float32),)
    bar = (np.array([[0, 0, 0], [0, 100, 100]], np.float32),)
    config = dataclasses.replace(
        realdata.InkAugment(), rotation_deg=0.0, shear_deg=0.0, jitter=0.0, drop=0.0, aspect=0.0
    )

    def drawn(gap: str) -> np.ndarray:
        rng = np.random.default_rng(1)
        return realdata.render_in_numbers([ring] * 12, [[bar]] * 12, rng, config, gaps=(gap,))

    def edge(image: np.ndarray) -> float:
        """How much of its ink's height the crop's first or last inked column covers: a ring's
        side covers little of it, a neighbour's bar at the edge most of it."""
        ink = image > 128
        rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
        column = max(ink[:, cols[0]].sum(), ink[:, cols[-1]].sum())
        return float(column / (rows[-1] - rows[0] + 1))

    apart, over = drawn("wide"), drawn("overlap")
    assert max(edge(d) for d in apart) < 0.5
    assert sum(edge(d) > 0.5 for d in over) >= 8


def test_training_nondigits_leave_out_lookalikes_and_held_out_words():
    doodles(), symbol_drawings()
    inks = realdata.training_nondigits(data_folder())
    train_doodles, held_doodles = splits.split_doodles(doodles())
    train_symbols, _ = splits.split_symbols(symbol_drawings())
    expected = [d for d in train_doodles if not lookalikes.is_lookalike("quickdraw", d.word)]
    expected += [d for d in train_symbols if not lookalikes.is_lookalike("symbols", d.name)]
    assert len(inks) == len(expected) > 0
    taught = {ink[0].tobytes() for ink in inks}
    circles = [d for d in doodles() if d.word == "circle"]
    assert circles and not any(d.ink[0].tobytes() in taught for d in circles)
    assert not any(d.ink[0].tobytes() in taught for d in held_doodles[:200])


def test_held_out_sets_are_what_training_never_sees(split):
    sets = read_sets(data_folder(), held_out=True)
    pen = sets["pendigits"]
    assert {int(g) for g in pen.groups} == set(split.validation.writers.tolist())
    assert len(pen.inks) == len(split.validation)
    _, held = splits.split_doodles(doodles())
    assert set(sets["quickdraw"].groups) == {d.word for d in held}


def test_threshold_keeps_the_real_digits_asked():
    torch.manual_seed(0)
    model = build_model(ARCHITECTURE).eval()
    rng = np.random.default_rng(0)
    mnist, drawn, real = (
        rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (400, 300, 1000)
    )
    rejection = choose_threshold(model, mnist, drawn, score="energy", real_images=real)

    def rejected(images: np.ndarray, threshold: float) -> float:
        with torch.inference_mode():
            scores = rejection.scores(model(normalize(images)))
        return float((scores < threshold).float().mean())

    # A drawing alone: the real digits' bound and as much of MNIST, not the canvas redraws.
    assert rejected(real, rejection.threshold) <= REAL_MAX_REJECTED
    assert rejected(mnist, rejection.threshold) <= MNIST_MAX_REJECTED_WITH_REAL
    assert max(rejected(real, rejection.threshold), rejected(mnist, rejection.threshold)) > 0
    # A number's pieces: every bound, as for weights without real digits.
    pieces = rejection.number_threshold
    assert pieces is not None and pieces <= rejection.threshold
    assert rejected(real, pieces) <= REAL_MAX_REJECTED
    assert rejected(mnist, pieces) <= MNIST_MAX_REJECTED
    assert rejected(drawn, pieces) <= DRAWN_MAX_REJECTED
    without = choose_threshold(model, mnist, drawn, score="energy")
    assert without.number_threshold is None and pieces <= without.threshold


def test_detector_rows_give_real_drawings_their_weight():
    digits = np.zeros((36, 28, 28), np.uint8)
    digits[:, 4:24, 12:16] = 255
    noise = np.random.default_rng(3).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    pools = Pools(digits[:24], digits[24:30], noise[:12], digits[30:], noise[12:])
    config = DetectorConfig(width=8, copies=1, real_weight=2.0, drawn_weight=1.0)
    torch.manual_seed(0)
    model = with_detector(build_model(ModelConfig(widths=(4, 6, 8))).eval(), 8)
    x, y, w, images = training_rows(model, pools, config, None)
    # Pixel copies of MNIST, canvas and generated; the real ones as they come (augmented as ink).
    assert len(x) == 2 * 24 + 2 * 6 + 6 + 2 * 12 + 18 == len(images)
    assert float(w[y == 1].sum()) == pytest.approx(float(w[y == 0].sum()))
    real_digits = slice(2 * 24 + 2 * 6, 2 * 24 + 2 * 6 + 6)
    assert float(w[real_digits].sum()) == pytest.approx(0.5 * float(w[y == 1].sum()))
    assert float(w[-18:].sum()) == pytest.approx(2 / 3 * float(w[y == 0].sum()))


def test_config_refuses_bad_real_options():
    with pytest.raises(ValueError, match="styles_share"):
        TrainConfig(styles_share=1.5)
    with pytest.raises(ValueError, match="real_per_batch"):
        TrainConfig(real_per_batch=-1)
    with pytest.raises(ValueError, match="page_share"):
        TrainConfig(page_share=-0.1)
    with pytest.raises(ValueError, match="number_share"):
        TrainConfig(page_share=0.7, number_share=0.4)
    assert TrainConfig(page_share=0.3, number_share=0.15).hyperparameters()["number_share"] == 0.15


@pytest.mark.slow
def test_training_learns_real_digits_in_the_same_loop(mnist, split):
    small = dataclasses.replace(mnist, validation=mnist.validation.head(500))
    config = TrainConfig(epochs=1, limit=1024, batch_size=64, device="cpu", real_per_batch=16)
    with pytest.raises(ValueError, match="pen digits"):
        train(config, small, progress=False)
    result = train(config, small, progress=False, real=split)
    stats = result.best
    assert stats.real_val_accuracy is not None and 0.0 <= stats.real_val_accuracy <= 1.0
    assert stats.images_per_s > 0
    recorded = config.hyperparameters()["ink_augmentation"]
    assert recorded == dataclasses.asdict(realdata.InkAugment())

"""Augmentation: batch tensor ops that keep digits readable and are reproducible by seed."""

from __future__ import annotations

import dataclasses

import torch

from classifier.ml.training.augment import (
    AugmentConfig,
    add_flags,
    augment_batch,
    random_affine,
    stroke_width,
)


def digits_like(n: int = 16) -> torch.Tensor:
    """uint8 (N, 28, 28): a vertical bar and a horizontal bar, each 2 px wide."""
    images = torch.zeros(n, 28, 28, dtype=torch.uint8)
    images[:, 5:23, 13:15] = 255
    images[:, 13:15, 8:20] = 255
    return images


def test_shape_range_and_dtype():
    out = augment_batch(digits_like(), torch.Generator().manual_seed(0))
    assert out.shape == (16, 1, 28, 28) and out.dtype == torch.float32
    assert out.min() >= 0 and out.max() <= 1


def test_same_seed_same_batch_other_seed_other_batch():
    images = digits_like()
    a = augment_batch(images, torch.Generator().manual_seed(3))
    b = augment_batch(images, torch.Generator().manual_seed(3))
    c = augment_batch(images, torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_each_image_gets_its_own_transform():
    out = augment_batch(digits_like(), torch.Generator().manual_seed(0), AugmentConfig(p=1.0))
    distinct = {tuple(image.flatten().round(decimals=3).tolist()) for image in out}
    assert len(distinct) == 16


def test_p_zero_is_the_identity():
    images = digits_like()
    out = augment_batch(images, torch.Generator().manual_seed(0), AugmentConfig(p=0.0))
    assert torch.equal(out, images.unsqueeze(1).float() / 255)


def test_ink_mostly_stays_on_the_image():
    images = digits_like(64)
    out = augment_batch(images, torch.Generator().manual_seed(1), AugmentConfig(p=1.0))
    before = images.float().sum() / 255
    ratio = out.sum() / before
    assert 0.6 < ratio < 1.8  # scaled, thickened or thinned, but never wiped out or smeared


def test_thicken_and_thin():
    x = digits_like(32).unsqueeze(1).float() / 255
    generator = torch.Generator().manual_seed(0)
    thick = stroke_width(x, AugmentConfig(thicken_p=1.0, thin_p=0.0), generator)
    thin = stroke_width(x, AugmentConfig(thicken_p=0.0, thin_p=1.0), generator)
    assert (thick.sum(dim=(1, 2, 3)) > x.sum(dim=(1, 2, 3))).all()
    assert (thin.sum(dim=(1, 2, 3)) < x.sum(dim=(1, 2, 3))).all()
    assert (thin.amax(dim=(1, 2, 3)) > 0.4).all()  # thinned, never erased


def test_affine_without_randomness_is_the_identity():
    x = digits_like(4).unsqueeze(1).float() / 255
    still = dataclasses.replace(
        AugmentConfig(), rotation_deg=0, scale=(1, 1), aspect=0, shear_deg=0, shift_px=0
    )
    out = random_affine(x, still, torch.Generator().manual_seed(0))
    assert torch.allclose(out, x, atol=1e-5)


def test_shear_slants_a_vertical_bar():
    x = torch.zeros(16, 1, 28, 28)
    x[..., 4:24, 13:15] = 1.0
    slant_only = dataclasses.replace(
        AugmentConfig(), rotation_deg=0, scale=(1, 1), aspect=0, shear_deg=30, shift_px=0
    )
    out = random_affine(x, slant_only, torch.Generator().manual_seed(0))[:, 0]
    top, bottom = out[:, 6].argmax(dim=1), out[:, 21].argmax(dim=1)
    assert (top != bottom).sum() >= 12  # all but the few drawn near zero shear lean over


def test_flags_go_on_some_ones_only():
    images = digits_like(64)
    images[:, 13:15, 8:20] = 0  # a bare vertical stroke: a 1
    labels = torch.tensor([1, 7] * 32)
    x = images.unsqueeze(1).float() / 255
    flagged = add_flags(x, labels, AugmentConfig(flag_p=1.0), torch.Generator().manual_seed(0))
    added = (flagged - x).sum(dim=(1, 2, 3))
    assert (added[labels == 1] > 2).all()  # every 1 got a stroke...
    assert (added[labels == 7] == 0).all()  # ...and nothing else did
    # The flag leaves the top of the stroke down to the left.
    left_of_stroke = flagged[labels == 1, 0, 5:12, :13]
    assert (left_of_stroke.amax(dim=(1, 2)) > 0.5).all()


def test_flags_do_not_change_what_a_seed_gives_other_images():
    images = digits_like(8)
    generator_a, generator_b = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
    with_ones = augment_batch(images, generator_a, labels=torch.ones(8, dtype=torch.long))
    without = augment_batch(images, generator_b, labels=torch.zeros(8, dtype=torch.long))
    assert with_ones.shape == without.shape
    # The random stream stays in step: a second batch is the same whichever labels came first.
    assert torch.equal(augment_batch(images, generator_a), augment_batch(images, generator_b))

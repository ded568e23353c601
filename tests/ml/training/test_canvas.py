"""The canvas renderer used for evaluation and by other tests: thinning, drawing, templates."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from classifier.ml.brush import STYLES
from classifier.ml.training.canvas import (
    CANVAS_SIZE,
    TEMPLATES,
    render_bitmap_png,
    render_canvas_png,
    render_template_png,
    skeleton_segments,
    thin,
)


def test_thin_a_thick_bar_to_one_pixel():
    bar = np.zeros((20, 40), dtype=bool)
    bar[6:14, 5:35] = True
    skeleton = thin(bar)
    assert skeleton.sum() > 15
    assert (skeleton.sum(axis=0) <= 1).all()  # one pixel per column
    assert (skeleton <= bar).all()


def test_thin_works_on_a_batch_like_on_each_image():
    rng = np.random.default_rng(0)
    batch = rng.random((3, 24, 24)) > 0.4
    together = thin(batch)
    for image, result in zip(batch, together, strict=True):
        assert np.array_equal(thin(image), result)


def test_skeleton_segments_stay_on_the_digit(test_digits):
    image = test_digits.images[0].numpy()
    segments = skeleton_segments(image)
    assert segments.ndim == 3 and segments.shape[1:] == (2, 2) and len(segments) > 20
    xs, ys = segments[..., 0].round().astype(int), segments[..., 1].round().astype(int)
    on_ink = image[np.clip(ys, 0, 27), np.clip(xs, 0, 27)] > 0
    assert on_ink.mean() > 0.9


@pytest.mark.parametrize("style", STYLES)
def test_render_canvas_png(test_digits, style):
    data = render_canvas_png(test_digits.images[1].numpy(), np.random.default_rng(1), style=style)
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG" and image.size == (CANVAS_SIZE, CANVAS_SIZE)
    assert image.mode == ("RGBA" if style == "transparent" else "RGB")


def test_render_is_reproducible(test_digits):
    image = test_digits.images[2].numpy()
    first = render_canvas_png(image, np.random.default_rng(5))
    assert render_canvas_png(image, np.random.default_rng(5)) == first
    assert render_canvas_png(image, np.random.default_rng(6)) != first


def test_bitmap_is_black_on_white(test_digits):
    image = Image.open(io.BytesIO(render_bitmap_png(test_digits.images[0].numpy(), size=20)))
    array = np.asarray(image)
    assert image.size == (20, 20) and array[0, 0] == 255 and array.min() < 64


def test_every_template_renders():
    for digit, variants in TEMPLATES.items():
        for variant in variants:
            image = Image.open(io.BytesIO(render_template_png(digit, variant)))
            assert np.asarray(image.convert("L")).max() == 255, (digit, variant)


def test_template_unknown_digit():
    with pytest.raises(ValueError, match=r"0\.\.9"):
        render_template_png(10)

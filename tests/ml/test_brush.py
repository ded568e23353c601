"""The brush the worker draws ink with (classifier.ml.brush): round strokes, canvas colours."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.ml.brush import STYLES, compose, draw_mask


def test_a_segment_is_drawn_with_round_caps_and_a_dot_for_a_tap() -> None:
    mask = np.asarray(draw_mask(np.array([[[20, 32], [44, 32]], [[10, 10], [10, 10]]]), 64, 8))
    assert mask.shape == (64, 64)
    assert mask[32, 32] == 255 and mask[32, 17] > 128  # the line, and its cap past the end
    assert mask[10, 10] == 255  # a tap is a dot as wide as the brush
    assert mask[50, 32] == 0


@pytest.mark.parametrize("style", STYLES)
def test_every_style_colours_the_ink_apart_from_the_paper(style: str) -> None:
    mask = draw_mask(np.array([[[8, 16], [24, 16]]]), 32, 6)
    image = np.asarray(compose(mask, style, np.random.default_rng(0)).convert("RGBA"), np.int32)
    ink, paper = image[16, 16], image[2, 2]
    if style == "transparent":
        assert ink[3] == 255 and paper[3] == 0
    else:
        assert np.abs(ink[:3] - paper[:3]).sum() > 150
    if style == "page":
        assert ink[:3].tolist() == [255] * 3 and paper[:3].tolist() == [0] * 3


def test_an_unknown_style_is_refused() -> None:
    with pytest.raises(ValueError, match="style"):
        compose(draw_mask(np.zeros((1, 2, 2)), 8), "neon")

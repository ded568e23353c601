"""Strokes drawn with a round brush, as a browser canvas draws them, in a canvas's colours.

The worker draws ink (`classifier.ml.ink_segmentation`) with it, and the drawings the tests,
benchmarks and training make (`classifier.ml.training.canvas`) come from the same brush: line
segments stroked with round caps and joins, antialiased by supersampling, then coloured as the
page (white on black) or other clients (black on white, coloured ink, a transparent background).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 2  # drawn this many times larger, then shrunk: antialiased edges like a browser's
STYLES = ("page", "inverted", "colour", "transparent")


def draw_mask(
    segments: np.ndarray,
    size: int,
    brush: float = 20.0,
    supersample: int = SUPERSAMPLE,
) -> Image.Image:
    """Ink coverage ("L", 0..255) of segments (K, 2, 2) in canvas pixels, drawn with a round
    brush of `brush` pixels (round caps and joins), antialiased by supersampling."""
    big = size * supersample
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    width = max(1.0, brush * supersample)
    radius = width / 2.0
    scaled = np.asarray(segments, dtype=np.float64).reshape(-1, 2, 2) * supersample
    for (x0, y0), (x1, y1) in scaled:
        if x0 != x1 or y0 != y1:
            draw.line([(x0, y0), (x1, y1)], fill=255, width=max(1, round(width)))
    # Round caps and joins: a disc at every point (each point once; points repeat in segments).
    for x, y in np.unique(scaled.reshape(-1, 2).round(1), axis=0):
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=255)
    return mask.resize((size, size), Image.Resampling.LANCZOS) if supersample > 1 else mask


def compose(mask: Image.Image, style: str, rng: np.random.Generator | None = None) -> Image.Image:
    """Colour an ink mask in one of `STYLES`: the page's white on black, black on white, coloured
    ink on a contrasting background, or ink on a transparent background (RGBA)."""
    rng = rng or np.random.default_rng(0)
    if style == "page":
        return Image.merge("RGB", [mask] * 3)
    if style == "inverted":
        return Image.merge("RGB", [mask.point(lambda v: 255 - v)] * 3)
    dark = tuple(int(v) for v in rng.integers(0, 90, size=3))
    light = tuple(int(v) for v in rng.integers(190, 256, size=3))
    ink, paper = (dark, light) if rng.random() < 0.5 else (light, dark)
    if style == "colour":
        return Image.composite(
            Image.new("RGB", mask.size, ink), Image.new("RGB", mask.size, paper), mask
        )
    if style == "transparent":
        # As a browser exports it: the ink's colour everywhere, coverage in alpha.
        rgba = Image.new("RGBA", mask.size, (*ink, 0))
        rgba.putalpha(mask)
        return rgba
    raise ValueError(f"Unknown canvas style {style!r}; use one of {', '.join(STYLES)}.")

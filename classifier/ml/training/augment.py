"""Batch augmentation on the training device: digits as people draw them, not as MNIST scanned them.

People draw with a brush of one width at any size, slanted, rotated, squeezed. After
preprocessing (crop, scale to 20 px, centre) what varies is the slant, the aspect, small offsets
and, above all, the stroke thickness relative to the digit. Every transform here is a tensor op
over the whole batch (one `affine_grid` + `grid_sample`, max-pooling for thickness), so it runs
on the GPU beside the model, or on the CPU without DataLoader workers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class AugmentConfig:
    rotation_deg: float = 12.0  # uniform in +-rotation_deg
    scale: tuple[float, float] = (0.85, 1.1)  # overall size
    aspect: float = 0.15  # width relative to height, in 1 +- aspect
    shear_deg: float = 12.0  # horizontal slant, uniform in +-shear_deg
    shift_px: float = 2.0  # uniform in +-shift_px, each axis
    thicken_p: float = 0.35  # share of the batch drawn with thicker strokes
    thicken_px: float = 2.0  # up to this many pixels added on each side of a stroke
    thin_p: float = 0.2  # share drawn with thinner strokes
    p: float = 0.9  # share of the batch that is transformed at all (the rest stays as scanned)
    flag_p: float = 0.25  # share of the 1s given a flag (an up-stroke at the top), as in Europe


def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=device) * (high - low) + low


def stroke_width(
    x: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Thicken or thin the strokes of a random part of the batch by a random amount.

    Each 3x3 max-pool (dilation) adds a pixel on each side of a stroke; blending the next one in
    by a fractional weight gives every thickness in between, up to `thicken_px`. People who
    draw a digit small with the page's brush produce strokes twice MNIST's width. Thinning is
    the same with a min-pool (erosion).
    """
    n, device = x.shape[0], x.device
    shape = (n, 1, 1, 1)
    choice = torch.rand(n, generator=generator, device=device).view(shape)
    amount = torch.rand(n, generator=generator, device=device).view(shape)
    thicken = choice < config.thicken_p
    thin = (choice >= config.thicken_p) & (choice < config.thicken_p + config.thin_p)

    out = x
    steps = amount * config.thicken_px  # pixels to add, per image
    layer = x
    for step in range(math.ceil(config.thicken_px)):
        grown = F.max_pool2d(layer, 3, stride=1, padding=1)
        weight = (steps - step).clamp(0.0, 1.0)
        out = torch.where(thicken, out + weight * (grown - layer), out)
        layer = grown

    eroded = -F.max_pool2d(-x, 3, stride=1, padding=1)
    # Thinning keeps at least a trace of every stroke: the eroded image alone can vanish.
    thinned = torch.maximum(eroded, x * 0.5)
    return torch.where(thin, x + amount * (thinned - x), out)


def add_flags(
    x: torch.Tensor, labels: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Give a random share of the 1s the flag that much of the world writes on them.

    MNIST's 1s are nearly all a bare stroke, so a model trained on it reads a flagged 1 as a 7.
    The flag is a short stroke from the top of the 1 down to the left, steeper and shorter than
    a 7's bar, drawn with the distance to a line segment, on the device like everything here.
    """
    n, device = x.shape[0], x.device
    size = x.shape[-1]
    chosen = (labels == 1) & (torch.rand(n, generator=generator, device=device) < config.flag_p)
    # Randomness is drawn for the whole batch, so what a seed gives does not depend on labels.
    length = _uniform(n, 0.2, 0.35, generator, device) * size * 0.7  # of the ~20 px digit
    angle = _uniform(n, 35.0, 65.0, generator, device) * (math.pi / 180.0)
    width = _uniform(n, 1.5, 2.8, generator, device)
    if not bool(chosen.any()):
        return x

    ink = x[:, 0] > 0.5  # (n, H, W)
    rows = ink.any(dim=2)  # (n, H)
    top = torch.argmax(rows.to(torch.uint8), dim=1).float()  # first row with ink
    columns = torch.arange(size, device=device, dtype=x.dtype)
    top_row = ink[torch.arange(n, device=device), top.long()].to(x.dtype)  # (n, W)
    left = (top_row * columns).sum(dim=1) / top_row.sum(dim=1).clamp(min=1.0)

    start = torch.stack([left, top], dim=1)  # (n, 2) as (x, y)
    end = start + torch.stack([-torch.cos(angle), torch.sin(angle)], dim=1) * length.view(n, 1)
    ys, xs = torch.meshgrid(columns, columns, indexing="ij")
    points = torch.stack([xs, ys], dim=-1).view(1, size, size, 2)  # (1, H, W, 2)
    a, b = start.view(n, 1, 1, 2), end.view(n, 1, 1, 2)
    direction = b - a
    t = ((points - a) * direction).sum(-1) / (direction * direction).sum(-1).clamp(min=1e-6)
    nearest = a + t.clamp(0.0, 1.0).unsqueeze(-1) * direction
    distance = (points - nearest).norm(dim=-1)  # (n, H, W)
    stroke = (width.view(n, 1, 1) / 2 + 0.5 - distance).clamp(0.0, 1.0).unsqueeze(1)
    return torch.where(chosen.view(n, 1, 1, 1), torch.maximum(x, stroke), x)


def random_affine(
    x: torch.Tensor, config: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Rotate, scale, squeeze, slant and shift each image by its own random amounts."""
    n, device = x.shape[0], x.device
    size = x.shape[-1]
    angle = _uniform(n, -config.rotation_deg, config.rotation_deg, generator, device)
    angle = angle * (math.pi / 180.0)
    shear = _uniform(n, -config.shear_deg, config.shear_deg, generator, device)
    shear = torch.tan(shear * (math.pi / 180.0))
    scale = _uniform(n, config.scale[0], config.scale[1], generator, device)
    aspect = _uniform(n, 1.0 - config.aspect, 1.0 + config.aspect, generator, device)
    # affine_grid maps output coordinates to input ones, in [-1, 1]: shifts are 2*px/size.
    shift = _uniform(2 * n, -config.shift_px, config.shift_px, generator, device).view(n, 2)
    shift = shift * (2.0 / size)

    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = scale * aspect, scale / aspect
    # forward map A = R @ Shear @ S ; the grid needs its inverse.
    a11 = cos * sx
    a12 = cos * shear * sy - sin * sy
    a21 = sin * sx
    a22 = sin * shear * sy + cos * sy
    det = a11 * a22 - a12 * a21
    inverse = torch.stack(
        [
            torch.stack([a22 / det, -a12 / det], dim=1),
            torch.stack([-a21 / det, a11 / det], dim=1),
        ],
        dim=1,
    )  # (n, 2, 2)
    translation = -(inverse @ shift.unsqueeze(2))  # (n, 2, 1)
    theta = torch.cat([inverse, translation], dim=2).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def augment_batch(
    images: torch.Tensor,
    generator: torch.Generator,
    config: AugmentConfig | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """uint8 (N, 28, 28) or float (N, 1, 28, 28) in [0, 1] to augmented float (N, 1, 28, 28).

    Draws all its randomness from `generator` (which must live on the images' device), so a
    seeded run sees the same batches every time. With `labels`, some 1s get a flag.
    """
    config = config or AugmentConfig()
    x = images.unsqueeze(1) if images.dim() == 3 else images
    x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
    n = x.shape[0]
    keep = (torch.rand(n, generator=generator, device=x.device) >= config.p).view(n, 1, 1, 1)
    out = stroke_width(x, config, generator)
    if labels is not None and config.flag_p > 0:
        out = add_flags(out, labels, config, generator)
    out = random_affine(out, config, generator).clamp_(0.0, 1.0)
    # Peak ink at full white, as preprocessing makes every input (thinning leaves grey strokes).
    out = out / out.amax(dim=(1, 2, 3), keepdim=True).clamp_(min=1e-3)
    return torch.where(keep, x, out)

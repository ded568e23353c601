"""The convolutional network that reads 28x28 digits.

Small on purpose: a full training run has to finish in minutes on a two-core CPU, and a worker
answers one drawing in well under a millisecond. Batch norm lets it train at a high learning rate
in few epochs; max pooling gives the tolerance to small shifts that drawn digits need.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from classifier.preprocessing import IMAGE_SIZE

NUM_CLASSES = 10


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DigitsCNN(nn.Module):
    """Three stages of 3x3 convolutions (28 -> 14 -> 7 -> 3 px), then a linear classifier."""

    def __init__(self, widths: tuple[int, int, int] = (32, 48, 96), dropout: float = 0.1):
        super().__init__()
        w1, w2, w3 = widths
        self.features = nn.Sequential(
            *_conv(1, w1),
            nn.MaxPool2d(2),  # 14x14
            *_conv(w1, w2),
            *_conv(w2, w2),
            nn.MaxPool2d(2),  # 7x7
            *_conv(w2, w3),
            *_conv(w3, w3),
            nn.MaxPool2d(2),  # 3x3
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(w3 * 3 * 3, NUM_CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, 1, 28, 28) to logits (N, 10)."""
        return self.classifier(self.features(x))


# Architecture names are stored with the weights; loading refuses weights whose tensors do not
# fit the architecture they name.
# The shipped model: the most accurate of the two (0.17 M parameters).
ARCHITECTURE = "digits-cnn-v1"
# Half as wide, twice as fast to train: what a default `train` builds, so that a full run fits in
# five minutes on a two-core CPU (75 k parameters).
FAST_ARCHITECTURE = "digits-cnn-small"

ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    ARCHITECTURE: lambda: DigitsCNN((32, 48, 96)),
    FAST_ARCHITECTURE: lambda: DigitsCNN((16, 32, 64)),
}


def build_model(architecture: str = ARCHITECTURE) -> nn.Module:
    """A freshly initialised network of the named architecture."""
    try:
        factory = ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"Unknown architecture {architecture!r}; known: {known}.") from None
    return factory()


def input_shape(batch: int = 1) -> tuple[int, int, int, int]:
    return (batch, 1, IMAGE_SIZE, IMAGE_SIZE)

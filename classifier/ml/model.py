"""The convolutional network that reads 28x28 digits, and the input it takes.

Small on purpose: a full training run has to finish in minutes on a two-core CPU, and a worker
answers one drawing in well under a millisecond. Batch norm lets it train at a high learning rate
in few epochs; max pooling gives the tolerance to small shifts that drawn digits need.

A `ModelConfig` holds every constructor argument; the weights file stores it (as nanoGPT's
checkpoints store their `model_args`), so a file alone rebuilds its network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from classifier.ml.input import IMAGE_SIZE, MNIST_MEAN, MNIST_STD

NUM_CLASSES = 10


@dataclass(frozen=True)
class ModelConfig:
    """The constructor arguments of `DigitsCNN`."""

    widths: tuple[int, int, int] = (32, 48, 96)  # channels of the three stages
    dropout: float = 0.1  # before the linear classifier
    num_classes: int = NUM_CLASSES
    # Hidden units of the "is this a digit" head on the network's features (`forward_scored`);
    # 0: no head (every file written before it had none).
    detector_width: int = 0
    # Channels of the detector's own small convolutional branch on the 28x28 input, learned
    # from scratch beside the frozen features; 0: none (the head reads frozen features only).
    detector_channels: int = 0
    # Whether the head also reads the second stage's channels max-pooled to 3x3 (where in the
    # image each stroke feature is), not only over the whole image; off in files without it.
    detector_spatial: bool = False

    def without_detector(self) -> ModelConfig:
        """The network alone: what a run that trains a detector of its own starts from."""
        return replace(self, detector_width=0, detector_channels=0, detector_spatial=False)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "widths": list(self.widths)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        """The config stored in a weights file; unknown keys or bad values raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model arguments {', '.join(unknown)}")
        try:
            widths = tuple(int(w) for w in values.get("widths", cls.widths))
            config = cls(
                widths=widths,  # type: ignore[arg-type]
                dropout=float(values.get("dropout", cls.dropout)),
                num_classes=int(values.get("num_classes", cls.num_classes)),
                detector_width=int(values.get("detector_width", cls.detector_width)),
                detector_channels=int(values.get("detector_channels", cls.detector_channels)),
                detector_spatial=_flag(values.get("detector_spatial", cls.detector_spatial)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad model arguments {values!r}") from exc
        if (
            len(config.widths) != 3
            or min(config.widths) < 1
            or config.num_classes < 2
            or config.detector_width < 0
            or config.detector_channels < 0
            or ((config.detector_channels or config.detector_spatial) and not config.detector_width)
        ):
            raise ValueError(f"bad model arguments {values!r}")
        return config


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"not a boolean: {value!r}")
    return value


def _conv(in_channels: int, out_channels: int, kernel_size: int = 3) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


# Hidden units of the detector head, unless a run asks for another width.
DETECTOR_WIDTH = 256
# The state-dict prefixes of the detector's tensors: all that a detector run trains.
DETECTOR_PREFIXES = ("detector.", "detector_convs.")


def network_tensors(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without the detector's tensors."""
    return {k: v for k, v in state_dict.items() if not k.startswith(DETECTOR_PREFIXES)}


# Where `features` ends its second stage (after the 7x7 max pool): the detector head also
# pools the 48 channels there.
_STAGE_2_END = 11
# The grid `detector_spatial` pools the second stage's 7x7 over.
SPATIAL_GRID = 3


def _pooled(x: torch.Tensor) -> torch.Tensor:
    """Average and maximum of each channel over the image: (N, C, H, W) to (N, 2C)."""
    return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def detector_convs(channels: int) -> nn.Sequential:
    """The detector's own branch: three small convolutions (28 -> 14 -> 7 -> 3 px) learned on
    digits against non-digits, so the head is not bound to features learned for telling digits
    apart (which need not separate letters from digits). At 8 channels, about 3% of the
    network's multiply-adds."""
    c = channels
    return nn.Sequential(
        *_conv(1, c),
        nn.MaxPool2d(2),  # 14x14
        *_conv(c, 2 * c),
        nn.MaxPool2d(2),  # 7x7
        *_conv(2 * c, 2 * c),
        nn.MaxPool2d(2),  # 3x3
        nn.Flatten(),
    )


class DigitsCNN(nn.Module):
    """Three stages of 3x3 convolutions (28 -> 14 -> 7 -> 3 px), then a linear classifier.

    With `detector_width`, a small MLP (the detector) reads the same features, the last stage's
    (flattened) and the second stage's (pooled), and the ten logits, and scores whether the
    image is a digit at all; with `detector_channels` it also reads a small convolutional
    branch of its own on the input (`detector_convs`). Both are trained on their own with the
    rest frozen (`classifier.ml.training.detector`), so the ten logits are those of the network
    without them.
    """

    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        config = config or ModelConfig()
        self.config = config
        w1, w2, w3 = config.widths
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
            nn.Dropout(config.dropout),
            nn.Linear(w3 * 3 * 3, config.num_classes),
        )
        self.detector: nn.Sequential | None = None
        self.detector_convs: nn.Sequential | None = None
        if config.detector_channels:
            self.detector_convs = detector_convs(config.detector_channels)
        if config.detector_width:
            self.detector = nn.Sequential(
                nn.Linear(detector_inputs(config), config.detector_width),
                nn.ReLU(inplace=True),
                nn.Linear(config.detector_width, 1),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (N, 1, 28, 28) to logits (N, num_classes)."""
        return self.classifier(self.features(x))

    def frozen_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits (N, num_classes) and what the detector reads of the network's own
        features (N, `frozen_inputs`), from one pass through it."""
        stage2 = self.features[:_STAGE_2_END](x)
        last = self.features[_STAGE_2_END:](stage2)
        logits = self.classifier(last)
        parts = [last.flatten(1), _pooled(stage2)]
        if self.config.detector_spatial:
            parts.append(F.adaptive_max_pool2d(stage2, SPATIAL_GRID).flatten(1))
        return logits, torch.cat([*parts, logits], dim=1)

    def detector_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and all the detector reads (N, `detector_inputs`): the frozen features,
        then its own branch's."""
        logits, frozen = self.frozen_features(x)
        if self.detector_convs is None:
            return logits, frozen
        return logits, torch.cat([frozen, self.detector_convs(x)], dim=1)

    def forward_scored(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (N, num_classes) and the detector's logit (N,), higher for digits, from the
        same pass; None without a detector."""
        if self.detector is None:
            return self.forward(x), None
        logits, features = self.detector_features(x)
        return logits, self.detector(features).squeeze(1)


def frozen_inputs(config: ModelConfig) -> int:
    """How many numbers the detector reads of the network: the last stage flattened (3x3), the
    second stage's channels averaged and maxed (and maxed over each cell of a 3x3 grid, with
    `detector_spatial`), and the logits."""
    _, w2, w3 = config.widths
    spatial = w2 * SPATIAL_GRID * SPATIAL_GRID if config.detector_spatial else 0
    return w3 * 3 * 3 + 2 * w2 + spatial + config.num_classes


def detector_inputs(config: ModelConfig) -> int:
    """How many numbers the detector head reads: the frozen features and its branch's (3x3)."""
    return frozen_inputs(config) + 2 * config.detector_channels * 3 * 3


# Named architectures, for the command line and for weights that name one. Loading refuses
# weights whose tensors do not fit the network they describe.
# The shipped model: the most accurate of the two (0.17 M parameters).
ARCHITECTURE = "digits-cnn-v1"
# Half as wide, twice as fast to train: what a default `train` builds, so that a full run fits in
# five minutes on a two-core CPU (75 k parameters).
FAST_ARCHITECTURE = "digits-cnn-small"

ARCHITECTURES: dict[str, ModelConfig] = {
    ARCHITECTURE: ModelConfig(widths=(32, 48, 96)),
    FAST_ARCHITECTURE: ModelConfig(widths=(16, 32, 64)),
}


def model_config(architecture: str) -> ModelConfig:
    """The config of a named architecture; ValueError naming the known ones."""
    try:
        return ARCHITECTURES[architecture]
    except KeyError:
        known = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"Unknown architecture {architecture!r}; known: {known}.") from None


def build_model(architecture: str | ModelConfig = ARCHITECTURE) -> DigitsCNN:
    """A freshly initialised network: of a named architecture, or of an explicit config."""
    config = architecture if isinstance(architecture, ModelConfig) else model_config(architecture)
    return DigitsCNN(config)


def input_shape(batch: int = 1) -> tuple[int, int, int, int]:
    return (batch, 1, IMAGE_SIZE, IMAGE_SIZE)


def normalize(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 images (N, 28, 28) to the float (N, 1, 28, 28) tensor the model takes.

    Training and inference both go through here, so they cannot drift apart. A tensor keeps its
    device.
    """
    tensor = torch.as_tensor(images)
    if tensor.dim() == 2:
        tensor = tensor.unsqueeze(0)
    if tensor.dim() == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.dim() != 4 or tuple(tensor.shape[1:]) != (1, IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(
            f"Expected images of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(tensor.shape)}."
        )
    # uint8 is 0..255; float input is taken to be on the 0..1 scale already (augmented batches).
    scaled = tensor.float() / 255.0 if tensor.dtype == torch.uint8 else tensor.float()
    return (scaled - MNIST_MEAN) / MNIST_STD

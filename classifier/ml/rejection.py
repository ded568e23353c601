"""Whether a drawing is a digit at all: a score of the model's outputs at or above a threshold.

The ten probabilities always add up to one, so the model's answer alone cannot say "not a
digit". A score of the same logits can: the maximum softmax probability (Hendrycks & Gimpel,
2017), optionally at a temperature, or the energy score, T * logsumexp(logits / T) (Liu et al.,
2020). Both are higher for digits. Trained with outlier exposure (Hendrycks et al., 2019), the
model spreads its probabilities over the ten digits for non-digits, which both scores reward.
The worker computes the score from the logits of its one batched model call.

A model with a detector head (`DigitsCNN.forward_scored`, trained by
`classifier.ml.training.detector` on the frozen network) has a third score, "detector": the
head's logit, from the same forward pass.

This is the decision the worker makes; weights carry its settings in their metadata as
{"score", "threshold", "temperature"}. How the threshold is chosen, on held-out digits only, and
how well it sorts digits from non-digits is `classifier.ml.training.calibration`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TypeGuard

import numpy as np
import torch
from torch import nn

from classifier.ml.model import DigitsCNN, normalize

# Scores of the ten logits, which any model has.
LOGIT_SCORES = ("msp", "energy")
# The detector head's logit: only for models that have one.
DETECTOR_SCORE = "detector"
SCORES = (*LOGIT_SCORES, DETECTOR_SCORE)
# Images per forward pass when scoring many.
SCORE_BATCH = 1000


@dataclass(frozen=True)
class Rejection:
    """How a model tells digits from non-digits: `score` of the logits at `temperature`; at or
    above `threshold` the drawing is a digit. A piece of a number is a digit at or above
    `number_threshold` (None: `threshold`): the person said they wrote a number, and one piece
    turned away leaves the whole number unread, so a piece needs less to be kept than a drawing
    alone (docs/decisions/0015-two-thresholds.md)."""

    score: str
    threshold: float
    temperature: float = 1.0
    number_threshold: float | None = None

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; use one of {', '.join(SCORES)}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")
        if self.number_threshold is not None and not math.isfinite(self.number_threshold):
            raise ValueError(f"number_threshold must be finite, got {self.number_threshold!r}")

    @property
    def piece_threshold(self) -> float:
        """The threshold a piece of a number is judged by."""
        return self.threshold if self.number_threshold is None else self.number_threshold

    def scores(self, logits: torch.Tensor, detector: torch.Tensor | None = None) -> torch.Tensor:
        """The score of each row of logits (N, 10); the "detector" score is the detector's
        logit (N,) of the same images."""
        return score_outputs(logits, detector, self.score, self.temperature)

    def is_digit(self, logits: torch.Tensor, detector: torch.Tensor | None = None) -> torch.Tensor:
        return self.scores(logits, detector) >= self.threshold

    def as_dict(self) -> dict[str, float | str]:
        out = asdict(self)
        if self.number_threshold is None:  # as weights from before it existed store it
            del out["number_threshold"]
        return out

    @classmethod
    def from_dict(cls, values: Mapping) -> Rejection:
        """The rejection stored in weights' metadata; ValueError when unusable."""
        if not isinstance(values, Mapping):
            raise ValueError(f"bad rejection settings {values!r}")
        try:
            return cls(
                score=str(values["score"]),
                threshold=float(values["threshold"]),
                temperature=float(values.get("temperature", 1.0)),
                number_threshold=(
                    None
                    if values.get("number_threshold") is None
                    else float(values["number_threshold"])
                ),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad rejection settings {values!r}") from exc


def score_logits(logits: torch.Tensor, score: str, temperature: float = 1.0) -> torch.Tensor:
    """Digit-likeness of each row of logits (N, 10): higher is more like a digit."""
    scaled = logits.float() / temperature
    if score == "msp":
        return torch.softmax(scaled, dim=1).amax(dim=1)
    if score == "energy":
        return temperature * torch.logsumexp(scaled, dim=1)
    raise ValueError(f"unknown score {score!r}; use one of {', '.join(SCORES)}")


def score_outputs(
    logits: torch.Tensor, detector: torch.Tensor | None, score: str, temperature: float = 1.0
) -> torch.Tensor:
    """Digit-likeness of each image from what the model said of it: its logits (N, 10) and,
    for the "detector" score, its detector logit (N,)."""
    if score == DETECTOR_SCORE:
        if detector is None:
            raise ValueError("the detector score needs a model with a detector head")
        return detector.float()
    return score_logits(logits, score, temperature)


def has_detector(model: nn.Module) -> TypeGuard[DigitsCNN]:
    """Whether the model has the not-a-digit head (then it is a DigitsCNN: `forward_scored`)."""
    return getattr(model, "detector", None) is not None


@torch.inference_mode()
def outputs_of(
    model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = SCORE_BATCH
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The model's logits (N, 10) and detector logits (N,; None without a detector) on the
    CPU for uint8 images (N, 28, 28), in eval mode, one forward pass per batch."""
    if not has_detector(model):
        return logits_of(model, images, batch_size), None
    model.eval()
    device = next(model.parameters()).device
    images = torch.as_tensor(images)
    logits, detector = [torch.zeros((0, 10))], [torch.zeros(0)]
    for start in range(0, len(images), batch_size):
        out, det = model.forward_scored(normalize(images[start : start + batch_size].to(device)))
        assert det is not None  # the model has its detector
        logits.append(out.float().cpu())
        detector.append(det.float().cpu())
    return torch.cat(logits), torch.cat(detector)


@torch.inference_mode()
def logits_of(
    model: nn.Module, images: np.ndarray | torch.Tensor, batch_size: int = SCORE_BATCH
) -> torch.Tensor:
    """The model's logits (N, 10) on the CPU for uint8 images (N, 28, 28), in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    images = torch.as_tensor(images)
    out = [
        model(normalize(images[start : start + batch_size].to(device))).float().cpu()
        for start in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.zeros((0, 10))

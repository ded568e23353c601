"""Whether a drawing is a digit at all: a score of the model's logits and a threshold on it.

The ten probabilities always add up to one, so the model's answer alone cannot say "not a
digit". A score of the same logits can: the maximum softmax probability (Hendrycks & Gimpel,
2017), optionally at a temperature, or the energy score, T * logsumexp(logits / T) (Liu et al.,
2020). Both are higher for digits. Trained with outlier exposure (Hendrycks et al., 2019), the
model spreads its probabilities over the ten digits for non-digits, which both scores reward.
The worker computes the score from the logits of its one batched model call.

A model with a detector head (`DigitsCNN.forward_scored`, trained by `classifier.ml.detector` on
the frozen network) has a third score, "detector": the head's logit, from the same forward pass.

The threshold is chosen on held-out digits only (MNIST validation and canvas-style drawings of
them): the highest score that rejects at most a set share of each, so real digits keep their
answers. Weights carry it in their metadata as {"score", "threshold", "temperature"}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from classifier.ml.data import Split
from classifier.ml.model import normalize
from classifier.ml.outliers import drawn_digits, families_for, make_outliers

# Scores of the ten logits, which any model has.
LOGIT_SCORES = ("msp", "energy")
# The detector head's logit: only for models that have one.
DETECTOR_SCORE = "detector"
SCORES = (*LOGIT_SCORES, DETECTOR_SCORE)
# With outlier exposure the highest probability sorts digits from non-digits best: the loss
# flattens exactly that (benchmarks/not_a_digit.py; energy is better without it).
DEFAULT_SCORE = "msp"
# The most of each held-out digit set the threshold may turn away: MNIST digits, and the same
# digits drawn with the canvas brush (further from MNIST). The validation digits share their
# writers with the training digits, so new writers' digits are turned away about twice as often
# (MNIST test: 0.3-0.5% at a 0.3% and 1% threshold): the shares are set at about half of what
# accuracy may lose, 0.3 points. A head that learns every letter sits closer to the drawn
# digits, which at 0.4% lost 0.35 points of them (docs/model.md, Not a digit): hence 0.3%.
MNIST_MAX_REJECTED = 0.002
DRAWN_MAX_REJECTED = 0.003
# The most of the validation writers' real pen digits (classifier.ml.realdata) it may turn away,
# when a model learned from real drawings: the bound for real digits of unseen writers.
REAL_MAX_REJECTED = 0.005
# How many validation digits are redrawn with the canvas brush to choose the threshold: all,
# so that the 0.3% below it are 15 drawings, not a handful.
DRAWN_CALIBRATION_COUNT = 5000
SCORE_BATCH = 1000


@dataclass(frozen=True)
class Rejection:
    """How a model tells digits from non-digits: `score` of the logits at `temperature`; at or
    above `threshold` the drawing is a digit."""

    score: str
    threshold: float
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.score not in SCORES:
            raise ValueError(f"unknown score {self.score!r}; use one of {', '.join(SCORES)}")
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold!r}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be positive, got {self.temperature!r}")

    def scores(self, logits: torch.Tensor, detector: torch.Tensor | None = None) -> torch.Tensor:
        """The score of each row of logits (N, 10); the "detector" score is the detector's
        logit (N,) of the same images."""
        return score_outputs(logits, detector, self.score, self.temperature)

    def is_digit(self, logits: torch.Tensor, detector: torch.Tensor | None = None) -> torch.Tensor:
        return self.scores(logits, detector) >= self.threshold

    def as_dict(self) -> dict[str, float | str]:
        return asdict(self)

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


def has_detector(model: nn.Module) -> bool:
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


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature that minimises the negative log-likelihood of held-out labels (Guo et
    al., 2017), searched on a log grid: one number, no optimiser to tune."""
    grid = torch.logspace(math.log10(0.25), math.log10(20.0), 120)
    losses = [float(nn.functional.cross_entropy(logits.float() / t, labels.long())) for t in grid]
    return float(grid[int(np.argmin(losses))])


def threshold_for(scores: torch.Tensor | np.ndarray, max_rejected: float) -> float:
    """The highest threshold that rejects at most `max_rejected` of `scores`."""
    values = np.sort(np.asarray(scores, dtype=np.float64))
    allowed = math.floor(max_rejected * len(values))  # how many may fall below
    return float(values[min(allowed, len(values) - 1)])


def calibrate(
    model: nn.Module, validation: Split, score: str = DEFAULT_SCORE, fit: bool = False
) -> Rejection:
    """The rejection of a freshly trained model, its threshold chosen on the validation split.
    With `fit`, the "msp" score is taken at the temperature that fits the validation labels;
    for the model trained with outliers it rejected fewer non-digits than at 1
    (benchmarks/not_a_digit.py), so 1 is the default."""
    temperature = 1.0
    if fit and score == "msp":
        temperature = fit_temperature(logits_of(model, validation.images), validation.labels)
    return choose_threshold(model, validation.images, score=score, temperature=temperature)


def choose_threshold(
    model: nn.Module,
    mnist_images: np.ndarray | torch.Tensor,
    drawn_images: np.ndarray | torch.Tensor | None = None,
    score: str = DEFAULT_SCORE,
    temperature: float = 1.0,
    mnist_max_rejected: float = MNIST_MAX_REJECTED,
    drawn_max_rejected: float = DRAWN_MAX_REJECTED,
    real_images: np.ndarray | torch.Tensor | None = None,
    real_max_rejected: float = REAL_MAX_REJECTED,
) -> Rejection:
    """The rejection for `model`, its threshold chosen on held-out digits (never the ones it
    is evaluated on): at most `mnist_max_rejected` of `mnist_images`, `drawn_max_rejected`
    of `drawn_images` and `real_max_rejected` of `real_images` (real digits of writers it never
    learned from, when given) fall below. Without `drawn_images`, up to DRAWN_CALIBRATION_COUNT
    of the MNIST images are redrawn with the canvas brush (labels do not matter here)."""
    mnist_images = np.asarray(mnist_images)
    if drawn_images is None:
        subset = mnist_images[:DRAWN_CALIBRATION_COUNT]
        drawn_images, _ = drawn_digits(subset, np.zeros(len(subset), np.int64), "calibration")
    limits = [
        threshold_for(score_outputs(*outputs_of(model, images), score, temperature), max_rejected)
        for images, max_rejected in (
            (mnist_images, mnist_max_rejected),
            (drawn_images, drawn_max_rejected),
            (np.zeros((0,)) if real_images is None else np.asarray(real_images), real_max_rejected),
        )
        if len(images)
    ]
    if not limits:
        raise ValueError("choose_threshold needs held-out digits.")
    return Rejection(score=score, threshold=min(limits), temperature=temperature)


def auroc(digit_scores: np.ndarray, outlier_scores: np.ndarray) -> float:
    """Area under the ROC curve of telling digits (positives) from outliers by score: the
    chance that a random digit scores above a random outlier (ties count half)."""
    digits = np.asarray(digit_scores, dtype=np.float64)
    outliers = np.asarray(outlier_scores, dtype=np.float64)
    values = np.concatenate([digits, outliers])
    order = values.argsort(kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    # Average the ranks of ties.
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    n_pos, n_neg = len(digits), len(outliers)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fpr_at_tpr(digit_scores: np.ndarray, outlier_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Share of outliers taken for digits at the threshold that keeps `tpr` of the digits."""
    threshold = threshold_for(digit_scores, 1.0 - tpr)
    return float((np.asarray(outlier_scores) >= threshold).mean())


# The held-out sets `evaluation_sets` draws by default: canvas digits, outliers per family.
EVAL_DRAWN_COUNT = 2000
EVAL_OUTLIERS_PER_FAMILY = 200


@dataclass(frozen=True)
class EvaluationSets:
    """Held-out digits and outliers, as the model sees them, for `rejection_report`."""

    mnist: np.ndarray  # uint8 (N, 28, 28): MNIST test digits
    mnist_labels: np.ndarray
    drawn: np.ndarray  # the same kind of digits drawn with the canvas brush ("eval" split)
    drawn_labels: np.ndarray
    outliers: np.ndarray  # generated non-digits of the "eval" split
    families: list[str]  # the family of each outlier


def evaluation_sets(
    test: Split,
    drawn_count: int = EVAL_DRAWN_COUNT,
    outliers_per_family: int = EVAL_OUTLIERS_PER_FAMILY,
    seed: int = 0,
) -> EvaluationSets:
    """The MNIST test digits, `drawn_count` of them (spread over the set) redrawn on the canvas,
    and `outliers_per_family` outliers of each family, all of the "eval" split."""
    chosen = np.linspace(0, len(test) - 1, min(drawn_count, len(test))).round().astype(int)
    drawn, labels = drawn_digits(
        test.images[chosen].numpy(), test.labels[chosen].numpy(), "eval", seed
    )
    families = families_for("eval")
    outliers, names = make_outliers(outliers_per_family * len(families), "eval", seed)
    return EvaluationSets(test.images.numpy(), test.labels.numpy(), drawn, labels, outliers, names)


def rejection_report(
    model: nn.Module, rejection: Rejection | None, sets: EvaluationSets
) -> dict[str, object]:
    """How `rejection` sorts held-out digits from held-out outliers: the share of each digit
    set and of each outlier family it rejects, AUROC and FPR at 95% TPR of its score (digits
    are the positives). Without a rejection (weights from before it) nothing is rejected and
    the maximum softmax probability is what AUROC measures."""
    used = rejection or Rejection(score="msp", threshold=0.0)

    threshold = used.threshold if rejection else -math.inf
    answered = {}
    for name, images, labels in (
        ("mnist", sets.mnist, sets.mnist_labels),
        ("drawn", sets.drawn, sets.drawn_labels),
    ):
        logits, detector = outputs_of(model, images)
        scores = used.scores(logits, detector).numpy()
        right = logits.argmax(dim=1).numpy() == labels
        # Right means read right and not rejected: what a person drawing that digit gets.
        answered[name] = (scores, float((right & (scores >= threshold)).mean()))
    (mnist, mnist_right), (drawn, drawn_right) = answered["mnist"], answered["drawn"]
    outliers = used.scores(*outputs_of(model, sets.outliers)).numpy()
    digits = np.concatenate([mnist, drawn])
    names = np.asarray(sets.families)
    return {
        "rejection": rejection.as_dict() if rejection else None,
        "mnist_rejected": float((mnist < threshold).mean()),
        "drawn_rejected": float((drawn < threshold).mean()),
        "mnist_answered_right": mnist_right,
        "drawn_answered_right": drawn_right,
        "outliers_rejected": float((outliers < threshold).mean()),
        "families_rejected": {
            family: float((outliers[names == family] < threshold).mean())
            for family in dict.fromkeys(sets.families)
        },
        "auroc": auroc(digits, outliers),
        "fpr_at_95_tpr": fpr_at_tpr(digits, outliers, 0.95),
        "counts": {"mnist": len(mnist), "drawn": len(drawn), "outliers": len(outliers)},
    }

"""Choosing a model's "not a digit" threshold, and measuring how well it sorts digits from others.

The threshold is chosen on held-out digits only (MNIST validation and canvas-style drawings of
them): the highest score that rejects at most a set share of each, so real digits keep their
answers. The scores and the decision itself are `classifier.ml.rejection`, which the worker
imports; this module draws digits and non-digits (`classifier.ml.training.outliers`) and runs
only where weights are made or measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from classifier.ml.rejection import Rejection, logits_of, outputs_of, score_outputs
from classifier.ml.training.data import Split
from classifier.ml.training.outliers import drawn_digits, families_for, make_outliers

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
# The most of the validation writers' real pen digits (classifier.ml.training.realdata) it may
# turn away, when a model learned from real drawings: the bound for real digits of unseen
# writers. With them, a drawing alone is judged by that bound and by as large a share of the
# MNIST validation digits (MNIST_MAX_REJECTED_WITH_REAL), not by the shares above: real digits
# of writers training never saw are the evidence the canvas redraws stood in for, and at the
# stricter shares 81% of the unseen symbols were turned away, at these 87%. The shares above
# still choose the threshold of a number's pieces (`Rejection.number_threshold`), where one piece
# turned away leaves the whole number unread (docs/decisions/0015-two-thresholds.md).
REAL_MAX_REJECTED = 0.005
MNIST_MAX_REJECTED_WITH_REAL = 0.005
# How many validation digits are redrawn with the canvas brush to choose the threshold: all,
# so that the 0.3% below it are 15 drawings, not a handful.
DRAWN_CALIBRATION_COUNT = 5000


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
    of the MNIST images are redrawn with the canvas brush (labels do not matter here).

    With `real_images`, that threshold judges a number's pieces (`number_threshold`), and a
    drawing alone is judged by two bounds only: `real_max_rejected` of `real_images` and
    MNIST_MAX_REJECTED_WITH_REAL of `mnist_images` (see REAL_MAX_REJECTED)."""
    mnist_images = np.asarray(mnist_images)
    if drawn_images is None:
        subset = mnist_images[:DRAWN_CALIBRATION_COUNT]
        drawn_images, _ = drawn_digits(subset, np.zeros(len(subset), np.int64), "calibration")
    real = np.zeros((0,)) if real_images is None else np.asarray(real_images)
    scores = {
        name: score_outputs(*outputs_of(model, images), score, temperature)
        for name, images in (("mnist", mnist_images), ("drawn", drawn_images), ("real", real))
        if len(images)
    }
    shares = {"mnist": mnist_max_rejected, "drawn": drawn_max_rejected, "real": real_max_rejected}
    limits = [threshold_for(values, shares[name]) for name, values in scores.items()]
    if not limits:
        raise ValueError("choose_threshold needs held-out digits.")
    if "real" not in scores:
        return Rejection(score=score, threshold=min(limits), temperature=temperature)
    alone = [threshold_for(scores["real"], real_max_rejected)]
    if "mnist" in scores:
        alone.append(threshold_for(scores["mnist"], MNIST_MAX_REJECTED_WITH_REAL))
    return Rejection(
        score=score, threshold=min(alone), temperature=temperature, number_threshold=min(limits)
    )


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

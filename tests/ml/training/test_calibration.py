"""Choosing the "not a digit" threshold and measuring it (classifier.ml.training.calibration)."""

from __future__ import annotations

import numpy as np
import torch

from classifier.ml.model import ARCHITECTURE, build_model, normalize
from classifier.ml.training.calibration import (
    DRAWN_MAX_REJECTED,
    MNIST_MAX_REJECTED,
    auroc,
    choose_threshold,
    fit_temperature,
    fpr_at_tpr,
    threshold_for,
)


def test_auroc_and_fpr_on_known_cases() -> None:
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert auroc(np.array([1.0, 1.0]), np.array([1.0])) == 0.5
    digits = np.arange(100, dtype=float)  # the threshold keeping 95 of them is 5
    outliers = np.array([0.0, 4.0, 5.0, 50.0])
    assert fpr_at_tpr(digits, outliers, 0.95) == 0.5


def test_threshold_rejects_at_most_the_share_asked() -> None:
    scores = np.arange(1000, dtype=float)
    threshold = threshold_for(scores, 0.01)
    assert (scores < threshold).mean() <= 0.01
    assert (scores < threshold).sum() == 10


def test_fit_temperature_recovers_an_overconfident_scale() -> None:
    generator = torch.Generator().manual_seed(0)
    true_logits = torch.randn(4000, 10, generator=generator) * 2
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    temperature = fit_temperature(true_logits * 3, labels)
    assert 2.4 < temperature < 3.7


def test_choose_threshold_holds_both_limits() -> None:
    torch.manual_seed(0)
    model = build_model(ARCHITECTURE).eval()
    rng = np.random.default_rng(0)
    mnist = rng.integers(0, 256, (400, 28, 28), dtype=np.uint8)
    drawn = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
    rejection = choose_threshold(model, mnist, drawn, score="energy")
    for images, limit in ((mnist, MNIST_MAX_REJECTED), (drawn, DRAWN_MAX_REJECTED)):
        with torch.inference_mode():
            scores = rejection.scores(model(normalize(images)))
        assert float((scores < rejection.threshold).float().mean()) <= limit

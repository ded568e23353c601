"""Scores, threshold and measures of "not a digit" (classifier.ml.rejection)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from classifier.ml.model import ARCHITECTURE, build_model, normalize
from classifier.ml.rejection import (
    DRAWN_MAX_REJECTED,
    MNIST_MAX_REJECTED,
    Rejection,
    auroc,
    choose_threshold,
    fit_temperature,
    fpr_at_tpr,
    score_logits,
    threshold_for,
)


def test_scores_are_higher_for_confident_logits() -> None:
    logits = torch.tensor([[10.0, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0.0] * 10])
    msp = score_logits(logits, "msp")
    energy = score_logits(logits, "energy")
    assert msp[0] > 0.99 and math.isclose(float(msp[1]), 0.1, rel_tol=1e-5)
    assert energy[0] > energy[1]
    assert math.isclose(float(energy[1]), math.log(10), rel_tol=1e-5)
    # A temperature flattens the softmax.
    assert score_logits(logits, "msp", 4.0)[0] < msp[0]
    with pytest.raises(ValueError, match="score"):
        score_logits(logits, "entropy")


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


def test_rejection_settings_round_trip_and_bad_ones_are_refused() -> None:
    rejection = Rejection(score="msp", threshold=0.7, temperature=1.5)
    assert Rejection.from_dict(rejection.as_dict()) == rejection
    assert Rejection.from_dict({"score": "energy", "threshold": 3}).temperature == 1.0
    for bad in (
        {"score": "msp"},
        {"score": "entropy", "threshold": 1},
        {"score": "msp", "threshold": float("nan")},
        {"score": "msp", "threshold": 0.5, "temperature": 0},
        "msp",
    ):
        with pytest.raises(ValueError):
            Rejection.from_dict(bad)
    logits = torch.tensor([[9.0] + [0.0] * 9, [0.1] * 10])
    assert rejection.is_digit(logits).tolist() == [True, False]

"""The runtime decision of "not a digit" (classifier.ml.rejection): scores and their settings."""

from __future__ import annotations

import math

import pytest
import torch

from classifier.ml.rejection import Rejection, score_logits


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


def test_rejection_settings_round_trip_and_bad_ones_are_refused() -> None:
    rejection = Rejection(score="msp", threshold=0.7, temperature=1.5)
    assert Rejection.from_dict(rejection.as_dict()) == rejection
    assert Rejection.from_dict({"score": "energy", "threshold": 3}).temperature == 1.0
    for bad in (
        {"score": "msp"},
        {"score": "entropy", "threshold": 1},
        {"score": "msp", "threshold": float("nan")},
        {"score": "msp", "threshold": 0.5, "temperature": 0},
        {"score": "msp", "threshold": 0.5, "number_threshold": float("inf")},
        "msp",
    ):
        with pytest.raises(ValueError):
            Rejection.from_dict(bad)
    logits = torch.tensor([[9.0] + [0.0] * 9, [0.1] * 10])
    assert rejection.is_digit(logits).tolist() == [True, False]


def test_a_number_s_pieces_have_a_threshold_of_their_own() -> None:
    """Weights stored before pieces had their own threshold judge them as drawings alone."""
    alike = Rejection(score="detector", threshold=-4.0)
    assert alike.piece_threshold == -4.0 and "number_threshold" not in alike.as_dict()
    two = Rejection(score="detector", threshold=-4.0, number_threshold=-7.5)
    assert two.piece_threshold == -7.5
    assert Rejection.from_dict(two.as_dict()) == two
    assert Rejection.from_dict({**two.as_dict(), "number_threshold": None}) == alike

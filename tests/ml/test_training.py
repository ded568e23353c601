"""Training: a short run on a subset learns, the same seed gives the same weights on the CPU."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from classifier.ml.data import MnistData
from classifier.ml.model import FAST_ARCHITECTURE, build_model
from classifier.ml.outliers import make_outliers
from classifier.ml.rejection import auroc, logits_of, outputs_of
from classifier.ml.training import (
    TrainConfig,
    detector_loss,
    evaluate_model,
    train,
    uniform_cross_entropy,
)
from classifier.ml.weights import save_weights
from tests.helpers import SHIPPED_WEIGHTS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(mnist) -> MnistData:
    """3,000 training and 1,000 validation images: seconds per epoch on two cores."""
    return dataclasses.replace(mnist, validation=mnist.validation.head(1000))


def test_short_run_beats_chance_by_far(small):
    epochs: list = []
    config = TrainConfig(epochs=2, limit=3000, device="cpu", seed=3)
    result = train(config, small, progress=False, on_epoch=epochs.append)
    assert [e.epoch for e in epochs] == [1, 2]
    assert result.history == epochs
    assert 1 <= result.best_epoch <= 2
    assert result.best.val_accuracy >= 0.85  # chance is 0.10
    assert epochs[-1].train_loss < epochs[0].train_loss
    assert all(e.images_per_s > 0 and e.seconds > 0 for e in epochs)
    # The returned model is the chosen checkpoint, on the CPU, ready to evaluate.
    assert not result.model.training
    assert next(result.model.parameters()).device.type == "cpu"
    again = evaluate_model(result.model, small.validation, "cpu")
    assert again.accuracy == pytest.approx(result.best.val_accuracy)


def test_same_seed_same_weights_other_seed_other_weights(small):
    def weights(seed: int) -> dict[str, torch.Tensor]:
        config = TrainConfig(epochs=1, limit=512, batch_size=64, device="cpu", seed=seed)
        return train(config, small, progress=False).model.state_dict()

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    a, b, c = weights(11), weights(11), weights(12)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # Process-wide torch settings are put back for whatever runs next in this process.
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_evaluate_model_counts(small):
    torch.manual_seed(0)
    result = evaluate_model(build_model(), small.validation, "cpu", batch_size=300)
    assert result.count == 1000
    assert sum(map(sum, result.confusion)) == 1000
    assert len(result.per_digit) == 10
    diagonal = sum(result.confusion[i][i] for i in range(10))
    assert result.accuracy == pytest.approx(diagonal / 1000)
    assert result.loss > 0


def test_uniform_cross_entropy_is_lowest_for_uniform_probabilities():
    uniform = uniform_cross_entropy(torch.zeros(4, 10))
    confident = uniform_cross_entropy(torch.tensor([[8.0] + [0.0] * 9] * 4))
    assert uniform.item() == pytest.approx(math.log(10), rel=1e-6)
    assert confident.item() > uniform.item() + 1


def test_outlier_exposure_teaches_a_model_to_doubt_non_digits(small, tmp_path):
    """From the same trained weights, a short run with outliers flattens the probabilities of
    held-out non-digits far more than the same run without, and still reads the digits."""
    base = train(TrainConfig(epochs=2, limit=3000, device="cpu", seed=3), small, progress=False)
    start = tmp_path / "base.safetensors"
    save_weights(base.model, start, {"architecture": FAST_ARCHITECTURE})
    outliers, _ = make_outliers(150, "eval", seed=5, size=192)

    def fine_tune(weight: float):
        config = TrainConfig(
            epochs=1,
            limit=2048,
            lr=1e-3,
            device="cpu",
            init_weights=str(start),
            outlier_weight=weight,
            outlier_pool=400,
            drawn_pool=200,
            seed=2,
        )
        return train(config, small, progress=False)

    exposed, plain = fine_tune(0.5), fine_tune(0.0)
    assert exposed.best.val_accuracy >= 0.85

    def mean_top(model) -> float:
        return float(torch.softmax(logits_of(model, outliers), dim=1).amax(dim=1).mean())

    assert mean_top(exposed.model) < mean_top(plain.model) - 0.1


def test_outlier_options_are_checked():
    for bad in (
        {"outlier_weight": -0.1},
        {"outliers_per_batch": -1},
        {"distill_weight": -1.0},
        {"detector_weight": -1.0},
        {"detector_weight": 1.0, "outlier_pool": 0},
        {"score": "entropy"},
    ):
        with pytest.raises(ValueError):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="hold_out names no alphabet: klingon"):
        TrainConfig(hold_out="hebrew,klingon")


def test_detector_loss_weighs_digits_and_non_digits_half_each():
    # One digit and nine non-digits, all undecided: ln 2, as if each side were one image.
    assert detector_loss(torch.zeros(10), 1).item() == pytest.approx(math.log(2), rel=1e-6)
    right = torch.tensor([6.0, 6.0, -6.0])
    assert detector_loss(right, 2).item() < 0.01
    assert detector_loss(-right, 2).item() > 5


def test_a_detector_trained_with_the_network_scores_non_digits_below_digits(small, tmp_path):
    """`detector_weight` adds a head trained with the network from the first step (an 11th
    class): it scores held-out non-digits below digits, and the ten logits still read digits.
    A start file's own head is not taken."""
    config = TrainConfig(
        epochs=2,
        limit=3000,
        device="cpu",
        seed=3,
        detector_weight=1.0,
        outlier_pool=600,
        drawn_pool=300,
    )
    result = train(config, small, progress=False)
    model = result.model
    assert model.detector is not None
    assert result.best.val_accuracy >= 0.9
    outliers, _ = make_outliers(150, "eval", seed=5, size=192)
    _, on_outliers = outputs_of(model, outliers)
    _, on_digits = outputs_of(model, small.test.images[:300])
    assert float(on_outliers.median()) < float(on_digits.median()) - 2
    assert auroc(on_digits.numpy(), on_outliers.numpy()) > 0.9

    start = tmp_path / "with-head.safetensors"
    save_weights(
        model, start, {"architecture": FAST_ARCHITECTURE, "model_args": model.config.as_dict()}
    )
    plain = TrainConfig(epochs=1, limit=256, device="cpu", init_weights=str(start))
    assert train(plain, small, progress=False).model.detector is None


def test_init_weights_of_another_architecture_are_refused(small):
    config = TrainConfig(epochs=1, limit=256, init_weights=str(SHIPPED_WEIGHTS), device="cpu")
    with pytest.raises(ValueError, match="architecture"):
        train(config, small, progress=False)


def test_freeze_norm_keeps_the_batch_norm_statistics_of_the_start(small, tmp_path):
    start = tmp_path / "start.safetensors"
    torch.manual_seed(0)
    save_weights(build_model(FAST_ARCHITECTURE), start, {"architecture": FAST_ARCHITECTURE})

    def statistics(model) -> list[torch.Tensor]:
        return [t.clone() for n, t in model.state_dict().items() if "running_" in n]

    initial = statistics(build_model(FAST_ARCHITECTURE))
    for freeze, same in ((True, True), (False, False)):
        config = TrainConfig(
            epochs=1, limit=1024, device="cpu", init_weights=str(start), freeze_norm=freeze
        )
        tuned = statistics(train(config, small, progress=False).model)
        assert all(torch.equal(a, b) for a, b in zip(initial, tuned, strict=True)) == same

"""Training: a short run on a subset learns, the same seed gives the same weights on the CPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from classifier.ml.model import build_model
from classifier.ml.training.config import TrainConfig
from classifier.ml.training.data import MnistData
from classifier.ml.training.train import evaluate_model, train

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
    def weights(seed: int, progress: bool = False) -> dict[str, torch.Tensor]:
        config = TrainConfig(epochs=1, limit=512, batch_size=64, device="cpu", seed=seed)
        return train(config, small, progress=progress).model.state_dict()

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    # The progress bar reads the running loss; it changes nothing the run learns.
    a, b, c = weights(11, progress=True), weights(11), weights(12)
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


def test_config_checks_name_the_field():
    for bad, field in (
        ({"epochs": 0}, "epochs"),
        ({"lr": 0.0}, "lr"),
        ({"architecture": "resnet"}, "architecture"),
    ):
        with pytest.raises(ValueError, match=field):
            TrainConfig(**bad)

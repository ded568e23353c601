"""The network: shapes, size, its constructor arguments, the architecture registry, and the
normalisation of its input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from classifier.ml.input import IMAGE_SIZE, MNIST_MEAN, MNIST_STD
from classifier.ml.model import (
    ARCHITECTURE,
    ARCHITECTURES,
    NUM_CLASSES,
    DigitsCNN,
    ModelConfig,
    build_model,
    normalize,
)


@pytest.mark.parametrize("architecture", sorted(ARCHITECTURES))
@pytest.mark.parametrize("batch", [1, 7])
def test_logits_shape(architecture, batch):
    model = build_model(architecture).eval()
    with torch.inference_mode():
        logits = model(torch.randn(batch, 1, 28, 28))
    assert logits.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(logits).all()


def test_default_is_a_small_convolutional_network():
    model = build_model()
    assert isinstance(model, DigitsCNN)
    assert any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    parameters = sum(p.numel() for p in model.parameters())
    # Small enough to ship in the repository and to train in minutes on a CPU.
    assert 20_000 < parameters < 1_000_000


def test_training_step_changes_every_parameter():
    torch.manual_seed(0)
    model = build_model(ARCHITECTURE).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.arange(8))
    loss.backward()
    optimizer.step()
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    trainable = [k for k, _ in model.named_parameters()]
    assert set(trainable) <= set(changed)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="Unknown architecture"):
        build_model("resnet-9000")


def test_a_config_round_trips_through_its_dict_and_builds_its_network():
    config = ModelConfig(widths=(4, 6, 8), dropout=0.2, num_classes=11)
    assert ModelConfig.from_dict(config.as_dict()) == config
    logits = build_model(config).eval()(torch.zeros(2, 1, 28, 28))
    assert logits.shape == (2, 11)
    assert build_model(ARCHITECTURE).state_dict().keys() == DigitsCNN().state_dict().keys()


@pytest.mark.parametrize(
    "values", [{"widths": [1, 2]}, {"widths": [4, 0, 4]}, {"num_classes": 1}, {"size": 3}]
)
def test_a_bad_config_is_refused(values):
    with pytest.raises(ValueError):
        ModelConfig.from_dict(values)


def test_normalize_uint8_numpy_and_tensor():
    images = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    images[1] = 255
    x = normalize(images)
    assert x.shape == (3, 1, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.full_like(x[0], -MNIST_MEAN / MNIST_STD))
    assert torch.allclose(x[1], torch.full_like(x[1], (1 - MNIST_MEAN) / MNIST_STD))
    assert torch.equal(normalize(torch.from_numpy(images)), x)


def test_normalize_leaves_float_input_alone_and_rejects_wrong_shapes():
    floats = torch.rand(2, 1, IMAGE_SIZE, IMAGE_SIZE)
    before = floats.clone()
    normalize(floats)
    assert torch.equal(floats, before)
    with pytest.raises(ValueError, match="shape"):
        normalize(np.zeros((2, 32, 32), dtype=np.uint8))

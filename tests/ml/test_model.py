"""The network: shapes, size, and the architecture registry."""

from __future__ import annotations

import pytest
import torch

from classifier.ml.model import ARCHITECTURE, ARCHITECTURES, NUM_CLASSES, DigitsCNN, build_model


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

"""Fine-tuning on MNIST mixed with extra images: the mix, determinism, progress, held-out."""

from __future__ import annotations

import itertools

import pytest
import torch

from classifier.ml.data import MnistData, Split
from classifier.ml.finetune import (
    HELD_OUT_PERCENT,
    FinetuneConfig,
    _schedule,
    finetune,
    is_held_out,
)
from classifier.ml.model import FAST_ARCHITECTURE, build_model, model_config
from classifier.ml.training import evaluate_model

CONFIG = model_config(FAST_ARCHITECTURE)


def _start() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(CONFIG).state_dict()


def _extra(n: int = 64) -> Split:
    """Images of a kind MNIST never shows (a filled square), all labelled 3."""
    images = torch.zeros((n, 28, 28), dtype=torch.uint8)
    images[:, 6:22, 6:22] = 255
    return Split(images, torch.full((n,), 3, dtype=torch.long))


def _run(mnist: MnistData, extra: Split, **kwargs) -> tuple:
    config = FinetuneConfig(device="cpu", limit=512, lr=3e-3, **kwargs)
    seen = []
    result = finetune(_start(), CONFIG, mnist.train, extra, config, seen.append, progress_every=2)
    return result, seen


def test_same_seed_same_weights_and_progress(mnist):
    first, progress = _run(mnist, _extra(), seed=5)
    second, _ = _run(mnist, _extra(), seed=5)
    third, _ = _run(mnist, _extra(), seed=6)
    a, b, c = (r.model.state_dict() for r in (first, second, third))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # 512 MNIST images at 96 a batch (a quarter of 128 is corrections): 6 steps.
    assert first.steps == 6
    assert [p.step for p in progress] == [2, 4, 6]
    assert progress[-1].steps == 6 and progress[-1].seconds > 0


def test_the_extra_images_are_learned(mnist):
    """The quarter share makes 64 images matter beside 512: the model learns the square is 3."""
    without, _ = _run(
        mnist,
        Split(torch.zeros((0, 28, 28), dtype=torch.uint8), torch.zeros((0,), dtype=torch.long)),
        epochs=2,
    )
    with_extra, _ = _run(mnist, _extra(), epochs=2)
    square = _extra(16)
    learned = evaluate_model(with_extra.model, square, "cpu")
    assert learned.accuracy == 1.0
    assert learned.loss < evaluate_model(without.model, square, "cpu").loss / 3
    # Without extra images every batch is MNIST: 512 / 128 = 4 steps an epoch.
    assert without.steps == 8 and with_extra.steps == 12


def test_starts_from_the_given_weights(mnist):
    """A tiny learning rate leaves the network where it started."""
    start = _start()
    result = finetune(
        start, CONFIG, mnist.train, _extra(), FinetuneConfig(device="cpu", limit=128, lr=1e-12)
    )
    state = result.model.state_dict()
    for name, tensor in start.items():
        if tensor.is_floating_point() and "running" not in name:
            assert torch.allclose(state[name], tensor, atol=1e-6), name


def test_schedule_warms_up_then_decays():
    factors = [_schedule(step, 100, 0.1) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))
    assert factors[-1] < 0.01


def test_held_out_is_stable_and_about_a_fifth():
    hashes = [f"{i:064x}" for i in range(2000)]
    first = [is_held_out(h) for h in hashes]
    assert first == [is_held_out(h) for h in hashes]
    share = sum(first) / len(first)
    assert abs(share - HELD_OUT_PERCENT / 100) < 0.03


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("correction_share", 1.0),
        ("correction_share", 0.0),
        ("lr", 0.0),
        ("limit", 0),
        ("device", "tpu"),
    ],
)
def test_config_refuses_nonsense(field, value):
    with pytest.raises(ValueError, match=field):
        FinetuneConfig(**{field: value})

"""Fine-tuning on MNIST mixed with extra images: the mix, determinism, progress, held-out."""

from __future__ import annotations

import itertools

import pytest
import torch

from classifier.ml.model import FAST_ARCHITECTURE, build_model, model_config, normalize
from classifier.ml.training.data import MnistData, Split
from classifier.ml.training.finetune import (
    HELD_OUT_PERCENT,
    FinetuneConfig,
    _schedule,
    blend_weights,
    finetune,
    is_held_out,
)
from classifier.ml.training.train import evaluate_model

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
    # The start is untrained: its batch-norm statistics and its answers are worth nothing to keep.
    kwargs = {"freeze_norm": False, "distill": 0.0, **kwargs}
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
    # 512 MNIST images at 64 a batch (half of 128 is corrections): 8 steps.
    assert first.steps == 8
    assert [p.step for p in progress] == [2, 4, 6, 8]
    assert progress[-1].steps == 8 and progress[-1].seconds > 0


def test_the_extra_images_are_learned(mnist):
    """The half share makes 64 images matter beside 512: the model learns the square is 3."""
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
    assert without.steps == 8 and with_extra.steps == 16


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


def test_frozen_norm_keeps_the_served_statistics(mnist):
    """Batch norm layers learn their scale and shift but normalise with the served statistics."""
    start = _start()
    frozen, _ = _run(mnist, _extra(), freeze_norm=True)
    moving, _ = _run(mnist, _extra(), freeze_norm=False)
    for name, tensor in start.items():
        if "running" in name:
            assert torch.equal(frozen.model.state_dict()[name], tensor), name
    assert any(
        not torch.equal(moving.model.state_dict()[name], start[name])
        for name in start
        if "running_mean" in name
    )
    assert any(
        not torch.equal(frozen.model.state_dict()[name], start[name])
        for name in start
        if name.endswith(".weight")
    )


def test_blend_is_the_share_of_the_fine_tuned_weights():
    served = {"w": torch.zeros(3), "n": torch.tensor(5)}
    tuned = {"w": torch.tensor([4.0, 8.0, -4.0]), "n": torch.tensor(9)}
    blended = blend_weights(served, tuned, 0.25)
    assert torch.allclose(blended["w"], torch.tensor([1.0, 2.0, -1.0]))
    assert blended["n"] == 9  # counters are not averaged
    assert torch.equal(blend_weights(served, tuned, 1.0)["w"], tuned["w"])


def test_blended_candidate_lies_between(mnist):
    """A half blend is the midpoint of the served and the fully fine-tuned weights."""
    start = _start()
    full, _ = _run(mnist, _extra(), seed=3)
    half, _ = _run(mnist, _extra(), seed=3, blend=0.5)
    a, b = full.model.state_dict(), half.model.state_dict()
    name = next(n for n, t in start.items() if t.is_floating_point() and "running" not in n)
    assert torch.allclose(b[name], (start[name] + a[name]) / 2, atol=1e-6)


def test_distillation_keeps_the_served_answers(mnist):
    """Matching the served model's answers on MNIST keeps the candidate closer to them than
    labels alone do, at the same learning rate."""
    torch.manual_seed(0)
    served = build_model(CONFIG)
    served.load_state_dict(_start())
    images = mnist.test.images[:256]
    labels_only, _ = _run(mnist, _extra(), distill=0.0)
    distilled, _ = _run(mnist, _extra(), distill=1.0)

    def gap(model: torch.nn.Module) -> float:
        with torch.no_grad():
            x = normalize(images).contiguous()
            return float(
                torch.nn.functional.kl_div(
                    model.eval()(x).log_softmax(1),
                    served.eval()(x).log_softmax(1),
                    reduction="batchmean",
                    log_target=True,
                )
            )

    assert gap(distilled.model) < gap(labels_only.model)


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
        ("blend", 0.0),
        ("blend", 1.5),
        ("distill", -0.1),
        ("distill", 2.0),
    ],
)
def test_config_refuses_nonsense(field, value):
    with pytest.raises(ValueError, match=field):
        FinetuneConfig(**{field: value})

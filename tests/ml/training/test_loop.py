"""The shared training loop: every index once an epoch, weighted mean losses, hooks, norms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from classifier.ml.training.loop import Tally, fit, torch_settings


def _fit(model: nn.Module, epochs: int = 2, **kwargs) -> tuple[list[torch.Tensor], Tally]:
    seen: list[torch.Tensor] = []
    x = torch.linspace(-1, 1, 10).unsqueeze(1)

    def loss(index: torch.Tensor) -> tuple[torch.Tensor, int]:
        seen.append(index)
        return model(x[index]).pow(2).mean(), len(index)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator().manual_seed(0)
    last = fit(
        model, loss, optimizer, schedule, size=10, batch_size=4, epochs=epochs,
        generator=generator, **kwargs,
    )  # fmt: skip
    return seen, last


def test_each_epoch_visits_every_index_once_in_batches():
    seen, last = _fit(nn.Linear(1, 1))
    assert [len(i) for i in seen] == [4, 4, 2, 4, 4, 2]
    for epoch in (seen[:3], seen[3:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(10))
    assert not torch.equal(torch.cat(seen[:3]), torch.cat(seen[3:]))  # shuffled afresh
    assert (last.epoch, last.step, last.steps, last.seen) == (2, 3, 3, 10)


def test_hooks_see_the_weighted_mean_loss():
    steps: list[tuple[int, int, float]] = []
    epochs: list[float] = []
    model = nn.Linear(1, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.fill_(1.0)
    optimizer_free = {"lr": 0.0}
    seen: list[torch.Tensor] = []
    x = torch.ones(10, 1)

    def loss(index: torch.Tensor) -> tuple[torch.Tensor, int]:
        seen.append(index)
        return model(x[index]).sum() / len(index), len(index)  # 1.0 every step

    optimizer = torch.optim.SGD(model.parameters(), **optimizer_free)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    last = fit(
        model, loss, optimizer, schedule, size=10, batch_size=4, epochs=1,
        generator=torch.Generator().manual_seed(1),
        sum_dtype=torch.float64,
        on_step=lambda t: steps.append((t.step, t.seen, t.loss)),
        on_epoch=lambda t: epochs.append(t.loss),
    )  # fmt: skip
    assert steps == [(1, 4, 1.0), (2, 8, 1.0), (3, 10, 1.0)]
    assert epochs == [1.0] and last.loss_sum.dtype == torch.float64


def test_freeze_norm_keeps_batch_norm_statistics_and_train_mode_elsewhere():
    model = nn.Sequential(nn.Linear(1, 3), nn.BatchNorm1d(3))
    before = model[1].running_mean.clone()
    _fit(model, freeze_norm=True)
    assert torch.equal(model[1].running_mean, before)
    assert model[0].training and not model[1].training
    _fit(model, freeze_norm=False)
    assert not torch.equal(model[1].running_mean, before)
    assert model[1].training


def test_no_epochs_is_refused():
    with pytest.raises(ValueError, match="epochs"):
        _fit(nn.Linear(1, 1), epochs=0)


def test_torch_settings_are_put_back():
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch_settings(threads=1, deterministic=not deterministic):
        assert torch.get_num_threads() == 1
        assert torch.are_deterministic_algorithms_enabled() != deterministic
    assert torch.get_num_threads() == threads
    assert torch.are_deterministic_algorithms_enabled() == deterministic

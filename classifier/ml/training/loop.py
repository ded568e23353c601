"""The one training loop that every recipe making weights steps through.

A recipe (`train`: the network; `finetune`: a served network on its corrections; `detector`: the
head on the frozen network) brings what is its own:

- the module that learns (put in train mode each epoch; `freeze_norm` keeps its batch norms'
  statistics), its optimiser and its schedule (stepped once per batch);
- `loss(index)`: a batch's indices into the recipe's data -> (the step's loss, what it weighs in
  the epoch's mean). It builds the batch as the recipe does (mixing, augmenting), runs the
  forward pass (under `autocast` where it wants bf16 on CUDA) and adds up the recipe's losses;
- hooks: `on_step` after every step (progress), `on_epoch` after every epoch (validation,
  checkpoints), both given the epoch's `Tally`.

The loop owns the rest, the same for all: each epoch shuffles the indices with the run's
generator (on its device), cuts them into batches, steps, and sums the weighted losses on the
device, so nothing waits for it unless a hook reads the mean.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class Tally:
    """Where an epoch is: what `on_step` gets after each step and `on_epoch` at the end."""

    epoch: int  # from 1
    step: int  # steps done in this epoch
    steps: int  # steps in an epoch
    loss_sum: torch.Tensor  # each step's loss times its weight, summed over the epoch so far
    seen: int  # the weights summed
    started: float  # time.perf_counter() when the epoch began

    @property
    def loss(self) -> float:
        """The epoch's mean loss so far (reading it waits for the device)."""
        return float(self.loss_sum) / max(self.seen, 1)


def steps_per_epoch(size: int, batch_size: int) -> int:
    return math.ceil(size / batch_size)


def fit(
    module: nn.Module,
    loss: Callable[[torch.Tensor], tuple[torch.Tensor, int]],
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
    *,
    size: int,
    batch_size: int,
    epochs: int,
    generator: torch.Generator,
    freeze_norm: bool = False,
    sum_dtype: torch.dtype = torch.float32,
    on_step: Callable[[Tally], None] | None = None,
    on_epoch: Callable[[Tally], None] | None = None,
) -> Tally:
    """Train `module` for `epochs` passes over `size` examples; returns the last epoch's tally.

    `sum_dtype`: the dtype the epoch's losses are summed in (float64 costs nothing where each
    step waits for the CPU anyway).
    """
    if epochs < 1:
        raise ValueError("epochs must be at least 1.")
    device = generator.device
    steps = steps_per_epoch(size, batch_size)
    for epoch in range(1, epochs + 1):
        module.train()
        if freeze_norm:
            freeze_norm_statistics(module)
        tally = Tally(epoch, 0, steps, torch.zeros((), dtype=sum_dtype, device=device), 0, 0.0)
        tally.started = time.perf_counter()
        order = torch.randperm(size, generator=generator, device=device)
        for step in range(steps):
            value, weight = loss(order[step * batch_size : (step + 1) * batch_size])
            optimizer.zero_grad(set_to_none=True)
            value.backward()
            optimizer.step()
            schedule.step()
            tally.step = step + 1
            tally.loss_sum += value.detach().to(sum_dtype) * weight
            tally.seen += weight
            if on_step:
                on_step(tally)
        if on_epoch:
            on_epoch(tally)
    return tally


def freeze_norm_statistics(model: nn.Module) -> None:
    """Batch norms normalise with the statistics they start with and stop updating them: a
    fine-tuning run's batches (corrections) are not the digits they were measured on, and would
    drag them towards a mix the test set does not have."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (tensor cores); plain float32 on the CPU, where AVX2 has no bf16."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def torch_settings(threads: int | None, deterministic: bool | None = None) -> Iterator[None]:
    """torch's thread count (`threads`; None: torch's choice) and, unless None, whether it must
    use deterministic algorithms, for one run: both are process-wide, so they are put back."""
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if threads:
            torch.set_num_threads(threads)
        if deterministic is not None:
            torch.use_deterministic_algorithms(deterministic)
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)

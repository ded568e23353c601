"""Fine-tune a trained network on MNIST mixed with the users' corrections, and judge the result.

A few thousand corrections beside 55,000 MNIST images would be a rounding error if they were
simply appended, so every batch draws a fixed share of its images from the corrections (sampled
with replacement) and the rest from MNIST: the corrections teach the styles MNIST lacks, MNIST
keeps the network from forgetting what it knew. Both halves are augmented as in training. The
run starts from the served weights, with AdamW at a thirtieth of the training rate on a short
warm-up + cosine schedule, so the network moves, but not far.

Three guards keep the MNIST test accuracy the promotion rule protects (docs/feedback.md has the
measurements): on the MNIST half the candidate also learns the served model's own answers
(distillation), not only the labels; batch norms keep the served model's statistics; and the
candidate may be blended back towards the served weights.

`gate` is the promotion rule, a pure function so its every case can be tested without a model.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from classifier.ml.devices import DEVICE_CHOICES, resolve_device
from classifier.ml.model import ModelConfig, build_model, normalize
from classifier.ml.training.augment import AugmentConfig, augment_batch
from classifier.ml.training.config import check_run_options, option
from classifier.ml.training.data import Split
from classifier.ml.training.loop import (
    Tally,
    autocast,
    fit,
    seed_everything,
    steps_per_epoch,
    torch_settings,
)

# The share of the corrections held out to judge a candidate, chosen by a stable hash of each
# image, so a correction stays on its side from one run to the next.
HELD_OUT_PERCENT = 20
# A candidate may lose at most this much MNIST test accuracy (0.1 points) to be promoted.
MNIST_TOLERANCE = 0.001
# The temperature that softens both models' answers when the candidate learns the served one's.
DISTILL_TEMPERATURE = 2.0
# Accuracies are ratios of counts; this absorbs float rounding in the comparisons.
_EPSILON = 1e-9


@dataclass(frozen=True)
class FinetuneConfig:
    """Everything a fine-tuning run depends on, with its defaults in one place.

    `manage.py retrain` makes an option of the ones a user changes. An epoch is one pass over
    the MNIST training images (with `limit`, over the first `limit` of them); the corrections
    ride along at `correction_share` of every batch.
    """

    epochs: int = option(1, "passes over the MNIST training images")
    batch_size: int = option(128, "images per step, MNIST and corrections together")
    correction_share: float = option(0.5, "share of every batch drawn from the corrections")
    lr: float = option(1e-4, "peak learning rate (a thirtieth of training's 3e-3)")
    warm_up: float = option(0.1, "share of the steps warming up to the peak rate")
    weight_decay: float = option(5e-4, "AdamW weight decay")
    freeze_norm: bool = option(
        True, "keep the served model's batch-norm statistics (the layers still learn)"
    )
    distill: float = option(
        1.0, "weight of matching the served model's answers on the MNIST images (0: labels only)"
    )
    blend: float = option(
        1.0, "share of the fine-tuned weights in the candidate, the rest the served model's"
    )
    seed: int = option(1, "random seed; the same seed gives the same weights on the CPU")
    device: str = option("auto", "where to train; auto takes CUDA when present")
    limit: int | None = option(None, "train on the first N MNIST training images only")
    threads: int | None = option(None, "CPU threads for torch; none: torch's choice")

    def __post_init__(self) -> None:
        check_run_options(self)
        if not 0.0 < self.correction_share < 1.0:
            raise ValueError("correction_share must be between 0 and 1.")
        if not 0.0 <= self.distill <= 1.0:
            raise ValueError("distill must be in [0, 1].")
        if not 0.0 < self.blend <= 1.0:
            raise ValueError("blend must be in (0, 1].")
        if not 0.0 <= self.warm_up < 1.0:
            raise ValueError("warm_up must be in [0, 1).")
        if self.device not in DEVICE_CHOICES:
            raise ValueError(f"device must be one of {', '.join(DEVICE_CHOICES)}.")

    def corrections_per_batch(self, have_corrections: bool) -> int:
        if not have_corrections:
            return 0
        return min(self.batch_size - 1, max(1, round(self.batch_size * self.correction_share)))

    def hyperparameters(self) -> dict[str, Any]:
        """What the candidate's metadata records of this run, enough to repeat and explain it."""
        return {
            **asdict(self),
            "optimizer": "AdamW",
            "schedule": {"name": "warm-up + cosine", "warm_up": self.warm_up},
            "distill_temperature": DISTILL_TEMPERATURE,
            "augmentation": asdict(AugmentConfig()),
        }


@dataclass
class Progress:
    step: int
    steps: int
    epoch: int
    loss: float  # mean loss of the steps so far in this epoch
    seconds: float  # since the run started


@dataclass
class FinetuneResult:
    model: nn.Module  # on the CPU, in eval mode
    config: FinetuneConfig
    device: str
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # mean loss of each epoch


def is_held_out(image_hash: str) -> bool:
    """Whether a correction (by the hash of its 28x28 image) is held out to judge candidates.

    Stable across runs and machines: the same image is always on the same side, so a candidate
    is never judged on a drawing that trained an earlier one.
    """
    digest = hashlib.sha256(f"digits-held-out:{image_hash}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELD_OUT_PERCENT


def finetune(
    state_dict: dict[str, torch.Tensor],
    model_config: ModelConfig,
    mnist: Split,
    extra: Split,
    config: FinetuneConfig,
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: int = 50,
) -> FinetuneResult:
    """Train a copy of the network `state_dict` holds on `mnist` mixed with `extra`.

    `extra` (uint8 N x 28 x 28 images and labels, possibly empty) fills `correction_share` of
    every batch. `on_progress` is called every `progress_every` steps and after the last.
    Deterministic on the CPU for a seed.
    """
    device = resolve_device(config.device)
    with torch_settings(threads=config.threads, deterministic=device.type == "cpu"):
        return _run(
            state_dict, model_config, mnist, extra, config, device, on_progress, progress_every
        )


def _schedule(step: int, steps: int, warm_up: float) -> float:
    """The learning rate's factor at `step`: linear warm-up, then cosine down to zero."""
    warm = max(1, round(steps * warm_up)) if warm_up > 0 else 0
    if step < warm:
        return (step + 1) / warm
    rest = max(1, steps - warm)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / rest))


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """KL(teacher || student) of the two models' answers softened at `temperature`, scaled by
    its square so its gradients match cross-entropy's (Hinton et al., 2015). Fine-tuning keeps
    what the starting model knew of digits, not just their labels (Li and Hoiem, "Learning
    without forgetting", 2016)."""
    t = temperature
    return F.kl_div(
        torch.log_softmax(student.float() / t, dim=1),
        torch.log_softmax(teacher.float() / t, dim=1),
        log_target=True,
        reduction="batchmean",
    ) * (t * t)


def _run(
    state_dict: dict[str, torch.Tensor],
    model_config: ModelConfig,
    mnist: Split,
    extra: Split,
    config: FinetuneConfig,
    device: torch.device,
    on_progress: Callable[[Progress], None] | None,
    progress_every: int,
) -> FinetuneResult:
    seed_everything(config.seed)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model = build_model(model_config)
    model.load_state_dict(state_dict)
    model.to(device).to(memory_format=torch.channels_last)

    mnist = mnist.head(config.limit).to(device)
    extra = extra.to(device)
    per_batch = config.corrections_per_batch(len(extra) > 0)
    mnist_per_batch = config.batch_size - per_batch
    steps = steps_per_epoch(len(mnist), mnist_per_batch) * config.epochs
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: _schedule(step, steps, config.warm_up)
    )
    augment = AugmentConfig()
    teacher = None
    if config.distill > 0:
        teacher = build_model(model_config)
        teacher.load_state_dict(state_dict)
        teacher.to(device).to(memory_format=torch.channels_last).eval().requires_grad_(False)

    def loss(index: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Cross-entropy of MNIST digits and corrections, augmented, plus matching the served
        model's answers on the MNIST part; each step weighs the same in the epoch's mean."""
        images, labels = mnist.images[index], mnist.labels[index]
        if per_batch:
            pick = torch.randint(len(extra), (per_batch,), generator=generator, device=device)
            images = torch.cat([images, extra.images[pick]])
            labels = torch.cat([labels, extra.labels[pick]])
        x = augment_batch(images, generator, augment, labels)
        x = normalize(x).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            logits = model(x).float()
            value = F.cross_entropy(logits, labels)
            if teacher is not None:
                value = value + config.distill * distillation_loss(
                    logits[:mnist_per_batch], teacher(x[:mnist_per_batch]), DISTILL_TEMPERATURE
                )
        return value, 1

    result = FinetuneResult(model=model, config=config, device=str(device), steps=steps)
    started = time.perf_counter()

    def report(tally: Tally) -> None:
        step = (tally.epoch - 1) * tally.steps + tally.step
        if on_progress and (step % progress_every == 0 or step == steps):
            on_progress(
                Progress(
                    step=step,
                    steps=steps,
                    epoch=tally.epoch,
                    loss=tally.loss,
                    seconds=time.perf_counter() - started,
                )
            )

    fit(
        model,
        loss,
        optimizer,
        schedule,
        size=len(mnist),
        batch_size=mnist_per_batch,
        epochs=config.epochs,
        generator=generator,
        freeze_norm=config.freeze_norm,
        on_step=report if on_progress else None,
        on_epoch=lambda tally: result.losses.append(tally.loss),
    )
    result.seconds = time.perf_counter() - started
    result.model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    if config.blend < 1.0:
        result.model.load_state_dict(
            blend_weights(state_dict, result.model.state_dict(), config.blend)
        )
    return result


def blend_weights(
    served: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], share: float
) -> dict[str, torch.Tensor]:
    """`share` of each fine-tuned tensor plus the rest of the served one (Wortsman et al.,
    "Robust fine-tuning of zero-shot models", 2022: WiSE-FT). Counters are taken as tuned."""
    out = {}
    for name, value in tuned.items():
        base = served[name].to(value.device)
        out[name] = (
            value
            if not value.is_floating_point()
            else torch.lerp(base.to(value.dtype), value, share)
        )
    return out


@dataclass(frozen=True)
class Scores:
    """A model's accuracy on the MNIST test set and on the held-out corrections (None: none)."""

    mnist_test: float
    held_out: float | None


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def gate(
    candidate: Scores | None, served: Scores, train_count: int, held_out_count: int
) -> Decision:
    """Promote only a candidate no worse on MNIST test than `MNIST_TOLERANCE` below the served
    model, and strictly better on the held-out corrections; say why in every case. `candidate`
    is None when there was nothing to judge it by, so none was trained."""
    if train_count + held_out_count == 0:
        return Decision(
            False,
            "no accepted corrections: nothing to learn from (accept some with "
            "`manage.py feedback accept`)",
        )
    if held_out_count == 0 or candidate is None or candidate.held_out is None:
        return Decision(
            False,
            "no held-out corrections to judge a candidate by: accept more corrections "
            "(a fixed fifth of them is held out)",
        )
    floor = served.mnist_test - MNIST_TOLERANCE
    if candidate.mnist_test + _EPSILON < floor:
        return Decision(
            False,
            f"MNIST test accuracy would fall from {100 * served.mnist_test:.2f}% to "
            f"{100 * candidate.mnist_test:.2f}%, more than {100 * MNIST_TOLERANCE:.1f} points",
        )
    assert served.held_out is not None
    if candidate.held_out <= served.held_out + _EPSILON:
        return Decision(
            False,
            f"not better on the {held_out_count} held-out corrections "
            f"({100 * candidate.held_out:.2f}% against the served model's "
            f"{100 * served.held_out:.2f}%)",
        )
    return Decision(
        True,
        f"better on the {held_out_count} held-out corrections "
        f"({100 * served.held_out:.2f}% to {100 * candidate.held_out:.2f}%), MNIST test "
        f"{100 * served.mnist_test:.2f}% to {100 * candidate.mnist_test:.2f}%",
    )

"""Train the digit CNN: the whole dataset on the device, augmented batch by batch, no workers.

Two cores must train MNIST to 99.5% in minutes, so nothing here waits on Python per image: the
uint8 images sit in one tensor on the device, each batch is indexed, augmented and normalised with
tensor ops, and a one-cycle schedule gets the network there in a few epochs. The validation
hold-out picks the checkpoint; the test set is scored once, at the end. The steps themselves are
the shared loop's (`classifier.ml.training.loop`); this recipe brings its batches, its loss and
its choice of epoch.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from classifier.ml.devices import resolve_device
from classifier.ml.model import NUM_CLASSES, DigitsCNN, build_model, model_config, normalize
from classifier.ml.training.augment import AugmentConfig, augment_batch
from classifier.ml.training.config import (
    ONE_CYCLE_DIV,
    ONE_CYCLE_FINAL_DIV,
    ONE_CYCLE_WARM_UP,
    TrainConfig,
)
from classifier.ml.training.data import MnistData, Split
from classifier.ml.training.loop import (
    Tally,
    autocast,
    fit,
    seed_everything,
    steps_per_epoch,
    torch_settings,
)
from classifier.ml.training.realdata import PenSplit, RealStream

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 1000


@dataclass
class Evaluation:
    loss: float
    accuracy: float
    per_digit: list[float]  # accuracy on each true digit 0..9
    confusion: list[list[int]]  # confusion[true][predicted]
    count: int

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float
    images_per_s: float
    real_val_accuracy: float | None = None  # the validation writers' pen digits


@dataclass
class TrainResult:
    model: DigitsCNN  # the chosen checkpoint, on the CPU, in eval mode
    config: TrainConfig
    device: str
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0  # training time, without the final test

    @property
    def best(self) -> EpochStats:
        return self.history[self.best_epoch - 1]


@torch.inference_mode()
def evaluate_model(
    model: nn.Module, split: Split, device: torch.device | str, batch_size: int = EVAL_BATCH_SIZE
) -> Evaluation:
    """Loss, accuracy, per-digit accuracy and confusion matrix of `model` on `split`.

    Moves `model` to `device` and leaves it in eval mode there.
    """
    device = torch.device(device)
    model.to(device).eval()
    total_loss = 0.0
    confusion = torch.zeros(NUM_CLASSES * NUM_CLASSES, dtype=torch.long, device=device)
    for start in range(0, len(split), batch_size):
        images = split.images[start : start + batch_size].to(device, non_blocking=True)
        labels = split.labels[start : start + batch_size].to(device, non_blocking=True)
        x = normalize(images).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            logits = model(x)
        total_loss += float(F.cross_entropy(logits.float(), labels, reduction="sum"))
        predicted = logits.argmax(dim=1)
        confusion += torch.bincount(labels * NUM_CLASSES + predicted, minlength=NUM_CLASSES**2)
    matrix = confusion.view(NUM_CLASSES, NUM_CLASSES).cpu()
    count = int(matrix.sum())
    per_class = matrix.sum(dim=1).clamp(min=1)
    return Evaluation(
        loss=total_loss / max(count, 1),
        accuracy=float(matrix.diag().sum()) / max(count, 1),
        per_digit=[float(v) for v in (matrix.diag().float() / per_class)],
        confusion=matrix.tolist(),
        count=count,
    )


def train(
    config: TrainConfig,
    data: MnistData,
    progress: bool = True,
    on_epoch: Callable[[EpochStats], None] | None = None,
    real: PenSplit | None = None,
) -> TrainResult:
    """Fit a fresh network on `data.train`, keep the epoch that scores best on validation.
    With `config.real_per_batch`, `real` (`realdata.pen_split`) adds real digits to each batch
    and its validation writers to validation (the epoch's score: the mean of both)."""
    if config.real_per_batch and real is None:
        raise ValueError("real_per_batch needs the pen digits (realdata.pen_split).")
    device = resolve_device(config.device)
    # Same seed, same weights on the CPU: forbid nondeterministic kernels there (it costs
    # nothing on the CPU).
    with torch_settings(threads=config.threads, deterministic=device.type == "cpu"):
        return _fit(config, data, device, progress, on_epoch, real)


def _fit(
    config: TrainConfig,
    data: MnistData,
    device: torch.device,
    progress: bool,
    on_epoch: Callable[[EpochStats], None] | None,
    real: PenSplit | None,
) -> TrainResult:
    seed_everything(config.seed)
    stream = (
        RealStream(real, config.styles_share, config.seed, config.page_share, config.number_share)
        if config.real_per_batch and real is not None  # train() checked it is given
        else None
    )
    real_validation = Split(*stream.validation()).to(device) if stream else None
    generator = torch.Generator(device=device).manual_seed(config.seed)

    train_split = data.train.head(config.limit).to(device)
    validation = data.validation.to(device)
    model = build_model(model_config(config.architecture))
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch(len(train_split), config.batch_size),
        pct_start=ONE_CYCLE_WARM_UP,
        div_factor=ONE_CYCLE_DIV,
        final_div_factor=ONE_CYCLE_FINAL_DIV,
    )
    augment = AugmentConfig()
    correct = torch.zeros((), device=device, dtype=torch.long)  # this epoch's right answers

    def loss(index: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Cross-entropy of a batch of MNIST digits, augmented, and real ones (as ink already)."""
        labels = train_split.labels[index]
        x = augment_batch(train_split.images[index], generator, augment, labels)
        if stream is not None:
            real_images, real_labels = stream.batch(config.real_per_batch)
            x = torch.cat([x, real_images.to(device).unsqueeze(1) / 255.0])
            labels = torch.cat([labels, real_labels.to(device)])
        x = normalize(x).contiguous(memory_format=torch.channels_last)
        with autocast(device):
            logits = model(x)
            value = F.cross_entropy(logits.float(), labels)
        correct.add_((logits.argmax(dim=1) == labels).sum())
        return value, labels.shape[0]

    result = TrainResult(model=model, config=config, device=str(device))
    bar: tqdm | None = None
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None

    def show(tally: Tally) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(
                total=tally.steps,
                desc=f"epoch {tally.epoch}/{config.epochs}",
                unit="batch",
                leave=True,
                dynamic_ncols=True,
            )
        bar.update()
        if tally.step % 20 == 1 or tally.step == tally.steps:
            elapsed = time.perf_counter() - tally.started
            bar.set_postfix(
                loss=f"{tally.loss:.4f}", img_s=f"{tally.seen / max(elapsed, 1e-9):.0f}"
            )

    def end_epoch(tally: Tally) -> None:
        nonlocal bar, best_key, best_state
        if bar is not None:
            bar.close()
            bar = None
        train_seconds = time.perf_counter() - tally.started
        val = evaluate_model(model, validation, device)
        real_val = (
            evaluate_model(model, real_validation, device) if real_validation is not None else None
        )
        stats = EpochStats(
            epoch=tally.epoch,
            train_loss=tally.loss,
            train_accuracy=float(correct) / max(tally.seen, 1),
            val_loss=val.loss,
            val_accuracy=val.accuracy,
            lr=float(schedule.get_last_lr()[0]),
            seconds=train_seconds,
            images_per_s=tally.seen / max(train_seconds, 1e-9),
            real_val_accuracy=real_val.accuracy if real_val else None,
        )
        correct.zero_()
        result.history.append(stats)
        # Best validation accuracy (MNIST's and the pen writers' mean); ties: lower MNIST loss.
        key = ((val.accuracy + real_val.accuracy) / 2 if real_val else val.accuracy, -val.loss)
        if best_key is None or key > best_key:
            best_key, result.best_epoch = key, tally.epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_epoch:
            on_epoch(stats)
        else:
            logger.info(
                "epoch %d: train loss %.4f, val loss %.4f, val accuracy %.4f, pen writers %s",
                tally.epoch,
                stats.train_loss,
                stats.val_loss,
                stats.val_accuracy,
                stats.real_val_accuracy,
            )

    started = time.perf_counter()
    fit(
        model,
        loss,
        optimizer,
        schedule,
        size=len(train_split),
        batch_size=config.batch_size,
        epochs=config.epochs,
        generator=generator,
        on_step=show if progress else None,
        on_epoch=end_epoch,
    )
    result.seconds = time.perf_counter() - started

    assert best_state is not None
    model.load_state_dict(best_state)
    result.model = model.to("cpu").to(memory_format=torch.contiguous_format).eval()
    return result

"""Train the digit CNN: the whole dataset on the device, augmented batch by batch, no workers.

Two cores must train MNIST to 99.5% in minutes, so nothing here waits on Python per image: the
uint8 images sit in one tensor on the device, each batch is indexed, augmented and normalised with
tensor ops, and a one-cycle schedule gets the network there in a few epochs. The validation
hold-out picks the checkpoint; the test set is scored once, at the end.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from classifier.ml.augment import AugmentConfig, augment_batch
from classifier.ml.data import MnistData, Split
from classifier.ml.devices import DEVICE_CHOICES, resolve_device
from classifier.ml.model import (
    ARCHITECTURE,
    ARCHITECTURES,
    DETECTOR_WIDTH,
    FAST_ARCHITECTURE,
    NUM_CLASSES,
    ModelConfig,
    build_model,
    model_config,
    network_tensors,
    normalize,
)
from classifier.ml.outliers import (
    HOLD_OUT_HELP,
    drawn_digits,
    families_for,
    make_outliers,
    parse_held_out,
)
from classifier.ml.realdata import InkAugment, PenSplit, RealStream
from classifier.ml.rejection import DEFAULT_SCORE, LOGIT_SCORES
from classifier.ml.weights import config_from_metadata, load_weights

logger = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 1000
# The one-cycle schedule's shape: a quarter of the run warming up from lr / 20, annealing to
# lr / 4000 at the end.
ONE_CYCLE_WARM_UP = 0.25
ONE_CYCLE_DIV = 20.0
ONE_CYCLE_FINAL_DIV = 200.0
# Outlier exposure draws its pools on a half-size canvas: four times fewer pixels to paint, and
# preprocessing scales every drawing to 20 px anyway.
POOL_CANVAS_SIZE = 192


def _option(default: Any, help: str, **argparse: Any) -> Any:
    """A `TrainConfig` field; `help` (and any argparse keywords) describe its command option."""
    return field(default=default, metadata={"help": help, **argparse})


def check_run_options(config: Any) -> None:
    """The checks every training run's config shares (TrainConfig, FinetuneConfig): ValueError
    naming the field, which `manage.py` commands turn into the option's error."""
    for name in ("epochs", "batch_size"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1.")
    if config.limit is not None and config.limit < 1:
        raise ValueError("limit must be at least 1.")
    if config.lr <= 0:
        raise ValueError("lr must be positive.")
    if config.threads is not None and config.threads < 1:
        raise ValueError("threads must be at least 1.")


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on, with its defaults in one place.

    `manage.py train` makes one option of each field, with the help written here. The defaults
    are chosen so that a full run fits in five minutes on two CPU cores: 8 epochs took 169-174 s
    and reached 99.61-99.62% with seeds 1-3 (benchmarks/train_speed.py); 6 took 118-145 s for
    99.51-99.59%, too close to 99.5%.
    """

    epochs: int = _option(8, "passes over the training set")
    batch_size: int = _option(128, "images per training step")
    lr: float = _option(3e-3, "peak learning rate of the one-cycle schedule")
    weight_decay: float = _option(5e-4, "AdamW weight decay")
    seed: int = _option(1, "random seed; the same seed gives the same weights on the CPU")
    device: str = _option(
        "auto", "where to train; auto takes CUDA when present", choices=DEVICE_CHOICES
    )
    limit: int | None = _option(
        None, "train on the first N training images only, for a quick run", metavar="N"
    )
    label_smoothing: float = _option(0.0, "label smoothing of the loss")
    augment: bool = _option(True, "augment each batch as people draw digits")
    architecture: str = _option(
        FAST_ARCHITECTURE,
        f"network to train; the shipped model is {ARCHITECTURE}",
        choices=sorted(ARCHITECTURES),
    )
    threads: int | None = _option(None, "CPU threads for torch; none: torch's choice")
    init_weights: str | None = _option(
        None,
        "start from these weights (same architecture) instead of a fresh network",
        metavar="PATH",
    )
    outlier_weight: float = _option(
        0.0,
        "weight of the outlier-exposure loss (cross-entropy of generated non-digits to uniform "
        "probabilities); 0: no outliers",
    )
    outliers_per_batch: int = _option(64, "generated non-digits added to each batch")
    outlier_pool: int = _option(12_000, "generated non-digits drawn once before training")
    drawn_per_batch: int = _option(
        32, "canvas-style digits added to each batch when training with outliers"
    )
    drawn_pool: int = _option(
        6_000, "training digits redrawn with the canvas brush once before training"
    )
    distill_weight: float = _option(
        0.0,
        "weight of the KL divergence from the --init-weights model's probabilities on the "
        "digits of each batch: fine-tuning keeps what it knew of digits",
    )
    freeze_norm: bool = _option(
        False,
        "keep the batch-norm statistics of --init-weights fixed (fine-tuning: the non-digits "
        "in each batch must not shift what the network expects of digits)",
    )
    detector_weight: float = _option(
        0.0,
        "weight of the binary cross-entropy of a 'not a digit' head trained with the network "
        "on the outlier pools (an 11th class beside the ten, whose probabilities stay digits'); "
        "its logit is then the score; 0: no head",
    )
    hold_out: str = _option("", HOLD_OUT_HELP)
    real_per_batch: int = _option(
        0,
        "real digits added to each batch: pen digits of the training writers and styles made "
        "from them, augmented as ink and rasterized afresh (classifier.ml.realdata; needs "
        "pendigits/ under --data-dir); 0: MNIST only",
    )
    styles_share: float = _option(0.25, "share of the real digits that are styles")
    score: str = _option(
        DEFAULT_SCORE,
        "score of the logits that tells digits from non-digits; its threshold is chosen on the "
        "validation digits",
        choices=LOGIT_SCORES,
    )

    def __post_init__(self) -> None:
        check_run_options(self)
        if self.outlier_weight < 0:
            raise ValueError("outlier_weight must not be negative.")
        for name in ("distill_weight", "detector_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative.")
        if self.detector_weight and not (self.outliers_per_batch and self.outlier_pool):
            raise ValueError("detector_weight needs outliers (outliers_per_batch, outlier_pool).")
        parse_held_out(self.hold_out)
        if not 0.0 <= self.styles_share <= 1.0:
            raise ValueError("styles_share must be in [0, 1].")
        for name in (
            "outliers_per_batch", "outlier_pool", "drawn_per_batch", "drawn_pool", "real_per_batch"
        ):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1).")
        if self.score not in LOGIT_SCORES:
            raise ValueError(f"unknown score {self.score!r}.")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}.")

    def hyperparameters(self) -> dict[str, Any]:
        """What the weights' metadata records of this run, enough to repeat and explain it."""
        return {
            **asdict(self),
            "optimizer": "AdamW",
            "schedule": {
                "name": "one-cycle",
                "warm_up": ONE_CYCLE_WARM_UP,
                "div_factor": ONE_CYCLE_DIV,
                "final_div_factor": ONE_CYCLE_FINAL_DIV,
            },
            "augmentation": asdict(AugmentConfig()) if self.augment else None,
            "ink_augmentation": asdict(InkAugment()) if self.real_per_batch else None,
        }


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
    model: nn.Module  # the chosen checkpoint, on the CPU, in eval mode
    config: TrainConfig
    device: str
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    seconds: float = 0.0  # training time, without the final test

    @property
    def best(self) -> EpochStats:
        return self.history[self.best_epoch - 1]


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


def _autocast(device: torch.device):
    """bf16 autocast on CUDA (tensor cores); plain float32 on the CPU, where AVX2 has no bf16."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
        with _autocast(device):
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
    # nothing on the CPU). Both settings are process-wide, so they are restored afterwards.
    with _torch_settings(threads=config.threads, deterministic=device.type == "cpu"):
        return _fit(config, data, device, progress, on_epoch, real)


@contextlib.contextmanager
def _torch_settings(threads: int | None, deterministic: bool) -> Iterator[None]:
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        if threads:
            torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
        yield
    finally:
        torch.set_num_threads(previous_threads)
        torch.use_deterministic_algorithms(previous_deterministic)


def freeze_norm_statistics(model: nn.Module) -> None:
    """Batch norms normalise with the statistics they start with and stop updating them: a
    fine-tuning run's batches (non-digits, corrections) are not the digits they were measured
    on, and would drag them towards a mix the test set does not have."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


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


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy from uniform probabilities to the model's: the outlier-exposure loss
    (Hendrycks et al., 2019), lowest when a non-digit gets 1/10 for every digit."""
    return -torch.log_softmax(logits.float(), dim=1).mean(dim=1).mean()


def network_config(config: TrainConfig) -> ModelConfig:
    """The network a run trains: its architecture, with a detector head when it learns one."""
    network = model_config(config.architecture)
    return replace(network, detector_width=DETECTOR_WIDTH) if config.detector_weight else network


def _load_initial(model: nn.Module, config: TrainConfig) -> None:
    """Start from saved weights; they must be of the architecture being trained. A detector
    head they carry is not taken (it was trained on their features): a run's own starts fresh."""
    state_dict, metadata = load_weights(config.init_weights)
    if config_from_metadata(metadata).without_detector() != model_config(config.architecture):
        raise ValueError(
            f"init_weights {config.init_weights} are not of architecture {config.architecture}."
        )
    kept = network_tensors(state_dict)
    model.load_state_dict(kept, strict=not config.detector_weight)


def detector_loss(detected: torch.Tensor, digits: int) -> torch.Tensor:
    """Binary cross-entropy of the detector's logits (N,), of which the first `digits` are
    digits and the rest non-digits, each side weighing half whatever its count."""
    count = detected.shape[0]
    target = torch.zeros(count, device=detected.device)
    target[:digits] = 1.0
    weight = torch.full((count,), 0.5 / max(count - digits, 1), device=detected.device)
    weight[:digits] = 0.5 / max(digits, 1)
    return F.binary_cross_entropy_with_logits(
        detected.float(), target, weight=weight, reduction="sum"
    )


@dataclass(frozen=True)
class _Exposure:
    """The pools outlier exposure samples each batch from, on the training device."""

    outliers: torch.Tensor  # uint8 (P, 28, 28): generated non-digits of the "train" split
    drawn: torch.Tensor  # uint8 (Q, 28, 28): training digits redrawn with the canvas brush
    drawn_labels: torch.Tensor

    def batch(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        config: TrainConfig,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The batch's digits with drawn ones added, and the outliers that go with them."""
        device = images.device
        if len(self.drawn) and config.drawn_per_batch:
            pick = torch.randint(
                len(self.drawn), (config.drawn_per_batch,), generator=generator, device=device
            )
            images = torch.cat([images, self.drawn[pick]])
            labels = torch.cat([labels, self.drawn_labels[pick]])
        if not len(self.outliers) or not config.outliers_per_batch:
            return images, labels, None
        pick = torch.randint(
            len(self.outliers), (config.outliers_per_batch,), generator=generator, device=device
        )
        return images, labels, self.outliers[pick]


def _exposure_pools(config: TrainConfig, train_split: Split, device: torch.device) -> _Exposure:
    started = time.perf_counter()
    families = families_for("train", parse_held_out(config.hold_out))
    outliers, _ = make_outliers(
        config.outlier_pool, "train", config.seed, families, size=POOL_CANVAS_SIZE
    )
    count = min(config.drawn_pool, len(train_split))
    drawn, drawn_labels = drawn_digits(
        train_split.images[:count].cpu().numpy(),
        train_split.labels[:count].cpu().numpy(),
        "train",
        config.seed,
        size=POOL_CANVAS_SIZE,
    )
    logger.info(
        "Outlier exposure: %d non-digits and %d drawn digits made in %.0f s",
        len(outliers),
        len(drawn),
        time.perf_counter() - started,
    )
    return _Exposure(
        outliers=torch.from_numpy(outliers).to(device),
        drawn=torch.from_numpy(drawn).to(device),
        drawn_labels=torch.from_numpy(drawn_labels).to(device),
    )


def _fit(
    config: TrainConfig,
    data: MnistData,
    device: torch.device,
    progress: bool,
    on_epoch: Callable[[EpochStats], None] | None,
    real: PenSplit | None,
) -> TrainResult:
    seed_everything(config.seed)
    stream = RealStream(real, config.styles_share, config.seed) if config.real_per_batch else None
    real_validation = Split(*stream.validation()).to(device) if stream else None
    generator = torch.Generator(device=device).manual_seed(config.seed)

    train_split = data.train.head(config.limit).to(device)
    validation = data.validation.to(device)
    model = build_model(network_config(config))
    if config.init_weights:
        _load_initial(model, config)
    model = model.to(device, memory_format=torch.channels_last)
    with_outliers = config.outlier_weight > 0 or config.detector_weight > 0
    exposure = _exposure_pools(config, train_split, device) if with_outliers else None
    # The starting model, frozen: what it says of the digits the run keeps teaching.
    teacher = copy.deepcopy(model).eval() if config.init_weights and config.distill_weight else None
    steps_per_epoch = math.ceil(len(train_split) / config.batch_size)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=ONE_CYCLE_WARM_UP,
        div_factor=ONE_CYCLE_DIV,
        final_div_factor=ONE_CYCLE_FINAL_DIV,
    )
    augment = AugmentConfig()

    result = TrainResult(model=model, config=config, device=str(device))
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        if config.freeze_norm:
            freeze_norm_statistics(model)
        epoch_start = time.perf_counter()
        order = torch.randperm(len(train_split), generator=generator, device=device)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch}/{config.epochs}",
            unit="batch",
            disable=not progress,
            leave=True,
            dynamic_ncols=True,
        )
        for step in bar:
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            images = train_split.images[index]
            labels = train_split.labels[index]
            outliers = None
            if exposure is not None:
                images, labels, outliers = exposure.batch(images, labels, config, generator)
            x = augment_batch(images, generator, augment, labels) if config.augment else images
            if stream is not None:  # augmented as ink already
                real_images, real_labels = stream.batch(config.real_per_batch)
                real_images = real_images.to(device)
                x = torch.cat(
                    [x, real_images.unsqueeze(1) / 255.0 if config.augment else real_images]
                )
                labels = torch.cat([labels, real_labels.to(device)])
            if outliers is not None:
                extra = augment_batch(outliers, generator, augment) if config.augment else outliers
                x = torch.cat([x, extra])
            x = normalize(x).contiguous(memory_format=torch.channels_last)
            with _autocast(device):
                detected = None
                if model.detector is not None:
                    all_logits, features = model.detector_features(x)
                    detected = model.detector(features).squeeze(1)
                else:
                    all_logits = model(x)
                logits = all_logits[: labels.shape[0]]
                loss = F.cross_entropy(
                    logits.float(), labels, label_smoothing=config.label_smoothing
                )
                if outliers is not None and config.outlier_weight:
                    loss = loss + config.outlier_weight * uniform_cross_entropy(
                        all_logits[labels.shape[0] :]
                    )
                if detected is not None:
                    loss = loss + config.detector_weight * detector_loss(detected, labels.shape[0])
                if teacher is not None:
                    with torch.no_grad():
                        taught = teacher(x[: labels.shape[0]]).float()
                    loss = loss + config.distill_weight * distillation_loss(logits, taught)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()

            batch = labels.shape[0]
            seen += batch
            loss_sum += loss.detach() * batch
            correct += (logits.argmax(dim=1) == labels).sum()
            if progress and (step % 20 == 0 or step == steps_per_epoch - 1):
                elapsed = time.perf_counter() - epoch_start
                bar.set_postfix(
                    loss=f"{float(loss_sum) / seen:.4f}",
                    img_s=f"{seen / max(elapsed, 1e-9):.0f}",
                    refresh=False,
                )
        bar.close()
        train_seconds = time.perf_counter() - epoch_start
        val = evaluate_model(model, validation, device)
        real_val = (
            evaluate_model(model, real_validation, device) if real_validation is not None else None
        )
        stats = EpochStats(
            epoch=epoch,
            train_loss=float(loss_sum) / max(seen, 1),
            train_accuracy=float(correct) / max(seen, 1),
            val_loss=val.loss,
            val_accuracy=val.accuracy,
            lr=float(schedule.get_last_lr()[0]),
            seconds=train_seconds,
            images_per_s=seen / max(train_seconds, 1e-9),
            real_val_accuracy=real_val.accuracy if real_val else None,
        )
        result.history.append(stats)
        # Best validation accuracy (MNIST's and the pen writers' mean); ties: lower MNIST loss.
        key = ((val.accuracy + real_val.accuracy) / 2 if real_val else val.accuracy, -val.loss)
        if best_key is None or key > best_key:
            best_key, result.best_epoch = key, epoch
            best_state = copy.deepcopy(model.state_dict())
        if on_epoch:
            on_epoch(stats)
        else:
            logger.info(
                "epoch %d: train loss %.4f, val loss %.4f, val accuracy %.4f, pen writers %s",
                epoch,
                stats.train_loss,
                stats.val_loss,
                stats.val_accuracy,
                stats.real_val_accuracy,
            )
    result.seconds = time.perf_counter() - started

    assert best_state is not None
    model.load_state_dict(best_state)
    result.model = model.to("cpu", memory_format=torch.contiguous_format).eval()
    return result

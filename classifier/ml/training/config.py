"""What a training run depends on: `TrainConfig`, and the pieces every recipe's config shares.

A recipe's config is a frozen dataclass whose fields carry their command option's help
(`option`); `classifier.options` makes one option of each field, so every default
lives here once. `FinetuneConfig` (finetune.py) and `DetectorConfig` (detector.py) are built the
same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from classifier.ml.devices import DEVICE_CHOICES
from classifier.ml.model import ARCHITECTURE, ARCHITECTURES, FAST_ARCHITECTURE
from classifier.ml.training.augment import AugmentConfig
from classifier.ml.training.realdata import InkAugment

# The one-cycle schedule's shape: a quarter of the run warming up from lr / 20, annealing to
# lr / 4000 at the end.
ONE_CYCLE_WARM_UP = 0.25
ONE_CYCLE_DIV = 20.0
ONE_CYCLE_FINAL_DIV = 200.0


def option(default: Any, help: str, **argparse: Any) -> Any:
    """A config field; `help` (and any argparse keywords) describe its command option."""
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
    """Everything a `train` run (classifier.ml.training.train) depends on, defaults in one place.

    `manage.py train` makes one option of each field, with the help written here. The defaults
    are chosen so that a full run fits in five minutes on two CPU cores: 8 epochs took 169-174 s
    and reached 99.61-99.62% with seeds 1-3 (benchmarks/train_speed.py); 6 took 118-145 s for
    99.51-99.59%, too close to 99.5%. The shipped network's recipe (`make train`) changes
    `epochs`, `architecture`, `real_per_batch`, `page_share`, `number_share` and `threads`.
    """

    epochs: int = option(8, "passes over the training set")
    batch_size: int = option(128, "images per training step")
    lr: float = option(3e-3, "peak learning rate of the one-cycle schedule")
    weight_decay: float = option(5e-4, "AdamW weight decay")
    seed: int = option(1, "random seed; the same seed gives the same weights on the CPU")
    device: str = option(
        "auto", "where to train; auto takes CUDA when present", choices=DEVICE_CHOICES
    )
    limit: int | None = option(
        None, "train on the first N training images only, for a quick run", metavar="N"
    )
    architecture: str = option(
        FAST_ARCHITECTURE,
        f"network to train; the shipped model is {ARCHITECTURE}",
        choices=sorted(ARCHITECTURES),
    )
    threads: int | None = option(None, "CPU threads for torch; none: torch's choice")
    real_per_batch: int = option(
        0,
        "real digits added to each batch: pen digits of the training writers and styles made "
        "from them, augmented as ink and rasterized afresh (classifier.ml.training.realdata; "
        "needs pendigits/ under --data-dir); 0: MNIST only",
    )
    styles_share: float = option(0.25, "share of the real digits that are styles")
    page_share: float = option(
        0.0,
        "share of the real digits drawn as the page draws them and preprocessed as its PNG is, "
        "rather than rasterized as ink; 0: ink only",
    )
    number_share: float = option(
        0.0,
        "share of the real digits drawn inside a number of their writer's digits as the page's "
        "number PNG and cut out as a number's digit is; 0: none",
    )

    def __post_init__(self) -> None:
        check_run_options(self)
        if self.real_per_batch < 0:
            raise ValueError("real_per_batch must not be negative.")
        if not 0.0 <= self.styles_share <= 1.0:
            raise ValueError("styles_share must be in [0, 1].")
        if not 0.0 <= self.page_share <= 1.0:
            raise ValueError("page_share must be in [0, 1].")
        if not 0.0 <= self.number_share <= 1.0 - self.page_share:
            raise ValueError("number_share must be in [0, 1] and at most 1 - page_share.")
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
            "augmentation": asdict(AugmentConfig()),
            "ink_augmentation": asdict(InkAugment()) if self.real_per_batch else None,
        }

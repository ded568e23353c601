"""`python manage.py train`: train the CNN on MNIST, test it once, save weights and a report.

A thin adapter: options and settings in, `classifier.training` does the work. Writing to the
served weights path (the default) is how a new model is deployed: running workers switch to it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.data import DataError, load_mnist
from classifier.devices import DEVICE_CHOICES
from classifier.model import ARCHITECTURES
from classifier.report import build_report, format_confusion, per_digit_dict, write_report
from classifier.training import (
    DEFAULT_ARCHITECTURE,
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    DEFAULT_SEED,
    DEFAULT_WEIGHT_DECAY,
    EpochStats,
    TrainConfig,
    evaluate_model,
    train,
)
from classifier.weights import save_weights


class Command(BaseCommand):
    help = (
        "Train the digit CNN on MNIST (55,000 images; 5,000 held out to choose the epoch), "
        "score it once on the 10,000 test images, and save safetensors weights with a JSON "
        "report and a PNG of the learning curves and confusion matrix beside them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--epochs",
            type=int,
            default=DEFAULT_EPOCHS,
            help=f"passes over the training set (default: {DEFAULT_EPOCHS})",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"images per training step (default: {DEFAULT_BATCH_SIZE})",
        )
        parser.add_argument(
            "--lr",
            type=float,
            default=DEFAULT_LR,
            help=f"peak learning rate of the one-cycle schedule (default: {DEFAULT_LR})",
        )
        parser.add_argument(
            "--weight-decay",
            type=float,
            default=DEFAULT_WEIGHT_DECAY,
            help=f"AdamW weight decay (default: {DEFAULT_WEIGHT_DECAY})",
        )
        parser.add_argument(
            "--seed",
            type=int,
            default=DEFAULT_SEED,
            help=f"random seed; the same seed gives the same weights on the CPU "
            f"(default: {DEFAULT_SEED})",
        )
        parser.add_argument(
            "--device",
            choices=DEVICE_CHOICES,
            default=settings.DIGITS_DEVICE,
            help="where to train; auto takes CUDA when present "
            f"(default: DIGITS_DEVICE, now {settings.DIGITS_DEVICE!r})",
        )
        parser.add_argument(
            "--limit",
            type=int,
            default=None,
            metavar="N",
            help="train on the first N training images only, for a quick run (default: all)",
        )
        parser.add_argument(
            "--output",
            type=Path,
            default=settings.DIGITS_WEIGHTS,
            help=f"where to write the weights; the report goes beside them "
            f"(default: DIGITS_WEIGHTS, now {settings.DIGITS_WEIGHTS})",
        )
        parser.add_argument(
            "--data-dir",
            type=Path,
            default=settings.DIGITS_DATA_DIR,
            help=f"where MNIST is, as <dir>/MNIST/raw/; downloaded there when missing "
            f"(default: DIGITS_DATA_DIR, now {settings.DIGITS_DATA_DIR})",
        )
        parser.add_argument(
            "--no-download",
            action="store_true",
            help="fail instead of downloading MNIST when it is missing (default: download)",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=None,
            help="CPU threads for torch (default: torch's choice, one per core)",
        )
        parser.add_argument(
            "--no-augment",
            action="store_true",
            help="train on the images as scanned, without augmentation (default: augment)",
        )
        parser.add_argument(
            "--label-smoothing",
            type=float,
            default=0.0,
            help="label smoothing of the loss (default: 0.0)",
        )
        parser.add_argument(
            "--architecture",
            choices=sorted(ARCHITECTURES),
            default=DEFAULT_ARCHITECTURE,
            help=f"network to train; the shipped model is digits-cnn-v1 "
            f"(default: {DEFAULT_ARCHITECTURE})",
        )
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bars, only a line per epoch (default: show progress bars)",
        )

    def handle(self, *args, **options) -> None:
        for name in ("epochs", "batch_size"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1.")
        if options["limit"] is not None and options["limit"] < 1:
            raise CommandError("--limit must be at least 1.")
        if options["lr"] <= 0:
            raise CommandError("--lr must be positive.")
        config = TrainConfig(
            epochs=options["epochs"],
            batch_size=options["batch_size"],
            lr=options["lr"],
            weight_decay=options["weight_decay"],
            seed=options["seed"],
            device=options["device"],
            limit=options["limit"],
            label_smoothing=options["label_smoothing"],
            augment=not options["no_augment"],
            architecture=options["architecture"],
            threads=options["threads"],
        )
        output: Path = options["output"]
        try:
            data = load_mnist(options["data_dir"], download=not options["no_download"])
        except DataError as exc:
            raise CommandError(str(exc)) from exc

        train_count = len(data.train.head(config.limit))
        self.stdout.write(
            f"Training {config.architecture} on {train_count:,} images "
            f"(validation {len(data.validation):,}, test {len(data.test):,}) "
            f"for {config.epochs} epochs, torch {torch.__version__}, "
            f"{torch.get_num_threads() if config.threads is None else config.threads} CPU threads"
        )
        try:
            result = train(
                config, data, progress=not options["no_progress"], on_epoch=self._epoch_line
            )
        except ValueError as exc:  # e.g. --device cuda without a GPU
            raise CommandError(str(exc)) from exc
        test = evaluate_model(result.model, data.test, result.device)

        metadata = {
            "architecture": config.architecture,
            "test_accuracy": test.accuracy,
            "test_loss": round(test.loss, 6),
            "per_digit": per_digit_dict(test.per_digit),
            "val_accuracy": result.best.val_accuracy,
            "best_epoch": result.best_epoch,
            "epochs": config.epochs,
            "train_images": train_count,
            "train_seconds": round(result.seconds, 2),
            "device": result.device,
            "seed": config.seed,
            "data_checksum": data.checksum,
            "command": "python manage.py train " + shlex.join(sys.argv[2:]),
        }
        stored = save_weights(result.model, output, metadata)
        report = build_report(result, test, stored)
        json_path, png_path = write_report(output, report)

        self.stdout.write(
            f"Best epoch {result.best_epoch} (validation accuracy "
            f"{100 * result.best.val_accuracy:.2f}%); training took {result.seconds:.1f} s."
        )
        self.stdout.write(self.style.SUCCESS(f"Test accuracy: {100 * test.accuracy:.2f}%"))
        self.stdout.write(
            "Per digit: " + ", ".join(f"{d}: {100 * a:.2f}%" for d, a in enumerate(test.per_digit))
        )
        self.stdout.write("Confusion matrix (rows: true digit, columns: predicted):")
        self.stdout.write(format_confusion(test.confusion))
        self.stdout.write(f"Model {stored['version']} saved to {output}")
        self.stdout.write(f"Report: {json_path} and {png_path}")

    def _epoch_line(self, stats: EpochStats) -> None:
        self.stdout.write(
            f"epoch {stats.epoch}: train loss {stats.train_loss:.4f}, "
            f"val loss {stats.val_loss:.4f}, val accuracy {100 * stats.val_accuracy:.2f}%, "
            f"{stats.images_per_s:.0f} images/s, {stats.seconds:.1f} s"
        )

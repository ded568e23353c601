"""`python manage.py train`: train the CNN on MNIST, test it once, save weights and a report.

A thin adapter: options and settings in, `classifier.ml.training` does the work. Writing to the
served weights path (the default) is how a new model is deployed: running workers switch to it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import torch
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.management.options import (
    add_config_options,
    add_data_dir,
    add_no_download,
    config_from_options,
)
from classifier.ml.data import DataError, load_mnist
from classifier.ml.rejection import DETECTOR_SCORE, calibrate, has_detector
from classifier.ml.report import build_report, format_confusion, per_digit_dict, write_report
from classifier.ml.training import EpochStats, TrainConfig, evaluate_model, train
from classifier.ml.weights import save_weights


class Command(BaseCommand):
    help = (
        "Train the digit CNN on MNIST (55,000 images; 5,000 held out to choose the epoch), "
        "score it once on the 10,000 test images, and save safetensors weights with a JSON "
        "report and a PNG of the learning curves and confusion matrix beside them."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_config_options(
            parser,
            TrainConfig,
            {"device": (settings.DIGITS_DEVICE, f"DIGITS_DEVICE, now {settings.DIGITS_DEVICE!r}")},
        )
        parser.add_argument(
            "--output",
            type=Path,
            default=settings.DIGITS_WEIGHTS,
            help=f"where to write the weights; the report goes beside them "
            f"(default: DIGITS_WEIGHTS, now {settings.DIGITS_WEIGHTS})",
        )
        add_data_dir(parser, downloads=True)
        add_no_download(parser)
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bars, only a line per epoch (default: show progress bars)",
        )

    def handle(self, *args, **options) -> None:
        config = config_from_options(TrainConfig, options)
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
        score = DETECTOR_SCORE if has_detector(result.model) else config.score
        rejection = calibrate(result.model, data.validation, score)

        metadata = {
            "architecture": config.architecture,
            "model_args": result.model.config.as_dict(),
            "training": config.hyperparameters(),
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
            "rejection": rejection.as_dict(),
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
        self.stdout.write(
            f"Not a digit below {rejection.score} {rejection.threshold:.4f} "
            f"(temperature {rejection.temperature:g}), chosen on the validation digits."
        )
        self.stdout.write(f"Model {stored['version']} saved to {output}")
        self.stdout.write(f"Report: {json_path} and {png_path}")

    def _epoch_line(self, stats: EpochStats) -> None:
        self.stdout.write(
            f"epoch {stats.epoch}: train loss {stats.train_loss:.4f}, "
            f"val loss {stats.val_loss:.4f}, val accuracy {100 * stats.val_accuracy:.2f}%, "
            f"{stats.images_per_s:.0f} images/s, {stats.seconds:.1f} s"
        )

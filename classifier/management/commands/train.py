"""`python manage.py train`: train the CNN on MNIST, test it once, store weights and a report.

A thin adapter: options and settings in, `classifier.ml.training.train` does the work. The new model
goes into the model store beside the served weights (`classifier.ml.modelstore`), and it replaces
the served model (running workers switch to it) only when nothing usable is served yet, when
`--serve` says so, or when it passes `retrain`'s promotion gate against the served model
(`classifier.corrections.judging`); otherwise the served model stays and the output says why and
how to serve the new one. Serving takes the serving lock (`classifier.ml.modellock`); with
`--serve` it is held from the start, so a second run exits at once instead of training in vain.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import torch
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS, DatabaseError
from torch import nn

from classifier.corrections.judging import SplitCorrections, scores, split_corrections
from classifier.ml import modelstore
from classifier.ml.devices import resolve_device
from classifier.ml.model import build_model
from classifier.ml.modellock import LockHeld, serving_lock
from classifier.ml.training.calibration import calibrate
from classifier.ml.training.config import TrainConfig
from classifier.ml.training.data import DataError, MnistData, load_mnist
from classifier.ml.training.finetune import Decision, Scores, gate
from classifier.ml.training.realdata import DIGIT_DATASETS, MNIST_LICENCE, pen_split
from classifier.ml.training.report import (
    build_report,
    format_confusion,
    per_digit_dict,
    write_report,
)
from classifier.ml.training.train import EpochStats, evaluate_model, train
from classifier.ml.weights import config_from_metadata, load_weights
from classifier.options import (
    add_config_options,
    add_data_dir,
    add_no_download,
    config_from_options,
)


class Command(BaseCommand):
    help = (
        "Train the digit CNN on MNIST (55,000 images; 5,000 held out to choose the epoch), "
        "score it once on the 10,000 test images, and store safetensors weights with a JSON "
        "report and a PNG of the learning curves and confusion matrix in the model store. "
        "It is served only when nothing is served yet, with --serve, or when it passes "
        "retrain's promotion gate against the served model."
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
            help=f"the served weights path: the new model is stored in models/ beside it and "
            f"written here (its report beside it) only when it is served "
            f"(default: DIGITS_WEIGHTS, now {settings.DIGITS_WEIGHTS})",
        )
        parser.add_argument(
            "--serve",
            action="store_true",
            help="serve the new model whatever its scores (default: only when nothing is "
            "served yet, or when it passes retrain's promotion gate)",
        )
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help="the database whose held-out accepted corrections judge the new model "
            "(default: default, which DATABASE_URL names)",
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
        if not options["serve"]:
            self._train(config, output, options)
            return
        try:
            with serving_lock(output, "manage.py train --serve"):
                self._train(config, output, options)
        except LockHeld as exc:
            raise CommandError(f"train --serve: {exc}.") from None

    def _train(self, config: TrainConfig, output: Path, options: dict[str, Any]) -> None:
        try:
            data = load_mnist(options["data_dir"], download=not options["no_download"])
        except DataError as exc:
            raise CommandError(str(exc)) from exc
        served = modelstore.served_version(output)
        if served is None and output.exists():
            self.stdout.write(f"{output} holds no usable weights: the new model will replace it.")
        # Read before training, so a database problem shows at once, not after the run.
        judge = None
        if served is not None and not options["serve"]:
            judge = self._corrections(options["database"])

        real = None
        if config.real_per_batch:
            try:
                real = pen_split(options["data_dir"], config.seed)
            except FileNotFoundError as exc:
                raise CommandError(f"{exc}; --real-per-batch 0 trains on MNIST only.") from exc
            self.stdout.write(
                f"Real digits: {len(real.train):,} pen digits of the training writers and "
                f"{len(real.train_styles):,} styles made from them; "
                f"{len(real.validation):,} digits of the validation writers"
            )
        train_count = len(data.train.head(config.limit))
        self.stdout.write(
            f"Training {config.architecture} on {train_count:,} images "
            f"(validation {len(data.validation):,}, test {len(data.test):,}) "
            f"for {config.epochs} epochs, torch {torch.__version__}, "
            f"{torch.get_num_threads() if config.threads is None else config.threads} CPU threads"
        )
        try:
            result = train(
                config,
                data,
                progress=not options["no_progress"],
                on_epoch=self._epoch_line,
                real=real,
            )
        except ValueError as exc:  # e.g. --device cuda without a GPU
            raise CommandError(str(exc)) from exc
        test = evaluate_model(result.model, data.test, result.device)
        rejection = calibrate(result.model, data.validation)  # the default score, msp

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
            "datasets": DIGIT_DATASETS if real else {"MNIST": MNIST_LICENCE},
        }
        if real is not None:
            metadata["real_digits"] = real.describe()
        stored = modelstore.add(output, result.model.state_dict(), metadata)
        report = build_report(result, test, stored.metadata)
        json_path, png_path = write_report(stored.path, report)

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
        self.stdout.write(f"Model {stored.version} stored as {stored.path}")
        self.stdout.write(f"Report: {json_path} and {png_path}")

        if options["serve"]:
            why = "--serve"
        elif served is None:
            why = "nothing was served"
        else:
            decision = self._judge(result.model, test.accuracy, result.device, data, judge, output)
            if not decision.promote:
                self.stdout.write(
                    f"Kept the served model {served} (the new one is not served: "
                    f"{decision.reason}); `python manage.py models use {stored.version}` "
                    "serves it."
                )
                return
            why = f"it passed the promotion gate: {decision.reason}"
        if options["serve"]:  # the lock is held already
            self._serve(output, stored.version, served, why)
            return
        try:
            with serving_lock(output, "manage.py train"):
                self._serve(output, stored.version, served, why)
        except LockHeld as exc:
            raise CommandError(
                f"train: {exc}. The new model is stored as {stored.version}, not served "
                f"(`python manage.py models use {stored.version}` serves it)."
            ) from None

    def _serve(self, output: Path, version: str, served: str | None, why: str) -> None:
        try:
            modelstore.serve(output, version, expect=served)
        except modelstore.ServedChanged as exc:
            raise CommandError(
                f"{exc}; the new model is stored as {version}, not served "
                f"(`python manage.py models use {version}` serves it)."
            ) from None
        kept = f"; {served} is kept in the store" if served else ""
        self.stdout.write(self.style.SUCCESS(f"Serving {version} at {output} ({why}){kept}"))

    def _corrections(self, using: str) -> SplitCorrections | None:
        """The accepted corrections that judge the new model; None (said) when unreadable."""
        try:
            split = split_corrections(using)
        except DatabaseError as exc:
            self.stdout.write(
                f"Cannot read the corrections from database {using!r} ({exc}): the new model "
                "cannot be judged against the served one, so it will be stored, not served "
                "(--serve serves it regardless)."
            )
            return None
        self.stdout.write(
            f"{len(split.held_idx)} held-out accepted corrections will judge the new model "
            "against the served one"
        )
        return split

    def _judge(
        self, model: nn.Module, mnist_test: float, device: str, data: MnistData,
        judge: SplitCorrections | None, output: Path,
    ) -> Decision:  # fmt: skip
        """retrain's promotion gate, the new model (its MNIST test accuracy `mnist_test`) against
        the one served at `output`."""
        train_count = 0 if judge is None else len(judge.train_idx)
        held_count = 0 if judge is None else len(judge.held_idx)
        state, metadata = load_weights(output)
        if judge is None or not held_count:
            return gate(None, Scores(metadata.get("test_accuracy") or 0.0, None), train_count, 0)
        served_model = build_model(config_from_metadata(metadata))
        served_model.load_state_dict(state)
        held_out = judge.held_out()
        served = scores(served_model, data.test, held_out, device)
        assert served.held_out is not None  # scored on the held-out corrections
        held = evaluate_model(model, held_out, resolve_device(device)).accuracy
        model.to("cpu")
        candidate = Scores(mnist_test=mnist_test, held_out=held)
        self.stdout.write(
            f"served {metadata['version']}: MNIST test {100 * served.mnist_test:.2f}%, held-out "
            f"{100 * served.held_out:.2f}%; new: MNIST test {100 * candidate.mnist_test:.2f}%, "
            f"held-out {100 * held:.2f}%"
        )
        return gate(candidate, served, train_count, held_count)

    def _epoch_line(self, stats: EpochStats) -> None:
        self.stdout.write(
            f"epoch {stats.epoch}: train loss {stats.train_loss:.4f}, "
            f"val loss {stats.val_loss:.4f}, val accuracy {100 * stats.val_accuracy:.2f}%, "
            f"{stats.images_per_s:.0f} images/s, {stats.seconds:.1f} s"
            + (
                ""
                if stats.real_val_accuracy is None
                else f", pen writers {100 * stats.real_val_accuracy:.2f}%"
            )
        )

"""`python manage.py train_detector`: add a "not a digit" head to saved weights, the rest frozen.

A thin adapter: options in, `classifier.ml.training.detector` does the work. The network's own
tensors are copied unchanged, so its digits and its test accuracy stay those of `--base-weights`;
the head's threshold is chosen on the validation digits and canvas drawings of them
(`classifier.ml.training.calibration.choose_threshold`) and stored in the metadata.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.ml.model import build_model, network_tensors
from classifier.ml.rejection import DETECTOR_SCORE
from classifier.ml.training.calibration import choose_threshold
from classifier.ml.training.data import DataError, load_mnist
from classifier.ml.training.detector import DetectorConfig, make_pools, train_detector
from classifier.ml.training.realdata import NONDIGIT_DATASETS, pen_split, render
from classifier.ml.training.train import evaluate_model
from classifier.ml.weights import WeightsError, config_from_metadata, load_weights, save_weights
from classifier.options import (
    add_config_options,
    add_data_dir,
    add_no_download,
    config_from_options,
)

# Metadata of the base weights that describes the file, not the network: written afresh.
_FILE_KEYS = ("version", "created", "torch_version", "format", "rejection", "command")


class Command(BaseCommand):
    help = (
        "Train a small 'is this a digit' head on the frozen features of saved weights (MNIST "
        "and canvas-drawn digits against generated non-digits), choose its threshold on the "
        "validation digits, and save the weights with the head: the ten logits are unchanged."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        add_config_options(parser, DetectorConfig, {})
        parser.add_argument(
            "--base-weights",
            type=Path,
            default=settings.DIGITS_WEIGHTS,
            help=f"the network to freeze; a head it has is replaced "
            f"(default: DIGITS_WEIGHTS, now {settings.DIGITS_WEIGHTS})",
        )
        parser.add_argument(
            "--output",
            type=Path,
            default=settings.DIGITS_WEIGHTS,
            help=f"where to write the weights with the head "
            f"(default: DIGITS_WEIGHTS, now {settings.DIGITS_WEIGHTS})",
        )
        add_data_dir(parser)
        add_no_download(parser)

    def handle(self, *args, **options) -> None:
        config = config_from_options(DetectorConfig, options)
        try:
            state_dict, base_meta = load_weights(options["base_weights"])
        except WeightsError as exc:
            raise CommandError(str(exc)) from exc
        base = build_model(config_from_metadata(base_meta).without_detector())
        base.load_state_dict(network_tensors(state_dict))
        try:
            data = load_mnist(options["data_dir"], download=not options["no_download"])
        except DataError as exc:
            raise CommandError(str(exc)) from exc

        started = time.perf_counter()
        try:
            pools = make_pools(config, data.train, options["data_dir"])
            # The validation writers' digits, as the service draws them: the threshold keeps them.
            real = pen_split(options["data_dir"]).validation if config.real else None
        except FileNotFoundError as exc:
            raise CommandError(f"{exc}; without --real the head learns no real drawings.") from exc
        drawing = time.perf_counter() - started
        self.stdout.write(
            f"{len(pools.outliers):,} non-digits and {len(pools.drawn):,} canvas digits drawn "
            f"in {drawing:.0f} s; {len(pools.mnist):,} MNIST digits; real drawings: "
            f"{len(pools.real_digits):,} digits, {len(pools.real_outliers):,} non-digits"
        )
        result = train_detector(base, pools, config, data.train.labels)
        model = result.model
        rejection = choose_threshold(
            model,
            data.validation.images.numpy(),
            score=DETECTOR_SCORE,
            real_images=None if real is None else render(real.inks),
        )
        test = evaluate_model(model, data.test, "cpu")

        metadata = {
            **{k: v for k, v in base_meta.items() if k not in _FILE_KEYS},
            "model_args": model.config.as_dict(),
            "test_accuracy": test.accuracy,
            "rejection": rejection.as_dict(),
            "detector": {
                **config.hyperparameters(),
                "base_version": base_meta.get("version"),
                "counts": result.counts,
                "pool_seconds": round(drawing, 1),
                "train_seconds": round(result.seconds, 1),
                "train_loss": round(result.train_loss, 6),
                "command": "python manage.py train_detector " + shlex.join(sys.argv[2:]),
            },
        }
        if real is not None:
            datasets = {**base_meta.get("datasets", {}), **NONDIGIT_DATASETS}
            metadata["datasets"] = datasets
            metadata["detector"]["threshold_writers"] = sorted({int(w) for w in real.writers})
        if "command" in base_meta:
            metadata["base_command"] = base_meta["command"]
        stored = save_weights(model, options["output"], metadata)
        self.stdout.write(
            f"Head trained in {result.seconds:.0f} s (features and fitting); test accuracy "
            f"{100 * test.accuracy:.2f}% (the base network's, unchanged)."
        )
        self.stdout.write(
            f"Not a digit below detector {rejection.threshold:.4f}, chosen on the validation "
            "digits" + (" and the validation writers' pen digits." if config.real else ".")
        )
        self.stdout.write(f"Model {stored['version']} saved to {options['output']}")

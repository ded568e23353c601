"""`python manage.py retrain`: fine-tune the served model on MNIST plus the accepted corrections,
and promote the candidate only when it is measurably better (docs/feedback.md).

A thin adapter: the corrections come from `classifier.corrections.store`, the training and the
promotion rule from `classifier.ml.training.finetune`, the model store from
`classifier.ml.modelstore`.
Promotion writes the served weights path atomically, so running workers switch to the new model.
A run holds the serving lock (`classifier.ml.modellock`) from start to end, so a second one
started meanwhile exits at once naming the lock (a `--dry-run` writes nothing and takes none).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
import types
import typing
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from classifier.corrections.judging import scores, split_corrections
from classifier.ml import modelstore
from classifier.ml.devices import DEVICE_CHOICES
from classifier.ml.model import build_model
from classifier.ml.modellock import LockHeld, serving_lock
from classifier.ml.rejection import Rejection
from classifier.ml.training.calibration import choose_threshold
from classifier.ml.training.data import DataError, load_mnist
from classifier.ml.training.finetune import FinetuneConfig, Progress, Scores, finetune, gate
from classifier.ml.training.realdata import pen_split, render
from classifier.ml.weights import WeightsError, config_from_metadata, load_weights
from classifier.options import add_data_dir, config_from_options

# The FinetuneConfig fields `retrain` offers as options (the rest keep their defaults).
OPTIONS = (
    "epochs",
    "limit",
    "seed",
    "device",
    "lr",
    "batch_size",
    "correction_share",
    "distill",
    "blend",
    "threads",
)


class Command(BaseCommand):
    help = (
        "Fine-tune the served model on MNIST plus the accepted corrections; promote the "
        "candidate (write the served weights, keep both in the model store) only when it is no "
        "worse on MNIST test than 0.1 points below the served model and better on the "
        "held-out corrections."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        _add_config_options(parser)
        parser.add_argument(
            "--weights",
            type=Path,
            default=settings.DIGITS_WEIGHTS,
            help=f"the served model, fine-tuned and, on promotion, replaced "
            f"(default: DIGITS_WEIGHTS, now {settings.DIGITS_WEIGHTS})",
        )
        add_data_dir(parser)
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help="the database alias to read corrections from (default: default, which "
            "DATABASE_URL names)",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="train and compare, but never promote or write anything (default: off)",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print the outcome as one JSON object, the last line (default: off)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = config_from_options(FinetuneConfig, options, OPTIONS)
        weights: Path = options["weights"]
        if options["dry_run"]:  # writes nothing, so it may run beside anything
            self._retrain(config, weights, options)
            return
        try:
            with serving_lock(weights, "manage.py retrain"):
                self._retrain(config, weights, options)
        except LockHeld as exc:
            raise CommandError(f"retrain: {exc}.") from None

    def _retrain(self, config: FinetuneConfig, weights: Path, options: dict[str, Any]) -> None:
        try:
            served_state, served_meta = load_weights(weights)
        except WeightsError as exc:
            raise CommandError(str(exc)) from exc
        try:
            data = load_mnist(options["data_dir"], download=False)
        except DataError as exc:
            raise CommandError(str(exc)) from exc

        split = split_corrections(options["database"])
        train_idx, held_idx = split.train_idx, split.held_idx
        self.stdout.write(
            f"{len(split.accepted)} accepted corrections: {len(train_idx)} to train on, "
            f"{len(held_idx)} held out; served model {served_meta['version']}"
        )
        held_out = split.held_out()
        model_config = config_from_metadata(served_meta)

        candidate = None
        result = None
        if not held_idx:
            # Nothing to judge a candidate by: neither train one nor score the served model
            # (its recorded test accuracy stands).
            recorded = float(served_meta.get("test_accuracy", "nan"))  # NaN: none recorded
            served = Scores(mnist_test=recorded, held_out=None)
        else:
            served_model = build_model(model_config)
            served_model.load_state_dict(served_state)
            served = scores(served_model, data.test, held_out, config.device)
            self.stdout.write(f"served: {self._describe(served)}")
            mnist_count = len(data.train.head(config.limit))
            self.stdout.write(
                f"fine-tuning on {mnist_count:,} MNIST images and {len(train_idx)} corrections "
                f"({config.correction_share:.0%} of each batch), {config.epochs} epoch(s)"
            )
            try:
                result = finetune(
                    served_state, model_config, data.train, split.train(), config, self._progress
                )
            except ValueError as exc:  # e.g. --device cuda without a GPU
                raise CommandError(str(exc)) from exc
            candidate = scores(result.model, data.test, held_out, config.device)
            self.stdout.write(f"candidate: {self._describe(candidate)}")
        decision = gate(candidate, served, len(train_idx), len(held_idx))

        model = served_meta["version"]
        candidate_version = None
        if result is not None and candidate is not None:
            metadata = {
                "architecture": served_meta["architecture"],
                "model_args": model_config.as_dict(),
                "parent": served_meta["version"],
                "training": config.hyperparameters(),
                "corrections": split.manifest(),
                "test_accuracy": candidate.mnist_test,
                "held_out_accuracy": candidate.held_out,
                "parent_scores": {
                    "test_accuracy": served.mnist_test,
                    "held_out_accuracy": served.held_out,
                },
                "train_images": len(data.train.head(config.limit)),
                "train_seconds": round(result.seconds, 2),
                "device": result.device,
                "seed": config.seed,
                "data_checksum": data.checksum,
                "command": "python manage.py retrain " + shlex.join(sys.argv[2:]),
            }
            if served_meta.get("rejection") and decision.promote and not options["dry_run"]:
                metadata["rejection"] = self._rejection(
                    result.model, data, served_meta, options["data_dir"]
                )
            if decision.promote and not options["dry_run"]:
                stored = modelstore.add(weights, result.model.state_dict(), metadata)
                try:
                    # Keeps the model it replaces in the store, to go back to.
                    modelstore.serve(weights, stored.version, expect=served_meta["version"])
                except modelstore.ServedChanged as exc:
                    raise CommandError(
                        f"{exc}; the candidate is stored as {stored.version}, not served "
                        "(`manage.py models use` serves it)."
                    ) from None
                candidate_version = model = stored.version
                self.stdout.write(self.style.SUCCESS(f"Promoted {model}: {decision.reason}"))
        if not decision.promote:
            self.stdout.write(f"Kept {model}: {decision.reason}")
        elif options["dry_run"]:
            self.stdout.write(f"Dry run: would promote ({decision.reason}); kept {model}")

        if options["json"]:
            outcome = {
                "promoted": bool(decision.promote and not options["dry_run"]),
                "reason": decision.reason,
                "candidate": None
                if candidate is None
                else {
                    "mnist_test": candidate.mnist_test,
                    "held_out": candidate.held_out,
                    "version": candidate_version,
                },
                "served": {
                    "mnist_test": served.mnist_test,
                    "held_out": served.held_out,
                    "version": served_meta["version"],
                },
                "model": model,
                "corrections": {"train": len(train_idx), "held_out": len(held_idx)},
            }
            self.stdout.write(json.dumps(outcome, sort_keys=True))

    def _rejection(self, model, data, served_meta: dict, data_dir: Path) -> dict:
        """The served model's not-a-digit score, its threshold chosen again for the candidate on
        the validation digits: fine-tuning moves the scores a little, and a stale threshold
        would turn away digits (or keep non-digits) that the new model scores differently.
        When the served thresholds were chosen on real writers' digits (a number's pieces
        judged apart) and those digits are under `data_dir`, they choose the new ones too."""
        served = Rejection.from_dict(served_meta["rejection"])
        real = None
        if served.number_threshold is not None:
            try:
                real = render(pen_split(data_dir).validation.inks)
            except FileNotFoundError:
                self.stdout.write(
                    "the pen digits are not under --data-dir: the threshold is chosen on "
                    "MNIST's validation digits alone"
                )
        rejection = choose_threshold(
            model,
            data.validation.images,
            score=served.score,
            temperature=served.temperature,
            real_images=real,
        )
        model.to("cpu")
        on = "the validation digits" + ("" if real is None else " and writers' pen digits")
        self.stdout.write(
            f"not a digit below {rejection.score} {rejection.threshold:.4f} "
            f"(served model: {served.threshold:.4f}), chosen on {on}"
        )
        return rejection.as_dict()

    @staticmethod
    def _describe(scores: Scores) -> str:
        held = "none" if scores.held_out is None else f"{100 * scores.held_out:.2f}%"
        return f"MNIST test {100 * scores.mnist_test:.2f}%, held-out corrections {held}"

    def _progress(self, progress: Progress) -> None:
        self.stdout.write(
            f"step {progress.step}/{progress.steps} (epoch {progress.epoch}): "
            f"loss {progress.loss:.4f}, {progress.seconds:.1f} s"
        )


def _add_config_options(parser: CommandParser) -> None:
    """One option per name in OPTIONS, its help, type and default from FinetuneConfig's field
    (DIGITS_DEVICE chooses the device's), so each default lives in one place."""
    hints = typing.get_type_hints(FinetuneConfig)
    fields = {f.name: f for f in dataclasses.fields(FinetuneConfig)}
    for name in OPTIONS:
        field = fields[name]
        kind = hints[name]
        if isinstance(kind, types.UnionType):  # `int | None`: the type that is not None
            kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
        default, shown = field.default, "none" if field.default is None else str(field.default)
        extra = {}
        if name == "device":
            default = settings.DIGITS_DEVICE
            shown = f"DIGITS_DEVICE, now {default!r}"
            extra["choices"] = DEVICE_CHOICES
        parser.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            metavar="N" if kind is int else None,
            help=f"{field.metadata['help']} (default: {shown})",
            **extra,
        )

"""`python manage.py evaluate`: score saved weights on the MNIST test set, without training, how
well their "not a digit" rejection sorts held-out digits from held-out non-digits, and how they
read drawings made by people (the real sets of classifier.ml.training.realsets found under
--data-dir)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.ml.devices import DEVICE_CHOICES
from classifier.ml.inference import Predictor
from classifier.ml.training.calibration import (
    EVAL_DRAWN_COUNT,
    EVAL_OUTLIERS_PER_FAMILY,
    evaluation_sets,
    rejection_report,
)
from classifier.ml.training.data import DataError, load_test_split
from classifier.ml.training.realsets import mnist_figures, prepare_all, read_sets, summary_lines
from classifier.ml.training.realsets import report as real_sets_report
from classifier.ml.training.report import format_confusion, per_digit_dict
from classifier.ml.training.train import evaluate_model
from classifier.ml.weights import WeightsError
from classifier.options import add_data_dir, add_no_download

# Drawings read of each real set by default: enough for every class and writer, about a minute.
REAL_DRAWINGS = 1000


class Command(BaseCommand):
    help = (
        "Score saved weights on the 10,000 MNIST test images; report the share of them, of "
        "canvas-drawn digits and of each family of generated non-digits that the weights' "
        "threshold rejects, and the score's AUROC and FPR at 95% TPR; then, for each real set "
        "under --data-dir (pen digits, styles made from them, doodles, symbols), every class, "
        "the worst writers and the share turned away, sent as ink and as the page's PNG."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--weights",
            type=Path,
            default=settings.DIGITS_WEIGHTS,
            help=f"weights to score (default: DIGITS_WEIGHTS, now {settings.DIGITS_WEIGHTS})",
        )
        add_data_dir(parser)
        parser.add_argument(
            "--device",
            choices=DEVICE_CHOICES,
            default=settings.DIGITS_DEVICE,
            help=f"where to run; auto takes CUDA when present (default: DIGITS_DEVICE, now "
            f"{settings.DIGITS_DEVICE!r})",
        )
        add_no_download(parser)
        parser.add_argument(
            "--outliers-per-family",
            type=int,
            default=EVAL_OUTLIERS_PER_FAMILY,
            metavar="N",
            help=f"held-out non-digits drawn per family; 0 skips the not-a-digit figures "
            f"(default: {EVAL_OUTLIERS_PER_FAMILY})",
        )
        parser.add_argument(
            "--drawn",
            type=int,
            default=EVAL_DRAWN_COUNT,
            metavar="N",
            help=f"test digits redrawn on a canvas for the not-a-digit figures "
            f"(default: {EVAL_DRAWN_COUNT})",
        )
        parser.add_argument(
            "--real-drawings",
            type=int,
            default=REAL_DRAWINGS,
            metavar="N",
            help=f"drawings of each real set read (chosen at random, seeded); 0 skips the real "
            f"sets (default: {REAL_DRAWINGS})",
        )
        parser.add_argument(
            "--json",
            action="store_true",
            help="print one JSON object instead of text (default: text)",
        )

    def handle(self, *args, **options) -> None:
        try:
            predictor = Predictor.load(options["weights"], device=options["device"])
        except (WeightsError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        try:
            test = load_test_split(options["data_dir"], download=not options["no_download"])
        except DataError as exc:
            raise CommandError(str(exc)) from exc

        result = evaluate_model(predictor.model, test, predictor.device)
        summary: dict[str, Any] = {
            "model": predictor.version,
            "architecture": predictor.metadata.get("architecture"),
            "weights": str(options["weights"]),
            "accuracy": result.accuracy,
            "loss": result.loss,
            "count": result.count,
            "errors": result.count - round(result.accuracy * result.count),
            "per_digit": per_digit_dict(result.per_digit),
            "confusion": result.confusion,
            "device": str(predictor.device),
            # The same test digits scored as the real sets are: with the weights' is_digit.
            "mnist": mnist_figures(predictor, test.images.numpy(), test.labels.numpy()),
        }
        if options["outliers_per_family"] > 0:
            sets = evaluation_sets(test, options["drawn"], options["outliers_per_family"])
            report = rejection_report(predictor.model, predictor.rejection, sets)
            # A head that learned every letter (train_detector's default) has seen the letters
            # the "eval" split draws (in other drawings): its alphabets' shares are then not of
            # unseen letters.
            detector = predictor.metadata.get("detector") or {}
            report["eval_letters_unseen"] = not detector.get("every_letter", False)
            summary["not_a_digit"] = report
        if options["real_drawings"] > 0:
            drawn = read_sets(options["data_dir"], limit=options["real_drawings"])
            summary["real_sets"] = real_sets_report(predictor, prepare_all(drawn))
        if options["json"]:
            self.stdout.write(json.dumps(summary))
            return
        self.stdout.write(f"Model {predictor.version} ({options['weights']})")
        self.stdout.write(
            self.style.SUCCESS(
                f"Test accuracy: {100 * result.accuracy:.2f}% "
                f"({summary['errors']} errors in {result.count:,})"
            )
        )
        self.stdout.write(
            "Per digit: "
            + ", ".join(f"{d}: {100 * a:.2f}%" for d, a in enumerate(result.per_digit))
        )
        self.stdout.write(format_confusion(result.confusion))
        mnist = summary["mnist"]
        self.stdout.write(
            f"Kept and right: {100 * mnist['kept_and_right']:.2f}%, turned away as no digit: "
            f"{100 * mnist['turned_away']:.2f}%"
        )
        if summary.get("not_a_digit"):
            self._rejection_lines(summary["not_a_digit"])
        if "real_sets" in summary:
            self.stdout.write("Drawings by people (kept and right: read right, not turned away):")
            for line in summary_lines(summary["real_sets"]):
                self.stdout.write(f"  {line}")

    def _rejection_lines(self, report: dict) -> None:
        rejection = report["rejection"]
        if rejection is None:
            self.stdout.write("Not a digit: these weights have no threshold; all is a digit.")
        else:
            self.stdout.write(
                f"Not a digit below {rejection['score']} {rejection['threshold']:.4f}: "
                f"rejects {100 * report['mnist_rejected']:.2f}% of MNIST test digits, "
                f"{100 * report['drawn_rejected']:.2f}% of canvas-drawn digits, "
                f"{100 * report['outliers_rejected']:.1f}% of non-digits"
            )
        self.stdout.write(
            f"AUROC {report['auroc']:.4f}, FPR at 95% TPR {100 * report['fpr_at_95_tpr']:.1f}%"
        )
        self.stdout.write(
            "Rejected per family: "
            + ", ".join(f"{f} {100 * v:.0f}%" for f, v in report["families_rejected"].items())
        )
        if not report["eval_letters_unseen"]:
            self.stdout.write(
                "(These weights learned every letter: the alphabets' shares are of new drawings "
                "of letters seen in training.)"
            )

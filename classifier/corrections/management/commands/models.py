"""`python manage.py models`: list the stored model versions, or serve one again (`use VERSION`).

The store is `<weights dir>/models/` (see `classifier.ml.modelstore`): every model `train`
stored or `retrain` promoted, and each one served before. `use` (a rollback, or serving a model
`train` stored) keeps the served model in the store, then copies the version's file over the
served weights atomically; running workers switch to it between batches. It holds the serving
lock (`classifier.ml.modellock`) while it does, and refuses, naming the lock, while a `retrain`
or `train --serve` runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from classifier.ml import modelstore
from classifier.ml.modellock import LockHeld, serving_lock
from classifier.ml.weights import WeightsError, read_metadata


def _percent(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.2f}%"


class Command(BaseCommand):
    help = (
        "List the stored model versions (created, MNIST test accuracy, held-out corrections "
        "accuracy, parent; * marks the one served), or `use VERSION` to serve one again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--weights",
            type=Path,
            default=settings.DIGITS_WEIGHTS,
            help=f"the served weights; the store is the models/ folder beside them "
            f"(default: DIGITS_WEIGHTS, now {settings.DIGITS_WEIGHTS})",
        )
        actions = parser.add_subparsers(dest="action", metavar="ACTION")
        use = actions.add_parser(
            "use", help="serve a stored version (written atomically; the served one is kept)"
        )
        use.add_argument("version", metavar="VERSION")

    def handle(self, *args: Any, **options: Any) -> None:
        weights: Path = options["weights"]
        if options.get("action") == "use":
            try:
                with serving_lock(weights, "manage.py models use"):
                    stored = modelstore.serve(weights, options["version"])
            except LockHeld as exc:
                raise CommandError(f"models use: {exc}.") from None
            except (modelstore.UnknownVersion, WeightsError) as exc:
                raise CommandError(str(exc).strip("'\"")) from exc
            self.stdout.write(self.style.SUCCESS(f"Serving {stored.version} ({weights})"))
            return
        try:
            served = read_metadata(weights)["version"]
        except WeightsError:
            served = None
        models = modelstore.listing(weights)
        if not models:
            self.stdout.write(
                f"No stored models in {modelstore.store_dir(weights)}; served: {served or 'none'}"
            )
            return
        self.stdout.write("  version  created  mnist_test  held_out  parent")
        for model in models:
            meta = model.metadata
            mark = "*" if model.version == served else " "
            self.stdout.write(
                f"{mark} {model.version}  {meta.get('created', '-')}  "
                f"{_percent(meta.get('test_accuracy'))}  "
                f"{_percent(meta.get('held_out_accuracy'))}  {meta.get('parent') or '-'}"
            )
        if served not in {m.version for m in models}:
            self.stdout.write(f"served: {served or 'none'} (not in the store)")

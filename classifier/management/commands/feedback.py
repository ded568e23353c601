"""`python manage.py feedback`: review the users' corrections from the shell (docs/feedback.md).

    feedback stats                       counts by status, and by label and status
    feedback accept --all                accept every pending correction
    feedback accept ID [ID ...]          accept these (whatever their status)
    feedback reject ID [ID ...]          reject these
    feedback export DIR [--status S]     DIR/<digit>/<id>.png, torchvision's ImageFolder layout

Plain lines, one fact each, so scripts can read them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from classifier import corrections
from classifier.models import Status


class Command(BaseCommand):
    help = "Review the users' corrections: stats, accept, reject, export (for training)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database",
            default=DEFAULT_DB_ALIAS,
            help="the database alias to use (default: default, which DATABASE_URL names)",
        )
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        actions.add_parser("stats", help="counts by status, and by label and status")
        accept = actions.add_parser("accept", help="accept corrections: they may train")
        which = accept.add_mutually_exclusive_group(required=True)
        which.add_argument("--all", action="store_true", help="every pending correction")
        which.add_argument("ids", nargs="*", type=int, default=[], metavar="ID")
        reject = actions.add_parser("reject", help="reject corrections: they never train")
        reject.add_argument("ids", nargs="+", type=int, metavar="ID")
        export = actions.add_parser(
            "export", help="write DIR/<digit>/<id>.png (28x28), torchvision's ImageFolder layout"
        )
        export.add_argument("directory", type=Path, metavar="DIR", help="a new or empty folder")
        export.add_argument(
            "--status",
            choices=Status.values,
            default=Status.ACCEPTED,
            help="which corrections (default: accepted)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        using = options["database"]
        action = options["action"]
        if action == "stats":
            self._stats(using)
        elif action in ("accept", "reject"):
            status = Status.ACCEPTED if action == "accept" else Status.REJECTED
            ids = None if options.get("all") else options["ids"]
            if ids == []:
                raise CommandError("accept: give correction ids, or --all for every pending one.")
            try:
                changed = corrections.set_status(ids, status, using=using)
            except corrections.UnknownCorrections as exc:
                raise CommandError(f"{exc}; nothing was changed.") from None
            self.stdout.write(f"{status} {changed} correction{'s' * (changed != 1)}")
        else:
            self._export(options["directory"], options["status"], using)

    def _stats(self, using: str) -> None:
        counts = corrections.stats(using=using)
        self.stdout.write(f"total {counts['total']}")
        for status, n in counts["by_status"].items():
            self.stdout.write(f"{status} {n}")
        for digit, by_status in counts["by_label"].items():
            parts = ", ".join(f"{status} {n}" for status, n in by_status.items())
            self.stdout.write(f"label {digit}: {sum(by_status.values())} ({parts})")

    def _export(self, directory: Path, status: str, using: str) -> None:
        try:
            counts = corrections.export(directory, status, using=using)
        except FileExistsError as exc:
            raise CommandError(str(exc)) from None
        total = sum(counts.values())
        self.stdout.write(
            f"exported {total} {status} correction{'s' * (total != 1)} to {directory}"
        )
        for digit, n in counts.items():
            self.stdout.write(f"label {digit}: {n}")

"""`python manage.py feedback`: review the users' corrections from the shell (docs/feedback.md).

    feedback stats                       counts by status, and by label and status
    feedback accept --all                accept every pending correction
    feedback accept ID [ID ...]          accept these (whatever their status)
    feedback reject ID [ID ...]          reject these
    feedback export DIR [--status S]     DIR/<digit>/<id>.png, torchvision's ImageFolder layout
    feedback purge [--older-than DAYS] [--status S ...] [--dry-run]
                                         delete corrections older than DAYS (default:
                                         DIGITS_FEEDBACK_RETENTION_DAYS), of these statuses

Plain lines, one fact each, so scripts can read them.
"""

from __future__ import annotations

from argparse import ArgumentTypeError
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DEFAULT_DB_ALIAS

from classifier.corrections import store as corrections
from classifier.corrections.models import Status


class Command(BaseCommand):
    help = (
        "Review the users' corrections: stats, accept, reject, export (for training), purge "
        "(the old ones)."
    )

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
        retention = settings.DIGITS_FEEDBACK_RETENTION_DAYS
        purge = actions.add_parser(
            "purge", help="delete the corrections created more than DAYS days ago"
        )
        purge.add_argument(
            "--older-than",
            type=_days,
            default=retention or None,
            metavar="DAYS",
            help=f"delete those created more than DAYS days ago (default: "
            f"DIGITS_FEEDBACK_RETENTION_DAYS, now {retention or 'unset: give --older-than'})",
        )
        purge.add_argument(
            "--status",
            nargs="+",
            action="extend",
            choices=Status.values,
            metavar="STATUS",
            help=f"only corrections with these statuses, of {', '.join(Status.values)} "
            "(default: every status)",
        )
        purge.add_argument(
            "--dry-run", action="store_true", help="count them, delete nothing (default: off)"
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
        elif action == "purge":
            self._purge(options["older_than"], options["status"], options["dry_run"], using)
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

    def _purge(
        self, days: float | None, statuses: list[str] | None, dry_run: bool, using: str
    ) -> None:
        if days is None:
            raise CommandError(
                "purge: give --older-than DAYS (DIGITS_FEEDBACK_RETENTION_DAYS is 0: no default)."
            )
        cutoff, counts = corrections.purge(
            timedelta(days=days), statuses, dry_run=dry_run, using=using
        )
        total = sum(counts.values())
        verb = "would purge" if dry_run else "purged"
        which = ", ".join(statuses or Status.values)
        self.stdout.write(
            f"{verb} {total} correction{'s' * (total != 1)} created before "
            f"{cutoff.isoformat(timespec='seconds')} ({which})"
        )
        for status, n in counts.items():
            self.stdout.write(f"{status} {n}")

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


def _days(text: str) -> float:
    """A number of days, 0 or more (fractions allowed: 0.5 is twelve hours)."""
    try:
        days = float(text)
    except ValueError:
        raise ArgumentTypeError(f"not a number of days: {text!r}") from None
    if not days >= 0 or days == float("inf"):
        raise ArgumentTypeError(f"days must be 0 or more, not {text!r}")
    return days

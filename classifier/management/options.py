"""Command options several `manage.py` commands share, each defined once."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path

from django.conf import settings


def add_data_dir(parser: ArgumentParser, downloads: bool = False) -> None:
    """`--data-dir`: where MNIST is (DIGITS_DATA_DIR by default); `downloads` when the command
    fetches it there if missing."""
    fetched = "; downloaded there when missing" if downloads else ""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=settings.DIGITS_DATA_DIR,
        help=f"where MNIST is, as <dir>/MNIST/raw/{fetched} "
        f"(default: DIGITS_DATA_DIR, now {settings.DIGITS_DATA_DIR})",
    )

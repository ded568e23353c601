"""The defaults the benchmarks share: one home for where the weights and MNIST are."""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The weights the repository ships, what a fresh clone serves.
DEFAULT_WEIGHTS = ROOT / "classifier" / "weights" / "digits-cnn.safetensors"
# MNIST beside the checkout (<dir>/MNIST/raw/), where `make test` and CI read it too.
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "datasets"


def add_data_dir(parser: argparse.ArgumentParser, what: str = "MNIST directory") -> None:
    """The `--data-dir` option, `what` its help, DEFAULT_DATA_DIR its default."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"{what} (default: {DEFAULT_DATA_DIR})",
    )

"""The options the benchmarks share, each with one default and one help, and the paths behind them.

Every benchmark builds its parser with `parser(__doc__)` and adds the shared options from here:
the same flag means the same thing, with the same default, in each (`--data-dir`, `--weights`,
`--threads`, `--device`, `--seed`, the feedback writers). Each help states its default.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The weights the repository ships, what a fresh clone serves.
DEFAULT_WEIGHTS = ROOT / "classifier" / "weights" / "digits-cnn.safetensors"
# MNIST and the drawings by people: DIGITS_DATA_DIR when set (as the service reads it), else the
# copy beside the checkout (<dir>/MNIST/raw/, <dir>/pendigits/...), where `make test` and CI read.
BESIDE_CHECKOUT = ROOT.parent / "shared" / "datasets"
DEFAULT_DATA_DIR = Path(os.environ.get("DIGITS_DATA_DIR") or BESIDE_CHECKOUT)


def shown(path: Path) -> str:
    """`path` relative to the checkout when inside it, for helps and reports."""
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A benchmark's parser, described by the first paragraph of its module docstring; its usage
    says `python -m benchmarks.NAME`, as it is run."""
    script = Path(sys.argv[0])
    prog = f"python -m benchmarks.{script.stem}" if script.parent == ROOT / "benchmarks" else None
    return argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])


def add_data_dir(parser: argparse.ArgumentParser, what: str = "MNIST directory") -> None:
    """`--data-dir`: `what` its help; DIGITS_DATA_DIR, else ../shared/datasets, its default."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"{what} (default: DIGITS_DATA_DIR if set, else ../shared/datasets beside the "
        f"checkout; now {DEFAULT_DATA_DIR})",
    )


def add_weights(
    parser: argparse.ArgumentParser, what: str = "weights to score", repeat: bool = False
) -> None:
    """`--weights`, the shipped weights by default; `repeat`: given once per file to compare
    (a list, None when not given: use `weights_of`)."""
    default = shown(DEFAULT_WEIGHTS)
    if repeat:
        parser.add_argument(
            "--weights",
            type=Path,
            action="append",
            help=f"{what}; repeat to compare side by side (default: {default})",
        )
    else:
        parser.add_argument(
            "--weights", type=Path, default=DEFAULT_WEIGHTS, help=f"{what} (default: {default})"
        )


def weights_of(args: argparse.Namespace) -> list[Path]:
    """The files a repeated `--weights` names, the shipped weights when none."""
    return args.weights or [DEFAULT_WEIGHTS]


def add_threads(parser: argparse.ArgumentParser, default: int = 1) -> None:
    """`--threads`: torch's CPU threads."""
    parser.add_argument(
        "--threads", type=int, default=default, help=f"torch CPU threads (default: {default})"
    )


def add_device(
    parser: argparse.ArgumentParser,
    default: str = "cpu",
    what: str = "where the model runs: auto, cpu or cuda",
) -> None:
    """`--device`: a torch device name, or `auto` (CUDA when present)."""
    parser.add_argument("--device", default=default, help=f"{what} (default: {default})")


def add_seed(parser: argparse.ArgumentParser, default: int = 0, what: str = "random seed") -> None:
    """`--seed`: what it seeds in `what`."""
    parser.add_argument("--seed", type=int, default=default, help=f"{what} (default: {default})")


def add_writers(parser: argparse.ArgumentParser) -> None:
    """`--writers`, `--others`, `--per-digit`: the seeded writers of the feedback benchmarks, who
    correct the model, who are only scored, and how often each draws every digit."""
    parser.add_argument(
        "--writers", type=int, default=30, help="writers who draw and correct (default: 30)"
    )
    parser.add_argument(
        "--others", type=int, default=14, help="other writers, scored only (default: 14)"
    )
    parser.add_argument(
        "--per-digit", type=int, default=3, help="drawings of each digit per writer (default: 3)"
    )


def setup_django() -> None:
    """Django set up with the service's settings (unless DJANGO_SETTINGS_MODULE names others):
    for a benchmark that reads them or starts the service. Call it from `main`, after whatever
    environment the settings should read is in place."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "digits_site.settings")
    import django

    django.setup()

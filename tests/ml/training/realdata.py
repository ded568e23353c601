"""The shared data sets for the real-drawing tests: read once, or the test skipped saying where
they were looked for (as tests/conftest.py skips MNIST)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest
from django.conf import settings

from classifier.ml.training.drawings import pendigits, quickdraw, symbols


def data_folder() -> Path:
    return Path(os.environ.get("DIGITS_DATA_DIR") or settings.DIGITS_DATA_DIR)


def _or_skip(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} are not at {path}; set DIGITS_DATA_DIR to ../shared/datasets")
    return path


@functools.cache
def pen_digits() -> list[pendigits.PenDigit]:
    return pendigits.read(_or_skip(pendigits.path_in(data_folder()), "the pen digits"))


@functools.cache
def doodles() -> list[quickdraw.Doodle]:
    return quickdraw.read(_or_skip(quickdraw.path_in(data_folder()), "the Quick, Draw! doodles"))


@functools.cache
def symbol_drawings() -> list[symbols.SymbolDrawing]:
    return symbols.read(_or_skip(symbols.path_in(data_folder()), "the symbols"))

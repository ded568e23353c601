"""Fixtures for the ML core: the real MNIST (skipped with a reason when absent) and images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from django.conf import settings

from classifier.data import MNIST_FILES, MnistData, Split, load_mnist, raw_dir

SHIPPED_WEIGHTS = Path(settings.BASE_DIR) / "classifier" / "weights" / "digits-cnn.safetensors"


def _data_dir() -> Path:
    return Path(os.environ.get("DIGITS_DATA_DIR") or settings.DIGITS_DATA_DIR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The MNIST directory the Makefile points tests at (`../shared/datasets`)."""
    folder = _data_dir()
    missing = [name for name in MNIST_FILES if not (raw_dir(folder) / name).is_file()]
    if missing:
        pytest.skip(
            f"MNIST is not in {raw_dir(folder)} (missing {', '.join(missing)}); "
            "set DIGITS_DATA_DIR or run through `make test`"
        )
    return folder


@pytest.fixture(scope="session")
def mnist(data_dir: Path) -> MnistData:
    return load_mnist(data_dir, download=False)


@pytest.fixture(scope="session")
def test_digits(mnist: MnistData) -> Split:
    """The first 200 test images: enough to judge a model, quick to push through PIL."""
    return mnist.test.head(200)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)

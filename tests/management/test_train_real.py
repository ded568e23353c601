"""The shipped recipe's two commands on real drawings (Makefile `train`), in miniature: the
network learns the training writers' pen digits, its head the real non-digits, and the weights
name the datasets they learned from, their licences and the writers held out."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from classifier.ml.training.drawings import pendigits
from classifier.ml.training.realdata import pen_split
from classifier.ml.weights import load_weights
from tests.helpers import SHIPPED_WEIGHTS

pytestmark = pytest.mark.slow


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def _pen_digits_or_skip(data_dir) -> None:
    if not pendigits.path_in(data_dir).is_file():
        pytest.skip(f"the pen digits are not under {data_dir}")


def test_train_learns_the_training_writers_and_names_its_datasets(data_dir, tmp_path):
    _pen_digits_or_skip(data_dir)
    network = tmp_path / "network" / "w.safetensors"
    text = run(
        "train", "--epochs", "1", "--limit", "1000", "--batch-size", "100", "--device", "cpu",
        "--real-per-batch", "16", "--data-dir", str(data_dir), "--output", str(network),
        "--no-progress",
    )  # fmt: skip
    assert "pen digits of the training writers" in text and "pen writers " in text
    _, metadata = load_weights(network)
    split = pen_split(data_dir).describe()
    assert set(metadata["datasets"]) == {"MNIST", "pendigits"}
    assert "CC BY 4.0" in metadata["datasets"]["pendigits"]
    assert metadata["real_digits"]["validation_writers"] == split["validation_writers"]
    assert metadata["training"]["real_per_batch"] == 16


def test_train_detector_learns_real_nondigits_and_keeps_held_out_writers(data_dir, tmp_path):
    _pen_digits_or_skip(data_dir)
    final = tmp_path / "final.safetensors"
    text = run(
        "train_detector", "--real", "--base-weights", str(SHIPPED_WEIGHTS), "--output", str(final),
        "--outlier-pool", "200", "--drawn-pool", "100", "--mnist-digits", "300", "--epochs", "1",
        "--copies", "0", "--data-dir", str(data_dir),
    )  # fmt: skip
    assert "validation writers' pen digits" in text
    _, metadata = load_weights(final)
    split = pen_split(data_dir).describe()
    assert {"quickdraw", "symbols"} <= set(metadata["datasets"])
    assert "MIT" in metadata["datasets"]["symbols"]
    assert metadata["detector"]["real"] is True
    assert metadata["detector"]["counts"]["real_outliers"] > 1000
    assert metadata["detector"]["threshold_writers"] == split["validation_writers"]


def test_real_training_without_the_pen_digits_says_how_to_do_without(data_dir, tmp_path):
    (tmp_path / "MNIST").symlink_to(data_dir / "MNIST")
    with pytest.raises(CommandError, match="--real-per-batch 0"):
        run(
            "train", "--real-per-batch", "8", "--data-dir", str(tmp_path), "--no-download",
            "--output", str(tmp_path / "w.safetensors"),
        )  # fmt: skip

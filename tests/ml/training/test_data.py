"""MNIST loading: the official split, and clear errors for missing, truncated or foreign files."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from classifier.ml.training import data as data_module
from classifier.ml.training.data import (
    MNIST_FILES,
    TEST_LABELS,
    TRAIN_IMAGES,
    VALIDATION_SIZE,
    DataError,
    ensure_mnist,
    load_mnist,
    load_test_split,
    raw_dir,
    split_validation,
)


def copy_of(data_dir: Path, tmp_path: Path) -> Path:
    """A private MNIST directory: links to the real files, which a test may then replace."""
    target = raw_dir(tmp_path)
    target.mkdir(parents=True)
    for name in MNIST_FILES:
        (target / name).symlink_to(raw_dir(data_dir) / name)
    return tmp_path


def replace_with(folder: Path, name: str, content: bytes) -> Path:
    path = raw_dir(folder) / name
    path.unlink()
    path.write_bytes(content)
    return path


def test_official_split(mnist):
    assert mnist.train.images.shape == (60_000 - VALIDATION_SIZE, 28, 28)
    assert mnist.validation.images.shape == (VALIDATION_SIZE, 28, 28)
    assert mnist.test.images.shape == (10_000, 28, 28)
    assert mnist.train.images.dtype == torch.uint8
    assert mnist.train.labels.dtype == torch.int64
    assert set(mnist.test.labels.unique().tolist()) == set(range(10))
    assert mnist.checksum.startswith("sha256:") and len(mnist.checksum) == 7 + 64


def test_validation_hold_out_is_fixed_and_disjoint(mnist):
    images = torch.cat([mnist.train.images, mnist.validation.images])
    labels = torch.cat([mnist.train.labels, mnist.validation.labels])
    from classifier.ml.training.data import Split

    whole = Split(images, labels)
    train_a, val_a = split_validation(whole)
    _, val_b = split_validation(whole)
    assert torch.equal(val_a.images, val_b.images)
    assert len(train_a) + len(val_a) == 60_000
    # No validation image is also a training image (compare the exact pixels).
    train_keys = {bytes(image.numpy()) for image in train_a.images[:20_000]}
    assert not any(bytes(image.numpy()) in train_keys for image in val_a.images[:500])


def test_head_limits_the_training_set(mnist):
    assert len(mnist.train.head(1000)) == 1000
    assert mnist.train.head(None) is mnist.train


def test_missing_files_without_download_name_all_four(tmp_path):
    with pytest.raises(DataError) as info:
        ensure_mnist(tmp_path, download=False)
    message = str(info.value)
    for name in MNIST_FILES:
        assert name in message
    assert str(raw_dir(tmp_path)) in message


def test_missing_files_offline_stop_at_once(tmp_path, monkeypatch):
    # Mirrors nobody answers (a closed local port), as on a machine without internet.
    monkeypatch.setattr(data_module.MNIST, "mirrors", ["http://127.0.0.1:9/mnist/"])
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path, download=True)
    message = str(info.value)
    assert "cannot be downloaded" in message
    for name in MNIST_FILES:
        assert name in message
    assert not any(tmp_path.rglob("*-ubyte*"))  # nothing half-downloaded left behind


def test_one_missing_file(data_dir, tmp_path):
    folder = copy_of(data_dir, tmp_path)
    (raw_dir(folder) / TEST_LABELS).unlink()
    with pytest.raises(DataError, match=TEST_LABELS):
        load_test_split(folder, download=False)


def test_truncated_file(data_dir, tmp_path):
    folder = copy_of(data_dir, tmp_path)
    content = (raw_dir(data_dir) / TEST_LABELS).read_bytes()
    replace_with(folder, TEST_LABELS, content[:5000])
    with pytest.raises(DataError, match="truncated"):
        load_test_split(folder, download=False)


def test_truncated_header(data_dir, tmp_path):
    folder = copy_of(data_dir, tmp_path)
    replace_with(folder, TEST_LABELS, b"\x00\x00")
    with pytest.raises(DataError, match="truncated"):
        load_test_split(folder, download=False)


def test_still_gzipped_file(data_dir, tmp_path):
    folder = copy_of(data_dir, tmp_path)
    content = (raw_dir(data_dir) / TEST_LABELS).read_bytes()
    replace_with(folder, TEST_LABELS, gzip.compress(content))
    with pytest.raises(DataError, match="gzip"):
        load_test_split(folder, download=False)


def test_labels_file_where_images_belong(data_dir, tmp_path):
    folder = copy_of(data_dir, tmp_path)
    replace_with(folder, TRAIN_IMAGES, (raw_dir(data_dir) / TEST_LABELS).read_bytes())
    with pytest.raises(DataError, match="not an MNIST image file"):
        load_mnist(folder, download=False)


def test_corrupt_label_values(data_dir, tmp_path):
    folder = copy_of(data_dir, tmp_path)
    content = bytearray((raw_dir(data_dir) / TEST_LABELS).read_bytes())
    content[100] = 42
    replace_with(folder, TEST_LABELS, bytes(content))
    with pytest.raises(DataError, match=r"outside 0\.\.9"):
        load_test_split(folder, download=False)


def test_directory_in_place_of_a_file(tmp_path):
    folder = raw_dir(tmp_path)
    folder.mkdir(parents=True)
    for name in MNIST_FILES:
        (folder / name).mkdir()  # a directory where a file should be
    with pytest.raises(DataError, match="missing"):
        ensure_mnist(tmp_path, download=False)

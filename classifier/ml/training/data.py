"""MNIST on disk: find it (or download it), check it, and hold it in memory as uint8 tensors.

torchvision's `MNIST` does the reading, but it answers a missing file with "Dataset not found",
a truncated one with an assertion, and an offline download with a long hang on each mirror. The
checks here come first so a user learns which file is wrong and where it belongs.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torchvision.datasets import MNIST

logger = logging.getLogger(__name__)

# The four raw files torchvision's MNIST reads, with the header each must carry:
# (magic number, item count) and, for images, 28x28.
TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
MNIST_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
TRAIN_COUNT = 60_000
TEST_COUNT = 10_000
_EXPECTED = {
    TRAIN_IMAGES: (IMAGES_MAGIC, TRAIN_COUNT),
    TRAIN_LABELS: (LABELS_MAGIC, TRAIN_COUNT),
    TEST_IMAGES: (IMAGES_MAGIC, TEST_COUNT),
    TEST_LABELS: (LABELS_MAGIC, TEST_COUNT),
}
ROWS = COLS = 28

# How long to wait for a mirror before deciding we are offline.
CONNECT_TIMEOUT_S = 3.0
# The 5,000 training images held out to choose the checkpoint are the same for every run: this
# seed is not the training seed.
VALIDATION_SIZE = 5_000
SPLIT_SEED = 20_240_601


class DataError(Exception):
    """MNIST is missing, corrupt or cannot be downloaded; the message says what to do."""


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def head(self, limit: int | None) -> Split:
        if limit is None or limit >= len(self):
            return self
        return Split(self.images[:limit], self.labels[:limit])


@dataclass(frozen=True)
class MnistData:
    train: Split
    validation: Split
    test: Split
    checksum: str  # sha256 over the four raw files, recorded with the weights


def raw_dir(data_dir: Path | str) -> Path:
    """Where torchvision keeps the raw files under `data_dir`."""
    return Path(data_dir) / "MNIST" / "raw"


def missing_files_message(data_dir: Path | str) -> str:
    return (
        f"MNIST is not in {raw_dir(data_dir)} and cannot be downloaded (no connection to "
        f"{', '.join(urlparse(m).hostname or m for m in MNIST.mirrors)}). Put the four files "
        f"{', '.join(MNIST_FILES)} (uncompressed, from http://yann.lecun.com/exdb/mnist/ or "
        f"{MNIST.mirrors[0]}) in {raw_dir(data_dir)}, or point --data-dir / DIGITS_DATA_DIR "
        f"at a directory that has them under MNIST/raw/."
    )


def _online(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    for mirror in MNIST.mirrors:
        parsed = urlparse(mirror)
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def check_file(path: Path) -> None:
    """Raise `DataError` unless `path` is a complete MNIST IDX file of the expected kind."""
    name = path.name
    magic_expected, count_expected = _EXPECTED[name]
    is_images = magic_expected == IMAGES_MAGIC
    header_size = 16 if is_images else 8
    item_size = ROWS * COLS if is_images else 1
    size_expected = header_size + count_expected * item_size
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            header = handle.read(header_size)
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    if len(header) < header_size:
        raise DataError(f"{path} is truncated ({size} bytes; expected {size_expected}).")
    magic, count = struct.unpack(">II", header[:8])
    if magic != magic_expected:
        raise DataError(
            f"{path} is not an MNIST {'image' if is_images else 'label'} file "
            f"(magic number {magic}, expected {magic_expected}). Is it still gzip-compressed?"
        )
    if count != count_expected:
        raise DataError(f"{path} holds {count} items; expected {count_expected}.")
    if is_images:
        rows, cols = struct.unpack(">II", header[8:16])
        if (rows, cols) != (ROWS, COLS):
            raise DataError(f"{path} holds {rows}x{cols} images; expected {ROWS}x{COLS}.")
    if size != size_expected:
        state = "truncated" if size < size_expected else "longer than an MNIST file"
        raise DataError(f"{path} is {state} ({size} bytes; expected {size_expected}).")


def checksum(data_dir: Path | str) -> str:
    """sha256 over the four raw files, in a fixed order: identifies the data a model saw."""
    digest = hashlib.sha256()
    for name in MNIST_FILES:
        with (raw_dir(data_dir) / name).open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def ensure_mnist(data_dir: Path | str, download: bool = True) -> Path:
    """Make sure the four raw files are in `data_dir` and whole; download them when missing.

    Offline, this fails at once (a short connection probe) instead of hanging on each mirror.
    """
    folder = raw_dir(data_dir)
    missing = [name for name in MNIST_FILES if not (folder / name).is_file()]
    if missing:
        if not download:
            raise DataError(
                f"MNIST files missing from {folder}: {', '.join(missing)}. "
                + missing_files_message(data_dir)
            )
        if not _online():
            raise DataError(missing_files_message(data_dir))
        logger.info("Downloading MNIST into %s", folder)
        try:
            MNIST(str(data_dir), train=True, download=True)
        except Exception as exc:
            raise DataError(
                f"Downloading MNIST failed: {exc}. {missing_files_message(data_dir)}"
            ) from exc
    for name in MNIST_FILES:
        check_file(folder / name)
    return folder


def _read(data_dir: Path | str, train: bool) -> Split:
    dataset = MNIST(str(data_dir), train=train, download=False)
    labels = dataset.targets.long()
    if int(labels.min()) < 0 or int(labels.max()) > 9:
        raise DataError(f"MNIST labels in {raw_dir(data_dir)} are outside 0..9: corrupt file?")
    return Split(dataset.data.contiguous(), labels.contiguous())


def split_validation(
    train: Split, size: int = VALIDATION_SIZE, seed: int = SPLIT_SEED
) -> tuple[Split, Split]:
    """A fixed random hold-out of the training set (the same images for every training seed)."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator)
    held, kept = order[:size], order[size:]
    return (
        Split(train.images[kept], train.labels[kept]),
        Split(train.images[held], train.labels[held]),
    )


def load_mnist(
    data_dir: Path | str, download: bool = True, validation_size: int = VALIDATION_SIZE
) -> MnistData:
    """The official split: 60,000 training images (less a validation hold-out), 10,000 test."""
    ensure_mnist(data_dir, download=download)
    train, validation = split_validation(_read(data_dir, train=True), validation_size)
    return MnistData(
        train=train,
        validation=validation,
        test=_read(data_dir, train=False),
        checksum=checksum(data_dir),
    )


def load_test_split(data_dir: Path | str, download: bool = True) -> Split:
    """Only the 10,000 test images (for `evaluate`)."""
    ensure_mnist(data_dir, download=download)
    return _read(data_dir, train=False)

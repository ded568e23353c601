"""Answer batches of 28x28 digits with ten probabilities each, from weights loaded once.

A worker process holds one `Predictor`. Weights change under it when `train` writes new ones:
`reload_if_changed` notices (a cheap stat), loads the new file into a fresh model beside the old
one and swaps the reference in one assignment, so a batch already running finishes on the model
it started with and no request fails. A bad new file is logged and the old model keeps serving.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from classifier.ml.devices import resolve_device
from classifier.ml.input import IMAGE_SIZE
from classifier.ml.model import build_model, normalize
from classifier.ml.rejection import Rejection, has_detector
from classifier.ml.weights import (
    WeightsError,
    config_from_metadata,
    load_weights,
    rejection_from_metadata,
)

__all__ = ["Predictor", "Scored", "WeightsError", "resolve_device"]

logger = logging.getLogger(__name__)

_Module = TypeVar("_Module", bound=nn.Module)

# Batch sizes `warm_up` runs once, so the first real requests do not pay for kernel selection.
WARM_UP_BATCHES = (1, 8, 64)


def optimise_for_inference(model: _Module, device: torch.device) -> _Module:
    """The model on `device`, ready to serve: each batch norm folded into the convolution before
    it, weights in channels-last layout (the layout the training loop also uses).

    Measured on a 2-core AVX2 CPU, one thread (benchmarks/inference_speed.py): about 1.6x the
    eager model's images/s at batch 1 and 2.5-3x at batch 64, with the same probabilities to
    1e-5. TorchScript's optimize_for_inference was no faster; torch.fx's `fuse` does the same
    folding but patches nn.Module globally while it traces, which breaks predictions running
    in other threads during a reload.
    """
    model = model.to(device).eval()
    _fold_batch_norm(model)
    return model.to(memory_format=torch.channels_last)


def _fold_batch_norm(module: nn.Module) -> None:
    """Replace each Conv2d + BatchNorm2d pair in a Sequential by one Conv2d (eval mode only)."""
    for child in module.children():
        _fold_batch_norm(child)
    if not isinstance(module, nn.Sequential):
        return
    for index in range(len(module) - 1):
        conv, norm = module[index], module[index + 1]
        if (
            isinstance(conv, nn.Conv2d)
            and isinstance(norm, nn.BatchNorm2d)
            and norm.track_running_stats
        ):
            module[index] = fuse_conv_bn_eval(conv, norm)
            module[index + 1] = nn.Identity()


def _file_identity(path: Path) -> tuple[int, int, int, int]:
    """What changes when a file is rewritten or replaced: device, inode, size, mtime."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class _Loaded:
    """One model with its version: swapped as a unit, so answers name the model that made them."""

    model: nn.Module
    version: str
    metadata: dict
    identity: tuple[int, int, int, int]
    rejection: Rejection | None  # None: weights from before rejection, everything is a digit


@dataclass(frozen=True)
class Scored:
    """What one model call says of a batch: probabilities (N, 10), the digit-likeness score of
    each image (N,), whether it is a digit (N,), and the version of the model."""

    probabilities: np.ndarray
    scores: np.ndarray
    is_digit: np.ndarray
    version: str
    # Whether each, as a piece of a number, is a digit (`Rejection.number_threshold`).
    in_number: np.ndarray | None = None

    @property
    def piece_is_digit(self) -> np.ndarray:
        """`in_number`, or `is_digit` where the weights judge pieces alike."""
        return self.is_digit if self.in_number is None else self.in_number


class Predictor:
    """A model on a device, ready to score batches of preprocessed digits."""

    def __init__(self, path: Path | str, device: torch.device, loaded: _Loaded):
        self.path = Path(path)
        self.device = device
        self._loaded = loaded
        # The identity of a file that failed to load, so a bad file is reported once, not on
        # every check.
        self._rejected: tuple[int, int, int, int] | None = None
        self._reload_lock = threading.Lock()

    @classmethod
    def load(cls, path: Path | str, device: str = "auto") -> Predictor:
        """Load the weights at `path` onto `device` ("auto", "cpu", "cuda"); raises WeightsError."""
        resolved = resolve_device(device)
        path = Path(path)
        return cls(path, resolved, cls._load_file(path, resolved))

    @staticmethod
    def _load_file(path: Path, device: torch.device) -> _Loaded:
        try:
            identity = _file_identity(path)
        except FileNotFoundError:
            identity = (0, 0, 0, 0)  # load_weights names the missing file
        state_dict, metadata = load_weights(path)
        model = build_model(config_from_metadata(metadata))
        model.load_state_dict(state_dict)
        model = optimise_for_inference(model, device)
        version = str(metadata.get("version") or f"{metadata['architecture']}-unversioned")
        return _Loaded(
            model=model,
            version=version,
            metadata=metadata,
            identity=identity,
            rejection=rejection_from_metadata(metadata),
        )

    @property
    def version(self) -> str:
        return self._loaded.version

    @property
    def metadata(self) -> dict:
        return self._loaded.metadata

    @property
    def model(self) -> nn.Module:
        """The model now serving (in eval mode, on `device`)."""
        return self._loaded.model

    @property
    def rejection(self) -> Rejection | None:
        """How the serving model tells non-digits apart; None: it does not."""
        return self._loaded.rejection

    def predict_scored(self, images: np.ndarray | torch.Tensor) -> Scored:
        """Probabilities, scores and `is_digit` for uint8 images (N, 28, 28), all from one
        forward pass, with the version of the model that made them."""
        loaded = self._loaded  # one read: a concurrent swap cannot mix two models in one batch
        x = torch.as_tensor(images)
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3 or tuple(x.shape[1:]) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"Expected images of shape (N, {IMAGE_SIZE}, {IMAGE_SIZE}), got {tuple(x.shape)}."
            )
        if x.shape[0] == 0:
            empty = np.zeros(0, dtype=np.float32)
            return Scored(
                np.zeros((0, 10), dtype=np.float32), empty, empty.astype(bool), loaded.version
            )
        with torch.inference_mode():
            batch = normalize(x.to(self.device)).contiguous(memory_format=torch.channels_last)
            # A model with a detector head scores digits in the same pass as its logits.
            if has_detector(loaded.model):
                logits, detector = loaded.model.forward_scored(batch)
            else:
                logits, detector = loaded.model(batch), None
            logits = logits.float()
            probabilities = torch.softmax(logits, dim=1)
            rejection = loaded.rejection
            if rejection is None or (rejection.score == "msp" and rejection.temperature == 1.0):
                scores = probabilities.amax(dim=1)  # the score at hand: no second softmax
            else:
                scores = rejection.scores(logits, detector)
            if rejection is None:
                is_digit = in_number = torch.ones_like(scores, dtype=torch.bool)
            else:
                is_digit = scores >= rejection.threshold
                in_number = scores >= rejection.piece_threshold
        return Scored(
            probabilities=probabilities.cpu().numpy().astype(np.float32, copy=False),
            scores=scores.cpu().numpy().astype(np.float32, copy=False),
            is_digit=is_digit.cpu().numpy(),
            version=loaded.version,
            in_number=in_number.cpu().numpy(),
        )

    def predict_with_version(self, images: np.ndarray | torch.Tensor) -> tuple[np.ndarray, str]:
        """Probabilities (N, 10) for uint8 images (N, 28, 28), and the version that made them."""
        scored = self.predict_scored(images)
        return scored.probabilities, scored.version

    def predict_proba(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Probabilities (N, 10), float32, for uint8 images (N, 28, 28) from `to_mnist`."""
        return self.predict_with_version(images)[0]

    def warm_up(self) -> None:
        """Run a few dummy batches so the first request is as fast as the rest."""
        for batch in WARM_UP_BATCHES:
            self.predict_proba(np.zeros((batch, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def reload_if_changed(self) -> bool:
        """Load the weights file again if it changed since it was loaded; True when swapped.

        Cheap enough to call often (one stat); the caller decides how often. A missing or bad
        new file is logged and the current model keeps serving.
        """
        try:
            identity = _file_identity(self.path)
        except OSError as exc:
            if self._rejected != (0, 0, 0, 0):
                logger.error(
                    "Weights file %s is unavailable (%s); keeping %s", self.path, exc, self.version
                )
                self._rejected = (0, 0, 0, 0)
            return False
        if identity == self._loaded.identity or identity == self._rejected:
            return False
        with self._reload_lock:
            if identity == self._loaded.identity:
                return False
            try:
                loaded = self._load_file(self.path, self.device)
            except (WeightsError, RuntimeError, ValueError, OSError) as exc:
                self._rejected = identity
                logger.error(
                    "New weights at %s rejected, still serving %s: %s", self.path, self.version, exc
                )
                return False
            # Warm the new model before it takes traffic.
            with torch.inference_mode():
                loaded.model(
                    normalize(
                        torch.zeros(
                            1, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8, device=self.device
                        )
                    )
                )
            previous = self._loaded.version
            self._loaded = loaded
            self._rejected = None
            logger.info("Switched model %s -> %s", previous, loaded.version)
            return True

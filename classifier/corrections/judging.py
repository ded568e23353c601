"""Judging a new model against the served one, as `retrain` and `train` both do.

The accepted corrections are split by a stable hash of their image (`classifier.ml.training.finetune
.is_held_out`): a fixed fifth is held out to judge, the rest may train. Each model is scored on
the MNIST test set and on the held-out corrections; `classifier.ml.training.finetune.gate` decides.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from classifier.corrections import store as corrections
from classifier.ml.devices import resolve_device
from classifier.ml.training.data import Split
from classifier.ml.training.finetune import Scores, is_held_out
from classifier.ml.training.train import evaluate_model


def _split(images, labels) -> Split:
    return Split(torch.from_numpy(images), torch.from_numpy(labels))


@dataclass(frozen=True)
class SplitCorrections:
    """The accepted corrections, and which of them train (`train_idx`) and judge (`held_idx`)."""

    accepted: corrections.AcceptedCorrections
    train_idx: list[int]
    held_idx: list[int]

    def train(self) -> Split:
        return _split(self.accepted.images[self.train_idx], self.accepted.labels[self.train_idx])

    def held_out(self) -> Split:
        return _split(self.accepted.images[self.held_idx], self.accepted.labels[self.held_idx])

    def manifest(self) -> dict:
        """The ids and image hashes of each side, for the new model's metadata."""
        return {
            side: {
                "ids": [self.accepted.ids[i] for i in idx],
                "image_hashes": [self.accepted.image_hashes[i] for i in idx],
            }
            for side, idx in (("train", self.train_idx), ("held_out", self.held_idx))
        }


def split_corrections(using: str) -> SplitCorrections:
    """The accepted corrections of database `using`, split into training and held-out ones."""
    accepted = corrections.accepted_arrays(using=using)
    held = [is_held_out(h) for h in accepted.image_hashes]
    return SplitCorrections(
        accepted,
        [i for i, h in enumerate(held) if not h],
        [i for i, h in enumerate(held) if h],
    )


def scores(model: nn.Module, test: Split, held_out: Split, device: str) -> Scores:
    """The model's accuracy on the MNIST test set and on the held-out corrections (None: none);
    the model is left on the CPU."""
    where = resolve_device(device)
    mnist = evaluate_model(model, test, where).accuracy
    held = evaluate_model(model, held_out, where).accuracy if len(held_out) else None
    model.to("cpu")
    return Scores(mnist_test=mnist, held_out=held)

"""Which torch device to run on: one rule for training, evaluation and the workers."""

from __future__ import annotations

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """ "auto" takes CUDA when present, else the CPU; "cuda" without a GPU is an error, not a
    silent fallback, so an operator who asked for a GPU learns they did not get one."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"Device {name!r} was asked for, but CUDA is not available here.")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"Unknown device {name!r}; use one of {', '.join(DEVICE_CHOICES)}.")

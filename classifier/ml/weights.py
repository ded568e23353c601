"""Model weights on disk: safetensors with our metadata, written atomically, checked on load.

safetensors holds only tensors and a JSON header, so loading runs no code (a pickled checkpoint
could run anything). The header's metadata carries the network's constructor arguments
(`model_args`), the training run's hyperparameters and figures, and the model version, so the
file alone rebuilds and explains its model; a sidecar `<weights>.json` repeats it for people.
Writers replace the file in one `os.replace`, so a worker watching the path never reads half a
file.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from classifier.ml.model import ARCHITECTURES, ModelConfig, build_model, model_config
from classifier.ml.rejection import Rejection

# Marks a file as written by this project, and the layout of its metadata.
WEIGHTS_FORMAT = "digits-weights/1"
SIDECAR_SUFFIX = ".json"
# A training run's report beside its weights (classifier.ml.training.report): figures and plots.
REPORT_JSON_SUFFIX = ".report.json"
REPORT_PNG_SUFFIX = ".report.png"
# Safetensors header length is a little-endian u64; refuse absurd headers before reading them.
_MAX_HEADER_BYTES = 16 * 1024 * 1024


class WeightsError(Exception):
    """Weights that cannot be used: missing, truncated, corrupt or made for another model."""


def sidecar_path(path: Path | str) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def report_paths(weights_path: Path | str) -> tuple[Path, Path]:
    """`digits-cnn.safetensors` -> `digits-cnn.report.json`, `digits-cnn.report.png`."""
    weights_path = Path(weights_path)
    stem = weights_path.with_suffix("")
    return (
        stem.with_name(stem.name + REPORT_JSON_SUFFIX),
        stem.with_name(stem.name + REPORT_PNG_SUFFIX),
    )


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 of the tensors (names, shapes, bytes): the same weights give the same digest."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def make_version_id(
    architecture: str, state_dict: dict[str, torch.Tensor], created: datetime
) -> str:
    """A readable, unique model version: architecture, UTC time, and a digest of the weights."""
    return f"{architecture}-{created:%Y%m%d-%H%M%S}-{weights_digest(state_dict)[:8]}"


def atomic_write(path: Path, data: bytes) -> None:
    """Write a file so that readers see the old one or the new one, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, before os.replace
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    )
    try:
        with handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, 0o644)
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise


def config_from_metadata(metadata: dict) -> ModelConfig:
    """The network a weights file describes: its `model_args`, or (files written before they
    were stored) the named architecture's. ValueError when neither is usable."""
    if "model_args" in metadata:
        if not isinstance(metadata["model_args"], dict):
            raise ValueError(f"bad model arguments {metadata['model_args']!r}")
        return ModelConfig.from_dict(metadata["model_args"])
    return model_config(str(metadata.get("architecture")))


def rejection_from_metadata(metadata: dict) -> Rejection | None:
    """How the weights tell non-digits apart (`classifier.ml.rejection`), or None for files
    written before they could: everything is then a digit. ValueError when unusable."""
    if metadata.get("rejection") is None:
        return None
    return Rejection.from_dict(metadata["rejection"])


def _state_dict(model: nn.Module | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model.state_dict() if isinstance(model, nn.Module) else model
    # safetensors wants contiguous CPU tensors that share no storage.
    return {name: t.detach().to("cpu").contiguous().clone() for name, t in state.items()}


def save_weights(
    model: nn.Module | dict[str, torch.Tensor], path: Path | str, metadata: dict
) -> dict:
    """Write the weights and their metadata atomically; returns the metadata as stored.

    `metadata` must name the `architecture`, and carry `model_args` unless that name is a known
    architecture (whose arguments are then stored); `version`, `created` and `torch_version` are
    filled in when absent. The sidecar JSON is written first, so whoever sees new weights finds
    their description already there.
    """
    path = Path(path)
    if not isinstance(metadata.get("architecture"), str):
        raise ValueError(f"metadata must name the architecture, got {metadata!r}.")
    try:
        config = config_from_metadata(metadata)
    except ValueError as exc:
        raise ValueError(f"metadata must describe the network: {exc}.") from exc
    metadata = {**metadata, "model_args": config.as_dict()}
    tensors = _state_dict(model)
    created = datetime.now(UTC).replace(microsecond=0)
    stored = {
        "format": WEIGHTS_FORMAT,
        "created": created.isoformat(),
        "torch_version": torch.__version__,
        **metadata,
    }
    stored.setdefault("version", make_version_id(stored["architecture"], tensors, created))
    header = {
        "format": WEIGHTS_FORMAT,
        "architecture": stored["architecture"],
        "version": stored["version"],
        "metadata": json.dumps(stored, sort_keys=True),
    }
    atomic_write(sidecar_path(path), (json.dumps(stored, indent=2, sort_keys=True) + "\n").encode())
    atomic_write(path, save_safetensors(tensors, metadata=header))
    return stored


def _read_header(path: Path, data: bytes) -> dict:
    if len(data) < 8:
        raise WeightsError(f"Weights file {path} is truncated ({len(data)} bytes).")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > _MAX_HEADER_BYTES:
        raise WeightsError(f"Weights file {path} is not a safetensors file (bad header length).")
    if 8 + header_len > len(data):
        raise WeightsError(f"Weights file {path} is truncated (its header is cut off).")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, ValueError) as exc:
        raise WeightsError(f"Weights file {path} is not a safetensors file.") from exc
    if not isinstance(header, dict):
        raise WeightsError(f"Weights file {path} is not a safetensors file.")
    ends = [
        entry["data_offsets"][1]
        for key, entry in header.items()
        if key != "__metadata__" and isinstance(entry, dict) and "data_offsets" in entry
    ]
    if 8 + header_len + max(ends, default=0) > len(data):
        raise WeightsError(f"Weights file {path} is truncated (tensor data is missing).")
    return header


def load_weights(path: Path | str) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and check weights: a state dict (CPU tensors) that fits its architecture, and metadata.

    Raises `WeightsError` saying which file and why for a missing, truncated, corrupt or foreign
    file, or one whose tensors do not fit the architecture it names.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(
            f"Weights file {path} does not exist; train a model with `python manage.py train`."
        ) from None
    except IsADirectoryError:
        raise WeightsError(f"Weights path {path} is a directory, not a weights file.") from None
    except OSError as exc:
        raise WeightsError(f"Cannot read weights file {path}: {exc.strerror or exc}.") from exc

    header = _read_header(path, data)
    info = header.get("__metadata__") or {}
    if info.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"Weights file {path} was not written by Digits (no {WEIGHTS_FORMAT!r} metadata)."
        )
    try:
        metadata = json.loads(info["metadata"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"Weights file {path} has unreadable metadata.") from exc
    architecture = metadata.get("architecture")
    try:
        config = config_from_metadata(metadata)
    except ValueError as exc:
        if "model_args" in metadata:
            raise WeightsError(f"Weights file {path} has unusable model arguments: {exc}.") from exc
        raise WeightsError(
            f"Weights file {path} is for architecture {architecture!r}, which this version of "
            f"Digits does not know (known: {', '.join(sorted(ARCHITECTURES))})."
        ) from exc
    metadata = {**metadata, "model_args": config.as_dict()}
    try:
        rejection_from_metadata(metadata)
    except ValueError as exc:
        raise WeightsError(f"Weights file {path} has unusable rejection settings: {exc}.") from exc
    try:
        state_dict = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error type for every defect
        raise WeightsError(f"Weights file {path} is corrupt: {exc}.") from exc

    _check_fits(path, architecture, config, state_dict)
    return state_dict, metadata


def _check_fits(
    path: Path, architecture: str, config: ModelConfig, state_dict: dict[str, torch.Tensor]
) -> None:
    expected = build_model(config).state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [
        f"{name} {tuple(state_dict[name].shape)} (expected {tuple(expected[name].shape)})"
        for name in sorted(set(expected) & set(state_dict))
        if state_dict[name].shape != expected[name].shape
        or state_dict[name].dtype != expected[name].dtype
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {', '.join(missing[:5])}")
    if unexpected:
        problems.append(f"unexpected tensors {', '.join(unexpected[:5])}")
    if wrong:
        problems.append(f"wrong shapes or types {', '.join(wrong[:5])}")
    if problems:
        raise WeightsError(
            f"Weights file {path} does not fit architecture {architecture!r}: "
            + "; ".join(problems)
            + "."
        )
    bad = [
        name for name, t in state_dict.items() if t.is_floating_point() and not t.isfinite().all()
    ]
    if bad:
        raise WeightsError(f"Weights file {path} holds non-finite values in {', '.join(bad[:5])}.")


def read_metadata(path: Path | str) -> dict:
    """The metadata of a weights file, checked like `load_weights` does."""
    return load_weights(path)[1]

"""The model store: every promoted model, and each one it replaced, kept beside the weights.

`<weights dir>/models/<version>.safetensors`, each with its sidecar JSON, so `manage.py models`
can list them and `models use VERSION` can serve one again. Serving a version copies its file
over the served path with `atomic_write` (sidecar first), so running workers, which watch that
path, switch to it between batches and never read half a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from classifier.ml.weights import (
    SIDECAR_SUFFIX,
    WeightsError,
    atomic_write,
    read_metadata,
    save_weights,
    sidecar_path,
)

STORE_DIR = "models"
SUFFIX = ".safetensors"


class UnknownVersion(LookupError):
    """No model of that version is in the store."""


@dataclass(frozen=True)
class StoredModel:
    version: str
    path: Path
    metadata: dict


def store_dir(weights: Path | str) -> Path:
    return Path(weights).parent / STORE_DIR


def stored_path(weights: Path | str, version: str) -> Path:
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise UnknownVersion(f"{version!r} is not a model version")
    return store_dir(weights) / f"{version}{SUFFIX}"


def _metadata(path: Path) -> dict:
    """The sidecar, when readable (quick: no tensors); else the file's own header."""
    try:
        return json.loads(sidecar_path(path).read_text())
    except (OSError, ValueError):
        return read_metadata(path)


def keep(weights: Path | str) -> StoredModel:
    """Copy the weights file (and sidecar) into the store under its version, if not there yet."""
    weights = Path(weights)
    metadata = read_metadata(weights)
    target = stored_path(weights, metadata["version"])
    if not target.is_file():
        sidecar = sidecar_path(weights)
        sidecar_bytes = (
            sidecar.read_bytes()
            if sidecar.is_file()
            else (json.dumps(metadata, indent=2, sort_keys=True) + "\n").encode()
        )
        atomic_write(sidecar_path(target), sidecar_bytes)
        atomic_write(target, weights.read_bytes())
    return StoredModel(metadata["version"], target, metadata)


def add(weights: Path | str, state_dict: dict, metadata: dict) -> StoredModel:
    """Save new weights straight into the store (not served yet); returns where."""
    staging = store_dir(weights) / f".new{SUFFIX}"
    stored = save_weights(state_dict, staging, metadata)
    target = stored_path(weights, stored["version"])
    sidecar_path(staging).replace(sidecar_path(target))
    staging.replace(target)
    return StoredModel(stored["version"], target, stored)


def serve(weights: Path | str, version: str) -> StoredModel:
    """Make the stored `version` the served model: copy it over `weights` atomically.

    Raises UnknownVersion (naming the known ones) when the store has no such version, and
    WeightsError when its file is not usable weights (checked before anything is replaced).
    """
    weights = Path(weights)
    source = stored_path(weights, version)
    if not source.is_file():
        known = ", ".join(m.version for m in listing(weights)) or "none"
        raise UnknownVersion(f"no stored model {version!r} (stored: {known})")
    metadata = read_metadata(source)
    if metadata.get("version") != version:
        raise WeightsError(f"{source} holds version {metadata.get('version')!r}, not {version!r}")
    sidecar = sidecar_path(source)
    if sidecar.is_file():
        atomic_write(sidecar_path(weights), sidecar.read_bytes())
    atomic_write(weights, source.read_bytes())
    return StoredModel(version, source, metadata)


def listing(weights: Path | str) -> list[StoredModel]:
    """The stored models, oldest first (by creation time, then version)."""
    folder = store_dir(weights)
    if not folder.is_dir():
        return []
    models = []
    for path in folder.glob(f"*{SUFFIX}"):
        if path.name.startswith(".") or path.name.endswith(SIDECAR_SUFFIX):
            continue
        try:
            metadata = _metadata(path)
        except WeightsError:
            continue
        models.append(StoredModel(path.name[: -len(SUFFIX)], path, metadata))
    return sorted(models, key=lambda m: (str(m.metadata.get("created", "")), m.version))

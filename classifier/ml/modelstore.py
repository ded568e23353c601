"""The model store: every model trained or promoted, and each one served before, kept beside the
weights.

`<weights dir>/models/<version>.safetensors`, each with its sidecar JSON (and a training run's
report, `<version>.report.json` and `.png`), so `manage.py models` can list them and `models use
VERSION` can serve one again. Serving a version first keeps the one served in the store, then
copies the version's file over the served path with `atomic_write` (sidecar first), so running
workers, which watch that path, switch to it between batches and never read half a file, and no
served model is ever lost. The writers of the served path hold `modellock.serving_lock`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from classifier.ml.weights import (
    SIDECAR_SUFFIX,
    WeightsError,
    atomic_write,
    read_metadata,
    report_paths,
    save_weights,
    sidecar_path,
)

STORE_DIR = "models"
SUFFIX = ".safetensors"


class UnknownVersion(LookupError):
    """No model of that version is in the store."""


class ServedChanged(RuntimeError):
    """The served model is no longer the one a candidate was judged against."""


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


def served_version(weights: Path | str) -> str | None:
    """The version of the model served at `weights`; None when there is no usable file."""
    try:
        return read_metadata(weights)["version"]
    except WeightsError:
        return None


def keep(weights: Path | str) -> StoredModel:
    """Copy the weights file (and sidecar and report) into the store under its version, if not
    there yet."""
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
        _copy_reports(weights, target)
        atomic_write(sidecar_path(target), sidecar_bytes)
        atomic_write(target, weights.read_bytes())
    return StoredModel(metadata["version"], target, metadata)


def add(weights: Path | str, state_dict: dict, metadata: dict) -> StoredModel:
    """Save new weights straight into the store (not served); returns where.

    Written under a staging name of its own (two runs at once never share one), then renamed to
    its version's name.
    """
    folder = store_dir(weights)
    staging = folder / f".new-{os.getpid()}-{uuid.uuid4().hex}{SUFFIX}"
    try:
        stored = save_weights(state_dict, staging, metadata)
        target = stored_path(weights, stored["version"])
        sidecar_path(staging).replace(sidecar_path(target))
        staging.replace(target)
    finally:
        staging.unlink(missing_ok=True)
        sidecar_path(staging).unlink(missing_ok=True)
    return StoredModel(stored["version"], target, stored)


_ANY = object()


def serve(weights: Path | str, version: str, expect: str | object | None = _ANY) -> StoredModel:
    """Make the stored `version` the served model: keep the one served now in the store, then copy
    `version` over `weights` atomically (its report too, when it has one).

    Raises UnknownVersion (naming the known ones) when the store has no such version, WeightsError
    when its file is not usable weights, and ServedChanged when `expect` is given and the version
    served now is another (None: nothing served); all before anything is replaced.
    """
    weights = Path(weights)
    source = stored_path(weights, version)
    if not source.is_file():
        known = ", ".join(m.version for m in listing(weights)) or "none"
        raise UnknownVersion(f"no stored model {version!r} (stored: {known})")
    metadata = read_metadata(source)
    if metadata.get("version") != version:
        raise WeightsError(f"{source} holds version {metadata.get('version')!r}, not {version!r}")
    current = served_version(weights)
    if expect is not _ANY and current != expect:
        raise ServedChanged(
            f"the served model changed during the run: {current or 'none'} is served, "
            f"not {expect or 'none'}"
        )
    if current is not None:
        keep(weights)
    sidecar = sidecar_path(source)
    if sidecar.is_file():
        atomic_write(sidecar_path(weights), sidecar.read_bytes())
    _copy_reports(source, weights)
    atomic_write(weights, source.read_bytes())
    return StoredModel(version, source, metadata)


def _copy_reports(source: Path, target: Path) -> None:
    """A training run's report (JSON and PNG) beside `source`, copied beside `target`."""
    for have, want in zip(report_paths(source), report_paths(target), strict=True):
        if have.is_file():
            atomic_write(want, have.read_bytes())


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

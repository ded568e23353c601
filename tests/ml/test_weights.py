"""Weights files: a safe round trip, and a clear error for every kind of bad file."""

from __future__ import annotations

import dataclasses
import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from classifier.ml.model import (
    ARCHITECTURE,
    ARCHITECTURES,
    FAST_ARCHITECTURE,
    ModelConfig,
    build_model,
)
from classifier.ml.training.config import TrainConfig
from classifier.ml.weights import (
    WEIGHTS_FORMAT,
    WeightsError,
    config_from_metadata,
    load_weights,
    rejection_from_metadata,
    save_weights,
    sidecar_path,
    weights_digest,
)
from tests.helpers import SHIPPED_WEIGHTS


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ARCHITECTURE)


@pytest.fixture
def saved(model, tmp_path):
    path = tmp_path / "model.safetensors"
    stored = save_weights(model, path, {"architecture": ARCHITECTURE, "test_accuracy": 0.5})
    return path, stored


def test_round_trip(model, saved):
    path, stored = saved
    state_dict, metadata = load_weights(path)
    original = model.state_dict()
    assert set(state_dict) == set(original)
    for name, tensor in original.items():
        assert torch.equal(state_dict[name], tensor), name
    assert metadata == stored
    assert metadata["architecture"] == ARCHITECTURE
    assert metadata["test_accuracy"] == 0.5
    assert metadata["torch_version"] == torch.__version__
    assert metadata["version"].startswith(ARCHITECTURE + "-")
    assert metadata["version"].endswith(weights_digest(original)[:8])
    assert "created" in metadata


def test_sidecar_json_repeats_the_metadata(saved):
    path, stored = saved
    assert json.loads(sidecar_path(path).read_text()) == stored


def test_written_atomically_without_leftovers(model, saved):
    path, _ = saved
    first = path.stat().st_ino
    torch.nn.init.zeros_(model.classifier[-1].weight)
    save_weights(model, path, {"architecture": ARCHITECTURE})
    assert path.stat().st_ino != first  # a new file took the name (os.replace), not a rewrite
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, sidecar_path(path).name]


def test_versions_differ_for_different_weights(model, tmp_path):
    a = save_weights(model, tmp_path / "a.safetensors", {"architecture": ARCHITECTURE})
    torch.nn.init.ones_(model.classifier[-1].bias)
    b = save_weights(model, tmp_path / "b.safetensors", {"architecture": ARCHITECTURE})
    assert a["version"] != b["version"]


def test_save_requires_a_known_architecture_or_model_args(model, tmp_path):
    with pytest.raises(ValueError, match="architecture"):
        save_weights(model, tmp_path / "x.safetensors", {})
    with pytest.raises(ValueError, match="Unknown architecture 'mystery'"):
        save_weights(model, tmp_path / "x.safetensors", {"architecture": "mystery"})


def test_missing_file(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tmp_path / "nope.safetensors")


def test_directory(tmp_path):
    with pytest.raises(WeightsError, match="directory"):
        load_weights(tmp_path)


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -10])
def test_truncated_file(saved, keep):
    path, _ = saved
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    path.write_bytes(data[:cut])
    with pytest.raises(WeightsError, match="truncated") as info:
        load_weights(path)
    assert str(path) in str(info.value)


def test_garbage(tmp_path):
    path = tmp_path / "garbage.safetensors"
    path.write_bytes(struct.pack("<Q", 20) + b"this is not json!!!!" + bytes(100))
    with pytest.raises(WeightsError, match="not a safetensors file"):
        load_weights(path)


def test_pickled_checkpoint_is_refused_not_unpickled(model, tmp_path):
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(WeightsError, match=r"not a safetensors file|truncated"):
        load_weights(path)


def test_foreign_safetensors_file(model, tmp_path):
    path = tmp_path / "foreign.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    with pytest.raises(WeightsError, match="not written by Digits"):
        load_weights(path)


def _ours(tensors: dict, path, architecture: str = ARCHITECTURE) -> None:
    metadata = {"architecture": architecture, "version": "test"}
    header = {
        "format": WEIGHTS_FORMAT,
        "architecture": architecture,
        "version": "test",
        "metadata": json.dumps(metadata),
    }
    save_file(tensors, str(path), metadata=header)


def test_unknown_architecture(model, tmp_path):
    path = tmp_path / "future.safetensors"
    _ours(model.state_dict(), path, architecture="digits-transformer-v9")
    with pytest.raises(WeightsError, match="digits-transformer-v9"):
        load_weights(path)


def test_wrong_shapes(tmp_path):
    other = build_model(FAST_ARCHITECTURE).state_dict()
    path = tmp_path / "mislabelled.safetensors"
    _ours(other, path)
    with pytest.raises(WeightsError, match="does not fit architecture") as info:
        load_weights(path)
    assert "expected" in str(info.value)


def test_missing_tensor(model, tmp_path):
    state = dict(model.state_dict())
    state.pop("classifier.2.bias")
    path = tmp_path / "partial.safetensors"
    _ours(state, path)
    with pytest.raises(WeightsError, match=r"missing tensors classifier\.2\.bias"):
        load_weights(path)


def test_non_finite_values(model, tmp_path):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["classifier.2.bias"][3] = float("nan")
    path = tmp_path / "nan.safetensors"
    _ours(state, path)
    with pytest.raises(WeightsError, match="non-finite"):
        load_weights(path)


# --- The file alone rebuilds its network ---------------------------------------------------------


def test_the_metadata_carries_the_networks_constructor_arguments(saved):
    path, stored = saved
    assert stored["model_args"] == ModelConfig(widths=(32, 48, 96)).as_dict()
    _, metadata = load_weights(path)
    assert build_model(config_from_metadata(metadata)).state_dict().keys() == (
        build_model(ARCHITECTURE).state_dict().keys()
    )


def test_a_network_of_any_width_round_trips_by_its_model_args(tmp_path):
    """A network no architecture name describes: its `model_args` are enough to rebuild it."""
    config = ModelConfig(widths=(8, 12, 20), dropout=0.0)
    torch.manual_seed(3)
    model = build_model(config)
    path = tmp_path / "custom.safetensors"
    save_weights(model, path, {"architecture": "custom", "model_args": config.as_dict()})
    state_dict, metadata = load_weights(path)
    assert config_from_metadata(metadata) == config
    rebuilt = build_model(config_from_metadata(metadata))
    rebuilt.load_state_dict(state_dict)
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_files_without_model_args_are_read_by_their_architecture_name(model, tmp_path):
    path = tmp_path / "older.safetensors"
    _ours(model.state_dict(), path)
    _, metadata = load_weights(path)
    assert metadata["model_args"] == ModelConfig().as_dict()


@pytest.mark.parametrize(
    "model_args",
    [{"widths": [8, 8]}, {"widths": [0, 8, 8]}, {"depth": 3}, {"widths": "wide"}, [1, 2]],
    ids=["two-widths", "zero-width", "unknown-key", "not-numbers", "not-a-dict"],
)
def test_unusable_model_args_are_refused_saying_so(model, tmp_path, model_args):
    path = tmp_path / "odd.safetensors"
    metadata = {"architecture": ARCHITECTURE, "model_args": model_args}
    header = {"format": WEIGHTS_FORMAT, "metadata": json.dumps(metadata)}
    save_file(model.state_dict(), str(path), metadata=header)
    with pytest.raises(WeightsError, match="unusable model arguments"):
        load_weights(path)
    with pytest.raises(ValueError, match="describe the network"):
        save_weights(model, tmp_path / "never.safetensors", metadata)


def test_the_shipped_weights_explain_themselves():
    """The shipped file names its network's arguments and how it was trained: the named
    architecture, plus the detector head and how that was trained when it has one."""
    _, metadata = load_weights(SHIPPED_WEIGHTS)
    args = metadata["model_args"]
    assert {**args, "detector_width": 0} == ARCHITECTURES[metadata["architecture"]].as_dict()
    if args["detector_width"]:
        assert metadata["detector"]["width"] == args["detector_width"]
        assert metadata["rejection"]["score"] == "detector"
    training = metadata["training"]
    assert training["epochs"] == metadata["epochs"]
    # Every option of today's recipe, so `make train`'s weights can be repeated from their file.
    assert {field.name for field in dataclasses.fields(TrainConfig)} <= training.keys()
    assert training["optimizer"] == "AdamW"
    assert training["augmentation"]["flag_p"] > 0


def test_unusable_rejection_settings_are_refused_on_load(tmp_path):
    path = tmp_path / "w.safetensors"
    metadata = {"architecture": ARCHITECTURE, "rejection": {"score": "entropy", "threshold": 1}}
    save_weights(build_model(ARCHITECTURE), path, metadata)
    with pytest.raises(WeightsError, match="rejection"):
        load_weights(path)
    assert rejection_from_metadata({}) is None
    stored = rejection_from_metadata({"rejection": {"score": "msp", "threshold": 0.5}})
    assert stored is not None and stored.threshold == 0.5

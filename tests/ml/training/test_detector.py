"""The detector head (classifier.ml.training.detector): trained on the frozen network, it leaves the
ten logits as they were; weights without it still load; its threshold decides `is_digit`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save as save_safetensors

from classifier.ml.inference import Predictor
from classifier.ml.model import (
    ARCHITECTURE,
    ModelConfig,
    build_model,
    detector_inputs,
    frozen_inputs,
    normalize,
)
from classifier.ml.rejection import Rejection, has_detector, outputs_of, score_outputs
from classifier.ml.training.calibration import choose_threshold
from classifier.ml.training.detector import (
    DetectorConfig,
    Pools,
    fit_head,
    train_detector,
    training_rows,
    with_detector,
)
from classifier.ml.weights import WEIGHTS_FORMAT, load_weights, save_weights

SMALL = ModelConfig(widths=(4, 6, 8))
TINY_RUN = DetectorConfig(
    width=8, outlier_pool=12, drawn_pool=12, mnist_digits=24, copies=1, epochs=2, batch_size=16
)


def _images(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28), dtype=np.uint8)


def _pools() -> Pools:
    # Digits-like (a bright bar) against noise: what the head learns does not matter here.
    digits = np.zeros((36, 28, 28), np.uint8)
    digits[:, 4:24, 12:16] = 255
    return Pools(mnist=digits[:24], drawn=digits[24:], outliers=_images(12, 3))


def _base(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(SMALL).eval()


def test_a_config_without_a_detector_is_the_network_as_before() -> None:
    model = build_model(ARCHITECTURE)
    assert not has_detector(model)
    assert not any(name.startswith("detector.") for name in model.state_dict())
    assert ModelConfig.from_dict({"widths": [32, 48, 96]}).detector_width == 0
    with pytest.raises(ValueError, match="bad model arguments"):
        ModelConfig.from_dict({"detector_width": -1})


def test_the_head_leaves_the_ten_logits_unchanged() -> None:
    base = _base()
    result = train_detector(base, _pools(), TINY_RUN)
    model = result.model
    assert has_detector(model) and model.config.detector_width == TINY_RUN.width
    # Every tensor of the network is the one it started with.
    before = base.state_dict()
    after = model.state_dict()
    assert set(after) - set(before) == {
        f"detector.{n}" for n in ("0.weight", "0.bias", "2.weight", "2.bias")
    }
    assert all(torch.equal(before[name], after[name]) for name in before)
    x = normalize(_images(5, 1))
    with torch.inference_mode():
        logits, detector = model.forward_scored(x)
        assert torch.equal(model(x), base(x))
        assert torch.allclose(logits, base(x), atol=1e-6)
    assert detector is not None and detector.shape == (5,)


@pytest.mark.parametrize("channels", [0, 2])
def test_the_folded_standardisation_gives_the_trained_scores(channels: int) -> None:
    model = with_detector(_base(), 8, channels)
    x, y, w, images = training_rows(model, _pools(), TINY_RUN, None)
    assert images.shape == (len(x), 28, 28) and images.dtype == torch.uint8
    fit_head(model, x, y, w, TINY_RUN, images)
    images = _images(4, 2)
    _, detector = outputs_of(model, images)
    with torch.inference_mode():
        _, features = model.detector_features(normalize(images))
        assert torch.allclose(model.detector(features).squeeze(1), detector, atol=1e-5)


def test_a_branch_of_its_own_leaves_the_ten_logits_unchanged() -> None:
    base = _base()
    run = dataclasses.replace(TINY_RUN, channels=3)
    model = train_detector(base, _pools(), run).model
    assert model.config.detector_channels == 3 and model.detector_convs is not None
    before, after = base.state_dict(), model.state_dict()
    assert {n.split(".")[0] for n in set(after) - set(before)} == {"detector", "detector_convs"}
    assert all(torch.equal(before[name], after[name]) for name in before)
    x = normalize(_images(5, 1))
    with torch.inference_mode():
        logits, detector = model.forward_scored(x)
        _, features = model.detector_features(x)
        assert torch.equal(model(x), base(x))
        assert torch.allclose(logits, base(x), atol=1e-6)
    assert detector is not None and detector.shape == (5,)
    assert features.shape == (5, detector_inputs(model.config))
    assert detector_inputs(model.config) == frozen_inputs(model.config) + 2 * 3 * 9


def test_a_branch_needs_a_head() -> None:
    with pytest.raises(ValueError, match="bad model arguments"):
        ModelConfig.from_dict({"detector_channels": 4})
    with pytest.raises(ValueError, match="channels"):
        DetectorConfig(channels=-1)


def test_the_spatial_grid_adds_inputs_and_leaves_the_ten_logits_unchanged(tmp_path) -> None:
    base = _base()
    plain = train_detector(base, _pools(), TINY_RUN).model
    model = train_detector(base, _pools(), dataclasses.replace(TINY_RUN, spatial=True)).model
    assert model.config.detector_spatial and not plain.config.detector_spatial
    assert frozen_inputs(model.config) == frozen_inputs(plain.config) + 6 * 3 * 3
    x = normalize(_images(5, 1))
    with torch.inference_mode():
        assert torch.equal(model(x), base(x))
        _, features = model.detector_features(x)
    assert features.shape == (5, detector_inputs(model.config))
    # Saved and loaded, the grid comes back with the head that reads it.
    path = tmp_path / "spatial.safetensors"
    save_weights(model, path, {"architecture": "small", "model_args": model.config.as_dict()})
    state, meta = load_weights(path)
    assert meta["model_args"]["detector_spatial"] is True
    again = build_model(ModelConfig.from_dict(meta["model_args"]))
    again.load_state_dict(state)
    with torch.inference_mode():
        assert torch.allclose(again.eval().forward_scored(x)[1], model.forward_scored(x)[1])
    with pytest.raises(ValueError, match="bad model arguments"):
        ModelConfig.from_dict({"detector_spatial": "yes", "detector_width": 4})
    with pytest.raises(ValueError, match="bad model arguments"):
        ModelConfig.from_dict({"detector_spatial": True})


def test_held_out_alphabets_are_named_and_checked() -> None:
    assert DetectorConfig().held_out == ()
    assert DetectorConfig(hold_out="armenian, hebrew").held_out == ("armenian", "hebrew")
    with pytest.raises(ValueError, match="hold_out names no alphabet: klingon"):
        DetectorConfig(hold_out="armenian,klingon")


def test_weights_without_a_head_load_and_score_as_before(tmp_path) -> None:
    base = _base()
    path = tmp_path / "old.safetensors"
    args = SMALL.as_dict()
    del args["detector_width"]  # a file written before the head existed
    stored = {"format": WEIGHTS_FORMAT, "architecture": "small", "model_args": args}
    header = {
        "format": WEIGHTS_FORMAT,
        "architecture": "small",
        "version": "small-old",
        "metadata": json.dumps({**stored, "version": "small-old"}),
    }
    tensors = {k: v.contiguous() for k, v in base.state_dict().items()}
    path.write_bytes(save_safetensors(tensors, metadata=header))
    state_dict, metadata = load_weights(path)
    assert metadata["model_args"]["detector_width"] == 0
    assert not any(name.startswith("detector.") for name in state_dict)
    predictor = Predictor.load(path, device="cpu")
    assert not has_detector(predictor.model) and predictor.rejection is None
    images = _images(3, 4)
    scored = predictor.predict_scored(images)
    assert scored.is_digit.all()
    with torch.inference_mode():
        expected = torch.softmax(base(normalize(images)), dim=1).numpy()
    assert np.allclose(scored.probabilities, expected, atol=1e-5)


def _saved_with_head(
    tmp_path, threshold: float, number_threshold: float | None = None
) -> tuple[Predictor, torch.nn.Module]:
    model = train_detector(_base(), _pools(), TINY_RUN).model
    path = tmp_path / "head.safetensors"
    rejection = Rejection(score="detector", threshold=threshold, number_threshold=number_threshold)
    save_weights(
        model,
        path,
        {
            "architecture": "small",
            "model_args": model.config.as_dict(),
            "rejection": rejection.as_dict(),
        },
    )
    return Predictor.load(path, device="cpu"), model


def test_the_detector_threshold_in_the_metadata_decides(tmp_path) -> None:
    images = _images(16, 5)
    _, model = _saved_with_head(tmp_path, 0.0)
    _, detector = outputs_of(model, images)
    threshold = float(np.median(detector.numpy()))
    predictor, _ = _saved_with_head(tmp_path, threshold)
    assert has_detector(predictor.model)
    scored = predictor.predict_scored(images)
    # The served (folded) model scores as the trained one, in the same call as its logits.
    assert np.allclose(scored.scores, detector.numpy(), atol=1e-4)
    assert np.array_equal(scored.is_digit, scored.scores >= threshold)
    assert 0 < scored.is_digit.sum() < len(images)
    with torch.inference_mode():
        expected = torch.softmax(model(normalize(images)), dim=1).numpy()
    assert np.allclose(scored.probabilities, expected, atol=1e-5)


def test_a_number_s_pieces_are_judged_by_their_own_threshold(tmp_path) -> None:
    images = _images(16, 5)
    _, model = _saved_with_head(tmp_path, 0.0)
    _, detector = outputs_of(model, images)
    low, high = np.quantile(detector.numpy(), [0.25, 0.75])
    predictor, _ = _saved_with_head(tmp_path, float(high), number_threshold=float(low))
    scored = predictor.predict_scored(images)
    assert np.array_equal(scored.is_digit, scored.scores >= high)
    assert np.array_equal(scored.piece_is_digit, scored.scores >= low)
    assert scored.piece_is_digit.sum() > scored.is_digit.sum()
    alike, _ = _saved_with_head(tmp_path, float(high))
    assert np.array_equal(alike.predict_scored(images).piece_is_digit, scored.is_digit)


def test_a_detector_threshold_rejects_at_most_the_shares_asked() -> None:
    model = train_detector(_base(), _pools(), TINY_RUN).model
    mnist, drawn = _images(400, 6), _images(200, 7)
    rejection = choose_threshold(
        model, mnist, drawn, score="detector", mnist_max_rejected=0.05, drawn_max_rejected=0.1
    )
    assert rejection.score == "detector"
    for images, share in ((mnist, 0.05), (drawn, 0.1)):
        scores = score_outputs(*outputs_of(model, images), "detector")
        assert (scores.numpy() < rejection.threshold).mean() <= share


def test_the_detector_score_needs_a_head() -> None:
    logits, detector = outputs_of(_base(), _images(2, 8))
    assert detector is None
    with pytest.raises(ValueError, match="detector"):
        score_outputs(logits, detector, "detector")
    with pytest.raises(ValueError, match="width"):
        DetectorConfig(width=0)

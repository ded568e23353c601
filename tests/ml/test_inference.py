"""The predictor: probabilities for batches, the shipped model reads drawn digits, hot reload."""

from __future__ import annotations

import logging
import shutil
import threading

import numpy as np
import pytest
import torch

from classifier.ml.inference import Predictor, resolve_device
from classifier.ml.model import ARCHITECTURE, build_model, normalize
from classifier.ml.preprocessing import preprocess
from classifier.ml.training.canvas import TEMPLATES, render_template_png
from classifier.ml.weights import WeightsError, config_from_metadata, load_weights, save_weights
from tests.helpers import SHIPPED_WEIGHTS


@pytest.fixture(scope="module")
def shipped() -> Predictor:
    predictor = Predictor.load(SHIPPED_WEIGHTS, device="cpu")
    predictor.warm_up()
    return predictor


@pytest.fixture
def weights_path(tmp_path):
    path = tmp_path / "digits-cnn.safetensors"
    shutil.copyfile(SHIPPED_WEIGHTS, path)
    return path


def other_weights(path, seed: int = 0) -> str:
    torch.manual_seed(seed)
    return save_weights(build_model(ARCHITECTURE), path, {"architecture": ARCHITECTURE})["version"]


def test_probabilities_for_a_batch(shipped):
    images = np.random.default_rng(0).integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    probabilities = shipped.predict_proba(images)
    assert probabilities.shape == (5, 10) and probabilities.dtype == np.float32
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (probabilities >= 0).all()
    assert np.allclose(shipped.predict_proba(torch.from_numpy(images)), probabilities, atol=1e-6)


def test_single_image_empty_batch_and_wrong_shape(shipped):
    image = np.zeros((28, 28), dtype=np.uint8)
    assert shipped.predict_proba(image).shape == (1, 10)
    assert shipped.predict_proba(np.zeros((0, 28, 28), dtype=np.uint8)).shape == (0, 10)
    with pytest.raises(ValueError, match="shape"):
        shipped.predict_proba(np.zeros((2, 32, 32), dtype=np.uint8))


def test_version_device_and_path(shipped):
    assert shipped.version == shipped.metadata["version"]
    assert shipped.version.startswith(ARCHITECTURE)
    assert shipped.device == torch.device("cpu")
    assert shipped.path == SHIPPED_WEIGHTS
    probabilities, version = shipped.predict_with_version(np.zeros((1, 28, 28), np.uint8))
    assert version == shipped.version and probabilities.shape == (1, 10)


def test_batch_answers_equal_single_answers(shipped):
    images = np.stack([preprocess(render_template_png(d)) for d in range(10)])
    together = shipped.predict_proba(images)
    alone = np.concatenate([shipped.predict_proba(image[None]) for image in images])
    assert np.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize(("digit", "variant"), [(d, v) for d in range(10) for v in TEMPLATES[d]])
def test_shipped_model_reads_drawn_digits(shipped, digit, variant):
    """Writing styles from around the world, drawn with a round brush on the page's canvas."""
    image = preprocess(render_template_png(digit, variant))
    probabilities = shipped.predict_proba(image[None])[0]
    assert probabilities.argmax() == digit, np.round(probabilities, 3)


def test_shipped_model_on_random_drawings(shipped):
    rng = np.random.default_rng(2024)
    cases = [(d, rng) for d in range(10) for _ in range(6)]
    images = np.stack([preprocess(render_template_png(d, rng=r)) for d, r in cases])
    predicted = shipped.predict_proba(images).argmax(axis=1)
    truth = np.array([d for d, _ in cases])
    assert (predicted == truth).mean() >= 0.95


def test_shipped_model_on_mnist_test_digits(shipped, test_digits):
    predicted = shipped.predict_proba(test_digits.images.numpy()).argmax(axis=1)
    assert (predicted == test_digits.labels.numpy()).mean() >= 0.99


def test_missing_weights_raise(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        Predictor.load(tmp_path / "none.safetensors")


def test_reload_if_changed(weights_path):
    predictor = Predictor.load(weights_path, device="cpu")
    old = predictor.version
    assert predictor.reload_if_changed() is False  # nothing changed
    new = other_weights(weights_path)
    assert predictor.reload_if_changed() is True
    assert predictor.version == new != old
    assert predictor.reload_if_changed() is False


def test_bad_new_weights_keep_the_old_model(weights_path, caplog):
    predictor = Predictor.load(weights_path, device="cpu")
    old = predictor.version
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    before = predictor.predict_proba(image)
    weights_path.write_bytes(weights_path.read_bytes()[:1000])  # truncated in place
    with caplog.at_level(logging.ERROR, logger="classifier.ml.inference"):
        assert predictor.reload_if_changed() is False
        assert predictor.reload_if_changed() is False  # reported once, not on every check
    assert predictor.version == old
    assert np.array_equal(predictor.predict_proba(image), before)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "truncated" in errors[0].getMessage()
    # A good file written later is picked up.
    new = other_weights(weights_path, seed=5)
    assert predictor.reload_if_changed() is True and predictor.version == new


def test_deleted_weights_keep_the_old_model(weights_path, caplog):
    predictor = Predictor.load(weights_path, device="cpu")
    weights_path.unlink()
    with caplog.at_level(logging.ERROR, logger="classifier.ml.inference"):
        assert predictor.reload_if_changed() is False
    assert "unavailable" in caplog.text
    assert predictor.predict_proba(np.zeros((1, 28, 28), np.uint8)).shape == (1, 10)


def test_swap_under_concurrent_predictions(weights_path):
    """Batches running while the weights change all finish, each on one whole model."""
    predictor = Predictor.load(weights_path, device="cpu")
    versions = {predictor.version}
    images = np.zeros((16, 28, 28), dtype=np.uint8)
    seen: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                probabilities, version = predictor.predict_with_version(images)
                assert probabilities.shape == (16, 10)
                seen.append(version)
            except BaseException as exc:  # reported below
                failures.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    for seed in range(3):
        versions.add(other_weights(weights_path, seed=seed))
        assert predictor.reload_if_changed()
    stop.set()
    for thread in threads:
        thread.join()
    assert not failures
    assert set(seen) <= versions and len(seen) > 0
    assert predictor.version in versions


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_the_served_model_is_the_trained_model_folded(shipped):
    """Serving folds each batch norm into its convolution and uses channels-last weights
    (`optimise_for_inference`, for speed); the probabilities stay the trained model's."""
    state_dict, metadata = load_weights(SHIPPED_WEIGHTS)
    eager = build_model(config_from_metadata(metadata))  # with the detector head it names
    eager.load_state_dict(state_dict)
    eager.eval()
    served = shipped.model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in served.modules())
    conv = next(m for m in served.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)

    images = np.random.default_rng(7).integers(0, 256, (32, 28, 28), dtype=np.uint8)
    with torch.inference_mode():
        logits, detector = eager.forward_scored(normalize(images))
        expected = torch.softmax(logits, dim=1).numpy()
    assert np.allclose(shipped.predict_proba(images), expected, atol=1e-5)
    if detector is not None and shipped.rejection.score == "detector":
        assert np.allclose(shipped.predict_scored(images).scores, detector.numpy(), atol=1e-4)


# --- Not a digit: the score and threshold the weights carry ---------------------------------------


def test_scored_batch_is_one_forward_pass_with_probabilities_scores_and_decisions(shipped):
    images = np.stack([preprocess(render_template_png(d)) for d in range(10)])
    scored = shipped.predict_scored(images)
    assert scored.probabilities.shape == (10, 10) and scored.scores.shape == (10,)
    assert scored.is_digit.dtype == bool and scored.version == shipped.version
    assert np.allclose(scored.probabilities, shipped.predict_proba(images), atol=1e-6)
    empty = shipped.predict_scored(np.zeros((0, 28, 28), np.uint8))
    assert empty.probabilities.shape == (0, 10) and empty.is_digit.shape == (0,)


def test_shipped_weights_carry_a_threshold_and_read_every_template_as_a_digit(shipped):
    assert shipped.rejection is not None
    images = np.stack(
        [preprocess(render_template_png(d, v)) for d in range(10) for v in TEMPLATES[d]]
    )
    assert shipped.predict_scored(images).is_digit.all()


def test_weights_without_a_threshold_call_everything_a_digit(tmp_path):
    path = tmp_path / "old.safetensors"
    other_weights(path)
    predictor = Predictor.load(path, device="cpu")
    assert predictor.rejection is None
    noise = np.random.default_rng(1).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    assert predictor.predict_scored(noise).is_digit.all()


@pytest.mark.parametrize(("threshold", "expected"), [(-1e9, True), (1e9, False)])
def test_the_threshold_in_the_metadata_decides(tmp_path, threshold, expected):
    state_dict, metadata = load_weights(SHIPPED_WEIGHTS)
    path = tmp_path / "w.safetensors"
    rejection = {"score": "energy", "threshold": threshold, "temperature": 1.0}
    kept = {key: value for key, value in metadata.items() if key != "version"}
    save_weights(state_dict, path, {**kept, "rejection": rejection})
    predictor = Predictor.load(path, device="cpu")
    images = np.stack([preprocess(render_template_png(d)) for d in (3, 8)])
    assert predictor.predict_scored(images).is_digit.tolist() == [expected, expected]

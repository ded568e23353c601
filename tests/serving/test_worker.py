"""The worker process's state (classifier/serving/worker.py): the model holder's reloads in this
process, and a real worker's refusal to start without usable weights."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from classifier.ml.inference import Predictor
from classifier.ml.weights import load_weights, save_weights
from classifier.serving.worker import ModelHolder
from digits_site.devstack import worker_argv
from tests.helpers import service_env, shipped_weights


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(shipped_weights(), device="cpu")


def test_the_model_holder_swaps_weights_at_most_every_interval(tmp_path: Path) -> None:
    path = tmp_path / "weights.safetensors"
    shutil.copyfile(shipped_weights(), path)
    now = [0.0]
    holder = ModelHolder(
        Predictor.load(path, device="cpu"), reload_interval=0.5, clock=lambda: now[0]
    )
    old = holder.current().version

    state, metadata = load_weights(path)
    save_weights(state, path, {**metadata, "version": "next-model"})
    now[0] = 0.4
    assert holder.current().version == old  # not checked yet
    now[0] = 0.5
    assert holder.current().version == "next-model"

    # A broken file written over it: the working model keeps serving.
    tmp = tmp_path / "broken.tmp"
    tmp.write_bytes(b"\0" * 100)
    tmp.replace(path)
    now[0] = 1.0
    assert holder.current().version == "next-model"
    batch = np.stack([np.zeros((28, 28), np.uint8)])
    assert holder.current().predict_with_version(batch)[1] == "next-model"


@pytest.mark.slow
@pytest.mark.parametrize("weights", ["missing", "foreign"])
def test_a_worker_without_usable_weights_refuses_to_start(
    weights: str, redis_url: str, session_names: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "digits-cnn.safetensors"
    if weights == "foreign":
        path.write_bytes(b"PK\x03\x04 certainly not safetensors" * 10)
    # A queue of its own: should it start after all, it takes no other test's requests.
    names = {**session_names, "DIGITS_INFERENCE_QUEUE": f"refusing-{uuid.uuid4().hex[:8]}"}
    env = service_env(redis_url, names, DIGITS_WEIGHTS=str(path))
    done = subprocess.run(
        worker_argv(f"refusing-{uuid.uuid4().hex[:6]}@%h"),
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "cannot start" in output
    assert str(path) in output

"""The worker process's state (classifier/serving/worker.py): the model holder's reloads in this
process, a real worker's refusal to start without usable weights, and what a real worker imports
while it answers."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from classifier.management.devstack import worker_argv
from classifier.ml.inference import Predictor
from classifier.ml.training.canvas import to_png
from classifier.ml.training.numbers import draw_number, template_strokes
from classifier.ml.weights import load_weights, save_weights
from classifier.serving import protocol
from classifier.serving.worker import ModelHolder
from tests.helpers import (
    Stack,
    data_url,
    delete_queue,
    render_digit_png,
    service_env,
    shipped_weights,
)
from tests.serving.test_batch_ink import template_ink


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


def imported_modules(log: str) -> set[str]:
    """The modules a process imported, from the lines `-X importtime` (PYTHONPROFILEIMPORTTIME)
    writes to its stderr: `import time: self | cumulative | name`, nested imports indented."""
    names = set()
    for line in log.splitlines():
        if line.startswith("import time:") and "imported package" not in line:
            names.add(line.rsplit("|", 1)[-1].strip())
    return names


@pytest.mark.slow
def test_a_live_worker_answering_imports_no_training_code_and_no_torchvision(
    redis_url: str, tmp_path: Path
) -> None:
    """A real worker, run with Python's import log, reads digits and numbers sent as images and
    as ink, and stores a correction: every module it loads, at start or lazily on a first
    request, is in the log, and none is training code or torchvision."""
    tag = uuid.uuid4().hex[:10]
    names = {
        "DIGITS_INFERENCE_QUEUE": f"test-imports-{tag}",
        "DIGITS_CHANNEL_PREFIX": f"test-imports-{tag}",
    }
    env = service_env(redis_url, names, DIGITS_WEIGHTS=str(shipped_weights()))
    stack = Stack(tmp_path, {**env, "PYTHONPROFILEIMPORTTIME": "1"}, shipped_weights())
    rng = np.random.default_rng(0)
    number = draw_number([template_strokes(d, rng) for d in (4, 1)], "41", rng, gap="wide")
    ink_number = [s for k, d in enumerate((2, 0, 5)) for s in template_ink(d, left=70 * k)]

    async def scenario() -> dict[str, dict[str, Any]]:
        async with stack.client() as client:
            frames = [
                {"id": "image", "image": data_url(render_digit_png(7))},
                {"id": "number", "image": data_url(to_png(number.image)), "expect": "number"},
                {"id": "ink", "ink": template_ink(3)},
                {"id": "ink-number", "ink": ink_number, "expect": "number"},
            ]
            for frame in frames:
                await client.send_raw(json.dumps({"type": "predict", **frame}))
            answers = await client.receive_many(len(frames))
            # Storing a correction loads its own code (the database, the store) on first use.
            answers["feedback"] = await client.feedback(render_digit_png(7), 7, answers["image"])
            return answers

    try:
        stack.start_worker()
        stack.env.pop("PYTHONPROFILEIMPORTTIME")  # the worker's log only
        stack.start_web()
        answers = asyncio.run(scenario())
    finally:
        stack.stop()
        delete_queue(redis_url, names["DIGITS_INFERENCE_QUEUE"])

    assert answers["image"]["digit"] == 7 and answers["ink"]["digit"] == 3, answers
    assert answers["ink-number"]["number"] == "205", answers["ink-number"]
    assert answers["number"]["number"] == "41", answers["number"]
    assert answers["feedback"]["type"] == protocol.FEEDBACK_SAVED, answers["feedback"]
    imported = imported_modules(stack.worker_log_text())
    # The log holds what the requests loaded, the model's code and the ink reader among them.
    assert {"torch", "classifier.ml.inference", "classifier.ml.ink_segmentation"} <= imported
    training = sorted(
        name
        for name in imported
        if name.split(".")[0] == "torchvision" or name.startswith("classifier.ml.training")
    )
    assert training == [], training

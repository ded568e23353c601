"""The worker's parts (classifier/serving/worker.py, batch.py) in this process, and a real
worker's refusal to start without usable weights."""

from __future__ import annotations

import asyncio
import base64
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from channels_redis.core import RedisChannelLayer

from classifier.ml.inference import Predictor
from classifier.ml.weights import load_weights, save_weights
from classifier.serving import protocol
from classifier.serving.worker import ModelHolder, ReplySender, answer_batch
from digits_site.devstack import worker_argv
from tests.helpers import blank_png, render_digit_png, service_env, shipped_weights


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    return Predictor.load(shipped_weights(), device="cpu")


class CountingPredictor:
    """The real predictor, recording the size of every batch it is asked to score."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.batches: list[int] = []

    def predict_with_version(self, images: np.ndarray) -> tuple[np.ndarray, str]:
        self.batches.append(len(images))
        return self.predictor.predict_with_version(images)


class BrokenPredictor(CountingPredictor):
    """A predictor whose device fails (as a GPU out of memory would)."""

    def predict_with_version(self, images: np.ndarray) -> tuple[np.ndarray, str]:
        super().predict_with_version(images)
        raise RuntimeError("CUDA error: out of memory")


def item(request_id: str, image: bytes, deadline_in: float = 60.0) -> dict[str, Any]:
    """Task kwargs as `classifier.serving.tasks.submit` sends them."""
    return {
        "reply_channel": f"channel-{request_id}",
        "ticket": hash(request_id) % 1000,
        "id": request_id,
        "image": base64.b64encode(image).decode(),
        "deadline": time.time() + deadline_in,
        "sent_at": time.time() - 0.001,
    }


def frames(answers: list[Any]) -> dict[str, dict[str, Any]]:
    return {a.message["frame"]["id"]: a.message["frame"] for a in answers}


def test_a_batch_is_one_model_call_and_bad_images_fail_alone(predictor: Predictor) -> None:
    counting = CountingPredictor(predictor)
    items = [
        item("four", render_digit_png(4)),
        item("blank", blank_png()),
        item("nine", render_digit_png(9)),
        item("junk", b"not an image"),
        item("one", render_digit_png(1)),
    ]
    answers = answer_batch(items, counting)  # type: ignore[arg-type]

    assert counting.batches == [3]
    by_id = frames(answers)
    assert by_id.keys() == {"four", "blank", "nine", "junk", "one"}
    for request_id, digit in [("four", 4), ("nine", 9), ("one", 1)]:
        assert by_id[request_id]["type"] == protocol.PREDICTION
        assert by_id[request_id]["digit"] == digit
        assert by_id[request_id]["model"] == predictor.version
    assert by_id["blank"]["code"] == protocol.EMPTY
    assert by_id["junk"]["code"] == protocol.INVALID_IMAGE
    # Each answer goes to the consumer that asked, with that consumer's ticket.
    for answer, sent in zip(
        sorted(answers, key=lambda a: a.channel),
        sorted(items, key=lambda i: i["reply_channel"]),
        strict=True,
    ):
        assert answer.channel == sent["reply_channel"]
        assert answer.message["type"] == protocol.ANSWER_MESSAGE
        assert answer.message["ticket"] == sent["ticket"]


def test_preprocessing_threads_give_the_same_answers_in_the_same_order(
    predictor: Predictor,
) -> None:
    items = [item(f"r{n}", render_digit_png(n % 10, index=n)) for n in range(12)]
    items.insert(5, item("blank", blank_png()))
    with ThreadPoolExecutor(3) as pool:
        threaded = answer_batch(items, predictor, pool=pool)
    serial = answer_batch(items, predictor)
    assert [a.channel for a in threaded] == [a.channel for a in serial]
    for a, b in zip(threaded, serial, strict=True):
        fa, fb = a.message["frame"], b.message["frame"]
        assert (fa["type"], fa.get("digit"), fa.get("code")) == (
            fb["type"],
            fb.get("digit"),
            fb.get("code"),
        )
        assert fa.get("probabilities") == fb.get("probabilities")
    assert frames(threaded)["blank"]["code"] == protocol.EMPTY


def test_requests_past_their_deadline_are_dropped(predictor: Predictor) -> None:
    counting = CountingPredictor(predictor)
    items = [
        item("late", render_digit_png(3), deadline_in=-1),
        item("on-time", render_digit_png(3)),
    ]
    assert frames(answer_batch(items, counting)).keys() == {"on-time"}  # type: ignore[arg-type]
    assert counting.batches == [1]


def test_a_failed_model_call_answers_every_request_with_an_error(predictor: Predictor) -> None:
    items = [item("a", render_digit_png(0)), item("b", render_digit_png(1)), item("c", blank_png())]
    by_id = frames(answer_batch(items, BrokenPredictor(predictor)))  # type: ignore[arg-type]
    assert by_id["a"]["code"] == by_id["b"]["code"] == protocol.INTERNAL
    assert by_id["c"]["code"] == protocol.EMPTY


def test_a_batch_of_only_bad_images_never_calls_the_model(predictor: Predictor) -> None:
    counting = CountingPredictor(predictor)
    by_id = frames(answer_batch([item("x", blank_png())], counting))  # type: ignore[arg-type]
    assert by_id["x"]["code"] == protocol.EMPTY
    assert counting.batches == []


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


@pytest.fixture
def layer_config(redis_url: str) -> Mapping[str, Any]:
    return {"hosts": [redis_url], "prefix": f"test-sender-{uuid.uuid4().hex[:8]}"}


@pytest.mark.parametrize("direct", [True, False], ids=["one-script", "layer-send"])
def test_the_reply_sender_delivers_every_answer_to_its_channel(
    layer_config: Mapping[str, Any], direct: bool
) -> None:
    """Both roads (one script per batch for channels_redis, the layer's own `send` on a
    background loop for any other layer) deliver what a real consumer's `receive` reads:
    process-local channels of two processes, several answers to one of them."""
    receivers = [RedisChannelLayer(**layer_config), RedisChannelLayer(**layer_config)]
    sender = ReplySender(RedisChannelLayer(**layer_config), timeout=5.0)
    if not direct:
        sender = ReplySender(_NotRedis(RedisChannelLayer(**layer_config)), timeout=5.0)
    assert sender._direct is direct
    try:

        async def receive_all() -> list[dict[str, Any]]:
            channels = [await receivers[n % 2].new_channel() for n in range(20)]
            messages = [
                (channel, {"type": "digits.answer", "n": n}) for n, channel in enumerate(channels)
            ]
            # Two batches, from a thread as the worker sends them.
            assert await asyncio.to_thread(sender.send, messages[:10]) == 0
            assert await asyncio.to_thread(sender.send, messages[10:]) == 0
            received = [
                await asyncio.wait_for(receivers[n % 2].receive(c), 5)
                for n, c in enumerate(channels)
            ]
            for receiver in receivers:
                await receiver.close_pools()
            return received

        received = asyncio.run(receive_all())
        assert [m["n"] for m in received] == list(range(20))
        assert all(m["type"] == "digits.answer" for m in received)
    finally:
        sender.close()
    assert sender._thread is None or not sender._thread.is_alive()


class _NotRedis:
    """A layer that is not a RedisChannelLayer (it forwards to one, to have a real Redis)."""

    def __init__(self, layer: RedisChannelLayer) -> None:
        self._layer = layer

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        await self._layer.send(channel, message)

    async def close_pools(self) -> None:
        await self._layer.close_pools()


@pytest.mark.parametrize("direct", [True, False], ids=["one-script", "layer-send"])
def test_the_reply_sender_counts_what_it_could_not_send(
    layer_config: Mapping[str, Any], direct: bool
) -> None:
    layer = RedisChannelLayer(**layer_config, capacity=2)
    sender = ReplySender(layer if direct else _NotRedis(layer), timeout=5.0)
    try:
        channel = f"specific.{uuid.uuid4().hex}!x"
        answers = [(channel, {"type": "digits.answer", "n": n}) for n in range(4)]
        # Nobody reads the channel: once it holds two, answers are dropped and counted.
        assert sender.send(answers[:1]) == 0
        assert sender.send(answers[1:2]) == 0
        if direct:
            assert sender.send(answers[2:]) == 2  # the script checks each answer in turn
        else:
            # The layer's `send` counts before it adds, so within one batch it is racy.
            assert sender.send(answers[2:3]) == 1
    finally:
        sender.close()


def test_the_reply_sender_reports_an_unreachable_redis(caplog: pytest.LogCaptureFixture) -> None:
    sender = ReplySender(RedisChannelLayer(hosts=["redis://127.0.0.1:1/0"]), timeout=1.0)
    try:
        assert sender.send([("specific.abc!def", {"type": "digits.answer"})]) == 1
    finally:
        sender.close()
    assert "not sent" in caplog.text


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

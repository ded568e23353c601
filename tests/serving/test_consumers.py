"""The whole serving path, end to end: websocket -> daphne -> Celery on Redis -> a real worker
process -> channel layer -> the same websocket. Nothing is mocked."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
import zlib
from typing import Any

import pytest
import websockets
from django.conf import settings
from PIL import Image

from classifier.ml.canvas import render_template_png
from classifier.ml.weights import load_weights, read_metadata, save_weights
from classifier.serving import protocol
from tests.helpers import ANSWER_TIMEOUT, Stack, blank_png, png_bytes, render_digit_png

pytestmark = pytest.mark.slow


def check_prediction(answer: dict[str, Any], digit: int, model: str) -> None:
    assert answer["type"] == protocol.PREDICTION, answer
    assert answer["digit"] == digit, answer
    probabilities = answer["probabilities"]
    assert len(probabilities) == 10
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-3)
    assert answer["confidence"] == max(probabilities) == probabilities[digit]
    assert answer["model"] == model
    assert 1 <= answer["batch"] <= settings.DIGITS_BATCH_SIZE
    assert {"queue", "preprocess", "inference", "worker", "server"} <= answer["timings_ms"].keys()
    prefix = "data:image/png;base64,"
    assert answer["preview"].startswith(prefix)
    preview = Image.open(io.BytesIO(base64.b64decode(answer["preview"][len(prefix) :])))
    assert preview.size == (28, 28)


def current_version(stack: Stack) -> str:
    return read_metadata(stack.weights_path)["version"]


def test_a_drawn_digit_comes_back_as_that_digit(stack: Stack) -> None:
    """Handwritten MNIST test digits as canvas-sized PNGs, and digits drawn with pen strokes as
    the page draws them (white on black, 384 px): all twenty in flight at once on one socket."""

    async def scenario() -> dict[str, dict[str, Any]]:
        async with stack.client() as client:
            for digit in range(10):
                await client.send_image(f"mnist-{digit}", render_digit_png(digit))
                await client.send_image(f"pen-{digit}", render_template_png(digit))
            return await client.receive_many(20)

    answers = asyncio.run(scenario())
    model = current_version(stack)
    for digit in range(10):
        check_prediction(answers[f"mnist-{digit}"], digit, model)
        check_prediction(answers[f"pen-{digit}"], digit, model)


def test_white_ink_on_black_and_jpeg_work_too(stack: Stack) -> None:
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(render_digit_png(3))).convert("RGB").save(jpeg, "JPEG", quality=85)

    async def scenario() -> dict[str, dict[str, Any]]:
        async with stack.client() as client:
            await client.send_image("inverted", render_digit_png(5, ink_on_white=False))
            await client.send_image("jpeg", jpeg.getvalue(), media_type="image/jpeg")
            return await client.receive_many(2)

    answers = asyncio.run(scenario())
    check_prediction(answers["inverted"], 5, current_version(stack))
    check_prediction(answers["jpeg"], 3, current_version(stack))


def test_many_sockets_with_requests_in_flight_each_get_their_own_answers(stack: Stack) -> None:
    """16 sockets with 6 requests in flight each: every socket gets exactly its own answers,
    and the backlog is served in batches (several images per model call)."""
    sockets, in_flight = 16, 6
    images = {digit: render_digit_png(digit, index=1) for digit in range(10)}

    async def one_socket(number: int) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        async with stack.client() as client:
            expected = {}
            for k in range(in_flight):
                digit = (number + k) % 10
                request_id = f"s{number}-r{k}"
                expected[request_id] = digit
                await client.send_image(request_id, images[digit])
            return expected, await client.receive_many(in_flight)

    results = asyncio.run(_gather(*(one_socket(n) for n in range(sockets))))
    model = current_version(stack)
    for expected, answers in results:
        assert answers.keys() == expected.keys()  # only its own ids, each once
        for request_id, digit in expected.items():
            check_prediction(answers[request_id], digit, model)
    assert max(a["batch"] for _, answers in results for a in answers.values()) > 1


async def _gather(*coroutines: Any) -> list[Any]:
    return await asyncio.gather(*coroutines)


def test_a_blank_canvas_is_empty_not_a_guess(stack: Stack) -> None:
    async def scenario() -> dict[str, dict[str, Any]]:
        async with stack.client() as client:
            await client.send_image("white", blank_png())
            await client.send_image("transparent", blank_png(colour=(0, 0, 0, 0)))
            await client.send_image("black", blank_png(colour=(0, 0, 0, 255)))
            return await client.receive_many(3)

    for answer in asyncio.run(scenario()).values():
        assert answer["type"] == protocol.ERROR
        assert answer["code"] == protocol.EMPTY
        assert answer["message"]


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb's first bytes)."""
    real = png_bytes(Image.new("L", (1, 1)))
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + real[24:29]
    return real[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + real[33:]


BAD_FRAMES: list[tuple[str | bytes, str, str | None]] = [
    ("this is not json", protocol.BAD_JSON, None),
    ("[1,2,3]", protocol.BAD_FRAME, None),
    (b"\x89PNG\r\n\x1a\n", protocol.BINARY_FRAME, None),
    (json.dumps({"type": "subscribe", "id": "t1"}), protocol.UNKNOWN_TYPE, "t1"),
    (json.dumps({"type": "predict", "image": "data:image/png;base64,AA=="}), protocol.BAD_ID, None),
    (json.dumps({"type": "predict", "id": "x" * 500, "image": ""}), protocol.BAD_ID, None),
    (
        json.dumps({"type": "predict", "id": "t2", "image": "http://x/y.png"}),
        protocol.BAD_DATA_URL,
        "t2",
    ),
    (
        json.dumps({"type": "predict", "id": "t3", "image": "data:image/svg+xml;base64,PHN2Zy8+"}),
        protocol.UNSUPPORTED_TYPE,
        "t3",
    ),
    (
        json.dumps({"type": "predict", "id": "t4", "image": "data:image/png;base64,@@@"}),
        protocol.BAD_BASE64,
        "t4",
    ),
]


def test_bad_frames_get_clear_errors_and_the_socket_keeps_answering(stack: Stack) -> None:
    # These pass the consumer's checks and fail when the worker decodes the image.
    bad_images = [
        ("not-an-image", b"hello, world", protocol.INVALID_IMAGE),
        ("truncated", render_digit_png(1)[:200], protocol.INVALID_IMAGE),
        ("bomb", _png_header_claiming(100_000, 100_000), protocol.IMAGE_TOO_LARGE),
        ("sliver", _png_header_claiming(1, 100_000), protocol.IMAGE_TOO_LARGE),
    ]

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
        async with stack.client() as client:
            refused = []
            for frame, _, _ in BAD_FRAMES:
                await client.send_raw(frame)
                refused.append(await client.receive())
            for request_id, image, _ in bad_images:
                await client.send_image(request_id, image)
            failed = await client.receive_many(len(bad_images))
            good = await client.predict(render_digit_png(7), request_id="good")
            return refused, failed, good

    refused, failed, good = asyncio.run(scenario())
    for answer, (_, code, request_id) in zip(refused, BAD_FRAMES, strict=True):
        assert answer["type"] == protocol.ERROR
        assert (answer["code"], answer["id"]) == (code, request_id), answer
        assert len(answer["message"]) > 10
    for request_id, _, code in bad_images:
        assert failed[request_id]["type"] == protocol.ERROR
        assert failed[request_id]["code"] == code, failed[request_id]
    check_prediction(good, 7, current_version(stack))


def test_a_page_from_another_origin_cannot_connect(stack: Stack) -> None:
    async def scenario() -> None:
        async with stack.client(origin="http://evil.example"):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(scenario())
    assert refused.value.response.status_code == 403


def test_a_model_swap_mid_traffic_loses_no_request(stack: Stack) -> None:
    """New weights written (atomically) under running traffic: every request is answered with a
    prediction, each answer names the model that made it, and once the new model answers, the
    old one never does again."""
    old = current_version(stack)
    new = f"swapped-{uuid.uuid4().hex[:8]}"
    sockets = 4
    image = render_digit_png(2)

    async def traffic(number: int, swapped: asyncio.Event) -> list[dict[str, Any]]:
        answers = []
        async with stack.client() as client:
            k = 0
            # Keep going until this socket has seen the new model a few times.
            while sum(a.get("model") == new for a in answers) < 3:
                assert k < 2000, "the new model never answered"
                await client.send_image(f"s{number}-{k}", image)
                answers.append(await client.receive())
                k += 1
                if k == 5 and number == 0:
                    swapped.set()
        return answers

    async def swap(swapped: asyncio.Event) -> None:
        await swapped.wait()
        state, metadata = load_weights(stack.weights_path)
        await asyncio.to_thread(
            save_weights, state, stack.weights_path, {**metadata, "version": new}
        )

    async def scenario() -> list[list[dict[str, Any]]]:
        swapped = asyncio.Event()
        *answers, _ = await asyncio.gather(
            *(traffic(n, swapped) for n in range(sockets)), swap(swapped)
        )
        return answers

    for answers in asyncio.run(asyncio.wait_for(scenario(), ANSWER_TIMEOUT * 4)):
        assert all(a["type"] == protocol.PREDICTION and a["digit"] == 2 for a in answers), [
            a for a in answers if a["type"] != protocol.PREDICTION
        ]
        models = [a["model"] for a in answers]
        first_new = models.index(new)
        assert set(models[:first_new]) <= {old}
        assert set(models[first_new:]) == {new}
    assert current_version(stack) == new

"""The whole serving path, end to end: websocket -> uvicorn -> Celery on Redis -> a real worker
process -> channel layer -> the same websocket. Nothing is mocked.

Only what real processes show is here: the model's answers and their batching, the worker's
refusals of bad images, a model swapped under traffic, the web server's own limit and its 403, the
worker's flush timer. Each rule of the consumer is tested in this process, one at a time, in
tests/serving/test_consumers.py.
"""

from __future__ import annotations

import asyncio
import base64
import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets
from django.conf import settings
from PIL import Image

from classifier.ml.training.canvas import render_template_png
from classifier.ml.weights import load_weights, read_metadata, save_weights
from classifier.serving import protocol
from tests.catalogue import BAD_FRAMES, HOSTILE_IMAGES, IMAGE_CODES
from tests.helpers import (
    ANSWER_TIMEOUT,
    Stack,
    blank_png,
    delete_queue,
    render_digit_png,
    service_env,
)

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


# --- Answers -------------------------------------------------------------------------------------


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


def test_a_written_number_comes_back_digit_by_digit_beside_a_digit(stack: Stack) -> None:
    """A number drawn on the page's 768x384 number canvas, sent with "expect": "number" on the
    socket that also asks for a digit: the real worker reads it whole, left to right, with boxes
    in the image's pixels; the digit is answered as ever."""
    import json

    from classifier.ml.training.canvas import to_png
    from classifier.ml.training.numbers import draw_number, template_strokes
    from tests.helpers import data_url

    rng = np.random.default_rng(0)
    drawn = draw_number([template_strokes(int(d), rng) for d in "2026"], "2026", rng, "normal")
    frame = {
        "type": "predict",
        "id": "year",
        "image": data_url(to_png(drawn.image)),
        "expect": "number",
    }

    async def scenario() -> dict[str, dict[str, Any]]:
        async with stack.client() as client:
            await client.send_raw(json.dumps(frame))
            await client.send_image("seven", render_template_png(7))
            return await client.receive_many(2)

    answers = asyncio.run(scenario())
    number = answers["year"]
    assert number["type"] == protocol.PREDICTION, number
    assert (number["number"], number["digit"]) == ("2026", None)
    assert number["model"] == current_version(stack)
    assert "server" in number["timings_ms"]
    for digit, (x0, y0, x1, y1) in zip(number["digits"], drawn.boxes, strict=True):
        cx, cy = (digit["box"][0] + digit["box"][2]) / 2, (digit["box"][1] + digit["box"][3]) / 2
        assert x0 <= cx <= x1 and y0 <= cy <= y1
    check_prediction(answers["seven"], 7, current_version(stack))


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

    async def scenario() -> list[tuple[dict[str, int], dict[str, dict[str, Any]]]]:
        return await asyncio.gather(*(one_socket(n) for n in range(sockets)))

    results = asyncio.run(scenario())
    model = current_version(stack)
    for expected, answers in results:
        assert answers.keys() == expected.keys()  # only its own ids, each once
        for request_id, digit in expected.items():
            check_prediction(answers[request_id], digit, model)
    assert max(a["batch"] for _, answers in results for a in answers.values()) > 1


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


# --- Feedback ------------------------------------------------------------------------------------


def test_a_correction_after_an_answer_is_saved_in_the_database_once(stack: Stack) -> None:
    """On one socket, as the page does it: a drawn 4 is predicted; the writer says it was a 9
    (sending the image again, with what the page was told); the worker scores it, stores it in
    the stack's database and answers `feedback_saved`. The same drawing again is a duplicate
    and stores nothing more; a blank canvas is `empty`."""
    four = render_digit_png(4, index=3)

    async def scenario() -> tuple[dict[str, Any], list[dict[str, Any]]]:
        async with stack.client() as client:
            answer = await client.predict(four)
            saved = [
                await client.feedback(four, 9, answer, request_id="fix"),
                await client.feedback(four, 9, answer, request_id="again"),
                await client.feedback(blank_png(), 9, request_id="blank"),
            ]
            return answer, saved

    before = len(stack.corrections())
    answer, (saved, again, blank) = asyncio.run(scenario())
    assert answer["type"] == protocol.PREDICTION
    assert saved == {"type": protocol.FEEDBACK_SAVED, "id": "fix", "duplicate": False}
    assert again == {"type": protocol.FEEDBACK_SAVED, "id": "again", "duplicate": True}
    assert (blank["type"], blank["code"]) == (protocol.ERROR, protocol.EMPTY)

    rows = stack.corrections()
    assert len(rows) == before + 1
    row = rows[-1]
    assert (row["label"], row["status"]) == (9, "pending")
    assert (row["predicted"], row["model_version"]) == (answer["digit"], answer["model"])
    assert (row["client_predicted"], row["client_model"]) == (answer["digit"], answer["model"])
    assert row["confidence"] == pytest.approx(answer["confidence"], abs=1e-4)
    assert bytes(row["image"]) == four
    assert len(row["image28"]) == 784
    assert len(row["client_hash"]) == 64 and "127.0.0.1" not in row["client_hash"]


# --- Bad input and abuse -------------------------------------------------------------------------


def test_bad_input_on_one_socket_gets_clear_errors_and_then_an_answer(stack: Stack) -> None:
    """The whole catalogue (tests/catalogue.py) on one socket through uvicorn: every bad frame is
    answered by the consumer with its code and id, every hostile image (decompression bombs
    included) by the worker with its code, the socket stays open throughout, the worker logs
    no traceback, and a good request on the same socket is then answered with a prediction."""

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
        async with stack.client() as client:
            refused = []
            for bad in BAD_FRAMES:
                await client.send_raw(bad.frame)
                refused.append(await client.receive())
            for hostile in HOSTILE_IMAGES:
                await client.send_image(hostile.name, hostile.data)
            failed = await client.receive_many(len(HOSTILE_IMAGES))
            good = await client.predict(render_template_png(7), request_id="good")
            return refused, failed, good

    refused, failed, good = asyncio.run(scenario())
    for answer, bad in zip(refused, BAD_FRAMES, strict=True):
        assert answer["type"] == protocol.ERROR, (bad.name, answer)
        assert (answer["code"], answer["id"]) == (bad.code, bad.request_id), (bad.name, answer)
        assert answer["message"].endswith("."), (bad.name, answer)
    for hostile in HOSTILE_IMAGES:
        answer = failed[hostile.name]
        assert answer["type"] == protocol.ERROR, (hostile.name, answer)
        assert answer["code"] in IMAGE_CODES and hostile.accepts(answer["code"]), answer
        assert answer["message"].endswith("."), answer
    check_prediction(good, 7, current_version(stack))
    assert "Traceback" not in stack.worker_log_text()


def test_a_message_over_the_servers_limit_closes_only_that_socket(stack: Stack) -> None:
    """uvicorn itself refuses a message over DIGITS_WS_MAX_MESSAGE_BYTES: it closes that
    connection (code 1009, or a reset while the client is still sending) before any of our
    code reads it. The server keeps serving the other sockets and new ones."""
    too_big = "x" * (settings.DIGITS_WS_MAX_MESSAGE_BYTES + 1)

    async def scenario() -> tuple[Exception, dict[str, Any], dict[str, Any]]:
        async with stack.client() as bystander:
            try:
                async with stack.client() as client:
                    await client.send_raw(too_big)
                    await client.receive()
            except websockets.exceptions.ConnectionClosed as exc:
                closed = exc
            else:
                raise AssertionError("the oversized message was answered")
            beside = await bystander.predict(render_template_png(3))
        async with stack.client() as fresh:
            after = await fresh.predict(render_template_png(3))
        return closed, beside, after

    closed, beside, after = asyncio.run(scenario())
    assert closed.rcvd is None or closed.rcvd.code == 1009  # "message too big"
    assert beside["type"] == after["type"] == protocol.PREDICTION


def test_only_pages_from_allowed_hosts_may_connect_through_uvicorn(stack: Stack) -> None:
    """The stack runs with DIGITS_ALLOWED_HOSTS=127.0.0.1,localhost,digits.example: a page of
    digits.example is served; another origin's handshake is refused, which uvicorn answers with
    an HTTP 403 (every case of the origin check: tests/serving/test_consumers.py)."""
    assert "digits.example" in stack.env["DIGITS_ALLOWED_HOSTS"].split(",")

    async def ask(origin: str) -> dict[str, Any]:
        async with stack.client(origin=origin) as client:
            return await client.predict(render_template_png(4))

    assert asyncio.run(ask("https://digits.example"))["type"] == protocol.PREDICTION
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        asyncio.run(ask("http://evil.example"))
    assert refused.value.response.status_code == 403


# --- The worker's batching ---------------------------------------------------------------------


def test_a_lone_request_does_not_wait_for_the_flush_timer(
    redis_url: str, weights_copy: Path, tmp_path: Path
) -> None:
    """celery-batches flushes on a repeating timer, so a request alone in the queue would wait
    up to a whole flush interval. With that interval far beyond the request deadline, lone
    requests are answered all the same, each in a batch of its own: the worker sends a request
    at once when nothing waits behind it in Redis."""
    tag = uuid.uuid4().hex[:10]
    names = {"DIGITS_INFERENCE_QUEUE": f"test-lone-{tag}", "DIGITS_CHANNEL_PREFIX": f"lone-{tag}"}
    env = service_env(
        redis_url, names, DIGITS_WEIGHTS=str(weights_copy), DIGITS_BATCH_FLUSH_MS="600000"
    )
    stack = Stack(tmp_path, env, weights_copy)
    try:
        stack.start()

        async def lone_requests() -> list[dict[str, Any]]:
            async with stack.client() as client:
                return [await client.predict(render_digit_png(d)) for d in (3, 8)]

        answers = asyncio.run(lone_requests())
    finally:
        stack.stop()
        delete_queue(redis_url, names["DIGITS_INFERENCE_QUEUE"])
    assert [a["type"] for a in answers] == [protocol.PREDICTION] * 2, answers
    assert [a["digit"] for a in answers] == [3, 8]
    assert [a["batch"] for a in answers] == [1, 1]

"""The HTTP API end to end: POST /api/v1/predict -> uvicorn -> Celery on Redis -> a real worker
process -> channel layer -> the same request; and the `digits` command on files. Nothing is
mocked.

Only what the real stack shows is here: the model's answers over HTTP against the socket's for
the same digits, every body kind read by a real worker, the real server's size limit, and the
installed command. Each rule of the API is tested in this process in tests/serving/test_http.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from classifier.ml.training.canvas import to_png
from classifier.ml.training.numbers import draw_number, template_strokes
from classifier.serving import protocol, schemas
from digits_client import Client, DigitsError
from tests.catalogue import HOSTILE_IMAGES
from tests.e2e.test_service import check_prediction, current_version
from tests.helpers import ANSWER_TIMEOUT, Stack, blank_png, data_url, render_digit_png
from tests.serving.test_batch_ink import template_ink
from tests.serving.test_http import form
from tests.serving.test_schemas import check, response_schema

pytestmark = pytest.mark.slow

# The figure: this many held-out digits, this many in flight at once.
DIGITS_SENT = 500
AT_A_TIME = 8


def post(stack: Stack, body: bytes, content_type: str) -> tuple[int, dict[str, str], Any]:
    """One POST to the predict URL: (status, headers, the JSON body)."""
    request = urllib.request.Request(
        stack.http_url.rstrip("/") + schemas.PREDICT_URL,
        data=body,
        headers={"Content-Type": content_type},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=ANSWER_TIMEOUT) as response:
            status, headers, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, headers, raw = error.code, dict(error.headers), error.read()
    return status, {k.lower(): v for k, v in headers.items()}, json.loads(raw)


def held_out_digits() -> list[tuple[bytes, int]]:
    """DIGITS_SENT MNIST test digits (stroke templates without MNIST) as canvas-sized PNGs."""
    per_digit = DIGITS_SENT // 10
    return [(render_digit_png(d, i), d) for i in range(per_digit) for d in range(10)]


def test_held_out_digits_eight_at_a_time_are_all_answered_and_read_as_over_the_socket(
    stack: Stack,
) -> None:
    """500 digits, 8 requests in flight at once over HTTP (8 clients of `digits_client`), then
    the same 500 over one socket with 8 in flight: every HTTP answer is a 200 that fits the
    OpenAPI document, and the digits read agree with the socket's."""
    digits = held_out_digits()
    document = schemas.openapi()
    local = threading.local()

    def over_http(item: tuple[bytes, int]) -> dict[str, Any]:
        if not hasattr(local, "client"):
            local.client = Client(stack.http_url, timeout=ANSWER_TIMEOUT)
        return local.client.predict(item[0])

    with ThreadPoolExecutor(AT_A_TIME) as pool:
        http_answers = list(pool.map(over_http, digits))  # a DigitsError (a non-200) fails here

    async def over_socket() -> list[dict[str, Any]]:
        async with stack.client() as client:
            answers: dict[str, dict[str, Any]] = {}
            sent = 0
            while len(answers) < len(digits):
                while sent < len(digits) and sent - len(answers) < AT_A_TIME:
                    await client.send_image(str(sent), digits[sent][0])
                    sent += 1
                answer = await client.receive()
                answers[answer["id"]] = answer
            return [answers[str(n)] for n in range(len(digits))]

    socket_answers = asyncio.run(over_socket())
    labels = [label for _, label in digits]
    for answer in http_answers:
        check(document, response_schema(document, 200), answer)
    http_read = [a["digit"] for a in http_answers]
    socket_read = [a["digit"] for a in socket_answers]
    http_right = sum(r == label for r, label in zip(http_read, labels, strict=True))
    socket_right = sum(r == label for r, label in zip(socket_read, labels, strict=True))
    same = sum(a == b for a, b in zip(http_read, socket_read, strict=True))
    print(f"\nHTTP {http_right}/{len(labels)} right, socket {socket_right}; {same} read alike")
    assert http_right >= socket_right - 1
    assert same >= len(labels) - 2  # one batch's float rounding may flip a near tie
    assert http_right >= 0.95 * len(labels)


def test_json_forms_ink_and_numbers_are_read_by_the_real_worker(stack: Stack) -> None:
    document = schemas.openapi()
    model = current_version(stack)
    rng = np.random.default_rng(0)
    year = draw_number([template_strokes(int(d), rng) for d in "2026"], "2026", rng, "normal")
    jpeg = io.BytesIO()
    Image.open(io.BytesIO(render_digit_png(5))).convert("RGB").save(jpeg, format="JPEG")
    number_ink = [s for k, d in enumerate((2, 0, 5)) for s in template_ink(d, left=70 * k)]
    requests = {
        "json image": (json.dumps({"image": data_url(render_digit_png(3))}).encode(), None),
        "form jpeg": form({"image": ("five.jpg", "image/jpeg", jpeg.getvalue())}),
        "json ink": (json.dumps({"ink": template_ink(4)}).encode(), None),
        "form number": form(
            {"image": ("year.png", "image/png", to_png(year.image)), "expect": "number"}
        ),
        "json ink number": (json.dumps({"ink": number_ink, "expect": "number"}).encode(), None),
    }
    answers = {}
    for name, (body, content_type) in requests.items():
        status, headers, answer = post(stack, body, content_type or "application/json")
        assert status == 200, (name, answer)
        assert headers["x-request-id"] == answer["id"]
        check(document, response_schema(document, 200), answer)
        answers[name] = answer
    check_prediction(answers["json image"], 3, model)
    check_prediction(answers["form jpeg"], 5, model)
    check_prediction(answers["json ink"], 4, model)
    assert answers["form number"]["number"] == "2026", answers["form number"]
    assert answers["json ink number"]["number"] == "205", answers["json ink number"]


def test_bad_requests_to_the_real_server_get_their_status_and_never_a_5xx(stack: Stack) -> None:
    """What only the real server and worker show: every hostile image of the catalogue uploaded
    as a form file (said to be a PNG, as a socket's data URL says) refused with its code, a
    blank drawing, a body declared too large (answered before it is sent: the connection sends
    headers only), and the same server then answering a good request."""
    document = schemas.openapi()
    for hostile in HOSTILE_IMAGES:
        body, content_type = form({"image": (f"{hostile.name}.png", "image/png", hostile.data)})
        status, _, answer = post(stack, body, content_type)
        assert 400 <= status < 500 and hostile.accepts(answer["code"]), (hostile.name, answer)
        assert status == schemas.status_for(answer["code"])
        check(document, response_schema(document, status), answer)
    cases = [
        (json.dumps({"image": data_url(blank_png())}).encode(), 400, protocol.EMPTY),
        (b'{"ink": [[[1, "2"]]]}', 400, protocol.BAD_INK),
    ]
    for body, status, code in cases:
        got, _, answer = post(stack, body, "application/json")
        assert (got, answer["code"]) == (status, code), answer
        check(document, response_schema(document, got), answer)

    with socket.create_connection(("127.0.0.1", stack.port), timeout=ANSWER_TIMEOUT) as conn:
        conn.sendall(
            f"POST {schemas.PREDICT_URL} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n".encode()
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"connection: close" in head.lower()
    assert json.loads(body)["code"] == schemas.BODY_TOO_LARGE

    status, _, answer = post(stack, json.dumps({"image": data_url(render_digit_png(8))}).encode(),
                             "application/json")  # fmt: skip
    assert (status, answer["digit"]) == (200, 8)


def test_the_digits_command_reads_files_through_the_running_service(
    stack: Stack, tmp_path: Path
) -> None:
    """`digits predict` as installed by `pip install -e .`, on image and ink files: one line
    per file, then --json --number."""
    command = shutil.which("digits", path=str(Path(sys.executable).parent)) or shutil.which(
        "digits"
    )
    if command is None:
        pytest.fail("The `digits` command is not installed: run `pip install -e '.[dev]'`.")
    (tmp_path / "one.png").write_bytes(render_digit_png(1))
    (tmp_path / "seven.png").write_bytes(render_digit_png(7))
    (tmp_path / "four.json").write_text(json.dumps(template_ink(4)))
    files = [str(tmp_path / name) for name in ("one.png", "seven.png", "four.json")]
    url = stack.http_url
    done = subprocess.run(
        [command, "predict", *files, "--url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(": ")[1].split(" ")[0] for line in lines] == ["1", "7", "4"], lines
    assert [line.split(": ")[0] for line in lines] == files

    rng = np.random.default_rng(1)
    year = draw_number([template_strokes(int(d), rng) for d in "1984"], "1984", rng, "normal")
    (tmp_path / "year.png").write_bytes(to_png(year.image))
    done = subprocess.run(
        [command, "predict", str(tmp_path / "year.png"), "--url", url, "--json", "--number"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["file"], answer["number"]) == (str(tmp_path / "year.png"), "1984")


def test_a_client_error_raises_with_the_workers_code(stack: Stack) -> None:
    with pytest.raises(DigitsError) as raised:
        Client(stack.http_url).predict(blank_png())
    assert (raised.value.status, raised.value.code) == (400, protocol.EMPTY)

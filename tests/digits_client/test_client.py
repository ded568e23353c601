"""`digits_client.Client` against the service's API over real HTTP
(tests/digits_client/conftest.py): what it sends for each kind of input, how it reports errors,
retries a 429 and sends a key."""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from classifier.serving import protocol, schemas
from digits_client import Client, DigitsError
from digits_client.client import image_type
from tests.catalogue import digit_png, good_ink
from tests.digits_client.conftest import ANSWERED_DIGIT, ApiServer


def jpeg_bytes(digit: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(digit_png(digit))).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def webp_bytes(digit: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(digit_png(digit))).save(buffer, format="WEBP")
    return buffer.getvalue()


def test_image_files_and_bytes_go_as_their_own_bytes_and_types(
    api_server: ApiServer, tmp_path: Path
) -> None:
    png, jpg, webp = digit_png(7), jpeg_bytes(1), webp_bytes(2)
    (tmp_path / "seven.png").write_bytes(png)
    (tmp_path / "one.jpg").write_bytes(jpg)
    with Client(api_server.url) as client:
        answers = [
            client.predict(tmp_path / "seven.png"),
            client.predict(str(tmp_path / "one.jpg")),
            client.predict(webp),
        ]
    assert [a["digit"] for a in answers] == [ANSWERED_DIGIT] * 3
    assert all(a["type"] == protocol.PREDICTION for a in answers)
    sent = api_server.worker.requests
    assert [r.media_type for r in sent] == ["image/png", "image/jpeg", "image/webp"]
    assert [base64.b64decode(r.image) for r in sent] == [png, jpg, webp]
    assert all(r.expect == protocol.EXPECT_DIGIT for r in sent)


def test_ink_goes_as_json_from_a_list_or_a_file_of_either_shape(
    api_server: ApiServer, tmp_path: Path
) -> None:
    (tmp_path / "strokes.json").write_text(json.dumps(good_ink()))
    (tmp_path / "drawing.json").write_text(json.dumps({"ink": good_ink(), "note": "kept out"}))
    client = Client(api_server.url)
    number = client.predict(tmp_path / "strokes.json", expect="number")
    digit = client.predict(tmp_path / "drawing.json")
    listed = client.predict(good_ink())
    client.close()
    assert number["number"] == f"{ANSWERED_DIGIT}{ANSWERED_DIGIT}"
    assert digit["digit"] == listed["digit"] == ANSWERED_DIGIT
    sent = api_server.worker.requests
    assert [r.ink for r in sent] == [good_ink()] * 3
    assert [r.expect for r in sent] == [protocol.EXPECT_NUMBER, "digit", "digit"]


def test_an_image_in_number_mode_sends_the_expect_field(api_server: ApiServer) -> None:
    answer = Client(api_server.url).predict(digit_png(4), expect="number")
    assert answer["number"] == f"{ANSWERED_DIGIT}{ANSWERED_DIGIT}"
    assert api_server.worker.requests[0].expect == protocol.EXPECT_NUMBER


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"GIF89a" + b"\0" * 40, 415, protocol.UNSUPPORTED_TYPE),
        (b"[[]]", 400, protocol.EMPTY),
        (b"[[[1, true]]]", 400, protocol.BAD_INK),
        (b"{not json", 415, protocol.UNSUPPORTED_TYPE),  # neither JSON nor an image: a file
    ],
)
def test_an_error_answer_raises_with_its_status_and_code(
    api_server: ApiServer, tmp_path: Path, data: bytes, status: int, code: str
) -> None:
    path = tmp_path / "drawing"
    path.write_bytes(data)
    with pytest.raises(DigitsError) as raised:
        Client(api_server.url).predict(path)
    assert (raised.value.status, raised.value.code) == (status, code)
    assert raised.value.message
    assert api_server.worker.requests == []


def test_a_429_is_retried_after_its_retry_after(api_server: ApiServer, settings: Any) -> None:
    """Bursts of one at one a second: the second request gets 429 with Retry-After 1, and the
    client sends it again after that second rather than failing."""
    settings.DIGITS_RATE_LIMIT = 1.0
    settings.DIGITS_RATE_BURST = 1
    client = Client(api_server.url)
    client.predict(digit_png(1))
    started = time.monotonic()
    answer = client.predict(digit_png(2))
    waited = time.monotonic() - started
    assert answer["digit"] == ANSWERED_DIGIT
    assert waited >= 0.9
    assert len(api_server.worker.requests) == 2


def test_a_key_is_sent_as_a_bearer_token(api_server: ApiServer, settings: Any) -> None:
    settings.DIGITS_API_KEYS = ["s3cret"]
    assert Client(api_server.url, api_key="s3cret").predict(digit_png(1))["digit"] is not None
    with pytest.raises(DigitsError) as missing:
        Client(api_server.url).predict(digit_png(1))
    with pytest.raises(DigitsError) as wrong:
        Client(api_server.url, api_key="guess").predict(digit_png(1))
    assert (missing.value.status, missing.value.code) == (401, schemas.UNAUTHORIZED)
    assert (wrong.value.status, wrong.value.code) == (403, schemas.FORBIDDEN)


def test_one_connection_serves_many_calls(api_server: ApiServer) -> None:
    with Client(api_server.url) as client:
        client.predict(digit_png(1))
        connection = client._connection
        for digit in range(2, 6):
            client.predict(digit_png(digit))
        assert client._connection is connection is not None


def test_image_types_are_read_from_the_first_bytes() -> None:
    assert image_type(digit_png(1)) == "image/png"
    assert image_type(jpeg_bytes(1)) == "image/jpeg"
    assert image_type(webp_bytes(1)) == "image/webp"
    assert image_type(b"GIF89a") is None
    with pytest.raises(ValueError):
        Client("ftp://example.com")

"""Bad input: every kind of garbage gets a clear, documented error and the service stays usable.

Two halves. Property-based fuzzing (hypothesis) of the two decoders a client reaches,
`protocol.parse_frame` and `preprocessing.preprocess`: whatever comes in, the result is a valid
request or image, or the documented error type with a documented code, never another
exception. Then the real service (daphne, Redis, a worker process): a catalogue of bad frames and
hostile images on ONE socket, each answered with its error, and then a good request answered on
that same socket; the abuse limits; the origin check; a frame over daphne's own limit.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import websockets
from django.conf import settings
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from classifier.ml.canvas import render_template_png
from classifier.ml.preprocessing import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    ImageError,
    decode_image,
    preprocess,
)
from classifier.serving import protocol
from tests.helpers import Stack, data_url, png_bytes

# --- What a client may be told ---------------------------------------------------------------

# Codes parse_frame may raise (README, "The websocket protocol").
FRAME_CODES = {
    protocol.BINARY_FRAME,
    protocol.FRAME_TOO_LARGE,
    protocol.BAD_JSON,
    protocol.BAD_FRAME,
    protocol.UNKNOWN_TYPE,
    protocol.BAD_ID,
    protocol.BAD_DATA_URL,
    protocol.UNSUPPORTED_TYPE,
    protocol.BAD_BASE64,
    protocol.IMAGE_TOO_LARGE,
    protocol.INVALID_IMAGE,
}
# Codes decoding an image may raise.
IMAGE_CODES = {protocol.IMAGE_TOO_LARGE, protocol.INVALID_IMAGE, protocol.EMPTY}


# --- Hostile images, built byte by byte ----------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A real decompression bomb: a 1-bit PNG of `width` x `height` zeros, compressed for real
    (20000 x 20000 is 50 MB of pixel data in about 50 KB)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\0" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_with_chunk(kind: bytes, data: bytes, image: bytes | None = None) -> bytes:
    """A valid PNG with one more chunk right after its header."""
    image = image if image is not None else render_template_png(4, size=64)
    return image[:33] + png_chunk(kind, data) + image[33:]


def inflating(size: int) -> bytes:
    """`size` zero bytes, deflated (a 200 MB payload is about 200 KB)."""
    compressor = zlib.compressobj(9)
    block = b"\0" * (1 << 20)
    parts = [compressor.compress(block) for _ in range(size >> 20)]
    return b"".join(parts) + compressor.flush()


def png_claiming(width: int, height: int, bit_depth: int = 8, colour: int = 0) -> bytes:
    """A small PNG whose header claims any size and format, with a tiny real IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG with its frame header (SOF0) rewritten to claim another size."""
    buffer = io.BytesIO()
    Image.new("L", (8, 8), 255).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


BOMB_20000 = png_bomb(20_000, 20_000)  # 400 million pixels: Pillow's own guard refuses it
BOMB_9000 = png_bomb(9_000, 9_000)  # 81 million: under Pillow's guard, over ours
ZTXT_BOMB = png_with_chunk(b"zTXt", b"Comment\0\0" + inflating(200 << 20))
ICCP_BOMB = png_with_chunk(b"iCCP", b"profile\0\0" + inflating(200 << 20))


def test_the_bombs_are_small_files() -> None:
    """The bombs below are what an attacker sends: a few hundred KB at most."""
    for bomb in (BOMB_20000, BOMB_9000, ZTXT_BOMB, ICCP_BOMB):
        assert len(bomb) < 400_000


# --- Hostile images, one by one ------------------------------------------------------------

SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="28" height="28"><text>7</text></svg>'

HOSTILE_IMAGES: list[tuple[str, bytes, str]] = [
    ("png-bomb-20000x20000", BOMB_20000, protocol.IMAGE_TOO_LARGE),
    ("png-bomb-9000x9000", BOMB_9000, protocol.IMAGE_TOO_LARGE),
    ("png-1x100000", png_bomb(1, 100_000), protocol.IMAGE_TOO_LARGE),
    ("png-100000x1", png_bomb(100_000, 1), protocol.IMAGE_TOO_LARGE),
    ("png-one-side-over", png_bomb(MAX_IMAGE_SIDE + 1, 1), protocol.IMAGE_TOO_LARGE),
    ("png-header-2^31", png_claiming(2**31 - 1, 2**31 - 1), protocol.IMAGE_TOO_LARGE),
    ("png-zero-size", png_claiming(0, 0), protocol.INVALID_IMAGE),
    ("png-ztxt-bomb", ZTXT_BOMB, protocol.INVALID_IMAGE),
    ("png-iccp-bomb", ICCP_BOMB, protocol.INVALID_IMAGE),
    ("jpeg-claiming-65500", jpeg_claiming(65_500, 65_500), protocol.IMAGE_TOO_LARGE),
    ("png-truncated", render_template_png(1)[:300], protocol.INVALID_IMAGE),
    ("png-bad-crc", render_template_png(1)[:30] + b"\0\0" + render_template_png(1)[32:], "any"),
    ("png-no-idat", png_bytes(Image.new("L", (8, 8)))[:33] + png_chunk(b"IEND", b""), "any"),
    ("jpeg-truncated", encoded(Image.new("RGB", (64, 64), "white"), "JPEG")[:100], "any"),
    ("svg", SVG, protocol.INVALID_IMAGE),
    ("gif", encoded(Image.new("L", (8, 8)), "GIF"), protocol.INVALID_IMAGE),
    ("bmp", encoded(Image.new("L", (8, 8)), "BMP"), protocol.INVALID_IMAGE),
    ("text", b"hello, world", protocol.INVALID_IMAGE),
    ("signature-only", PNG_SIGNATURE, protocol.INVALID_IMAGE),
    ("zeros", b"\0" * 1000, protocol.INVALID_IMAGE),
]


@pytest.mark.parametrize(
    ("name", "data", "code"), HOSTILE_IMAGES, ids=[name for name, _, _ in HOSTILE_IMAGES]
)
def test_hostile_images_are_refused_with_their_code(name: str, data: bytes, code: str) -> None:
    with pytest.raises(ImageError) as refused:
        preprocess(data)
    assert refused.value.code in IMAGE_CODES
    if code != "any":
        assert refused.value.code == code, refused.value
    assert str(refused.value).endswith(".")


def test_the_pixel_limit_is_read_from_the_header_before_decoding() -> None:
    """Just over the limit is refused by `open`'s header; just under decodes (the boundary
    is ours, not Pillow's 89-million-pixel warning)."""
    side = int(MAX_IMAGE_PIXELS**0.5)
    with pytest.raises(ImageError) as refused:
        decode_image(png_bomb(side + 1, side + 1))
    assert refused.value.code == protocol.IMAGE_TOO_LARGE
    assert f"{MAX_IMAGE_PIXELS:,}" in str(refused.value)
    assert decode_image(png_bomb(1000, 1000)).size == (1000, 1000)


def test_the_byte_limit_comes_before_anything_else() -> None:
    with pytest.raises(ImageError) as refused:
        decode_image(PNG_SIGNATURE + b"\0" * MAX_IMAGE_BYTES)
    assert refused.value.code == protocol.IMAGE_TOO_LARGE


# --- Fuzzing the image decoder ---------------------------------------------------------------


def _decode_or_refuse(data: bytes) -> None:
    """The property: an image in the model's format, or an ImageError with a documented code."""
    try:
        image = preprocess(data)
    except ImageError as error:
        assert error.code in IMAGE_CODES, error
        assert str(error)
        event(error.code)
    else:
        assert image.shape == (28, 28) and image.dtype == np.uint8
        event("decoded")


def _sample(mode: str, size: tuple[int, int], seed: int) -> Image.Image:
    """An image with some content: random noise or a stroke, in `mode`."""
    rng = np.random.default_rng(seed)
    width, height = size
    if seed % 2:
        grey = Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    else:
        grey = Image.new("L", size, 255)
        ImageDraw.Draw(grey).line(
            [tuple(rng.integers(0, s) for s in size) for _ in range(3)], fill=0, width=2
        )
    return grey.convert(mode)


FORMAT_MODES = {
    "PNG": ["1", "L", "LA", "P", "RGB", "RGBA", "I;16"],
    "JPEG": ["L", "RGB", "CMYK"],
    "WEBP": ["L", "RGB", "RGBA"],
}
VALID_SAMPLES = [
    encoded(_sample(mode, (24, 17), 0), fmt)
    for fmt, modes in FORMAT_MODES.items()
    for mode in modes
]


@st.composite
def real_images(draw: st.DrawFn) -> bytes:
    fmt = draw(st.sampled_from(sorted(FORMAT_MODES)))
    mode = draw(st.sampled_from(FORMAT_MODES[fmt]))
    size = (draw(st.integers(1, 64)), draw(st.integers(1, 64)))
    return encoded(_sample(mode, size, draw(st.integers(0, 2**16))), fmt)


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid PNG, JPEG or WebP with bytes flipped, cut, inserted or repeated."""
    data = bytearray(draw(st.sampled_from(VALID_SAMPLES)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        operation = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        if operation == "flip" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif operation == "cut":
            del data[at:]
        elif operation == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif operation == "repeat":
            data[at:at] = data[max(0, at - 64) : at]
    return bytes(data)


@st.composite
def claimed_headers(draw: st.DrawFn) -> bytes:
    """A PNG header claiming any size, bit depth and colour type (legal or not)."""
    side = st.one_of(st.integers(0, 64), st.integers(0, 2**31 - 1))
    return png_claiming(
        draw(side),
        draw(side),
        draw(st.sampled_from([1, 2, 4, 8, 16, 0, 3, 255])),
        draw(st.sampled_from([0, 2, 3, 4, 6, 1, 5, 7, 255])),
    )


signatures = st.sampled_from(
    [PNG_SIGNATURE, b"\xff\xd8\xff", b"RIFF\0\0\0\0WEBP", b"GIF89a", b"<svg", b""]
)

FUZZ = hypothesis_settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FUZZ
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_are_refused(data: bytes) -> None:
    _decode_or_refuse(data)


@FUZZ
@given(signatures, st.binary(max_size=512))
def test_any_bytes_behind_an_image_signature_decode_or_are_refused(
    signature: bytes, rest: bytes
) -> None:
    _decode_or_refuse(signature + rest)


@FUZZ
@given(mutated_images())
def test_damaged_images_decode_or_are_refused(data: bytes) -> None:
    _decode_or_refuse(data)


@FUZZ
@given(claimed_headers())
def test_any_png_header_decodes_or_is_refused(data: bytes) -> None:
    _decode_or_refuse(data)


@FUZZ
@given(real_images())
def test_every_real_image_gives_an_input_or_is_blank(data: bytes) -> None:
    """Valid images of any accepted format, mode and size: never `invalid_image`."""
    try:
        image = preprocess(data)
    except ImageError as error:
        assert error.code == protocol.EMPTY, error
        event(error.code)
    else:
        event("decoded")
        assert image.shape == (28, 28) and image.dtype == np.uint8


# --- Fuzzing the frame decoder, and the two together ---------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.text(min_size=129, max_size=300)  # ids over the limit
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# Weighted towards the accepted, so that fuzzed frames also reach the image decoder.
media_types = st.sampled_from(
    ["image/png"] * 3 + ["image/jpeg", "image/webp", "image/svg+xml", "image/gif", "text/plain", ""]
) | st.text(max_size=20)
b64_payloads = st.text(alphabet="ABCDEFGHabcdefgh0123456789+/=-_ \n\t\u00e9", max_size=80)


@st.composite
def data_urls(draw: st.DrawFn) -> str:
    params = draw(
        st.sampled_from([";base64"] * 4 + [";charset=utf-8;base64", "", ";BASE64", ";base64;"])
    )
    if draw(st.booleans()):
        payload = base64.b64encode(
            draw(st.one_of(mutated_images(), real_images(), st.binary(max_size=64)))
        ).decode()
    else:
        payload = draw(b64_payloads)
    prefix = draw(st.sampled_from(["data:"] * 4 + ["DATA:", "data: ", "", "http://x/"]))
    return f"{prefix}{draw(media_types)}{params},{payload}"


@st.composite
def frames(draw: st.DrawFn) -> str:
    """A predict frame with any of its fields replaced, dropped or joined by others."""
    frame: dict[str, Any] = {"type": "predict", "id": "r1", "image": draw(data_urls())}
    for field in ("type", "id", "image"):
        choice = draw(st.sampled_from(["keep"] * 6 + ["drop", "replace"]))
        if choice == "drop":
            del frame[field]
        elif choice == "replace":
            frame[field] = draw(json_values)
    frame.update(draw(st.dictionaries(st.text(max_size=6), json_values, max_size=2)))
    return json.dumps(frame)


def _serve_in_process(text: str | None, data: bytes | None = None) -> dict[str, Any]:
    """What the service would answer, minus the model: parse, then decode as the worker does."""
    try:
        request = protocol.parse_frame(text, data)
    except protocol.ProtocolError as error:
        assert error.code in FRAME_CODES, error.code
        assert error.message and error.message.endswith(".")
        assert error.request_id is None or 0 < len(error.request_id) <= protocol.MAX_ID_LENGTH
        frame = protocol.error(error.request_id, error.code, error.message)
    else:
        assert 0 < len(request.id) <= protocol.MAX_ID_LENGTH
        try:
            image = preprocess(base64.b64decode(request.image))
        except ImageError as error:
            assert error.code in IMAGE_CODES
            frame = protocol.error(request.id, error.code, str(error))
        else:
            assert image.shape == (28, 28)
            frame = {"type": protocol.PREDICTION, "id": request.id}
    event(frame.get("code", "decoded"))
    json.loads(protocol.encode(frame))  # always sendable
    return frame


@FUZZ
@given(frames())
def test_any_frame_is_served_or_refused_with_a_documented_code(text: str) -> None:
    _serve_in_process(text)


@FUZZ
@given(st.text(max_size=400))
def test_any_text_is_served_or_refused(text: str) -> None:
    _serve_in_process(text)


@FUZZ
@given(st.binary(max_size=256))
def test_any_binary_frame_is_refused(data: bytes) -> None:
    assert _serve_in_process(None, data)["code"] == protocol.BINARY_FRAME


# --- The real service: bad input on one socket, then a good request on it ------------------------


def _frame(request_id: Any = "r", image: Any = None, **fields: Any) -> str:
    body = {"type": protocol.PREDICT, "id": request_id, "image": image, **fields}
    return json.dumps({k: v for k, v in body.items() if v is not None})


GOOD_IMAGE = data_url(render_template_png(7))
BAD_FRAMES: list[tuple[str, str | bytes, str, str | None]] = [
    ("not-json", "this is not json", protocol.BAD_JSON, None),
    ("empty-text", "", protocol.BAD_JSON, None),
    ("truncated-json", _frame("t", GOOD_IMAGE)[:50], protocol.BAD_JSON, None),
    ("deep-nesting", "[" * 100_000, protocol.BAD_JSON, None),
    ("huge-number", "1" * 5000, protocol.BAD_JSON, None),
    ("json-list", "[1, 2, 3]", protocol.BAD_FRAME, None),
    ("json-string", '"predict"', protocol.BAD_FRAME, None),
    ("no-type", json.dumps({"id": "t1", "image": GOOD_IMAGE}), protocol.BAD_FRAME, "t1"),
    ("type-not-string", _frame("t2", GOOD_IMAGE, type=["predict"]), protocol.BAD_FRAME, "t2"),
    ("unknown-type", _frame("t3", type="subscribe"), protocol.UNKNOWN_TYPE, "t3"),
    ("no-id", _frame(None, GOOD_IMAGE), protocol.BAD_ID, None),
    ("id-number", _frame(42, GOOD_IMAGE), protocol.BAD_ID, None),
    ("id-empty", _frame("", GOOD_IMAGE), protocol.BAD_ID, None),
    ("id-huge", _frame("x" * 10_000, GOOD_IMAGE), protocol.BAD_ID, None),
    ("no-image", _frame("t4"), protocol.BAD_FRAME, "t4"),
    ("image-number", _frame("t5", 5), protocol.BAD_FRAME, "t5"),
    ("image-url", _frame("t6", "https://example.com/7.png"), protocol.BAD_DATA_URL, "t6"),
    ("not-base64-url", _frame("t7", "data:image/png,raw"), protocol.BAD_DATA_URL, "t7"),
    ("data-url-text", _frame("t8", "data:text/plain;base64,aGk="), protocol.UNSUPPORTED_TYPE, "t8"),
    (
        "data-url-svg",
        _frame("t9", data_url(SVG, "image/svg+xml")),
        protocol.UNSUPPORTED_TYPE,
        "t9",
    ),
    (
        "data-url-gif",
        _frame("t10", "data:image/gif;base64,R0lGOD=="),
        protocol.UNSUPPORTED_TYPE,
        "t10",
    ),
    ("broken-base64", _frame("t11", "data:image/png;base64,iVBOR@@@"), protocol.BAD_BASE64, "t11"),
    (
        "base64-padding",
        _frame("t12", "data:image/png;base64,iVBORw0KG"),
        protocol.BAD_BASE64,
        "t12",
    ),
    ("empty-payload", _frame("t13", "data:image/png;base64,"), protocol.INVALID_IMAGE, "t13"),
    ("binary-frame", PNG_SIGNATURE + b"\0" * 100, protocol.BINARY_FRAME, None),
    (
        "image-over-bytes",
        _frame("t14", data_url(b"\0" * (MAX_IMAGE_BYTES + 1))),
        protocol.IMAGE_TOO_LARGE,
        "t14",
    ),
    ("frame-over-limit", " " * (protocol.MAX_FRAME_CHARS + 1), protocol.FRAME_TOO_LARGE, None),
]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.slow
def test_bad_input_on_one_socket_gets_clear_errors_and_then_an_answer(stack: Stack) -> None:
    """Every bad frame and hostile image of this module on one socket: each gets its error
    (the frame checks answer at once, the images from the worker), the socket stays open
    throughout, and a good request on it is then answered with a prediction."""
    # The images go to the worker: they pass every check that can be made without decoding.
    images = [(name, data) for name, data, _ in HOSTILE_IMAGES]

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], dict[str, Any]]:
        async with stack.client() as client:
            refused = []
            for _, frame, _, _ in BAD_FRAMES:
                await client.send_raw(frame)
                refused.append(await client.receive())
            for name, data in images:
                await client.send_image(name, data)
            failed = await client.receive_many(len(images))
            good = await client.predict(render_template_png(7), request_id="good")
            return refused, failed, good

    refused, failed, good = run(scenario())
    for answer, (name, _, code, request_id) in zip(refused, BAD_FRAMES, strict=True):
        assert answer["type"] == protocol.ERROR, name
        assert (answer["code"], answer["id"]) == (code, request_id), (name, answer)
        assert answer["message"].endswith("."), answer
    for name, _, code in HOSTILE_IMAGES:
        assert failed[name]["type"] == protocol.ERROR, (name, failed[name])
        assert code == "any" or failed[name]["code"] == code, (name, failed[name])
        assert failed[name]["code"] in IMAGE_CODES
    assert good["type"] == protocol.PREDICTION and good["digit"] == 7, good
    assert "Traceback" not in stack.worker_log_text()


@pytest.mark.slow
def test_a_message_over_the_servers_limit_closes_only_that_socket(stack: Stack) -> None:
    """daphne itself refuses a message over DIGITS_WS_MAX_MESSAGE_BYTES: it closes that
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

    closed, beside, after = run(scenario())
    assert closed.rcvd is None or closed.rcvd.code == 1009  # "message too big"
    assert beside["type"] == after["type"] == protocol.PREDICTION


# --- Abuse: limits per connection and per address, origins --------------------------------------

LIMITS = {
    "DIGITS_RATE_LIMIT": "2",
    "DIGITS_RATE_BURST": "4",
    "DIGITS_MAX_IN_FLIGHT": "2",
    "DIGITS_MAX_CONNECTIONS_PER_CLIENT": "3",
    "DIGITS_ALLOWED_HOSTS": "127.0.0.1,digits.example",
}


@pytest.fixture(scope="module")
def limited(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second daphne with tight limits, on the session stack's Redis and queue (its worker
    answers here too)."""
    web = Stack(tmp_path_factory.mktemp("limited"), {**stack.env, **LIMITS}, stack.weights_path)
    web.start_web()
    try:
        yield web
    finally:
        web.stop_web()


def big_digit_png(side: int = 2000) -> bytes:
    """A digit the worker takes a good fraction of a second to decode and preprocess."""
    return render_template_png(5, size=side)


@pytest.mark.slow
def test_a_flood_on_one_socket_is_refused_with_rate_limited_and_the_socket_recovers(
    limited: Stack,
) -> None:
    """Rate 2/s, bursts of 4: of 10 frames sent at once the first 4 are answered (here with
    their own error) and the rest refused with `rate_limited`; after a pause the same socket
    is served again."""

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with limited.client() as client:
            for _ in range(10):
                await client.send_raw("not json")
            answers = [await client.receive() for _ in range(10)]
            await asyncio.sleep(2.5)  # the bucket refills (2 a second)
            return answers, await client.predict(render_template_png(7))

    answers, good = run(scenario())
    codes = [answer["code"] for answer in answers]
    assert codes[:4] == [protocol.BAD_JSON] * 4
    assert set(codes) == {protocol.BAD_JSON, protocol.RATE_LIMITED}
    assert codes.count(protocol.RATE_LIMITED) >= 3  # a slow machine may refill one token
    limited_answer = answers[codes.index(protocol.RATE_LIMITED)]
    assert "2 a second" in limited_answer["message"]
    assert good["type"] == protocol.PREDICTION


@pytest.mark.slow
def test_requests_over_the_in_flight_cap_are_refused_not_queued(limited: Stack) -> None:
    """Two slow requests in flight (the cap): a third sent at once is refused with
    `rate_limited` (answered first, while the other two are still being worked on), the two
    are answered, and then the socket takes requests again."""
    slow = big_digit_png()

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any]]:
        async with limited.client() as client:
            for request_id in ("a", "b", "c"):
                await client.send_image(request_id, slow)
            answers = [await client.receive() for _ in range(3)]
            return answers, await client.predict(render_template_png(7))

    answers, good = run(scenario())
    assert answers[0]["id"] == "c" and answers[0]["code"] == protocol.RATE_LIMITED, answers[0]
    assert "in flight" in answers[0]["message"]
    assert {a["id"]: a["type"] for a in answers[1:]} == {
        "a": protocol.PREDICTION,
        "b": protocol.PREDICTION,
    }
    assert good["type"] == protocol.PREDICTION


async def served_connection(web: Stack) -> tuple[Any, dict[str, Any]]:
    """A socket the server accepted, and the answer to a good request on it. A slot frees
    once the server has seen an earlier socket close, so a refusal is retried for a while."""
    frame = json.dumps({"type": "predict", "id": "ok", "image": GOOD_IMAGE})
    for _ in range(100):
        connection = await websockets.connect(web.ws_url, origin=web.origin)
        await connection.send(frame)
        answer = json.loads(await asyncio.wait_for(connection.recv(), 30))
        if answer.get("code") != protocol.TOO_MANY_CONNECTIONS:
            return connection, answer
        await connection.close()
        await asyncio.sleep(0.1)
    raise AssertionError("the server never accepted a connection")


@pytest.mark.slow
def test_connections_over_the_per_address_cap_are_told_and_closed(limited: Stack) -> None:
    """Three sockets open (the cap): a fourth is told `too_many_connections` and closed with
    4429; once one of the three closes, a new socket is served."""

    async def scenario() -> tuple[list[dict[str, Any]], dict[str, Any], int | None, Any]:
        served = [await served_connection(limited) for _ in range(3)]
        refused = await websockets.connect(limited.ws_url, origin=limited.origin)
        told = json.loads(await asyncio.wait_for(refused.recv(), 30))
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            await asyncio.wait_for(refused.recv(), 30)
        await served[0][0].close()
        replacement, answer = await served_connection(limited)
        for connection, _ in [*served[1:], (replacement, None)]:
            await connection.close()
        code = closed.value.rcvd.code if closed.value.rcvd else None
        return [a for _, a in served] + [answer], told, code, None

    answers, told, code, _ = run(scenario())
    assert told["type"] == protocol.ERROR and told["id"] is None
    assert told["code"] == protocol.TOO_MANY_CONNECTIONS
    assert "limit is 3" in told["message"]
    assert code == protocol.CLOSE_TOO_MANY_CONNECTIONS
    assert all(a["type"] == protocol.PREDICTION for a in answers), answers


@pytest.mark.slow
@pytest.mark.parametrize(
    ("origin", "accepted"),
    [
        ("http://digits.example", True),
        ("https://digits.example", True),
        ("http://evil.example", False),
        ("http://digits.example.evil.example", False),
        ("null", False),
        (None, False),  # no Origin header: non-browser clients must send one
    ],
)
def test_only_pages_from_allowed_hosts_may_connect(
    limited: Stack, origin: str | None, accepted: bool
) -> None:
    async def scenario() -> None:
        async with websockets.connect(limited.ws_url, origin=origin, open_timeout=10):
            pass

    if accepted:
        run(scenario())
    else:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            run(scenario())
        assert refused.value.response.status_code == 403

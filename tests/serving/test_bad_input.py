"""Bad input, in this process: whatever a client sends, the two decoders it reaches give a
valid result or a documented error, never another exception.

Property-based fuzzing (hypothesis) of `protocol.parse_frame` and `preprocessing.preprocess`,
and every hostile image of the catalogue (tests/catalogue.py) through `preprocess`. The bad
frames of the catalogue are checked by tests/serving/test_protocol.py (the parser) and
tests/serving/test_consumers.py (the consumer); all of it goes through the real service on one
socket in tests/e2e/test_service.py.
"""

from __future__ import annotations

import base64
import functools
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from classifier.ml.preprocessing import (
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    ImageError,
    decode_image,
    preprocess,
)
from classifier.serving import protocol
from classifier.serving.protocol import image_error_code
from tests.catalogue import (
    BOMBS,
    FRAME_CODES,
    HOSTILE_IMAGES,
    IMAGE_CODES,
    PNG_SIGNATURE,
    HostileImage,
    encoded,
    hostile_image,
    names,
    png_bomb,
    png_claiming,
)


def test_the_bombs_are_small_files() -> None:
    """The bombs are what an attacker sends: a few hundred KB at most."""
    for name in BOMBS:
        assert len(hostile_image(name).data) < 400_000, name


@pytest.mark.parametrize("hostile", HOSTILE_IMAGES, ids=names(HOSTILE_IMAGES))
def test_hostile_images_are_refused_with_their_code(hostile: HostileImage) -> None:
    with pytest.raises(ImageError) as refused:
        preprocess(hostile.data)
    assert hostile.accepts(image_error_code(refused.value)), refused.value
    assert str(refused.value).endswith(".")


def test_the_pixel_limit_is_read_from_the_header_before_decoding() -> None:
    """Just over the limit is refused by `open`'s header; just under decodes (the boundary
    is ours, not Pillow's 89-million-pixel warning)."""
    side = int(MAX_IMAGE_PIXELS**0.5)
    with pytest.raises(ImageError) as refused:
        decode_image(png_bomb(side + 1, side + 1))
    assert image_error_code(refused.value) == protocol.IMAGE_TOO_LARGE
    assert f"{MAX_IMAGE_PIXELS:,}" in str(refused.value)
    assert decode_image(png_bomb(1000, 1000)).size == (1000, 1000)


def test_the_byte_limit_comes_before_anything_else() -> None:
    with pytest.raises(ImageError) as refused:
        decode_image(PNG_SIGNATURE + b"\0" * MAX_IMAGE_BYTES)
    assert image_error_code(refused.value) == protocol.IMAGE_TOO_LARGE


# --- Fuzzing the image decoder ---------------------------------------------------------------


def _decode_or_refuse(data: bytes) -> None:
    """The property: an image in the model's format, or an ImageError with a documented code."""
    try:
        image = preprocess(data)
    except ImageError as error:
        code = image_error_code(error)
        assert code in IMAGE_CODES, error
        assert str(error)
        event(code)
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


@functools.cache
def valid_samples() -> list[bytes]:
    """One small image of every accepted format and mode, for mutating."""
    return [
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
    data = bytearray(draw(st.sampled_from(valid_samples())))
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
        assert image_error_code(error) == protocol.EMPTY, error
        event(protocol.EMPTY)
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
            code = image_error_code(error)
            assert code in IMAGE_CODES
            frame = protocol.error(request.id, code, str(error))
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

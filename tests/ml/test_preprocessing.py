"""Preprocessing: any canvas or bitmap becomes the model's 28x28 input; bad images fail clearly."""

from __future__ import annotations

import base64
import contextlib
import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from classifier.ml.preprocessing import (
    CENTRE_OF_MASS,
    DIGIT_BOX,
    IMAGE_SIZE,
    MAX_IMAGE_BYTES,
    MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE,
    EmptyImageError,
    ImageError,
    ImageTooLargeError,
    InvalidImageError,
    decode_image,
    encode_preview,
    preprocess,
    to_mnist,
)
from classifier.ml.training.canvas import render_template


def png(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def encoded(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def centre_of_mass(image28: np.ndarray) -> tuple[float, float]:
    ink = image28.astype(np.float64)
    ys, xs = np.indices(ink.shape)
    return float((ink * ys).sum() / ink.sum()), float((ink * xs).sum() / ink.sum())


def ink_box(image28: np.ndarray, threshold: int = 64) -> tuple[int, int]:
    rows = np.flatnonzero((image28 >= threshold).any(axis=1))
    cols = np.flatnonzero((image28 >= threshold).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two 28x28 images: 1.0 when identical up to brightness."""
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` but whose data is a few bytes: a bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def centred_seven() -> np.ndarray:
    return to_mnist(render_template(7, "plain", height=240, brush=18))


# --- The MNIST recipe ---------------------------------------------------------------------------


def test_output_is_28x28_uint8_white_on_black_centred_by_mass(centred_seven):
    assert centred_seven.shape == (IMAGE_SIZE, IMAGE_SIZE)
    assert centred_seven.dtype == np.uint8
    assert centred_seven.max() == 255
    assert np.median(centred_seven) == 0 and centred_seven[0].max() == 0  # background black
    cy, cx = centre_of_mass(centred_seven)
    assert abs(cy - CENTRE_OF_MASS) <= 0.75 and abs(cx - CENTRE_OF_MASS) <= 0.75
    height, width = ink_box(centred_seven)
    assert max(height, width) in (DIGIT_BOX - 1, DIGIT_BOX, DIGIT_BOX + 1)
    assert width < height  # aspect ratio kept: a 7 is taller than wide


def test_small_off_centre_digit_comes_out_like_a_centred_one(centred_seven):
    corner = to_mnist(render_template(7, "plain", height=60, brush=4.5, centre=(40, 330)))
    assert similarity(corner, centred_seven) > 0.93
    # The tutorial's plain resize of the whole canvas keeps almost nothing of such a digit.
    resized = np.asarray(
        render_template(7, "plain", height=60, brush=4.5, centre=(40, 330))
        .convert("L")
        .resize((IMAGE_SIZE, IMAGE_SIZE))
    )
    assert similarity(resized, centred_seven) < 0.5


@pytest.mark.parametrize("style", ["inverted", "colour", "transparent"])
def test_every_colour_scheme_gives_the_same_input(centred_seven, style):
    rng = np.random.default_rng(7)
    image = render_template(
        7, "plain", height=240, brush=18, centre=(192, 192), slant=0.0, style=style, rng=rng
    )
    assert similarity(to_mnist(image), centred_seven) > 0.98


def test_transparent_canvas_with_black_and_with_white_ink(centred_seven):
    mask = render_template(7, "plain", height=240, brush=18).convert("L")
    for colour in ((0, 0, 0), (255, 255, 255)):
        rgba = Image.new("RGBA", mask.size, (*colour, 0))
        rgba.putalpha(mask)
        assert similarity(preprocess(png(rgba)), centred_seven) > 0.98


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGB", "I;16", "1"])
def test_image_modes(centred_seven, mode):
    image = render_template(7, "plain", height=240, brush=18).convert("L")
    if mode == "I;16":
        array = np.asarray(image, dtype=np.uint16) * 257
        converted = Image.fromarray(array)
        assert converted.mode.startswith("I;16")
    elif mode == "1":
        converted = image.point(lambda v: 255 if v > 127 else 0).convert("1")
    else:
        converted = image.convert(mode)
    assert similarity(preprocess(png(converted)), centred_seven) > 0.97


def test_tiny_black_on_white_bitmap():
    image = Image.new("L", (8, 8), 255)
    for y in range(1, 7):
        image.putpixel((4, y), 0)  # a "1"
    image.putpixel((3, 2), 0)
    result = preprocess(png(image))
    height, width = ink_box(result)
    assert height in (DIGIT_BOX - 1, DIGIT_BOX, DIGIT_BOX + 1)
    assert width < height


def test_huge_canvas(centred_seven):
    big = render_template(7, "plain", height=2400, brush=180, size=3000)
    data = png(big.convert("L"), optimize=True)
    assert len(data) < MAX_IMAGE_BYTES
    assert similarity(preprocess(data), centred_seven) > 0.97


@pytest.mark.parametrize("brush", [2, 90])
def test_thin_and_very_thick_strokes(brush):
    result = to_mnist(render_template(1, "stroke", height=300, brush=brush).convert("L"))
    assert ink_box(result)[0] in (DIGIT_BOX - 1, DIGIT_BOX, DIGIT_BOX + 1)
    assert result.max() == 255


def test_one_pixel_wide_image():
    image = Image.new("L", (1, 60), 0)
    for y in range(5, 55):
        image.putpixel((0, y), 255)
    result = preprocess(png(image))
    assert ink_box(result)[0] in (DIGIT_BOX - 1, DIGIT_BOX)


def test_jpeg_and_webp(centred_seven):
    image = render_template(7, "plain", height=240, brush=18, style="inverted")
    for fmt in ("JPEG", "WEBP"):
        data = encoded(image, fmt, quality=70)
        assert decode_image(data).format == fmt
        assert similarity(preprocess(data), centred_seven) > 0.97


# --- Blank canvases ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        Image.new("RGB", (384, 384), (0, 0, 0)),
        Image.new("RGB", (384, 384), (255, 255, 255)),
        Image.new("RGBA", (384, 384), (0, 0, 0, 0)),
        Image.new("L", (1, 1), 0),
    ],
    ids=["black", "white", "transparent", "one-pixel"],
)
def test_blank_canvas_is_empty(image):
    with pytest.raises(EmptyImageError) as info:
        preprocess(png(image))
    assert isinstance(info.value, EmptyImageError)
    assert "blank" in str(info.value)


def test_faint_noise_is_empty_not_a_digit():
    rng = np.random.default_rng(0)
    noise = (235 + rng.integers(0, 12, size=(200, 200))).astype(np.uint8)
    data = encoded(Image.fromarray(noise), "JPEG", quality=60)
    with pytest.raises(EmptyImageError):
        preprocess(data)


# --- Bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "empty"),
        (b"not an image at all", "PNG, JPEG or WebP"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"></svg>', "SVG"),
        (b"GIF89a" + b"\x00" * 20, "GIF"),
        (b"BM" + b"\x00" * 40, "BMP"),
    ],
)
def test_unsupported_input_gets_a_clear_message(data, words):
    with pytest.raises(InvalidImageError) as info:
        decode_image(data)
    assert isinstance(info.value, InvalidImageError)
    assert words in str(info.value)


def test_truncated_png():
    data = png(render_template(3, height=200))
    with pytest.raises(InvalidImageError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


def test_corrupt_png_body():
    data = bytearray(png(render_template(3, height=200)))
    data[60:200] = bytes(140)
    with pytest.raises(InvalidImageError):
        preprocess(bytes(data))


@pytest.mark.parametrize(
    ("width", "height"),
    [(10_000, 10_000), (MAX_IMAGE_SIDE + 1, 10), (1, 100_000), (5000, 5000), (60_000, 60_000)],
)
def test_decompression_bombs_are_refused_from_the_header(width, height):
    data = png_header_only(width, height)
    assert len(data) < 200
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data)
    assert isinstance(info.value, ImageTooLargeError)
    assert "pixels" in str(info.value)


def test_pixel_limit_below_side_limit():
    side = int(MAX_IMAGE_PIXELS**0.5) + 10
    assert side <= MAX_IMAGE_SIDE
    with pytest.raises(ImageTooLargeError, match="pixels"):
        decode_image(png_header_only(side, side))


def test_too_many_bytes():
    with pytest.raises(ImageTooLargeError, match="MB"):
        decode_image(b"\x89PNG\r\n\x1a\n" + bytes(MAX_IMAGE_BYTES))


def test_errors_are_value_errors():
    assert issubclass(ImageError, ValueError)
    for error in (EmptyImageError, InvalidImageError, ImageTooLargeError):
        assert issubclass(error, ImageError)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b""]))
def test_no_pillow_exception_escapes(body, prefix):
    with contextlib.suppress(ImageError):  # anything else fails the test
        preprocess(prefix + body)


# --- The preview -------------------------------------------------------------------


def test_encode_preview_round_trips(centred_seven):
    url = encode_preview(centred_seven)
    assert url.startswith("data:image/png;base64,")
    png = base64.b64decode(url.split(",", 1)[1])
    Image.open(io.BytesIO(png)).verify()  # Pillow checks the chunks and their CRCs
    decoded = Image.open(io.BytesIO(png))
    assert decoded.size == (IMAGE_SIZE, IMAGE_SIZE) and decoded.mode == "L"
    assert np.array_equal(np.asarray(decoded), centred_seven)


def test_encode_preview_rounds_a_float_image_into_grey_levels():
    image = np.linspace(-10.0, 300.0, IMAGE_SIZE * IMAGE_SIZE).reshape(IMAGE_SIZE, IMAGE_SIZE)
    url = encode_preview(image)
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
    assert np.array_equal(decoded, np.clip(np.round(image), 0, 255).astype(np.uint8))
